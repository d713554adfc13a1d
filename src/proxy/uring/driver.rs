//! The event loop of one worker: sockets, connections, the pool and the completion handlers.
//!
//! Ownership model: a [`Sock`] is one TCP socket (downstream or upstream) with the operations
//! in flight on it; a [`Conn`] is one downstream connection's handler plus its sockets. Pooled
//! upstream sockets belong to no connection. A socket slot is freed only once every operation
//! submitted for it has completed, so the memory those operations point at (send buffer,
//! connect address, timeout) stays valid, and a late completion is matched by generation.
//! Sockets are closed with `IORING_OP_CLOSE` queued after their last operation, so a
//! descriptor number cannot be reused while an earlier queued operation still names it.
//! A socket also sits in the ring's fixed file table at its slot index (when the table reaches
//! that far): it is put there by a `FILES_UPDATE` queued before its first operation, and its
//! slot is emptied by a fixed close that the socket slot waits for, so a reused slot index
//! never names the previous socket.
//!
//! Upstream TLS (`PoolKey::tls`): after the connect completes the socket carries a
//! [`TlsClient`]; its receive stays armed and its handshake bytes are sent until the handshake
//! completes (bounded by the connect timeout), and only then does the handler hear
//! `on_upstream_connected` (or `on_upstream_error(Tls)`, logged once with the upstream name).
//! From then on received ciphertext is decrypted into the socket's stash, which the usual
//! interest-driven delivery hands to the handler, and the handler's bytes are encrypted before
//! each send. The session belongs to the socket, so it is pooled and reused with it.
//!
//! What is not about syscalls or completions is the session layer's ([`crate::proxy::session`]),
//! shared with the epoll driver: downstream TLS ([`Layer`]), the upstream reuse rule and TLS
//! handshake steps ([`leg`]), the pool with its sweeping ([`WorkerPool`]), the close/linger
//! state machine ([`Closing`]) and the drain clock ([`Drain`]).

use std::collections::VecDeque;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::proxy::io::{
    Action, ConnHandler, ConnInfo, ConnLimit, PoolKey, PoolLimits, UpstreamError,
};
use crate::proxy::session::close::{CloseFacts, CloseStep, Closing};
use crate::proxy::session::drain::{Drain, DrainStep};
use crate::proxy::session::pool::WorkerPool;
use crate::proxy::session::tls::Layer;
use crate::proxy::session::upstream::{
    self as leg, CLOSED_DURING_HANDSHAKE, HANDSHAKE_TIMED_OUT, Handshake, LegState,
    handshake_input, log_handshake_failure,
};
use crate::proxy::tls::{TlsAcceptor, TlsClient};

use super::bufring::BufRing;
use super::slab::{Id, Op, Slab, UserData};
use super::timers::{Slim, Timers};
use super::{RingOptions, Support, UringError};
use crate::proxy::driver::DriverStats;
use crate::proxy::listener::BoundListener;
use crate::proxy::stop::{HEARTBEAT_TICK, StopSignal};

/// Buffer group of downstream receives (small buffers: requests are small).
const BGID: u16 = 0;
/// Buffer group of upstream receives (large buffers: a response body arrives in few pieces).
const UP_BGID: u16 = 1;
/// Callback rounds per `sync` before the rest is deferred to the next loop iteration.
const SYNC_ROUNDS: usize = 64;
/// Delay before re-arming an accept that failed for lack of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Send buffers kept for reuse (the rest are freed).
const SEND_FREE_MAX: usize = 1024;
/// Below this much pending downstream output a send copies instead of asking the handler
/// to lend its buffer.
const LEND_HINT: usize = 16 * 1024;

/// Builds an operation on a socket: on its fixed file slot when it has one, else on its fd.
/// `|t| expr` is the builder, given `types::Fixed` or `types::Fd` as `t`.
macro_rules! on_sock {
    ($s:expr, $sid:expr, |$t:ident| $build:expr) => {
        if $s.fixed {
            let $t = types::Fixed($sid.idx);
            $build
        } else {
            let $t = types::Fd($s.fd);
            $build
        }
    };
}

/// Registers a sparse fixed file table of up to `want` slots, no more than the open-file limit
/// allows (the kernel refuses a larger one). Empty when `want` is 0 or the kernel refuses:
/// sockets then use their fds.
fn register_fixed_table(ring: &IoUring, want: u32) -> Box<[RawFd]> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let n = u64::from(want).min(limit);
    let n = u32::try_from(n).unwrap_or(want);
    if n == 0 || ring.submitter().register_files_sparse(n).is_err() {
        return Box::default();
    }
    vec![-1; n as usize].into_boxed_slice()
}

/// How long teardown waits for cancelled operations to complete.
const TEARDOWN_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Down,
    Up,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Conn {
        conn: Id,
        side: Side,
    },
    /// Released as reusable; waits for its receive to be cancelled before joining the pool.
    Parking,
    Pooled,
    Closing,
}

/// What only an upstream socket, or a socket in a rare state, needs: memory its operations
/// point at (boxed so it stays put while the slab grows), the pool key it was attached with
/// (kept while it parks), its client TLS, and bytes held back from the handler. An idle
/// downstream socket never allocates it; one that ever held bytes back keeps it until closed.
struct SockArgs {
    addr: Option<SockAddr>,
    timeout: types::Timespec,
    peek: [u8; 1],
    /// The pool key and limits of the attached (or parking) upstream connection.
    key: Option<(PoolKey, PoolLimits)>,
    /// Client TLS session of an HTTPS upstream.
    tls: Option<Box<TlsClient>>,
    /// End of the TLS handshake (the connect timeout), while one runs with a deadline.
    tls_until: Option<Slim>,
    /// Bytes that arrived while the handler did not want them (receive being cancelled), or
    /// plaintext of an HTTPS upstream not handed over yet.
    stash: Vec<u8>,
    stash_eof: bool,
}

/// The bytes of a socket's send in flight, or of a lent buffer whose rest waits for the next
/// send. Boxed (most sockets have none most of the time); a box and its buffer go back to the
/// driver's free list when the send is done, so sending allocates nothing in steady state.
#[derive(Default)]
struct Outgoing {
    /// Owned here so the kernel never points into the handler.
    buf: Vec<u8>,
    /// For a buffer the handler lent (`lend_downstream_out`): where the send in flight
    /// started, or where the bytes still to send start. `None`: a copy, sent from its start.
    lent_at: Option<u32>,
    /// A send is in flight (otherwise lent bytes wait from `lent_at` on).
    in_flight: bool,
}

/// Where a socket's multishot receive stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecvState {
    /// Not armed.
    Off,
    Armed,
    /// Armed, with a cancellation submitted.
    Cancelling,
    /// Not armed: the last one ended for lack of receive buffers (ENOBUFS), and the socket
    /// waits in [`Driver::starved`] to be armed again.
    Starved,
}

/// [`Owner`] stored flat in a socket (with `Sock::owner_conn`), which keeps `Sock` small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnerKind {
    Down,
    Up,
    Parking,
    Pooled,
    Closing,
}

struct Sock {
    fd: RawFd,
    /// The connection of a `Down` or `Up` socket (see [`Sock::owner`]).
    owner_conn: Id,
    owner_kind: OwnerKind,
    /// Submitted operations on this socket whose final completion has not arrived: one
    /// receive, send, connect, link timeout, idle peek and fixed close at most, so a byte
    /// holds it.
    inflight: u8,
    /// Registered in the ring's fixed file table at the index of its socket slot
    /// ([`Driver::register_fixed`]): operations name the slot, so the kernel skips the file
    /// lookup and reference count it otherwise pays per operation.
    fixed: bool,
    connected: bool,
    connecting: bool,
    /// The multishot receive's state.
    recv: RecvState,
    /// Buffer group of the armed receive (also the `aux` of its `user_data`).
    recv_bgid: u8,
    /// EOF or an error was seen: never read again.
    read_closed: bool,
    failed: bool,
    idle_armed: bool,
    pool_epoch: u8,
    /// The send in flight or lent bytes waiting (see [`Outgoing`]).
    out: Option<Box<Outgoing>>,
    /// Upstream sockets and rare states (see [`SockArgs`]).
    args: Option<Box<SockArgs>>,
}

impl Sock {
    fn owner(&self) -> Owner {
        match self.owner_kind {
            OwnerKind::Down => Owner::Conn {
                conn: self.owner_conn,
                side: Side::Down,
            },
            OwnerKind::Up => Owner::Conn {
                conn: self.owner_conn,
                side: Side::Up,
            },
            OwnerKind::Parking => Owner::Parking,
            OwnerKind::Pooled => Owner::Pooled,
            OwnerKind::Closing => Owner::Closing,
        }
    }

