//! The epoll io driver: one event loop per worker thread over non-blocking sockets, running
//! [`ConnHandler`]s by the driver contract of [`crate::proxy::io`].
//!
//! Readiness model: every socket is registered once, edge-triggered, for
//! `IN | OUT | RDHUP`, and never modified. The driver keeps a readiness flag per socket and
//! direction: an event sets it, a read or write that returns `EAGAIN` clears it. A side is read
//! only while the handler's [`Interest`](crate::proxy::io::Interest) asks for it and written
//! only while the handler holds output, so back-pressure costs no `epoll_ctl` calls: a paused
//! side simply keeps its flag until the handler wants it again. A connection that still has
//! work after a fixed budget of steps is queued to run again after the next (non-blocking)
//! wait, so one busy connection cannot starve the others.
//!
//! Buffers: reads go into one worker-wide buffer (`Tuning::read_buffer`) handed to the
//! handler as a slice; writes go straight from `downstream_out()` / `upstream_out()`. The
//! driver holds no per-connection data buffer.
//!
//! Downstream TLS (https listeners) is the session layer's
//! ([`crate::proxy::session::tls::Layer`]), shared with the io_uring driver: the driver runs
//! the layer as the connection's handler and moves ciphertext only; the layer runs the
//! handshake (bounded by `Tuning::tls_handshake_timeout`), creates the real handler once it
//! completed, queues `close_notify` on a flushed close and an alert when the session fails.
//!
//! Upstreams: connects are non-blocking with a timer for the connect timeout. Released
//! connections that the session's reuse rule ([`crate::proxy::session::upstream::reusable`])
//! keeps go to the worker's pool ([`WorkerPool`]: expiry, departed endpoints, the probe rule)
//! and stay registered, so an idle connection that the peer closes (or that receives
//! unexpected bytes) raises an event and is dropped at once; a checkout of a connection idle
//! long enough also peeks the socket (`MSG_PEEK`, non-blocking) before reuse.
//!
//! Upstream TLS (`PoolKey::tls`): once the TCP connect succeeds the connection enters a
//! handshake state (still under the connect timer) in which the driver moves the
//! [`TlsClient`]'s ciphertext (started and fed through [`crate::proxy::session::upstream`]);
//! the handler hears `on_upstream_connected` only when the handshake completed, or
//! `on_upstream_error(Tls)` (logged with the upstream name) when it failed. Afterwards the
//! handler's bytes are encrypted on the way out and decrypted on the way in; the session stays
//! with the socket, so it is pooled and reused with it.
//!
//! Closing: the driver steps the session's close state machine ([`Closing`]):
//! `CloseDownstream { flush: true }` writes what the handler still holds (bounded by
//! `Tuning::close_flush_timeout`), shuts down the sending side, then reads and discards what
//! the client still sends until its EOF or `Tuning::lingering_close`, so the last response is
//! not destroyed by a reset; a connection closed without `linger` is closed once flushed.
//!
//! Stop (drain, the session's sequence, [`Drain`]): the worker's eventfd wakes the loop;
//! listeners are deregistered and closed and idle pooled connections close at once; every open
//! handler hears [`ConnHandler::on_drain`] (idle keep-alive connections close, busy ones end
//! after their response); open connections get the stop grace (`StopSignal::grace`, else
//! `Tuning::stop_grace`) to finish, then are cut. Closing connections still linger (bounded by
//! the grace) so a request that raced the close gets a FIN, not a reset.
//!
//! Accept gate: while `StopSignal::accepting` is false (a process started by an upgrade, before
//! its predecessor says "go") listener edges are ignored and connections stay queued; when it
//! turns true the loop accepts from every listener.
//!
//! Liveness: the loop never blocks longer than [`HEARTBEAT_TICK`] and stamps the worker's
//! heartbeat each turn, so a wedged worker is visible to the watchdog.

#![forbid(unsafe_code)]

mod slab;
mod timers;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::epoll;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::proxy::driver::{DriverError, DriverKind, DriverParams, DriverStats, Tuning};
use crate::proxy::io::{
    Action, ConnHandler, ConnInfo, ConnLimit, PoolKey, PoolLimits, UpstreamError,
};
use crate::proxy::listener::BoundListener;
use crate::proxy::session::close::{CloseFacts, CloseStep, Closing};
use crate::proxy::session::drain::{Drain, DrainStep};
use crate::proxy::session::pool::WorkerPool;
use crate::proxy::session::tls::Layer;
use crate::proxy::session::upstream::{
    self as leg, CLOSED_DURING_HANDSHAKE, Handshake, LegState, handshake_input,
    log_handshake_failure,
};
use crate::proxy::stop::{HEARTBEAT_TICK, StopSignal};
use crate::proxy::tls::TlsClient;

use slab::{Slab, SlotId, Source};
use timers::{TimerKind, Timers, rearm};

const DRIVER: DriverKind = DriverKind::Epoll;
/// Read/write/callback rounds one connection gets per turn before yielding to the others.
const DRIVE_BUDGET: u32 = 32;
/// Connections accepted from one listener per turn before yielding.
const ACCEPT_BUDGET: u32 = 64;
/// Timers fired per turn at most (the rest fire next turn, which then does not block).
const TIMER_BUDGET: u32 = 1024;
/// Pause before accepting again after the process ran out of file descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Runs the epoll driver on the calling thread until stopped (see [`DriverParams`]).
pub fn run<H: ConnHandler>(params: DriverParams<H::Cx>) -> Result<(), DriverError> {
    Worker::<H>::new(params)?.run()
}