    fn set_owner(&mut self, owner: Owner) {
        self.owner_kind = match owner {
            Owner::Conn { conn, side } => {
                self.owner_conn = conn;
                match side {
                    Side::Down => OwnerKind::Down,
                    Side::Up => OwnerKind::Up,
                }
            }
            Owner::Parking => OwnerKind::Parking,
            Owner::Pooled => OwnerKind::Pooled,
            Owner::Closing => OwnerKind::Closing,
        };
    }

    /// Client TLS of an HTTPS upstream.
    fn tls(&self) -> Option<&TlsClient> {
        self.args.as_ref().and_then(|a| a.tls.as_deref())
    }

    /// An HTTPS upstream whose handshake has not completed.
    fn handshaking(&self) -> bool {
        self.tls().is_some_and(|t| !t.handshake_complete())
    }

    /// Bytes or an EOF are held back from the handler.
    fn stashed(&self) -> bool {
        self.args
            .as_ref()
            .is_some_and(|a| a.stash_eof || !a.stash.is_empty())
    }

    /// A multishot receive is armed (possibly being cancelled).
    fn recv_armed(&self) -> bool {
        matches!(self.recv, RecvState::Armed | RecvState::Cancelling)
    }

    /// A send is in flight.
    fn sending(&self) -> bool {
        self.out.as_ref().is_some_and(|o| o.in_flight)
    }

    /// Bytes of a lent buffer are in flight or wait to be sent.
    fn lent(&self) -> bool {
        self.out.as_ref().is_some_and(|o| o.lent_at.is_some())
    }
}

impl Sock {
    fn new(fd: RawFd, owner: Owner, connected: bool) -> Self {
        let mut s = Sock {
            fd,
            owner_conn: Id {
                idx: 0,
                generation: 0,
            },
            owner_kind: OwnerKind::Closing,
            inflight: 0,
            fixed: false,
            connected,
            connecting: false,
            recv: RecvState::Off,
            recv_bgid: BGID as u8,
            read_closed: false,
            failed: false,
            idle_armed: false,
            pool_epoch: 0,
            out: None,
            args: None,
        };
        s.set_owner(owner);
        s
    }

    /// The upstream (or rare) part, created on first use.
    fn args(&mut self) -> &mut SockArgs {
        self.args.get_or_insert_with(|| {
            Box::new(SockArgs {
                addr: None,
                timeout: types::Timespec::new(),
                peek: [0],
                key: None,
                tls: None,
                tls_until: None,
                stash: Vec::new(),
                stash_eof: false,
            })
        })
    }

    /// The pool key of an attached upstream connection.
    fn key(&self) -> Option<&(PoolKey, PoolLimits)> {
        self.args.as_ref().and_then(|a| a.key.as_ref())
    }
}

/// A downstream connection. Its deadline lives in the driver's [`Timers`] (by slot).
struct Conn<H> {
    h: H,
    down: Id,
    up: Option<Id>,
    /// The upstream's TLS handshake runs with a deadline (`SockArgs::tls_until` of `up`).
    up_handshake: bool,
    /// The close the handler asked for ([`Action::CloseDownstream`]) and, once it closed
    /// (`started`), where the flush and the linger stand.
    closing: Closing<Slim>,
}

struct Listener {
    fd: Option<OwnedFd>,
    index: usize,
    /// Set on https listeners.
    tls: Option<std::sync::Arc<TlsAcceptor>>,
    armed: bool,
    rearm_at: Option<Instant>,
}

/// One worker's ring and everything driven by it.
pub(crate) struct Driver<'a, H: ConnHandler> {
    // Field order matters: the ring is dropped before the buffer memory it may reference.
    ring: IoUring,
    bufs: BufRing,
    up_bufs: BufRing,
    /// The fixed file table (one slot per socket slot index below its length; empty when the
    /// table could not be registered). Each entry holds the fd its slot's `FILES_UPDATE` reads:
    /// a stable address, rewritten only when the socket slot is reused, which waits for the
    /// previous socket's fixed close (see [`Op::CloseFixed`]).
    fixed_fds: Box<[RawFd]>,
    socks: Slab<Sock>,
    /// Connections; https listeners wrap the handler in the TLS layer.
    conns: Slab<Conn<Layer<H>>>,
    listeners: Vec<Listener>,
    pool: WorkerPool<Id>,
    timers: Timers,
    /// Emptied send boxes (with their buffers) kept for reuse: the boxes themselves are what
    /// is reused (a socket holds one while it sends), so sending allocates nothing.
    #[allow(clippy::vec_box)]
    send_free: Vec<Box<Outgoing>>,
    overflow: VecDeque<squeue::Entry>,
    resync: Vec<Id>,
    /// Sockets whose receive ended for lack of buffers, oldest first, per buffer group
    /// (downstream, upstream); see [`Driver::rearm_starved`].
    starved: [VecDeque<Id>; 2],
    cqes: Vec<(u64, i32, u32)>,
    scratch: Vec<Id>,
    wake_armed: bool,
    /// Accepting is paused by the supervisor (upgrade before "go"): no accept is armed and
    /// connections stay queued in the listeners until it resumes.
    accept_paused: bool,
    drain: Drain,
    cx: &'a mut H::Cx,
    limit: &'a ConnLimit,
    stop: &'a StopSignal,
    stats: &'a DriverStats,
    opts: RingOptions,
}

fn bump(c: &std::sync::atomic::AtomicU64) {
    DriverStats::bump(c);
}

fn ud(op: Op, id: Id, aux: u8) -> u64 {
    UserData::new(op, id, aux).encode()
}

fn listener_ud(li: usize) -> u64 {
    UserData {
        op: Op::Accept,
        slot: li as u32,
        gen16: 0,
        aux: 0,
    }
    .encode()
}

fn wants(h: &impl ConnHandler, side: Side) -> bool {
    let i = h.interest();
    match side {
        Side::Down => i.downstream_read,
        Side::Up => i.upstream_read,
    }
}

/// A cheap liveness check at checkout: EAGAIN from a non-blocking peek means the idle
/// connection is still open and silent.
fn idle_is_live(socks: &Slab<Sock>, sid: Id) -> bool {
    let Some(s) = socks.get(sid) else {
        return false;
    };
    if s.fd < 0 || s.failed || s.owner() != Owner::Pooled {
        return false;
    }
    // SAFETY: `s.fd` is open (owned by this socket slot until its ring close); ManuallyDrop
    // keeps the Socket from closing it.
    let sock = ManuallyDrop::new(unsafe { Socket::from_raw_fd(s.fd) });
    let mut byte = [MaybeUninit::<u8>::uninit(); 1];
    matches!(
        sock.recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
    )
}