struct Down<H> {
    sock: TcpStream,
    /// The handler, wrapped in the session TLS layer on https listeners.
    handler: H,
    /// The close the handler asked for and, once it closed (`started`), where it stands:
    /// until then the handler runs the connection (on https listeners the TLS layer,
    /// handshake included).
    closing: Closing,
    readable: bool,
    writable: bool,
    /// The peer's FIN (or an error) was reported: a short read does not prove the socket
    /// drained, the EOF is still to be read.
    hup: bool,
    /// The client's EOF was seen (or reading is pointless after an error).
    read_done: bool,
    /// A socket error was seen: no more syscalls on it besides close.
    failed: bool,
    upstream: Option<SlotId>,
    /// The deadline this connection has an entry for in the timer heap.
    scheduled: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpState {
    Connecting,
    /// TCP connected, TLS handshake running (still under the connect timer).
    Handshake,
    Open,
}

struct Up {
    sock: TcpStream,
    key: PoolKey,
    limits: PoolLimits,
    state: UpState,
    /// The downstream connection it is attached to; `None` while idle in the pool.
    owner: Option<SlotId>,
    readable: bool,
    writable: bool,
    /// See `Down::hup`.
    hup: bool,
    eof: bool,
    /// Client TLS session on HTTPS upstreams.
    tls: Option<Box<TlsClient>>,
    /// The handler was told about the end of the TLS stream.
    tls_eof_told: bool,
}

/// What is queued to run again after the next wait.
#[derive(Debug, Clone, Copy)]
enum Again {
    Down(SlotId),
    Listener(usize),
}

struct Worker<H: ConnHandler> {
    epoll: rustix::fd::OwnedFd,
    listeners: Vec<BoundListener>,
    conn_limit: Arc<ConnLimit>,
    stop: StopSignal,
    cx: H::Cx,
    tuning: Tuning,
    stats: Arc<DriverStats>,
    downs: Slab<Down<Layer<H>>>,
    ups: Slab<Up>,
    pool: WorkerPool<SlotId>,
    timers: Timers,
    buf: Vec<u8>,
    events: Vec<epoll::Event>,
    again: Vec<Again>,
    accept_retry_at: Option<Instant>,
    /// Accepting is paused by the supervisor (upgrade before "go"): listener edges are
    /// ignored and the connections stay queued until it resumes.
    accept_paused: bool,
    drain: Drain,
    scratch: Vec<SlotId>,
}

fn setup_err(what: &'static str) -> impl FnOnce(io::Error) -> DriverError {
    move |source| DriverError::Setup {
        driver: DRIVER,
        what,
        source,
    }
}

fn register(ep: &rustix::fd::OwnedFd, fd: impl AsFd, src: Source) -> io::Result<()> {
    let flags = epoll::EventFlags::IN
        | epoll::EventFlags::OUT
        | epoll::EventFlags::RDHUP
        | epoll::EventFlags::ET;
    epoll::add(ep, fd, epoll::EventData::new_u64(src.token()), flags).map_err(io::Error::from)
}

/// True when an idle connection looks reusable: nothing to read and no EOF or error pending.
fn is_idle_live(sock: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(sock.peek(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Milliseconds until `at`, rounded up so the wait never returns just before a deadline.
fn wait_timeout(now: Instant, at: Option<Instant>) -> Option<rustix::event::Timespec> {
    let at = at?;
    let d = at.saturating_duration_since(now);
    let ms = d.as_micros().div_ceil(1000).min(i32::MAX as u128) as i64;
    Some(rustix::event::Timespec {
        tv_sec: ms / 1000,
        tv_nsec: (ms % 1000) * 1_000_000,
    })
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl<H: ConnHandler> Worker<H> {
    fn new(mut params: DriverParams<H::Cx>) -> Result<Self, DriverError> {
        let pool = WorkerPool::new(H::pool_gauges(&mut params.cx));
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC)
            .map_err(|e| setup_err("the epoll instance")(e.into()))?;
        for (i, l) in params.listeners.iter().enumerate() {
            let index = u32::try_from(i).map_err(|_| DriverError::Unsupported {
                driver: DRIVER,
                reason: "too many listeners".into(),
            })?;
            epoll::add(
                &ep,
                &l.socket,
                epoll::EventData::new_u64(Source::Listener(index).token()),
                epoll::EventFlags::IN | epoll::EventFlags::ET,
            )
            .map_err(|e| setup_err("listener registration")(e.into()))?;
        }
        epoll::add(
            &ep,
            params.stop.fd(),
            epoll::EventData::new_u64(Source::Wake.token()),
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )
        .map_err(|e| setup_err("stop signal registration")(e.into()))?;
        let tuning = params.tuning;
        let accept_paused = !params.stop.accepting();
        Ok(Worker {
            epoll: ep,
            listeners: params.listeners,
            conn_limit: params.conn_limit,
            stop: params.stop,
            cx: params.cx,
            tuning,
            stats: params.stats,
            downs: Slab::new(),
            ups: Slab::new(),
            pool,
            timers: Timers::new(),
            buf: vec![0; tuning.read_buffer.max(512)],
            events: Vec::with_capacity(tuning.max_events.max(16)),
            again: Vec::new(),
            accept_retry_at: None,
            accept_paused,
            drain: Drain::new(),
            scratch: Vec::new(),
        })
    }

    fn run(&mut self) -> Result<(), DriverError> {
        // A stop requested before the loop started left the eventfd readable already.
        if self.stop.is_stopped() {
            self.begin_stop(Instant::now());
        }
        loop {
            self.stop.beat();
            let now = Instant::now();
            self.fire_timers(now);
            self.sweep_departed_endpoints();
            if self.accept_paused && self.stop.accepting() && !self.drain.is_draining() {
                // "Go": edges seen while paused were ignored, so look at every queue now.
                self.accept_paused = false;
                for i in 0..self.listeners.len() {
                    self.accept(i, now);
                }
            }
            if let Some(at) = self.accept_retry_at
                && at <= now
            {
                self.accept_retry_at = None;
                for i in 0..self.listeners.len() {
                    self.accept(i, now);
                }
            }
            match self.drain.step(now, !self.downs.is_empty()) {
                DrainStep::Serving | DrainStep::Draining => {}
                DrainStep::CutOff => {
                    for id in self.downs.ids() {
                        self.free(id);
                    }
                    self.close_all_upstreams();
                    return Ok(());
                }
                DrainStep::Done => {
                    self.close_all_upstreams();
                    return Ok(());
                }
            }
            let timeout = if self.again.is_empty() {
                let next = min_opt(self.timers.next(), self.pool.next_expiry());
                let next = min_opt(next, self.accept_retry_at);
                let next = min_opt(next, Some(now + HEARTBEAT_TICK));
                wait_timeout(now, min_opt(next, self.drain.deadline()))
            } else {
                Some(rustix::event::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                })
            };
            let mut events = std::mem::take(&mut self.events);
            events.clear();
            let waited = epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                timeout.as_ref(),
            );
            match waited {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    return Err(DriverError::Wait {
                        driver: DRIVER,
                        source: e.into(),
                    });
                }
            }
            let now = Instant::now();
            for ev in &events {
                let flags = ev.flags;
                self.dispatch(Source::from_token(ev.data.u64()), flags, now);
            }
            self.events = events;
            let again = std::mem::take(&mut self.again);
            for item in again {
                match item {
                    Again::Down(id) => self.drive(id, now),
                    Again::Listener(i) => self.accept(i, now),
                }
            }
        }
    }

    fn dispatch(&mut self, src: Source, flags: epoll::EventFlags, now: Instant) {
        use epoll::EventFlags as F;
        let read_ready = flags.intersects(F::IN | F::RDHUP | F::HUP | F::ERR);
        let hup = flags.intersects(F::RDHUP | F::HUP | F::ERR);
        let write_ready = flags.intersects(F::OUT | F::HUP | F::ERR);
        match src {
            Source::Listener(i) => self.accept(i as usize, now),
            Source::Wake => {
                self.stop.clear();
                if self.stop.is_stopped() {
                    self.begin_stop(now);
                }
            }
            Source::Down(id) => {
                let Some(d) = self.downs.get_mut(id) else {
                    return;
                };
                d.readable |= read_ready;
                d.writable |= write_ready;
                d.hup |= hup;
                // A reset client is gone: tell the handler now rather than when it next
                // reads or writes (it may be waiting on its upstream).
                if flags.contains(F::ERR) && !d.failed && matches!(d.sock.take_error(), Ok(Some(_)))
                {
                    self.fail_down(id, now);
                }
                self.drive(id, now);
            }
            Source::Up(uid) => {
                let Some(up) = self.ups.get_mut(uid) else {
                    return;
                };
                up.readable |= read_ready;
                up.writable |= write_ready;
                up.hup |= hup;
                match (up.owner, up.state) {
                    (None, _) => {
                        // Idle in the pool: anything but a bare write edge means the peer
                        // closed or sent bytes nobody asked for.
                        if read_ready && !is_idle_live(&up.sock) {
                            self.pool.remove(uid);
                            self.close_up(uid);
                            DriverStats::bump(&self.stats.pool_stale);
                        }
                    }
                    (Some(owner), UpState::Connecting) => {
                        if write_ready || read_ready {
                            self.finish_connect(uid, owner, now);
                        }
                        self.drive(owner, now);
                    }
                    (Some(owner), UpState::Open | UpState::Handshake) => self.drive(owner, now),
                }
            }
        }
    }

    // ---- accepting ----

    fn accept(&mut self, li: usize, now: Instant) {
        if self.drain.is_draining() || self.accept_paused {
            return;
        }
        for _ in 0..ACCEPT_BUDGET {
            let Some(l) = self.listeners.get(li) else {
                return;
            };
            match l.socket.accept() {
                Ok((sock, peer)) => self.on_accept(li, sock, peer, now),
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return,
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => continue,
                    _ => {
                        // Out of descriptors or memory: the pending connections stay queued;
                        // an edge-triggered listener would not report them again, so retry
                        // on a timer.
                        self.accept_retry_at = Some(now + ACCEPT_RETRY);
                        return;
                    }
                },
            }
        }
        self.again.push(Again::Listener(li));
    }

    fn on_accept(&mut self, li: usize, sock: TcpStream, peer: SocketAddr, now: Instant) {
        if !self.conn_limit.try_acquire() {
            DriverStats::bump(&self.stats.refused);
            H::on_refused(&mut self.cx);
            drop(sock);
            return;
        }
        let Some(spec) = self.listeners.get(li).map(|l| &l.spec) else {
            self.conn_limit.release();
            return;
        };
        let local = if spec.addr.ip().is_unspecified() {
            sock.local_addr().unwrap_or(spec.addr)
        } else {
            spec.addr
        };
        let info = ConnInfo {
            peer,
            local,
            listener: spec.index,
            tls: spec.tls.is_some(),
            sni: None,
        };
        let session = match spec.tls.as_ref().map(|acceptor| acceptor.accept()) {
            None => None,
            Some(Ok(session)) => Some(session),
            Some(Err(_)) => {
                self.conn_limit.release();
                return;
            }
        };
        if sock.set_nonblocking(true).is_err() {
            self.conn_limit.release();
            return;
        }
        let _ = sock.set_nodelay(true);
        // On https listeners the session layer runs the handshake (bounded by its deadline)
        // and creates the handler once it completed.
        let handler = Layer::open(
            &mut self.cx,
            info,
            session,
            now,
            self.tuning.tls_handshake_timeout,
        );
        let down = Down {
            sock,
            handler,
            closing: Closing::new(),
            readable: false,
            writable: false,
            hup: false,
            read_done: false,
            failed: false,
            upstream: None,
            scheduled: None,
        };
        let Some(id) = self.downs.insert(down) else {
            self.conn_limit.release();
            return;
        };
        let registered = match self.downs.get(id) {
            Some(d) => register(&self.epoll, &d.sock, Source::Down(id)),
            None => return,
        };
        if registered.is_err() {
            self.downs.remove(id);
            self.conn_limit.release();
            return;
        }
        DriverStats::bump(&self.stats.accepted);
        self.drive(id, now);
    }