impl<'a, H: ConnHandler> Driver<'a, H> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        listeners: Vec<BoundListener>,
        limit: &'a ConnLimit,
        stop: &'a StopSignal,
        cx: &'a mut H::Cx,
        opts: &RingOptions,
        stats: &'a DriverStats,
        support: Support,
    ) -> Result<Self, UringError> {
        let entries = opts.entries.clamp(8, 32768);
        Slim::init();
        let mut b = IoUring::builder();
        b.setup_cqsize(entries.saturating_mul(2)).setup_clamp();
        if opts.sqpoll {
            let idle = u32::try_from(opts.sqpoll_idle.as_millis()).unwrap_or(u32::MAX);
            b.setup_sqpoll(idle);
            if support.single_issuer {
                b.setup_single_issuer();
            }
        } else {
            if support.single_issuer {
                b.setup_single_issuer();
            }
            if support.defer_taskrun {
                b.setup_defer_taskrun();
            }
        }
        let ring = b
            .build(entries)
            .map_err(|source| UringError::Setup { entries, source })?;
        let mut bufs = BufRing::new(opts.recv_buffers, opts.recv_buffer_size, BGID)
            .map_err(UringError::BufRing)?;
        bufs.register(&ring.submitter(), opts.incremental)
            .map_err(UringError::BufRing)?;
        let mut up_bufs = BufRing::new(
            opts.upstream_recv_buffers,
            opts.upstream_recv_buffer_size,
            UP_BGID,
        )
        .map_err(UringError::BufRing)?;
        up_bufs
            .register(&ring.submitter(), opts.incremental)
            .map_err(UringError::BufRing)?;
        let fixed_fds = register_fixed_table(&ring, opts.fixed_files);
        let listeners = listeners
            .into_iter()
            .map(|l| Listener {
                fd: Some(OwnedFd::from(l.socket)),
                index: l.spec.index,
                tls: l.spec.tls,
                armed: false,
                rearm_at: None,
            })
            .collect();
        Ok(Driver {
            ring,
            bufs,
            up_bufs,
            fixed_fds,
            socks: Slab::new(),
            conns: Slab::new(),
            listeners,
            pool: WorkerPool::new(H::pool_gauges(cx)),
            timers: Timers::default(),
            send_free: Vec::new(),
            overflow: VecDeque::new(),
            resync: Vec::new(),
            starved: [VecDeque::new(), VecDeque::new()],
            cqes: Vec::with_capacity(entries as usize * 2),
            scratch: Vec::new(),
            wake_armed: false,
            accept_paused: !stop.accepting(),
            drain: Drain::new(),
            cx,
            limit,
            stop,
            stats,
            opts: opts.clone(),
        })
    }

    // ---- submission ----

    /// Queues an entry; when the submission queue is full, submits first, and as a last resort
    /// keeps it (and everything after it, to preserve order) for the next iteration.
    fn push(&mut self, e: squeue::Entry) {
        if !self.overflow.is_empty() {
            self.overflow.push_back(e);
            return;
        }
        // SAFETY (this and the retry below): every entry built by this driver points only at
        // memory that outlives the operation: a socket's boxed `SockArgs` or `Outgoing`
        // (freed only when the socket's in-flight count is zero), or the registered buffer
        // ring (freed only after teardown confirmed no operation is left).
        if unsafe { self.ring.submission().push(&e) }.is_ok() {
            return;
        }
        let _ = self.ring.submit();
        // SAFETY: as above.
        if unsafe { self.ring.submission().push(&e) }.is_err() {
            self.overflow.push_back(e);
        }
    }

    fn flush_overflow(&mut self) {
        while let Some(e) = self.overflow.front() {
            // SAFETY: see `push`.
            if unsafe { self.ring.submission().push(e) }.is_err() {
                let _ = self.ring.submit();
                // SAFETY: see `push`.
                if unsafe { self.ring.submission().push(e) }.is_err() {
                    return;
                }
            }
            self.overflow.pop_front();
        }
    }

    fn cancel(&mut self, user_data: u64) {
        let e = opcode::AsyncCancel::new(user_data).build().user_data(
            UserData::decode(user_data).map_or(0, |u| {
                UserData {
                    op: Op::Cancel,
                    ..u
                }
                .encode()
            }),
        );
        self.push(e);
    }

    fn arm_accept(&mut self, li: usize) {
        let Some(l) = self.listeners.get_mut(li) else {
            return;
        };
        let Some(fd) = l.fd.as_ref().map(std::os::fd::AsRawFd::as_raw_fd) else {
            return;
        };
        l.armed = true;
        l.rearm_at = None;
        let e = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
            .build()
            .user_data(listener_ud(li));
        self.push(e);
    }

    fn arm_wake(&mut self) {
        self.wake_armed = true;
        let e = opcode::PollAdd::new(types::Fd(self.stop.fd().as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(
                UserData {
                    op: Op::Wake,
                    slot: 0,
                    gen16: 0,
                    aux: 0,
                }
                .encode(),
            );
        self.push(e);
    }

    fn arm_recv(&mut self, sid: Id) {
        let Some(s) = self.socks.get_mut(sid) else {
            return;
        };
        if s.recv_armed() || s.fd < 0 {
            return;
        }
        s.recv = RecvState::Armed;
        s.inflight += 1;
        // Upstream sockets (attached, parking or pooled) read responses into the large buffers.
        let bgid = match s.owner() {
            Owner::Conn {
                side: Side::Down, ..
            } => BGID,
            _ => UP_BGID,
        };
        s.recv_bgid = bgid as u8;
        let e = on_sock!(s, sid, |t| opcode::RecvMulti::new(t, bgid).build()).user_data(ud(
            Op::Recv,
            sid,
            bgid as u8,
        ));
        self.push(e);
    }

    /// Puts a new socket into the fixed file slot of its socket slot's index, when the table
    /// has one. The update runs before every operation queued after it (submission order), so
    /// those name the slot. Only a failure completes (`Op::FilesUpdate`).
    fn register_fixed(&mut self, sid: Id) {
        let Some(s) = self.socks.get_mut(sid) else {
            return;
        };
        let Ok(offset) = i32::try_from(sid.idx) else {
            return;
        };
        let Some(entry) = self.fixed_fds.get_mut(sid.idx as usize) else {
            return;
        };
        if s.fd < 0 {
            return;
        }
        *entry = s.fd;
        s.fixed = true;
        let e = opcode::FilesUpdate::new(entry, 1)
            .offset(offset)
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(ud(Op::FilesUpdate, sid, 0));
        bump(&self.stats.fixed_files);
        self.push(e);
    }

    fn cancel_recv(&mut self, sid: Id) {
        let Some(s) = self.socks.get_mut(sid) else {
            return;
        };
        if s.recv == RecvState::Armed {
            s.recv = RecvState::Cancelling;
            let aux = s.recv_bgid;
            self.cancel(ud(Op::Recv, sid, aux));
        }
    }

    /// Closes a socket: cancels its operations and queues the close behind them. The slot is
    /// freed when the last operation completed.
    fn close_sock(&mut self, sid: Id) {
        let Some(s) = self.socks.get_mut(sid) else {
            return;
        };
        if s.owner() == Owner::Closing {
            return;
        }
        s.set_owner(Owner::Closing);
        let fd = std::mem::replace(&mut s.fd, -1);
        let mut ops: [Option<(Op, u8)>; 4] = [None; 4];
        if s.recv == RecvState::Armed {
            ops[0] = Some((Op::Recv, s.recv_bgid));
        }
        if s.sending() {
            ops[1] = Some((Op::Send, 0));
        }
        if s.idle_armed {
            ops[2] = Some((Op::IdleRecv, s.pool_epoch));
        }
        if s.connecting {
            ops[3] = Some((Op::Connect, 0));
        }
        for (op, aux) in ops.into_iter().flatten() {
            self.cancel(ud(op, sid, aux));
        }
        if let Some(s) = self.socks.get_mut(sid)
            && std::mem::take(&mut s.fixed)
        {
            // Empties the fixed slot; the socket slot waits for it (see `Op::CloseFixed`).
            s.inflight += 1;
            let e = opcode::Close::new(types::Fixed(sid.idx))
                .build()
                .user_data(ud(Op::CloseFixed, sid, 0));
            self.push(e);
        }
        if fd >= 0 {
            let e = opcode::Close::new(types::Fd(fd))
                .build()
                .user_data(ud(Op::Close, sid, 0));
            self.push(e);
        }
        self.maybe_free(sid);
    }

    fn maybe_free(&mut self, sid: Id) {
        let done = self
            .socks
            .get(sid)
            .is_some_and(|s| s.owner() == Owner::Closing && s.inflight == 0);
        if done && let Some(s) = self.socks.remove(sid) {
            self.recycle_out(s.out);
        }
    }

    fn recycle_out(&mut self, out: Option<Box<Outgoing>>) {
        if let Some(mut o) = out
            && self.send_free.len() < SEND_FREE_MAX
        {
            o.buf.clear();
            o.lent_at = None;
            o.in_flight = false;
            self.send_free.push(o);
        }
    }

    // ---- main loop ----

    pub fn run(&mut self) -> Result<(), UringError> {
        if !self.accept_paused {
            for li in 0..self.listeners.len() {
                self.arm_accept(li);
            }
        }
        self.arm_wake();
        let result = self.event_loop();
        self.teardown();
        result
    }

    fn event_loop(&mut self) -> Result<(), UringError> {
        loop {
            self.stop.beat();
            let now = Instant::now();
            self.sweep_departed_endpoints();
            if !self.drain.is_draining() && self.stop.is_stopped() {
                self.begin_stop(now);
            }
            if self.accept_paused && !self.drain.is_draining() && self.stop.accepting() {
                // "Go": from now on the listeners' queues are this process's.
                self.accept_paused = false;
                for li in 0..self.listeners.len() {
                    self.arm_accept(li);
                }
            }
            match self.drain.step(now, !self.conns.is_empty()) {
                DrainStep::Serving | DrainStep::Draining => {}
                DrainStep::Done => return Ok(()),
                DrainStep::CutOff => {
                    for cid in self.conns.ids() {
                        self.finish_conn(cid);
                    }
                    return Ok(());
                }
            }
            for cid in std::mem::take(&mut self.resync) {
                self.sync(cid, now);
            }
            self.flush_overflow();
            let wait = if self.resync.is_empty() {
                // Bounded, so an idle worker still turns and shows its heartbeat.
                let tick = now + HEARTBEAT_TICK;
                let at = self.next_wakeup().map_or(tick, |t| t.min(tick));
                Some(at.saturating_duration_since(now))
            } else {
                Some(Duration::ZERO)
            };
            self.enter(wait)?;
            self.drain_completions();
            let now = Instant::now();
            self.run_timers(now);
            self.expire_pool(now);
            self.rearm_listeners(now);
            self.rearm_starved(now);
        }
    }

    /// Arms again the receives that ran out of buffers, oldest first, at most as many per
    /// group and turn as the group has buffers: by now the turn has given back every buffer
    /// its completions used, and a socket that ran dry most likely holds at least a buffer's
    /// worth. The rest wait for the next turn, which the completions of these bring.
    fn rearm_starved(&mut self, now: Instant) {
        for group in 0..2 {
            let budget = if group == 1 {
                self.up_bufs.entries()
            } else {
                self.bufs.entries()
            };
            for _ in 0..budget {
                let Some(sid) = self.starved[group].pop_front() else {
                    break;
                };
                let Some(s) = self.socks.get_mut(sid) else {
                    continue;
                };
                if s.recv != RecvState::Starved {
                    continue;
                }
                s.recv = RecvState::Off;
                match s.owner() {
                    Owner::Conn { conn, .. } => self.sync(conn, now),
                    Owner::Pooled => self.arm_recv(sid),
                    Owner::Parking | Owner::Closing => {}
                }
            }
        }
    }

    /// One `io_uring_enter`: submits everything queued and waits for a completion or `wait`.
    fn enter(&mut self, wait: Option<Duration>) -> Result<(), UringError> {
        let r = match wait {
            Some(d) => {
                let ts = types::Timespec::from(d);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submit_and_wait(1),
        };
        match r {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(UringError::Enter(e)),
        }
    }

    fn drain_completions(&mut self) {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        let now = Instant::now();
        for &(user_data, res, flags) in &cqes {
            self.complete(user_data, res, flags, now);
        }
        self.cqes = cqes;
    }

    fn next_wakeup(&mut self) -> Option<Instant> {
        [
            self.timers.next(),
            self.pool.next_expiry(),
            self.drain.deadline(),
            self.listeners.iter().filter_map(|l| l.rearm_at).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn run_timers(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.scratch);
        due.clear();
        while let Some((_, cid)) = self.timers.pop_due(now) {
            if self.conns.get(cid).is_some() {
                due.push(cid);
            }
        }
        for &cid in &due {
            if let Some(c) = self.conns.get(cid)
                && c.up_handshake
                && let Some(up) = c.up
                && let Some(s) = self.socks.get(up)
                && s.handshaking()
                && s.args
                    .as_ref()
                    .and_then(|a| a.tls_until)
                    .is_some_and(|t| t.get() <= now)
            {
                self.fail_tls(
                    cid,
                    up,
                    HANDSHAKE_TIMED_OUT,
                    UpstreamError::ConnectTimeout,
                    now,
                );
            }
            let Driver { conns, cx, .. } = self;
            if let Some(c) = conns.get_mut(cid)
                && !c.closing.started()
                && c.h.deadline().is_some_and(|d| d <= now)
            {
                c.h.on_timer(cx, now);
            }
            self.sync(cid, now);
        }
        self.scratch = due;
        // One entry per connection with a deadline, removed with the connection.
        debug_assert!(self.timers.len() <= self.conns.len());
    }

    /// Closes idle pooled connections to endpoints that left the routing table.
    fn sweep_departed_endpoints(&mut self) {
        let epoch = H::endpoints_epoch(self.cx);
        let cx = &mut *self.cx;
        for sid in self
            .pool
            .sweep_departed(epoch, |key| H::keep_pooled(cx, key))
        {
            self.close_sock(sid);
        }
    }

    fn expire_pool(&mut self, now: Instant) {
        for sid in self.pool.expire(now) {
            self.close_sock(sid);
        }
    }

    fn rearm_listeners(&mut self, now: Instant) {
        if self.drain.is_draining() {
            return;
        }
        for li in 0..self.listeners.len() {
            let due = self
                .listeners
                .get(li)
                .is_some_and(|l| !l.armed && l.rearm_at.is_some_and(|t| t <= now));
            if due {
                self.arm_accept(li);
            }
        }
    }

    fn begin_stop(&mut self, now: Instant) {
        // The grace in force now (a reload may have changed it since the worker started).
        if !self
            .drain
            .begin(now, self.stop.grace(), self.opts.drain_timeout)
        {
            return;
        }
        for li in 0..self.listeners.len() {
            let Some(l) = self.listeners.get_mut(li) else {
                continue;
            };
            let armed = l.armed;
            let fd = l.fd.take();
            l.rearm_at = None;
            if armed {
                self.cancel(listener_ud(li));
            }
            if let Some(fd) = fd {
                let e = opcode::Close::new(types::Fd(fd.into_raw_fd()))
                    .build()
                    .user_data(Op::Close as u64);
                self.push(e);
            }
        }
        for sid in self.pool.clear() {
            self.close_sock(sid);
        }
        H::begin_drain(self.cx);
        for cid in self.conns.ids() {
            let Driver { conns, cx, .. } = self;
            if let Some(c) = conns.get_mut(cid)
                && !c.closing.started()
            {
                c.h.on_drain(cx, now);
            }
            self.sync(cid, now);
        }
    }

    /// Cancels whatever is still in flight and waits (bounded) until the kernel no longer
    /// references our memory; only then is the buffer ring unregistered and freed.
    fn teardown(&mut self) {
        // Nothing is re-armed from here on.
        self.drain
            .begin(Instant::now(), Some(Duration::ZERO), Duration::ZERO);
        for cid in self.conns.ids() {
            self.finish_conn(cid);
        }
        for sid in self.pool.clear() {
            self.close_sock(sid);
        }
        for sid in self.socks.ids() {
            self.close_sock(sid);
        }
        for l in &mut self.listeners {
            // Closed synchronously: nothing is queued behind a listener at this point
            // except its cancelled accept, which holds its own file reference.
            l.fd.take();
        }
        let any = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(
                UserData {
                    op: Op::Cancel,
                    slot: 0,
                    gen16: 0,
                    aux: 0,
                }
                .encode(),
            );
        self.push(any);
        let deadline = Instant::now() + TEARDOWN_WAIT;
        loop {
            self.flush_overflow();
            let busy = !self.socks.is_empty()
                || self.wake_armed
                || self.listeners.iter().any(|l| l.armed)
                || !self.overflow.is_empty();
            let now = Instant::now();
            if !busy || now >= deadline {
                break;
            }
            if self.enter(Some(Duration::from_millis(50))).is_err() {
                break;
            }
            self.drain_completions();
        }
        let _ = self.ring.submit();
        let idle = self.socks.is_empty()
            && !self.wake_armed
            && !self.listeners.iter().any(|l| l.armed)
            && self.overflow.is_empty();
        if idle {
            // On failure the buffer memory is leaked rather than freed under the kernel.
            let _ = self.bufs.unregister(&self.ring.submitter());
            let _ = self.up_bufs.unregister(&self.ring.submitter());
        }
    }

    // ---- completions ----

    fn complete(&mut self, user_data: u64, res: i32, flags: u32, now: Instant) {
        let Some(u) = UserData::decode(user_data) else {
            // Never produced by this driver; a buffer it names (of an unknown group) is kept
            // out of circulation rather than returned to the wrong ring.
            return;
        };
        match u.op {
            Op::Accept => self.on_accept(u.slot as usize, res, flags, now),
            Op::Wake => {
                self.wake_armed = false;
                // A resume also wakes the loop: clear the eventfd so the re-armed poll waits.
                self.stop.clear();
                if !self.stop.is_stopped() && !self.drain.is_draining() {
                    self.arm_wake();
                }
            }
            Op::Cancel | Op::Close => {}
            Op::FilesUpdate => {
                // Only a failure completes (`CQE_SKIP_SUCCESS`): the socket's later operations
                // name its fd; those already queued on the slot fail as any I/O error does.
                if let Some(sid) = self.socks.find16(u.slot, u.gen16)
                    && let Some(s) = self.socks.get_mut(sid)
                {
                    s.fixed = false;
                }
            }
            Op::Recv | Op::Send | Op::Connect | Op::LinkTimeout | Op::IdleRecv | Op::CloseFixed => {
                let Some(sid) = self.socks.find16(u.slot, u.gen16) else {
                    if let Some(bid) = cqueue::buffer_select(flags) {
                        // Nobody reads these bytes, but the buffer's fill position moves on.
                        self.ring_of(u.aux)
                            .advance(bid, usize::try_from(res).unwrap_or(0));
                        self.recycle(u.aux, bid, flags);
                    }
                    return;
                };
                match u.op {
                    Op::Recv => self.on_recv(sid, u.aux, res, flags, now),
                    Op::Send => self.on_send(sid, res, now),
                    Op::Connect => self.on_connect(sid, res, now),
                    Op::IdleRecv => self.on_idle_recv(sid, u.aux, res),
                    _ => {
                        if let Some(s) = self.socks.get_mut(sid) {
                            s.inflight = s.inflight.saturating_sub(1);
                        }
                    }
                }
                self.maybe_free(sid);
            }
        }
    }

    fn on_accept(&mut self, li: usize, res: i32, flags: u32, now: Instant) {
        let more = cqueue::more(flags);
        let Some(l) = self.listeners.get_mut(li) else {
            if res >= 0 {
                self.close_raw(res);
            }
            return;
        };
        if !more {
            l.armed = false;
        }
        if res >= 0 {
            self.accepted(li, res, now);
        } else if matches!(
            -res,
            libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
        ) && let Some(l) = self.listeners.get_mut(li)
        {
            l.rearm_at = Some(now + ACCEPT_BACKOFF);
        }
        let rearm = self
            .listeners
            .get(li)
            .is_some_and(|l| !l.armed && l.rearm_at.is_none() && l.fd.is_some());
        if rearm && !self.drain.is_draining() {
            self.arm_accept(li);
        }
    }

    fn close_raw(&mut self, fd: RawFd) {
        let e = opcode::Close::new(types::Fd(fd))
            .build()
            .user_data(Op::Close as u64);
        self.push(e);
    }

    fn accepted(&mut self, li: usize, fd: RawFd, now: Instant) {
        // A connection the kernel completed before the accept's cancellation is served (born
        // draining): closing it would lose a request the client already sent.
        if !self.limit.try_acquire() {
            bump(&self.stats.refused);
            H::on_refused(self.cx);
            self.close_raw(fd);
            return;
        }
        // SAFETY: `fd` was just returned by accept and is open; ManuallyDrop keeps the Socket
        // from closing it (the driver closes it through the ring).
        let sock = ManuallyDrop::new(unsafe { Socket::from_raw_fd(fd) });
        let peer = sock.peer_addr().ok().and_then(|a| a.as_socket());
        let local = sock.local_addr().ok().and_then(|a| a.as_socket());
        let (Some(peer), Some(local)) = (peer, local) else {
            self.limit.release();
            self.close_raw(fd);
            return;
        };
        let _ = sock.set_tcp_nodelay(true);
        let listener = self.listeners.get(li).map_or(li, |l| l.index);
        let acceptor = self.listeners.get(li).and_then(|l| l.tls.as_ref());
        let info = ConnInfo {
            peer,
            local,
            listener,
            tls: acceptor.is_some(),
            sni: None,
        };
        let session = match acceptor.map(|a| a.accept()) {
            None => None,
            Some(Ok(session)) => Some(session),
            Some(Err(_)) => {
                self.limit.release();
                self.close_raw(fd);
                return;
            }
        };
        let h = Layer::open(self.cx, info, session, now, self.opts.tls_handshake_timeout);
        bump(&self.stats.accepted);
        let sid = self.socks.insert(Sock::new(fd, Owner::Closing, true));
        let cid = self.conns.insert(Conn {
            h,
            down: sid,
            up: None,
            up_handshake: false,
            closing: Closing::new(),
        });
        if let Some(s) = self.socks.get_mut(sid) {
            s.set_owner(Owner::Conn {
                conn: cid,
                side: Side::Down,
            });
        }
        self.register_fixed(sid);
        self.sync(cid, now);
    }

    /// The buffer ring of group `bgid` (the `aux` of a receive).
    fn ring_of(&mut self, bgid: u8) -> &mut BufRing {
        if u16::from(bgid) == UP_BGID {
            &mut self.up_bufs
        } else {
            &mut self.bufs
        }
    }

    /// Done with the bytes of a completion that named buffer `bid`.
    fn recycle(&mut self, bgid: u8, bid: u16, flags: u32) {
        self.ring_of(bgid).release(bid, cqueue::buffer_more(flags));
    }

    fn on_recv(&mut self, sid: Id, bgid: u8, res: i32, flags: u32, now: Instant) {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        // Where this completion's bytes begin in the buffer (incremental consumption).
        let start = bid.map_or(0, |bid| {
            self.ring_of(bgid)
                .advance(bid, usize::try_from(res).unwrap_or(0))
        });
        let Some(s) = self.socks.get_mut(sid) else {
            if let Some(bid) = bid {
                self.recycle(bgid, bid, flags);
            }
            return;
        };
        let owner = s.owner();
        if !more {
            // A receive that ran out of buffers is armed again once the turn has given
            // buffers back (`rearm_starved`), not at once: against an empty ring it would fail
            // the same way, one wasted submission after another.
            let starved = res == -libc::ENOBUFS
                && s.recv == RecvState::Armed
                && matches!(owner, Owner::Conn { .. } | Owner::Pooled);
            s.recv = if starved {
                RecvState::Starved
            } else {
                RecvState::Off
            };
            s.inflight = s.inflight.saturating_sub(1);
            if starved {
                self.starved[usize::from(u16::from(bgid) == UP_BGID)].push_back(sid);
            }
        }
        if res == -libc::ENOBUFS {
            bump(&self.stats.recv_no_buffer);
        }
        let benign = res == -libc::ENOBUFS || res == -libc::ECANCELED;
        match owner {
            Owner::Conn { conn, side } => {
                let tls = side == Side::Up && s.tls().is_some();
                if res > 0 {
                    match bid {
                        Some(bid) if tls => {
                            self.deliver_tls(conn, sid, bgid, (bid, start), res as usize, now)
                        }
                        Some(bid) => {
                            self.deliver_data(
                                conn,
                                side,
                                sid,
                                bgid,
                                (bid, start),
                                res as usize,
                                now,
                            );
                        }
                        None => self.deliver_error(conn, side, sid, now),
                    }
                } else if res == 0 && tls {
                    self.deliver_tls_eof(conn, sid, now);
                } else if res == 0 {
                    self.deliver_eof(conn, side, sid, now);
                } else if !benign {
                    self.deliver_error(conn, side, sid, now);
                }
                if let Some(bid) = bid {
                    self.recycle(bgid, bid, flags);
                }
                self.sync(conn, now);
                // Bytes still held back after the contract ran are not wanted: stop reading
                // until the handler wants more (`sync_reads` arms again).
                if let Some(s) = self.socks.get(sid)
                    && s.recv == RecvState::Armed
                    && s.stashed()
                    && s.owner() == owner
                {
                    bump(&self.stats.recv_paused);
                    self.cancel_recv(sid);
                }
            }
            Owner::Parking => {
                if !benign {
                    s.failed = true;
                }
                if let Some(bid) = bid {
                    self.recycle(bgid, bid, flags);
                }
                if !more {
                    self.park_done(sid, now);
                }
            }
            Owner::Pooled => {
                if let Some(bid) = bid {
                    self.recycle(bgid, bid, flags);
                }
                if !benign {
                    self.drop_stale(sid);
                }
            }
            Owner::Closing => {
                if let Some(bid) = bid {
                    self.recycle(bgid, bid, flags);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn deliver_data(
        &mut self,
        cid: Id,
        side: Side,
        sid: Id,
        bgid: u8,
        (bid, start): (u16, usize),
        len: usize,
        now: Instant,
    ) {
        let Driver {
            conns,
            socks,
            bufs,
            up_bufs,
            cx,
            ..
        } = self;
        let bufs = if u16::from(bgid) == UP_BGID {
            up_bufs
        } else {
            bufs
        };
        let (Some(c), Some(s)) = (conns.get_mut(cid), socks.get_mut(sid)) else {
            return;
        };
        if c.closing.started() {
            return;
        }
        let Some(data) = bufs.slice(bid, start, len) else {
            // A completion that does not fit its buffer: the stream cannot go on intact.
            self.deliver_error(cid, side, sid, now);
            return;
        };
        if !s.stashed() && wants(&c.h, side) {
            match side {
                Side::Down => c.h.on_downstream_data(cx, data, now),
                Side::Up => c.h.on_upstream_data(cx, data, now),
            }
        } else {
            s.args().stash.extend_from_slice(data);
        }
    }

    /// Ciphertext from an HTTPS upstream: decrypted into the stash (handed over by
    /// `sync_reads` while the handler wants it); completes or fails the handshake.
    fn deliver_tls(
        &mut self,
        cid: Id,
        sid: Id,
        bgid: u8,
        (bid, start): (u16, usize),
        len: usize,
        now: Instant,
    ) {
        let Driver {
            conns,
            socks,
            bufs,
            up_bufs,
            cx,
            ..
        } = self;
        let bufs = if u16::from(bgid) == UP_BGID {
            up_bufs
        } else {
            bufs
        };
        let (Some(c), Some(s)) = (conns.get_mut(cid), socks.get_mut(sid)) else {
            return;
        };
        if c.closing.started() || s.failed {
            return;
        }
        let Some(SockArgs {
            tls: Some(tls),
            stash,
            ..
        }) = s.args.as_deref_mut()
        else {
            return;
        };
        let Some(data) = bufs.slice(bid, start, len) else {
            // A completion that does not fit its buffer: the stream cannot go on intact.
            self.deliver_error(cid, Side::Up, sid, now);
            return;
        };
        if tls.handshake_complete() {
            if tls.on_ciphertext(data).is_err() {
                self.deliver_error(cid, Side::Up, sid, now);
                return;
            }
            tls.take_plaintext(stash);
            return;
        }
        match handshake_input(tls, data) {
            Handshake::Failed(error) => {
                self.fail_tls(cid, sid, &error, UpstreamError::Tls, now);
            }
            Handshake::Running => tls.take_plaintext(stash),
            Handshake::Done => {
                tls.take_plaintext(stash);
                c.up_handshake = false;
                c.h.on_upstream_connected(cx, false, now);
            }
        }
    }

    /// EOF from an HTTPS upstream: fails a running handshake, else ends the stream after the
    /// last plaintext.
    fn deliver_tls_eof(&mut self, cid: Id, sid: Id, now: Instant) {
        let Some(s) = self.socks.get_mut(sid) else {
            return;
        };
        if s.handshaking() {
            s.read_closed = true;
            self.fail_tls(cid, sid, CLOSED_DURING_HANDSHAKE, UpstreamError::Tls, now);
            return;
        }
        if let Some(SockArgs {
            tls: Some(tls),
            stash,
            ..
        }) = s.args.as_deref_mut()
        {
            tls.on_eof();
            tls.take_plaintext(stash);
        }
        self.deliver_eof(cid, Side::Up, sid, now);
    }

    /// The upstream TLS handshake failed or timed out: one log line, close, tell the handler.
    fn fail_tls(&mut self, cid: Id, sid: Id, error: &str, err: UpstreamError, now: Instant) {
        if self.conns.get(cid).map(|c| c.up) != Some(Some(sid)) {
            return;
        }
        if let Some((key, _)) = self.socks.get(sid).and_then(Sock::key) {
            log_handshake_failure(key, error);
        }
        let Some(c) = self.conns.get_mut(cid) else {
            return;
        };
        c.up = None;
        c.up_handshake = false;
        bump(&self.stats.upstream_connect_errors);
        self.close_sock(sid);
        let Driver { conns, cx, .. } = self;
        if let Some(c) = conns.get_mut(cid)
            && !c.closing.started()
        {
            c.h.on_upstream_error(cx, err, now);
        }
    }

    fn deliver_eof(&mut self, cid: Id, side: Side, sid: Id, now: Instant) {
        let Driver {
            conns, socks, cx, ..
        } = self;
        let (Some(c), Some(s)) = (conns.get_mut(cid), socks.get_mut(sid)) else {
            return;
        };
        s.read_closed = true;
        if c.closing.started() {
            return;
        }
        let held = s.args.as_ref().is_some_and(|a| !a.stash.is_empty());
        if !held && wants(&c.h, side) {
            match side {
                Side::Down => c.h.on_downstream_eof(cx, now),
                Side::Up => c.h.on_upstream_eof(cx, now),
            }
        } else {
            s.args().stash_eof = true;
        }
    }

    fn deliver_error(&mut self, cid: Id, side: Side, sid: Id, now: Instant) {
        let Driver {
            conns, socks, cx, ..
        } = self;
        let (Some(c), Some(s)) = (conns.get_mut(cid), socks.get_mut(sid)) else {
            return;
        };
        let first = !s.failed;
        s.read_closed = true;
        s.failed = true;
        if c.closing.started() || !first {
            return;
        }
        match side {
            Side::Down => c.h.on_downstream_error(cx, now),
            Side::Up => c.h.on_upstream_error(cx, UpstreamError::Io, now),
        }
    }

    fn on_send(&mut self, sid: Id, res: i32, now: Instant) {
        let Some(s) = self.socks.get_mut(sid) else {
            return;
        };
        s.inflight = s.inflight.saturating_sub(1);
        let mut out = s.out.take();
        let start = out
            .as_mut()
            .and_then(|o| o.lent_at.take())
            .map(|at| at as usize);
        let sent = out
            .as_ref()
            .map_or(0, |o| o.buf.len())
            .saturating_sub(start.unwrap_or(0));
        if let (Some(at), Some(o)) = (start, out.as_mut())
            && res > 0
            && (res as usize) < sent
        {
            // A short send of lent bytes: the rest goes out from the same buffer next.
            let rest = at + res as usize;
            if rest < o.buf.len()
                && let Ok(rest) = u32::try_from(rest)
            {
                o.lent_at = Some(rest);
                o.in_flight = false;
                s.out = out.take();
            }
        }
        let owner = s.owner();
        self.recycle_out(out);
        let Owner::Conn { conn, side } = owner else {
            return;
        };
        if res > 0 && (res as usize) <= sent {
            if side == Side::Up
                && let Some(tls) = self
                    .socks
                    .get_mut(sid)
                    .and_then(|s| s.args.as_mut())
                    .and_then(|a| a.tls.as_mut())
            {
                tls.sent(res as usize);
                self.sync(conn, now);
                return;
            }
            let Driver { conns, cx, .. } = self;
            if let Some(c) = conns.get_mut(conn) {
                match side {
                    Side::Down => c.h.downstream_written(cx, res as usize, now),
                    Side::Up => c.h.upstream_written(cx, res as usize, now),
                }
            }
        } else {
            self.deliver_error(conn, side, sid, now);
        }
        self.sync(conn, now);
    }

    fn on_connect(&mut self, sid: Id, res: i32, now: Instant) {
        let Some(s) = self.socks.get_mut(sid) else {
            return;
        };
        s.inflight = s.inflight.saturating_sub(1);
        s.connecting = false;
        let Owner::Conn {
            conn,
            side: Side::Up,
        } = s.owner()
        else {
            return;
        };
        if res == 0 {
            s.connected = true;
            let Driver {
                conns,
                socks,
                cx,
                timers,
                ..
            } = self;
            // An HTTPS upstream starts its handshake, bounded by the connect timeout.
            let started = socks
                .get(sid)
                .filter(|_| conns.get(conn).is_some_and(|c| c.up == Some(sid)))
                .and_then(Sock::key)
                .map(|(key, limits)| leg::start_tls(key, limits, now));
            match started {
                None | Some(Ok(None)) => {
                    if let Some(c) = conns.get_mut(conn) {
                        c.h.on_upstream_connected(cx, false, now);
                    }
                }
                Some(Ok(Some((client, until)))) => {
                    let until = until.map(Slim::from);
                    if let Some(s) = socks.get_mut(sid) {
                        let a = s.args();
                        a.tls = Some(Box::new(client));
                        a.tls_until = until;
                    }
                    if let Some(c) = conns.get_mut(conn)
                        && let Some(until) = until
                    {
                        c.up_handshake = true;
                        if timers.get(conn).is_none_or(|t| until < t) {
                            timers.set(conn, until);
                        }
                    }
                }
                Some(Err(error)) => {
                    self.fail_tls(conn, sid, &error, UpstreamError::Tls, now);
                }
            }
        } else {
            let err = if res == -libc::ECANCELED {
                UpstreamError::ConnectTimeout
            } else {
                UpstreamError::Connect
            };
            bump(&self.stats.upstream_connect_errors);
            if let Some(c) = self.conns.get_mut(conn)
                && c.up == Some(sid)
            {
                c.up = None;
            }
            self.close_sock(sid);
            let Driver { conns, cx, .. } = self;
            if let Some(c) = conns.get_mut(conn)
                && !c.closing.started()
            {
                c.h.on_upstream_error(cx, err, now);
            }
        }
        self.sync(conn, now);
    }

    fn on_idle_recv(&mut self, sid: Id, aux: u8, res: i32) {
        let Some(s) = self.socks.get_mut(sid) else {
            return;
        };
        s.inflight = s.inflight.saturating_sub(1);
        if aux != s.pool_epoch {
            return;
        }
        s.idle_armed = false;
        if s.owner() == Owner::Pooled && res != -libc::ECANCELED {
            // Data, EOF or an error on an idle connection: the peer is done with it.
            self.drop_stale(sid);
        }
    }

    fn drop_stale(&mut self, sid: Id) {
        self.pool.remove(sid);
        bump(&self.stats.pool_stale);
        self.close_sock(sid);
    }

    // ---- the driver contract, after every callback ----

    fn sync(&mut self, cid: Id, now: Instant) {
        for _ in 0..SYNC_ROUNDS {
            loop {
                let Some(c) = self.conns.get_mut(cid) else {
                    return;
                };
                let Some(action) = c.h.poll_action() else {
                    break;
                };
                self.do_action(cid, action, now);
            }
            let Some(c) = self.conns.get(cid) else {
                return;
            };
            if c.closing.started() || c.h.is_closed() {
                self.sync_finishing(cid, now);
                return;
            }
            self.pump_send(cid, Side::Down, now);
            self.pump_send(cid, Side::Up, now);
            if self.sync_reads(cid, now) {
                continue;
            }
            self.sync_timer(cid);
            return;
        }
        self.resync.push(cid);
    }

    fn do_action(&mut self, cid: Id, action: Action, now: Instant) {
        match action {
            Action::ConnectUpstream { key, limits } => self.connect_upstream(cid, key, limits, now),
            Action::ReleaseUpstream { reusable } => self.release_upstream(cid, reusable, now),
            Action::CloseDownstream { flush, linger } => {
                if let Some(c) = self.conns.get_mut(cid) {
                    c.closing.request(flush, linger);
                }
            }
        }
    }

    /// The handler is closed: carries out the session's close state machine
    /// ([`Closing::step`]) — flush the last bytes (when the handler asked for a flushed
    /// close), shut down the write side and keep reading and discarding what the client still
    /// sends for `lingering_close` (so a reset does not destroy the response), then free it.
    fn sync_finishing(&mut self, cid: Id, now: Instant) {
        let Some(c) = self.conns.get_mut(cid) else {
            return;
        };
        let first = c.closing.begin(now, self.opts.flush_timeout);
        // An upstream still attached when the handler closes is not reusable.
        let up = c.up.take();
        let down = c.down;
        let graceful = c.closing.graceful();
        let lent = self.socks.get(c.down).is_some_and(Sock::lent);
        let output_pending = lent || !c.h.downstream_out().is_empty();
        if let Some(up) = up {
            self.close_sock(up);
        }
        if first && !graceful {
            self.cancel_recv(down);
        }
        let Some(s) = self.socks.get(down) else {
            self.finish_conn(cid);
            return;
        };
        let usable = !s.failed && s.fd >= 0;
        let facts = CloseFacts {
            output_pending,
            socket_ok: usable,
            read_open: usable && !s.read_closed,
        };
        let fd = s.fd;
        let Some(c) = self.conns.get_mut(cid) else {
            return;
        };
        let until = match c.closing.step(now, facts, self.opts.lingering_close) {
            CloseStep::Free => {
                self.finish_conn(cid);
                return;
            }
            CloseStep::Flush { until } => {
                self.pump_send(cid, Side::Down, now);
                until
            }
            CloseStep::Linger { until, shutdown } => {
                if shutdown {
                    // SAFETY: `fd` is open (owned by this socket slot until its ring close);
                    // ManuallyDrop keeps the Socket from closing it.
                    let sock = ManuallyDrop::new(unsafe { Socket::from_raw_fd(fd) });
                    let _ = sock.shutdown(std::net::Shutdown::Write);
                }
                // Lingering: keep a receive armed; what arrives is dropped.
                self.arm_recv(down);
                until
            }
        };
        let until = Slim::from(until);
        if self.timers.get(cid).is_none_or(|t| until < t) {
            self.timers.set(cid, until);
        }
    }

    fn finish_conn(&mut self, cid: Id) {
        let Some(c) = self.conns.remove(cid) else {
            return;
        };
        self.timers.remove(cid);
        if let Some(up) = c.up {
            self.close_sock(up);
        }
        self.close_sock(c.down);
        self.limit.release();
        bump(&self.stats.closed);
    }

    fn pump_send(&mut self, cid: Id, side: Side, now: Instant) {
        let Driver {
            conns,
            socks,
            send_free,
            opts,
            cx,
            ..
        } = self;
        let Some(c) = conns.get_mut(cid) else {
            return;
        };
        let Some(sid) = (match side {
            Side::Down => Some(c.down),
            Side::Up => c.up,
        }) else {
            return;
        };
        let Some(s) = socks.get_mut(sid) else {
            return;
        };
        if s.sending()
            || !s.connected
            || s.failed
            || s.fd < 0
            || s.owner() != (Owner::Conn { conn: cid, side })
        {
            return;
        }
        if let Some(at) = s.out.as_ref().and_then(|o| o.lent_at)
            && let Some(o) = s.out.take()
        {
            // Lent bytes wait after a short send.
            self.submit_send(sid, o, at as usize);
            return;
        }
        // Small output is copied (the handler lends only from LEND_HINT bytes on).
        if side == Side::Down && c.h.downstream_out().len() >= LEND_HINT {
            let mut o = send_free.pop().unwrap_or_default();
            o.buf.clear();
            if c.h.lend_downstream_out(&mut o.buf) {
                // The handler's bytes moved into the buffer without a copy.
                self.submit_send(sid, o, 0);
                return;
            }
            send_free.push(o);
        }
        let tls = match side {
            Side::Up => s.args.as_mut().and_then(|a| a.tls.as_deref_mut()),
            Side::Down => None,
        };
        let out = match (side, tls) {
            (Side::Up, Some(tls)) => {
                if tls.handshake_complete() && leg::seal_upstream(tls, &mut c.h, cx, now).is_err() {
                    // Only after a local close: the connection is done for.
                    s.failed = true;
                }
                tls.pending_out()
            }
            (Side::Down, _) => c.h.downstream_out(),
            (Side::Up, None) => c.h.upstream_out(),
        };
        if out.is_empty() || s.failed {
            return;
        }
        let cap = opts.send_buffer_size.max(1);
        let n = out.len().min(cap).min(u32::MAX as usize);
        // Sized to what it carries (a pooled buffer keeps the largest size it has carried): a
        // close_notify or a small response does not cost a `send_buffer_size` block per
        // connection, which thousands of connections closing at once would multiply.
        let mut o = send_free.pop().unwrap_or_default();
        o.buf.clear();
        o.buf.extend_from_slice(out.get(..n).unwrap_or(out));
        self.submit_send(sid, o, usize::MAX);
    }

    /// Sends `o.buf[at..]` (a lent buffer), or all of `o.buf` (`at == usize::MAX`: a copy).
    fn submit_send(&mut self, sid: Id, mut o: Box<Outgoing>, at: usize) {
        let Some(s) = self.socks.get_mut(sid) else {
            self.recycle_out(Some(o));
            return;
        };
        // Lent buffers are at most u32::MAX bytes long (the handler lends no longer ones), so
        // the start fits; anything else is sent as a copy from its beginning.
        let (from, lent) = match u32::try_from(at) {
            Ok(a) if at != usize::MAX => (at.min(o.buf.len()), Some(a)),
            _ => (0, None),
        };
        let bytes = o.buf.get(from..).unwrap_or_default();
        let len = bytes.len().min(u32::MAX as usize) as u32;
        let e = on_sock!(s, sid, |t| opcode::Send::new(t, bytes.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build())
        .user_data(ud(Op::Send, sid, 0));
        // The buffer is not touched again until the send completes, so its heap block (which
        // the entry points at) stays where it is even if the Sock itself moves.
        o.lent_at = lent;
        o.in_flight = true;
        s.out = Some(o);
        s.inflight += 1;
        self.push(e);
    }

    /// Arms or cancels receives per the handler's interest and hands over held bytes. Returns
    /// true when a handler callback was made (the caller runs the contract again).
    fn sync_reads(&mut self, cid: Id, now: Instant) -> bool {
        for side in [Side::Down, Side::Up] {
            let Driver {
                conns, socks, cx, ..
            } = self;
            let Some(c) = conns.get_mut(cid) else {
                return false;
            };
            let Some(sid) = (match side {
                Side::Down => Some(c.down),
                Side::Up => c.up,
            }) else {
                continue;
            };
            let Some(s) = socks.get_mut(sid) else {
                continue;
            };
            if s.owner() != (Owner::Conn { conn: cid, side }) || !s.connected {
                continue;
            }
            if side == Side::Up && s.handshaking() {
                // The handshake reads regardless of the handler's interest.
                if s.recv == RecvState::Off && !s.read_closed && s.fd >= 0 {
                    self.arm_recv(sid);
                }
                continue;
            }
            let want = wants(&c.h, side);
            if want
                && let Some(a) = s.args.as_mut()
                && !a.stash.is_empty()
            {
                let data = std::mem::take(&mut a.stash);
                match side {
                    Side::Down => c.h.on_downstream_data(cx, &data, now),
                    Side::Up => c.h.on_upstream_data(cx, &data, now),
                }
                return true;
            }
            if want
                && let Some(a) = s.args.as_mut()
                && a.stash_eof
            {
                a.stash_eof = false;
                match side {
                    Side::Down => c.h.on_downstream_eof(cx, now),
                    Side::Up => c.h.on_upstream_eof(cx, now),
                }
                return true;
            }
            let (armed, closed) = (s.recv_armed(), s.read_closed || s.fd < 0);
            // A receive the handler does not want now stays armed: the peer usually sends
            // nothing meanwhile (a client awaiting its response, an upstream whose response
            // is read), and a cancel and a re-arm would cost two submissions and three
            // completions each time. Bytes that do arrive are held back and cancel it then
            // (`on_recv`).
            if want && !armed && !closed && s.recv != RecvState::Starved {
                self.arm_recv(sid);
            }
        }
        false
    }

    fn sync_timer(&mut self, cid: Id) {
        let Some(c) = self.conns.get_mut(cid) else {
            return;
        };
        let mut wanted = c.h.deadline();
        if c.up_handshake
            && let Some(t) =
                c.up.and_then(|up| self.socks.get(up))
                    .and_then(|s| s.args.as_ref()?.tls_until)
        {
            let t = t.get();
            wanted = Some(wanted.map_or(t, |w| w.min(t)));
        }
        // Compared as instants: converting the entry's deadline is cheaper than converting
        // the handler's, and most calls change nothing.
        if let Some(d) = wanted
            && self.timers.get(cid).is_none_or(|t| d < t.get())
        {
            self.timers.set(cid, Slim::from(d));
        }
    }

    // ---- upstream connections ----

    fn connect_upstream(&mut self, cid: Id, key: PoolKey, limits: PoolLimits, now: Instant) {
        let Some(c) = self.conns.get_mut(cid) else {
            return;
        };
        let old = c.up.take();
        c.up_handshake = false;
        if let Some(old) = old {
            self.close_sock(old);
        }
        let mut dead = std::mem::take(&mut self.scratch);
        dead.clear();
        let socks = &self.socks;
        let hit = self
            .pool
            .checkout(&key, now, &mut dead, |sid| idle_is_live(socks, sid));
        for _ in 0..hit.stale {
            bump(&self.stats.pool_stale);
        }
        for &sid in &dead {
            self.close_sock(sid);
        }
        self.scratch = dead;
        if let Some(sid) = hit.conn {
            let mut cancel_idle = None;
            if let Some(s) = self.socks.get_mut(sid) {
                s.set_owner(Owner::Conn {
                    conn: cid,
                    side: Side::Up,
                });
                if s.idle_armed {
                    cancel_idle = Some(ud(Op::IdleRecv, sid, s.pool_epoch));
                    // A late idle completion carries the old epoch and is ignored.
                    s.idle_armed = false;
                    s.pool_epoch = s.pool_epoch.wrapping_add(1);
                }
            }
            if let Some(u) = cancel_idle {
                self.cancel(u);
            }
            bump(&self.stats.pool_reused);
            let Driver {
                conns, socks, cx, ..
            } = self;
            if let Some(s) = socks.get_mut(sid) {
                s.args().key = Some((key, limits));
            }
            if let Some(c) = conns.get_mut(cid) {
                c.up = Some(sid);
                c.h.on_upstream_connected(cx, true, now);
            }
            return;
        }

        bump(&self.stats.upstream_connects);
        // Not O_NONBLOCK: io_uring makes the connect asynchronous itself, while a non-blocking
        // socket makes a connect the kernel runs from a worker (SQPOLL, punted requests) end
        // with EINPROGRESS instead of the outcome. Every synchronous call the driver makes on
        // it (peek, shutdown) is non-blocking by its flags.
        let socket = Socket::new(
            Domain::for_address(key.endpoint),
            Type::STREAM.cloexec(),
            Some(Protocol::TCP),
        );
        let socket = match socket {
            Ok(s) => s,
            Err(_) => {
                bump(&self.stats.upstream_connect_errors);
                let Driver { conns, cx, .. } = self;
                if let Some(c) = conns.get_mut(cid) {
                    c.h.on_upstream_error(cx, UpstreamError::Connect, now);
                }
                return;
            }
        };
        let _ = socket.set_tcp_nodelay(true);
        let fd = socket.into_raw_fd();
        let sid = self.socks.insert(Sock::new(
            fd,
            Owner::Conn {
                conn: cid,
                side: Side::Up,
            },
            false,
        ));
        let Some(s) = self.socks.get_mut(sid) else {
            return;
        };
        s.connecting = true;
        let args = s.args();
        args.addr = Some(SockAddr::from(key.endpoint));
        args.timeout = types::Timespec::from(limits.connect_timeout);
        let zero_timeout = limits.connect_timeout.is_zero();
        args.key = Some((key, limits));
        let Some(addr) = args.addr.as_ref() else {
            return;
        };
        let (addr_ptr, addr_len) = (addr.as_ptr().cast::<libc::sockaddr>(), addr.len());
        let timespec: *const types::Timespec = &args.timeout;
        self.register_fixed(sid);
        let Some(s) = self.socks.get_mut(sid) else {
            return;
        };
        let connect = on_sock!(s, sid, |t| opcode::Connect::new(t, addr_ptr, addr_len)
            .build())
        .user_data(ud(Op::Connect, sid, 0));
        let timeout = if zero_timeout {
            None
        } else {
            Some(
                opcode::LinkTimeout::new(timespec)
                    .build()
                    .user_data(ud(Op::LinkTimeout, sid, 0)),
            )
        };
        if let Some(t) = timeout {
            s.inflight += 2;
            self.push(connect.flags(squeue::Flags::IO_LINK));
            self.push(t);
        } else {
            s.inflight += 1;
            self.push(connect);
        }
        if let Some(c) = self.conns.get_mut(cid) {
            c.up = Some(sid);
        }
    }

    fn release_upstream(&mut self, cid: Id, reusable: bool, now: Instant) {
        let Some(c) = self.conns.get_mut(cid) else {
            return;
        };
        c.up_handshake = false;
        let Some(sid) = c.up.take() else {
            return;
        };
        let Some(s) = self.socks.get_mut(sid) else {
            return;
        };
        let state = LegState {
            established: s.key().is_some() && s.connected && !s.connecting,
            failed: s.failed,
            eof: s.read_closed,
            unread: s.stashed(),
            unsent: s.out.is_some(),
            tls: s.tls(),
        };
        if !leg::reusable(reusable, self.drain.is_draining(), &state) {
            self.close_sock(sid);
            return;
        }
        if s.recv == RecvState::Armed {
            // The multishot receive stays armed and becomes the idle watch: bytes, EOF or an
            // error on the pooled socket drop it (`on_recv`), and a checkout finds the receive
            // already armed. This saves a cancel, an idle peek, its cancel and a re-arm (four
            // submissions and their completions) per reused request.
            s.set_owner(Owner::Pooled);
            if let Some((key, limits)) = s.args.as_mut().and_then(|a| a.key.take()) {
                self.pool_checkin(sid, key, limits, now);
            }
            return;
        }
        // The key stays with the socket while it parks. A receive waiting for buffers is not
        // armed again: parking arms the idle peek instead.
        if s.recv == RecvState::Starved {
            s.recv = RecvState::Off;
        }
        s.set_owner(Owner::Parking);
        if s.recv_armed() {
            self.cancel_recv(sid);
        } else {
            self.park_done(sid, now);
        }
    }

    /// Puts a pooled socket into the pool; false when the pool closed it (over `max_idle`).
    fn pool_checkin(&mut self, sid: Id, key: PoolKey, limits: PoolLimits, now: Instant) -> bool {
        if let Some(s) = self.socks.get_mut(sid) {
            s.set_owner(Owner::Pooled);
            s.pool_epoch = s.pool_epoch.wrapping_add(1);
        }
        let evicted = self.pool.checkin(key, sid, limits, now);
        if let Some(old) = evicted {
            self.close_sock(old);
            if old == sid {
                return false;
            }
        }
        true
    }

    /// The receive of a released connection is over: pool it (with a peek armed) if nothing
    /// arrived in the meantime.
    fn park_done(&mut self, sid: Id, now: Instant) {
        let Some(s) = self.socks.get_mut(sid) else {
            return;
        };
        if s.owner() != Owner::Parking {
            return;
        }
        let park = s.args.as_mut().and_then(|a| a.key.take());
        let stale = s.failed || s.read_closed || s.stashed();
        let Some((key, limits)) = park.filter(|_| !stale && !self.drain.is_draining()) else {
            if stale {
                bump(&self.stats.pool_stale);
            }
            self.close_sock(sid);
            return;
        };
        if !self.pool_checkin(sid, key, limits, now) {
            return;
        }
        let Some(s) = self.socks.get_mut(sid) else {
            return;
        };
        s.idle_armed = true;
        s.inflight += 1;
        let peek = s.args().peek.as_mut_ptr();
        let e = on_sock!(s, sid, |t| opcode::Recv::new(t, peek, 1)
            .flags(libc::MSG_PEEK)
            .build())
        .user_data(ud(Op::IdleRecv, sid, s.pool_epoch));
        self.push(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_downstream_connection_is_small() {
        // Per idle keep-alive connection the driver holds one connection slot, one socket
        // slot and one timer entry; the upstream part of a socket is only allocated for
        // upstream sockets (or held-back bytes), the send part only while a send runs.
        let per_conn = std::mem::size_of::<Conn<Layer<crate::proxy::core::Conn>>>()
            + std::mem::size_of::<Sock>();
        eprintln!(
            "SIZE uring per_conn {per_conn} conn {}",
            std::mem::size_of::<Conn<Layer<crate::proxy::core::Conn>>>()
        );
        assert!(per_conn <= 248, "{per_conn} bytes per idle connection");
        assert!(std::mem::size_of::<Sock>() <= 40);
        let s = Sock::new(-1, Owner::Closing, true);
        assert!(
            s.args.is_none() && s.out.is_none(),
            "a downstream socket carries no upstream or send part"
        );
        assert!(!s.stashed() && !s.sending() && !s.lent() && s.tls().is_none());
    }
}