    // ---- the per-connection pump ----

    /// Carries out the driver contract for one connection until nothing more can be done
    /// without new readiness, then re-arms its timer or frees it.
    fn drive(&mut self, id: SlotId, now: Instant) {
        let mut rounds = 0;
        loop {
            if self.downs.get(id).is_none() {
                return;
            }
            self.run_actions(id, now);
            let Some(d) = self.downs.get_mut(id) else {
                return;
            };
            let mut progress = false;
            if !d.closing.started() {
                if d.handler.is_closed() {
                    d.closing.begin(now, self.tuning.close_flush_timeout);
                    // Not released by the handler, so not reusable.
                    if let Some(uid) = d.upstream.take() {
                        self.close_up(uid);
                    }
                    progress = true;
                } else {
                    progress |= self.write_down(id, now);
                    progress |= self.handshake_up(id, now);
                    progress |= self.write_up(id, now);
                    progress |= self.read_down(id, now);
                    progress |= self.read_up(id, now);
                }
            } else {
                // On https listeners the output is ciphertext, `close_notify` included
                // (queued by the session layer once the handler's last plaintext went
                // in), and the session layer always asks to linger: a TLS client may still
                // send its own close_notify. While stopping it still lingers (bounded by
                // the grace): a request that raced a drained keep-alive close must see a
                // FIN, not a reset.
                let facts = CloseFacts {
                    output_pending: !d.handler.downstream_out().is_empty(),
                    socket_ok: !d.failed,
                    read_open: !d.read_done && !d.failed,
                };
                match d.closing.step(now, facts, self.tuning.lingering_close) {
                    CloseStep::Flush { .. } => progress |= self.write_down(id, now),
                    CloseStep::Linger { shutdown, .. } => {
                        if shutdown {
                            let _ = d.sock.shutdown(Shutdown::Write);
                        }
                        if self.discard_down(id) {
                            self.free(id);
                            return;
                        }
                    }
                    CloseStep::Free => {
                        self.free(id);
                        return;
                    }
                }
            }
            if !progress {
                break;
            }
            rounds += 1;
            if rounds >= DRIVE_BUDGET {
                self.again.push(Again::Down(id));
                break;
            }
        }
        self.arm_timer(id, now);
    }

    fn run_actions(&mut self, id: SlotId, now: Instant) {
        // Bounded: a handler that keeps producing actions is cut off after many.
        for _ in 0..1024 {
            let action = match self.downs.get_mut(id) {
                Some(d) if !d.closing.started() => d.handler.poll_action(),
                _ => return,
            };
            let Some(action) = action else {
                return;
            };
            match action {
                Action::ConnectUpstream { key, limits } => {
                    self.connect_upstream(id, key, limits, now)
                }
                Action::ReleaseUpstream { reusable } => self.release_upstream(id, reusable, now),
                Action::CloseDownstream { flush, linger } => {
                    if let Some(d) = self.downs.get_mut(id) {
                        d.closing.request(flush, linger);
                    }
                }
            }
        }
    }

    fn write_down(&mut self, id: SlotId, now: Instant) -> bool {
        let Some(d) = self.downs.get_mut(id) else {
            return false;
        };
        let h = &mut d.handler;
        if !d.writable || d.failed {
            return false;
        }
        let out = h.downstream_out();
        if out.is_empty() {
            return false;
        }
        match (&d.sock).write(out) {
            Ok(n) if n > 0 => {
                h.downstream_written(&mut self.cx, n, now);
                true
            }
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                d.writable = false;
                false
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(_) => {
                self.fail_down(id, now);
                true
            }
        }
    }

    fn read_down(&mut self, id: SlotId, now: Instant) -> bool {
        let Some(d) = self.downs.get_mut(id) else {
            return false;
        };
        let h = &mut d.handler;
        if !d.readable || d.read_done || d.failed || !h.interest().downstream_read {
            return false;
        }
        match (&d.sock).read(&mut self.buf) {
            Ok(0) => {
                d.read_done = true;
                h.on_downstream_eof(&mut self.cx, now);
                true
            }
            Ok(n) => {
                // Edge-triggered: new bytes raise a new event, so a short read without a
                // pending FIN means drained, which saves the read that would say EAGAIN.
                if n < self.buf.len() && !d.hup {
                    d.readable = false;
                }
                let data = self.buf.get(..n).unwrap_or_default();
                h.on_downstream_data(&mut self.cx, data, now);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                d.readable = false;
                false
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(_) => {
                self.fail_down(id, now);
                true
            }
        }
    }

    /// Reads and drops what a lingering client sends; true once it is done (EOF or error).
    fn discard_down(&mut self, id: SlotId) -> bool {
        let Some(d) = self.downs.get_mut(id) else {
            return true;
        };
        for _ in 0..DRIVE_BUDGET {
            if !d.readable {
                return false;
            }
            match (&d.sock).read(&mut self.buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => d.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
        self.again.push(Again::Down(id));
        false
    }

    fn fail_down(&mut self, id: SlotId, now: Instant) {
        if let Some(d) = self.downs.get_mut(id) {
            d.failed = true;
            d.read_done = true;
            if !d.closing.started() {
                d.handler.on_downstream_error(&mut self.cx, now);
            }
        }
    }

    fn write_up(&mut self, id: SlotId, now: Instant) -> bool {
        let Some(d) = self.downs.get_mut(id) else {
            return false;
        };
        let Some(uid) = d.upstream else {
            return false;
        };
        let h = &mut d.handler;
        let Some(up) = self.ups.get_mut(uid) else {
            return false;
        };
        if let Some(tls) = up.tls.as_mut() {
            if up.state != UpState::Open {
                return false;
            }
            let progress = match leg::seal_upstream(tls, h, &mut self.cx, now) {
                Ok(sealed) => sealed,
                Err(_) => {
                    self.fail_up(id, uid, UpstreamError::Io, now);
                    return true;
                }
            };
            let pending = tls.pending_out();
            if pending.is_empty() || !up.writable {
                return progress;
            }
            return match (&up.sock).write(pending) {
                Ok(n) if n > 0 => {
                    tls.sent(n);
                    true
                }
                Ok(_) => progress,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    up.writable = false;
                    progress
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
                Err(_) => {
                    self.fail_up(id, uid, UpstreamError::Io, now);
                    true
                }
            };
        }
        if up.state != UpState::Open || !up.writable {
            return false;
        }
        let out = h.upstream_out();
        if out.is_empty() {
            return false;
        }
        match (&up.sock).write(out) {
            Ok(n) if n > 0 => {
                h.upstream_written(&mut self.cx, n, now);
                true
            }
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                up.writable = false;
                false
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(_) => {
                self.fail_up(id, uid, UpstreamError::Io, now);
                true
            }
        }
    }

    fn read_up(&mut self, id: SlotId, now: Instant) -> bool {
        let Some(d) = self.downs.get_mut(id) else {
            return false;
        };
        let Some(uid) = d.upstream else {
            return false;
        };
        let h = &mut d.handler;
        let Some(up) = self.ups.get_mut(uid) else {
            return false;
        };
        if let Some(tls) = up.tls.as_mut() {
            if up.state != UpState::Open || !h.interest().upstream_read {
                return false;
            }
            let n = tls.plaintext().len();
            if n > 0 {
                h.on_upstream_data(&mut self.cx, tls.plaintext(), now);
                tls.plaintext_taken(n);
                return true;
            }
            if tls.at_eof() {
                if up.tls_eof_told {
                    return false;
                }
                up.tls_eof_told = true;
                h.on_upstream_eof(&mut self.cx, now);
                return true;
            }
            if !up.readable || up.eof {
                return false;
            }
            return match (&up.sock).read(&mut self.buf) {
                Ok(0) => {
                    up.eof = true;
                    tls.on_eof();
                    true
                }
                Ok(n) => {
                    if n < self.buf.len() && !up.hup {
                        up.readable = false;
                    }
                    let data = self.buf.get(..n).unwrap_or_default();
                    if tls.on_ciphertext(data).is_err() {
                        self.fail_up(id, uid, UpstreamError::Io, now);
                    }
                    true
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    up.readable = false;
                    false
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
                Err(_) => {
                    self.fail_up(id, uid, UpstreamError::Io, now);
                    true
                }
            };
        }
        if up.state != UpState::Open || !up.readable || up.eof || !h.interest().upstream_read {
            return false;
        }
        match (&up.sock).read(&mut self.buf) {
            Ok(0) => {
                up.eof = true;
                h.on_upstream_eof(&mut self.cx, now);
                true
            }
            Ok(n) => {
                if n < self.buf.len() && !up.hup {
                    up.readable = false;
                }
                let data = self.buf.get(..n).unwrap_or_default();
                h.on_upstream_data(&mut self.cx, data, now);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                up.readable = false;
                false
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(_) => {
                self.fail_up(id, uid, UpstreamError::Io, now);
                true
            }
        }
    }

    /// Moves handshake bytes of an HTTPS upstream; on completion the handler hears
    /// `on_upstream_connected`, on failure `on_upstream_error(Tls)` after one log line.
    fn handshake_up(&mut self, id: SlotId, now: Instant) -> bool {
        let Some(uid) = self.downs.get(id).and_then(|d| d.upstream) else {
            return false;
        };
        let Some(up) = self.ups.get_mut(uid) else {
            return false;
        };
        let Some(tls) = up.tls.as_mut() else {
            return false;
        };
        if up.state != UpState::Handshake {
            return false;
        }
        let mut progress = false;
        let mut failure: Option<String> = None;
        for _ in 0..DRIVE_BUDGET {
            let mut moved = false;
            let pending = tls.pending_out();
            if up.writable && !pending.is_empty() {
                match (&up.sock).write(pending) {
                    Ok(n) if n > 0 => {
                        tls.sent(n);
                        moved = true;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => up.writable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => moved = true,
                    Err(e) => {
                        failure = Some(e.to_string());
                        break;
                    }
                }
            }
            if tls.handshake_complete() {
                break;
            }
            if up.readable {
                match (&up.sock).read(&mut self.buf) {
                    Ok(0) => {
                        failure = Some(CLOSED_DURING_HANDSHAKE.into());
                        break;
                    }
                    Ok(n) => {
                        if n < self.buf.len() && !up.hup {
                            up.readable = false;
                        }
                        let data = self.buf.get(..n).unwrap_or_default();
                        if let Handshake::Failed(e) = handshake_input(tls, data) {
                            failure = Some(e);
                            break;
                        }
                        moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => up.readable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => moved = true,
                    Err(e) => {
                        failure = Some(e.to_string());
                        break;
                    }
                }
            }
            progress |= moved;
            if !moved {
                break;
            }
        }
        if let Some(error) = failure {
            log_handshake_failure(&up.key, &error);
            DriverStats::bump(&self.stats.upstream_connect_errors);
            self.fail_up(id, uid, UpstreamError::Tls, now);
            return true;
        }
        if tls.handshake_complete() {
            up.state = UpState::Open;
            if let Some(h) = self.downs.get_mut(id).map(|d| &mut d.handler) {
                h.on_upstream_connected(&mut self.cx, false, now);
            }
            return true;
        }
        progress
    }

    /// The TCP connect of `uid` succeeded: open it, or start its TLS handshake.
    fn upstream_ready(&mut self, uid: SlotId, owner: SlotId, now: Instant) {
        let Some(up) = self.ups.get_mut(uid) else {
            return;
        };
        // The connect timer (armed with the connect) also bounds the handshake.
        match leg::start_tls(&up.key, &up.limits, now) {
            Ok(None) => {
                up.state = UpState::Open;
                if let Some(d) = self.downs.get_mut(owner) {
                    d.handler.on_upstream_connected(&mut self.cx, false, now);
                }
            }
            Ok(Some((client, _))) => {
                up.tls = Some(Box::new(client));
                up.state = UpState::Handshake;
                // The socket is writable after a connect: send the ClientHello right away.
                up.writable = true;
            }
            Err(error) => {
                log_handshake_failure(&up.key, &error);
                DriverStats::bump(&self.stats.upstream_connect_errors);
                self.fail_up(owner, uid, UpstreamError::Tls, now);
            }
        }
    }

    /// Closes a failed upstream, detaches it and tells the handler.
    fn fail_up(&mut self, id: SlotId, uid: SlotId, err: UpstreamError, now: Instant) {
        self.close_up(uid);
        if let Some(d) = self.downs.get_mut(id) {
            if d.upstream == Some(uid) {
                d.upstream = None;
            }
            if !d.closing.started() {
                d.handler.on_upstream_error(&mut self.cx, err, now);
            }
        }
    }

    // ---- upstream connections ----

    fn connect_upstream(&mut self, id: SlotId, key: PoolKey, limits: PoolLimits, now: Instant) {
        // A handler asking again while attached gets a fresh attachment; the old one closes.
        if let Some(old) = self.downs.get_mut(id).and_then(|d| d.upstream.take()) {
            self.close_up(old);
        }
        if let Some(uid) = self.checkout(&key, now) {
            let Some(up) = self.ups.get_mut(uid) else {
                return;
            };
            up.owner = Some(id);
            up.limits = limits;
            DriverStats::bump(&self.stats.pool_reused);
            if let Some(d) = self.downs.get_mut(id) {
                d.upstream = Some(uid);
                d.handler.on_upstream_connected(&mut self.cx, true, now);
            }
            return;
        }
        DriverStats::bump(&self.stats.upstream_connects);
        match self.start_connect(id, &key, limits) {
            Ok((uid, connected)) => {
                if let Some(d) = self.downs.get_mut(id) {
                    d.upstream = Some(uid);
                    // The connect timer also bounds the TLS handshake.
                    if !connected || key.tls.is_some() {
                        self.timers
                            .push(now + limits.connect_timeout, TimerKind::UpConnect(uid));
                    }
                    if connected {
                        self.upstream_ready(uid, id, now);
                    }
                }
            }
            Err(_) => {
                DriverStats::bump(&self.stats.upstream_connect_errors);
                if let Some(h) = self.downs.get_mut(id).map(|d| &mut d.handler) {
                    h.on_upstream_error(&mut self.cx, UpstreamError::Connect, now);
                }
            }
        }
    }

    /// Takes a live idle connection for `key` from the pool, closing expired or stale ones.
    fn checkout(&mut self, key: &PoolKey, now: Instant) -> Option<SlotId> {
        let mut close = std::mem::take(&mut self.scratch);
        let ups = &self.ups;
        let hit = self.pool.checkout(key, now, &mut close, |uid| {
            ups.get(uid).is_some_and(|up| is_idle_live(&up.sock))
        });
        for _ in 0..hit.stale {
            DriverStats::bump(&self.stats.pool_stale);
        }
        for uid in close.drain(..) {
            self.close_up(uid);
        }
        self.scratch = close;
        hit.conn
    }

    /// Starts a non-blocking connect; `Ok((slot, connected_already))`.
    fn start_connect(
        &mut self,
        owner: SlotId,
        key: &PoolKey,
        limits: PoolLimits,
    ) -> io::Result<(SlotId, bool)> {
        let addr = key.endpoint;
        let socket = Socket::new(
            Domain::for_address(addr),
            Type::STREAM.nonblocking().cloexec(),
            Some(Protocol::TCP),
        )?;
        socket.set_tcp_nodelay(true)?;
        let connected = match socket.connect(&SockAddr::from(addr)) {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) => {
                false
            }
            Err(e) => return Err(e),
        };
        let sock: TcpStream = socket.into();
        let up = Up {
            sock,
            key: key.clone(),
            limits,
            state: UpState::Connecting,
            owner: Some(owner),
            readable: false,
            writable: false,
            hup: false,
            eof: false,
            tls: None,
            tls_eof_told: false,
        };
        let uid = self
            .ups
            .insert(up)
            .ok_or_else(|| io::Error::other("upstream slots exhausted"))?;
        let registered = match self.ups.get(uid) {
            Some(up) => register(&self.epoll, &up.sock, Source::Up(uid)),
            None => Err(io::Error::other("upstream slot vanished")),
        };
        if let Err(e) = registered {
            self.ups.remove(uid);
            return Err(e);
        }
        Ok((uid, connected))
    }

    /// The connecting socket became writable (or failed): connected, or a connect error.
    fn finish_connect(&mut self, uid: SlotId, owner: SlotId, now: Instant) {
        let Some(up) = self.ups.get_mut(uid) else {
            return;
        };
        let outcome = match up.sock.take_error() {
            Ok(None) => up.sock.peer_addr().map(|_| ()),
            Ok(Some(e)) | Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => self.upstream_ready(uid, owner, now),
            Err(e) if e.kind() == io::ErrorKind::NotConnected && !up.readable => {
                // Spurious wake-up before the handshake finished: keep waiting.
            }
            Err(_) => {
                DriverStats::bump(&self.stats.upstream_connect_errors);
                self.fail_up(owner, uid, UpstreamError::Connect, now);
            }
        }
    }

    fn release_upstream(&mut self, id: SlotId, reusable: bool, now: Instant) {
        let Some(uid) = self.downs.get_mut(id).and_then(|d| d.upstream.take()) else {
            return;
        };
        let Some(up) = self.ups.get_mut(uid) else {
            return;
        };
        let state = LegState {
            established: up.state == UpState::Open,
            // A failed connection was closed already; bytes are read only on demand.
            failed: false,
            eof: up.eof,
            unread: false,
            unsent: false,
            tls: up.tls.as_deref(),
        };
        let rule = leg::reusable(reusable, self.drain.is_draining(), &state);
        // A connection the handler would have kept whose peer already closed it (or sent bytes
        // nobody asked for) is stale, counted as io_uring counts it when parking. The peek (a
        // syscall) only for a connection the rule keeps and that had an edge.
        let stale = reusable
            && !self.drain.is_draining()
            && up.state == UpState::Open
            && (up.eof || (rule && up.readable && !is_idle_live(&up.sock)));
        if !rule || stale {
            if stale {
                DriverStats::bump(&self.stats.pool_stale);
            }
            self.close_up(uid);
            return;
        }
        up.owner = None;
        let key = up.key.clone();
        let limits = up.limits;
        if let Some(evicted) = self.pool.checkin(key, uid, limits, now) {
            self.close_up(evicted);
        }
    }

    fn close_up(&mut self, uid: SlotId) {
        // Dropping the socket closes it, which also removes it from the epoll set.
        self.ups.remove(uid);
    }

    fn close_all_upstreams(&mut self) {
        self.pool.clear();
        for uid in self.ups.ids() {
            self.close_up(uid);
        }
    }

    // ---- timers, closing, stopping ----

    fn deadline_of(&self, d: &Down<Layer<H>>) -> Option<Instant> {
        if d.closing.started() {
            d.closing.deadline()
        } else {
            d.handler.deadline()
        }
    }

    fn arm_timer(&mut self, id: SlotId, now: Instant) {
        let Some(d) = self.downs.get(id) else {
            return;
        };
        // A deadline already passed fires on the next turn.
        let wanted = self.deadline_of(d).map(|t| t.max(now));
        if let Some(at) = rearm(d.scheduled, wanted) {
            self.timers.push(at, TimerKind::Down(id));
            if let Some(d) = self.downs.get_mut(id) {
                d.scheduled = Some(at);
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        for _ in 0..TIMER_BUDGET {
            let Some((at, kind)) = self.timers.pop_due(now) else {
                break;
            };
            match kind {
                TimerKind::Down(id) => self.fire_down(id, at, now),
                TimerKind::UpConnect(uid) => {
                    let owner = match self.ups.get(uid) {
                        Some(up)
                            if matches!(up.state, UpState::Connecting | UpState::Handshake) =>
                        {
                            up.owner
                        }
                        _ => continue,
                    };
                    DriverStats::bump(&self.stats.upstream_connect_errors);
                    match owner {
                        Some(owner) => {
                            self.fail_up(owner, uid, UpstreamError::ConnectTimeout, now);
                            self.drive(owner, now);
                        }
                        None => self.close_up(uid),
                    }
                }
            }
        }
        for uid in self.pool.expire(now) {
            self.close_up(uid);
        }
    }

    /// Closes idle pooled connections to endpoints that left the routing table.
    fn sweep_departed_endpoints(&mut self) {
        let epoch = H::endpoints_epoch(&mut self.cx);
        let cx = &mut self.cx;
        for uid in self
            .pool
            .sweep_departed(epoch, |key| H::keep_pooled(cx, key))
        {
            self.close_up(uid);
        }
    }

    fn fire_down(&mut self, id: SlotId, at: Instant, now: Instant) {
        let Some(d) = self.downs.get_mut(id) else {
            return;
        };
        if d.scheduled != Some(at) {
            return; // superseded by an earlier entry
        }
        d.scheduled = None;
        let Some(d) = self.downs.get(id) else {
            return;
        };
        match self.deadline_of(d) {
            // The close's deadline passed: the flush or the linger is over.
            Some(t) if t <= now && d.closing.started() => self.free(id),
            Some(t) if t <= now => {
                if let Some(d) = self.downs.get_mut(id) {
                    d.handler.on_timer(&mut self.cx, now);
                }
                self.drive(id, now);
            }
            // Not due yet (the deadline moved later) or none: re-arm as needed.
            _ => self.arm_timer(id, now),
        }
    }

    /// Releases a downstream connection: its socket, its attached upstream, its slot.
    fn free(&mut self, id: SlotId) {
        let Some(d) = self.downs.remove(id) else {
            return;
        };
        if let Some(uid) = d.upstream {
            self.close_up(uid);
        }
        drop(d);
        self.conn_limit.release();
        DriverStats::bump(&self.stats.closed);
    }

    fn begin_stop(&mut self, now: Instant) {
        // The grace in force now (a reload may have changed it since the worker started).
        if !self
            .drain
            .begin(now, self.stop.grace(), self.tuning.stop_grace)
        {
            return;
        }
        // The socket may live on in another process (upgrade): deregister it explicitly, as
        // closing this descriptor alone would not.
        for l in &self.listeners {
            let _ = epoll::delete(&self.epoll, &l.socket);
        }
        self.listeners.clear();
        self.again.retain(|a| matches!(a, Again::Down(_)));
        self.accept_retry_at = None;
        for uid in self.pool.clear() {
            self.close_up(uid);
        }
        H::begin_drain(&mut self.cx);
        for id in self.downs.ids() {
            let Some(d) = self.downs.get_mut(id) else {
                continue;
            };
            if d.closing.started() {
                continue;
            }
            d.handler.on_drain(&mut self.cx, now);
            self.drive(id, now);
        }
    }
}

impl<H: ConnHandler> Drop for Worker<H> {
    /// Gives back the connection slots of anything still open (an early error return).
    fn drop(&mut self) {
        for id in self.downs.ids() {
            self.free(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_downstream_connection_is_small() {
        // Per idle keep-alive connection the worker holds one downstream slot (the parked
        // handler inline); upstream sockets have slots of their own.
        let down = std::mem::size_of::<Down<Layer<crate::proxy::core::Conn>>>();
        assert!(down <= 240, "{down} bytes per idle connection");
    }

    #[test]
    fn wait_timeout_rounds_up_to_whole_milliseconds() {
        let now = Instant::now();
        assert_eq!(wait_timeout(now, None), None);
        let t = wait_timeout(now, Some(now + Duration::from_micros(1500))).unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (0, 2_000_000));
        let t = wait_timeout(now, Some(now + Duration::from_millis(2500))).unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (2, 500_000_000));
        let t = wait_timeout(now + Duration::from_secs(1), Some(now)).unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (0, 0), "past deadlines do not block");
    }

    #[test]
    fn min_opt_ignores_absent_values() {
        let a = Instant::now();
        let b = a + Duration::from_secs(1);
        assert_eq!(min_opt(Some(b), Some(a)), Some(a));
        assert_eq!(min_opt(None, Some(b)), Some(b));
        assert_eq!(min_opt(Some(a), None), Some(a));
        assert_eq!(min_opt(None, None), None);
    }
}
