//! The data-plane runtime both io drivers share: listener sockets, worker threads, the stop
//! signal, and the entry contract a driver implements.
//!
//! `node.workers` plain OS threads (`arc-worker-N`) each own one listener socket per configured
//! listener (bound with `SO_REUSEPORT`, so the kernel spreads new connections over the
//! workers), one event loop, one upstream pool and one worker context `Cx`. Nothing here is
//! touched per request: [`ConnLimit`] once per connection, the stop signal once per shutdown,
//! [`DriverStats`] once per connection by the owning worker only.
//!
//! A driver is a function with the shape of [`DriverEntry`]:
//! `fn run<H: ConnHandler>(params: DriverParams<H::Cx>) -> Result<(), DriverError>`.
//! It runs on the worker's thread until [`DriverParams::stop`] fires and every connection has
//! finished (or the stop grace period passed), then returns. See [`DriverParams`] for what a
//! driver receives and must honour.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::proxy::io::{ConnHandler, ConnLimit};
use crate::proxy::tls::TlsAcceptor;

/// Which io driver the workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriverKind {
    /// Readiness-based driver over epoll; works on every Linux kernel Arc supports.
    Epoll,
    /// Completion-based driver over io_uring (`proxy::uring`).
    Uring,
}

impl DriverKind {
    /// The name used in logs and in `arc_io_driver{driver="..."}`.
    pub fn name(self) -> &'static str {
        match self {
            DriverKind::Epoll => "epoll",
            DriverKind::Uring => "io_uring",
        }
    }
}

impl std::fmt::Display for DriverKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One configured listener, as the workers need it.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    /// Index in the configuration's `listeners[]` (becomes [`crate::proxy::io::ConnInfo::listener`]).
    pub index: usize,
    /// The listener's configured name, for error messages.
    pub name: Arc<str>,
    /// Address to bind; port 0 picks one port shared by every worker.
    pub addr: SocketAddr,
    /// Set on https listeners: the driver terminates TLS with it before the handler sees
    /// the connection.
    pub tls: Option<Arc<TlsAcceptor>>,
}

/// A listener socket bound for one worker: non-blocking, `SO_REUSEPORT`, listening.
#[derive(Debug)]
pub struct BoundListener {
    pub spec: ListenerSpec,
    pub socket: TcpListener,
}

/// Tuning knobs of one worker's event loop. Drivers ignore knobs that do not apply to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Size of the worker's reused read buffer (epoll) or of each provided buffer (io_uring):
    /// the most one read hands to the handler.
    pub read_buffer: usize,
    /// Most readiness events (epoll) or completions (io_uring) taken per loop turn.
    pub max_events: usize,
    /// io_uring submission queue entries (`io_uring.uring_entries`).
    pub uring_entries: u32,
    /// io_uring kernel-side submission polling (`io_uring.sqpoll`).
    pub sqpoll: bool,
    /// After stop: how long connections already open may still finish before they are cut.
    pub stop_grace: Duration,
    /// Most time a TLS handshake may take before the connection is dropped.
    pub tls_handshake_timeout: Duration,
    /// After the handler closed with flush: how long its remaining output may take to write.
    pub close_flush_timeout: Duration,
    /// After a flushed close: how long the driver keeps reading and discarding what the client
    /// still sends (so the response is not lost to a reset) before it closes the socket.
    pub lingering_close: Duration,
    /// io_uring fixed file table slots (at most the open-file limit; 0: none). Sockets whose
    /// slot index is beyond it use their fds.
    pub uring_fixed_files: u32,
}

/// Default io_uring fixed file table size: sockets beyond it (more than this many open at once
/// on one worker) use their fds. The kernel keeps 8 bytes per slot, plus a small node per
/// registered socket.
pub const DEFAULT_FIXED_FILES: u32 = 16 * 1024;

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            read_buffer: 64 * 1024,
            max_events: 1024,
            uring_entries: 4096,
            sqpoll: false,
            stop_grace: Duration::from_secs(10),
            close_flush_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            lingering_close: Duration::from_secs(2),
            uring_fixed_files: DEFAULT_FIXED_FILES,
        }
    }
}

/// Per-worker connection counters. Written only by the owning worker (relaxed atomics, once
/// per connection or pooled upstream, never per request), summed by whoever scrapes.
#[derive(Debug, Default)]
pub struct DriverStats {
    /// Downstream connections accepted and handed to a handler.
    pub accepted: AtomicU64,
    /// Downstream connections accepted and closed at once because of `max_connections`.
    pub refused: AtomicU64,
    /// Downstream connections finished.
    pub closed: AtomicU64,
    /// New upstream connections started.
    pub upstream_connects: AtomicU64,
    /// Upstream connects that failed or timed out.
    pub upstream_connect_errors: AtomicU64,
    /// Upstream connections taken from the pool instead of connecting.
    pub pool_reused: AtomicU64,
    /// Idle pooled connections dropped because the peer closed them or sent unexpected bytes.
    pub pool_stale: AtomicU64,
    /// io_uring: multishot receives that ended because no provided receive buffer was free
    /// (each is armed again, one more submission).
    pub recv_no_buffer: AtomicU64,
    /// io_uring: receives cancelled because bytes arrived that the handler did not want yet
    /// (they are held back for it, and the receive is armed again once it wants more). A
    /// handler that stops wanting bytes costs nothing while the peer sends none.
    pub recv_paused: AtomicU64,
    /// io_uring: sockets queued into the ring's fixed file table (their operations skip the
    /// per-operation file lookup). An update the kernel refuses (only under memory pressure)
    /// leaves its socket on its fd and is still counted here.
    pub fixed_files: AtomicU64,
}

impl DriverStats {
    /// Adds one to a counter (only the owning worker writes, so relaxed suffices).
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Longest a driver's event loop may block before it turns again and stamps its heartbeat, so
/// an idle worker still shows it is alive.
pub const HEARTBEAT_TICK: Duration = Duration::from_millis(250);

/// Liveness of the workers: each worker stamps its slot once per event-loop turn (at least
/// every [`HEARTBEAT_TICK`]); the watchdog reads the oldest stamp. One relaxed store per turn.
#[derive(Debug)]
pub struct Heartbeats {
    epoch: Instant,
    /// Milliseconds since `epoch` of each worker's last turn.
    beats: Vec<AtomicU64>,
    /// Debug control: milliseconds since `epoch` after which worker 0 stops turning
    /// (`u64::MAX`: never). Only set through [`Heartbeats::debug_wedge_worker0`].
    wedge_at: AtomicU64,
}

impl Heartbeats {
    fn new(workers: usize) -> Heartbeats {
        Heartbeats {
            epoch: Instant::now(),
            beats: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            wedge_at: AtomicU64::new(u64::MAX),
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// How long ago the least recently turning worker last turned.
    pub fn oldest(&self, now: Instant) -> Duration {
        let now_ms = self.millis(now);
        let oldest = self
            .beats
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .min()
            .unwrap_or(now_ms);
        Duration::from_millis(now_ms.saturating_sub(oldest))
    }

    /// The workers whose last turn is older than `limit`.
    pub fn stalled(&self, now: Instant, limit: Duration) -> Vec<usize> {
        let now_ms = self.millis(now);
        let limit = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        self.beats
            .iter()
            .enumerate()
            .filter(|(_, b)| now_ms.saturating_sub(b.load(Ordering::Relaxed)) > limit)
            .map(|(i, _)| i)
            .collect()
    }

    /// Debug control for watchdog tests: worker 0 blocks inside its loop once `after` has
    /// passed, as a wedged worker would. Only the process wiring calls this, and only when the
    /// operator asked for it explicitly (see `lifecycle::debug`).
    pub fn debug_wedge_worker0(&self, after: Duration) {
        let at = self.millis(Instant::now() + after);
        self.wedge_at.store(at, Ordering::Relaxed);
    }

    fn beat(&self, worker: usize) {
        let now = self.millis(Instant::now());
        if let Some(b) = self.beats.get(worker) {
            b.store(now, Ordering::Relaxed);
        }
        if worker == 0 && now >= self.wedge_at.load(Ordering::Relaxed) {
            tracing::warn!(
                worker,
                "debug wedge: this worker stops turning (requested by ARC_DEBUG_WEDGE_WORKER0_AFTER)"
            );
            // Bounded so a forgotten debug process does not hold a thread forever.
            std::thread::sleep(Duration::from_secs(600));
        }
    }
}

/// Marks "no override" in [`Control::grace_ms`]: the driver's own `Tuning::stop_grace` applies.
const GRACE_UNSET: u64 = u64::MAX;

/// What the supervisor tells its workers besides "stop": whether they may accept yet, and the
/// stop grace in force (reloads change it while the workers run).
#[derive(Debug)]
struct Control {
    stop: AtomicBool,
    accepting: AtomicBool,
    /// Milliseconds, or [`GRACE_UNSET`].
    grace_ms: AtomicU64,
}

/// One worker's link to its supervisor: the stop request and the accept gate (shared flags
/// plus the worker's own eventfd, which becomes readable when either changes so the event
/// loop wakes from its wait), the stop grace in force, and the worker's heartbeat slot.
#[derive(Debug)]
pub struct StopSignal {
    flag: Arc<Control>,
    event: OwnedFd,
    heartbeats: Arc<Heartbeats>,
    worker: usize,
}

impl StopSignal {
    /// Stamps this worker's heartbeat; drivers call it once per event-loop turn and never
    /// block longer than [`HEARTBEAT_TICK`] between turns.
    pub fn beat(&self) {
        self.heartbeats.beat(self.worker);
    }

    /// True once stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.flag.stop.load(Ordering::Acquire)
    }

    /// True while the worker may accept new connections. A process started by an upgrade
    /// starts with accepting paused: it adopts the listening sockets but leaves every
    /// connection queued in them (for the previous process, should this one fail) until the
    /// previous process answers "go" ([`StopHandle::resume_accepting`]).
    pub fn accepting(&self) -> bool {
        self.flag.accepting.load(Ordering::Acquire)
    }

    /// The stop grace set by the supervisor after start ([`StopHandle::set_grace`]), read when
    /// the drain starts; `None`: the driver's `Tuning::stop_grace` applies.
    pub fn grace(&self) -> Option<Duration> {
        match self.flag.grace_ms.load(Ordering::Acquire) {
            GRACE_UNSET => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// The eventfd (non-blocking) to register for readability in the event loop.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.event.as_fd()
    }

    /// Drains the eventfd after it was seen readable (so a level-triggered poll goes quiet).
    pub fn clear(&self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.event, &mut buf);
    }
}

/// Requests every worker of a [`WorkerSet`] to stop, resumes their accepting, sets their stop
/// grace. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StopHandle {
    flag: Arc<Control>,
    wakers: Arc<Vec<OwnedFd>>,
    heartbeats: Arc<Heartbeats>,
}

impl StopHandle {
    /// Makes a handle and one [`StopSignal`] per worker (accepting, no grace override).
    pub fn new(workers: usize) -> Result<(StopHandle, Vec<StopSignal>), WorkerError> {
        let flag = Arc::new(Control {
            stop: AtomicBool::new(false),
            accepting: AtomicBool::new(true),
            grace_ms: AtomicU64::new(GRACE_UNSET),
        });
        let heartbeats = Arc::new(Heartbeats::new(workers));
        let mut wakers = Vec::with_capacity(workers);
        let mut signals = Vec::with_capacity(workers);
        for worker in 0..workers {
            let fd = rustix::event::eventfd(
                0,
                rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC,
            )
            .map_err(|e| WorkerError::Setup {
                what: "eventfd for the stop signal",
                source: e.into(),
            })?;
            let dup = fd.try_clone().map_err(|source| WorkerError::Setup {
                what: "eventfd for the stop signal",
                source,
            })?;
            wakers.push(dup);
            signals.push(StopSignal {
                flag: Arc::clone(&flag),
                event: fd,
                heartbeats: Arc::clone(&heartbeats),
                worker,
            });
        }
        Ok((
            StopHandle {
                flag,
                wakers: Arc::new(wakers),
                heartbeats,
            },
            signals,
        ))
    }

    /// The workers' heartbeats (for the watchdog).
    pub fn heartbeats(&self) -> &Arc<Heartbeats> {
        &self.heartbeats
    }

    /// Sets the stop flag and wakes every worker. Idempotent.
    pub fn stop(&self) {
        self.flag.stop.store(true, Ordering::Release);
        self.wake();
    }

    fn wake(&self) {
        for fd in self.wakers.iter() {
            let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
        }
    }

    /// True once [`StopHandle::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.flag.stop.load(Ordering::Acquire)
    }

    /// Pauses accepting; takes effect when a worker starts (see [`StopSignal::accepting`]).
    pub fn pause_accepting(&self) {
        self.flag.accepting.store(false, Ordering::Release);
    }

    /// Lets paused workers accept and wakes them. Idempotent.
    pub fn resume_accepting(&self) {
        self.flag.accepting.store(true, Ordering::Release);
        self.wake();
    }

    /// True while the workers may accept.
    pub fn is_accepting(&self) -> bool {
        self.flag.accepting.load(Ordering::Acquire)
    }

    /// The stop grace the workers use when the drain starts from now on (a reloaded
    /// `lifecycle.drain_timeout`); overrides `Tuning::stop_grace`.
    pub fn set_grace(&self, grace: Duration) {
        let ms = u64::try_from(grace.as_millis())
            .unwrap_or(GRACE_UNSET - 1)
            .min(GRACE_UNSET - 1);
        self.flag.grace_ms.store(ms, Ordering::Release);
    }
}

/// Everything a driver's `run` receives. The driver owns it for the worker's lifetime.
///
/// The driver must:
/// - accept on every listener in `listeners` (already bound, listening and non-blocking);
///   take a slot from `conn_limit` per accepted connection (over the limit: close it at once
///   and bump `stats.refused`) and give it back when the connection is freed;
/// - build each connection's handler with `H::new(&mut cx, ConnInfo { listener:
///   spec.index, .. }, now)` and follow the driver contract in [`crate::proxy::io`];
/// - keep its own upstream pool ([`crate::proxy::upstream::pool::Pool`]) with stale detection;
/// - not accept while `stop.accepting()` is false (the sockets were adopted during an upgrade
///   and their queues belong to the previous process until it says "go"); start accepting
///   once it turns true (`stop.fd()` wakes the loop, which re-checks at least every turn);
/// - watch `stop.fd()`: once `stop.is_stopped()`, stop accepting (deregister and close the
///   listeners — the sockets may live on in the next process of an upgrade, so a connection
///   the kernel already completed for this worker is still served), close the idle pool, call
///   `H::begin_drain` once and `on_drain` on every open handler, let open connections finish
///   for at most `stop.grace()` (when set, else `tuning.stop_grace`), read when the drain
///   starts, then free the rest and return `Ok(())`;
/// - call `stop.beat()` once per event-loop turn and never block longer than
///   [`HEARTBEAT_TICK`], so the watchdog sees the worker alive;
/// - keep `stats` up to date;
/// - never panic on socket errors; return `Err` only when the event loop itself cannot go on.
pub struct DriverParams<Cx> {
    /// Worker number (0-based), as in the thread name `arc-worker-N`.
    pub worker: usize,
    /// This worker's own listener sockets, in configuration order.
    pub listeners: Vec<BoundListener>,
    /// Process-wide `max_connections`.
    pub conn_limit: Arc<ConnLimit>,
    /// This worker's stop signal.
    pub stop: StopSignal,
    /// The worker context lent to every handler call; created on the worker's thread.
    pub cx: Cx,
    /// Event-loop tuning.
    pub tuning: Tuning,
    /// This worker's counters.
    pub stats: Arc<DriverStats>,
}

/// The signature every io driver's entry point has (`proxy::epoll::run::<H>`,
/// `proxy::uring::run::<H>`).
pub type DriverEntry<Cx> = fn(DriverParams<Cx>) -> Result<(), DriverError>;

/// Why a driver's event loop stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// Creating or configuring a kernel object failed (epoll instance, ring, registration).
    #[error("{driver} driver: cannot set up {what}: {source}")]
    Setup {
        driver: DriverKind,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// Waiting for events failed.
    #[error("{driver} driver: waiting for events failed: {source}")]
    Wait {
        driver: DriverKind,
        #[source]
        source: io::Error,
    },
    /// The kernel lacks a feature the driver needs.
    #[error("{driver} driver unavailable: {reason}")]
    Unsupported { driver: DriverKind, reason: String },
}

/// Why the worker set could not start or finished with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A listener socket could not be created, bound or put to listening.
    #[error("listener {name:?} on {addr}: cannot {step}: {source}")]
    Bind {
        name: Arc<str>,
        addr: SocketAddr,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    /// Another resource of the worker set could not be made.
    #[error("cannot create {what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The requested driver is not compiled into this build.
    #[error("the {0} io driver is not available in this build")]
    DriverUnavailable(DriverKind),
    /// A worker's driver stopped with an error.
    #[error("worker {worker}: {source}")]
    Driver {
        worker: usize,
        #[source]
        source: DriverError,
    },
    /// A worker thread panicked.
    #[error("worker {0} panicked")]
    Panicked(usize),
}

/// Listen backlog of every listener socket (the kernel caps it at `somaxconn`).
pub const LISTEN_BACKLOG: i32 = 4096;

/// Binds one listener socket for one worker: `SO_REUSEADDR` + `SO_REUSEPORT`, non-blocking,
/// dual-stack for IPv6 wildcard addresses, listening with [`LISTEN_BACKLOG`].
pub fn bind_listener(spec: &ListenerSpec) -> Result<TcpListener, WorkerError> {
    let err = |step: &'static str| {
        let name = Arc::clone(&spec.name);
        let addr = spec.addr;
        move |source: io::Error| WorkerError::Bind {
            name,
            addr,
            step,
            source,
        }
    };
    let domain = Domain::for_address(spec.addr);
    let socket = Socket::new(
        domain,
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )
    .map_err(err("create the socket"))?;
    socket
        .set_reuse_address(true)
        .map_err(err("set SO_REUSEADDR"))?;
    socket
        .set_reuse_port(true)
        .map_err(err("set SO_REUSEPORT"))?;
    if spec.addr.is_ipv6() {
        socket
            .set_only_v6(false)
            .map_err(err("clear IPV6_V6ONLY"))?;
    }
    socket
        .bind(&SockAddr::from(spec.addr))
        .map_err(err("bind"))?;
    socket.listen(LISTEN_BACKLOG).map_err(err("listen"))?;
    Ok(socket.into())
}

/// Binds `workers` sockets per listener. The first socket of a listener with port 0 picks the
/// port; the others bind that same port so every worker serves the same address.
pub fn bind_all(
    specs: &[ListenerSpec],
    workers: usize,
) -> Result<Vec<Vec<BoundListener>>, WorkerError> {
    let mut per_worker: Vec<Vec<BoundListener>> = (0..workers).map(|_| Vec::new()).collect();
    for spec in specs {
        let mut spec = spec.clone();
        for (w, slot) in per_worker.iter_mut().enumerate() {
            let socket = bind_listener(&spec)?;
            if w == 0 {
                spec.addr = socket.local_addr().map_err(|source| WorkerError::Bind {
                    name: Arc::clone(&spec.name),
                    addr: spec.addr,
                    step: "read the bound address",
                    source,
                })?;
            }
            slot.push(BoundListener {
                spec: spec.clone(),
                socket,
            });
        }
    }
    Ok(per_worker)
}

/// A listening socket handed over by the process that ran before this one (zero-downtime
/// upgrade), with the configured name of the listener it served.
#[derive(Debug)]
pub struct InheritedListener {
    pub name: String,
    pub socket: TcpListener,
}

/// Like [`bind_all`], but first adopts the inherited sockets of each listener: a listener
/// adopts the inherited sockets with its name whose address it would bind (same address, or
/// same IP when it asks for port 0). Adopted sockets are spread round robin over the workers,
/// so when this process runs fewer workers than the old one, some workers accept on several
/// sockets and no socket of the old reuse-port group is closed with connections queued in it;
/// when it runs more, the extra workers share the adopted sockets (duplicates) instead of
/// binding new ones, so the reuse-port group stays exactly the old one and a new process that
/// exits early leaves every queued connection to the old one. A listener with no inherited
/// socket is bound anew. Sockets left in `inherited` matched no listener; the caller decides
/// what to do.
pub fn adopt_all(
    specs: &[ListenerSpec],
    workers: usize,
    inherited: &mut Vec<InheritedListener>,
) -> Result<Vec<Vec<BoundListener>>, WorkerError> {
    let workers = workers.max(1);
    let mut per_worker: Vec<Vec<BoundListener>> = (0..workers).map(|_| Vec::new()).collect();
    for spec in specs {
        let mut spec = spec.clone();
        let mut adopted = Vec::new();
        let mut rest = Vec::with_capacity(inherited.len());
        for l in inherited.drain(..) {
            let fits = l.name == *spec.name
                && l.socket.local_addr().is_ok_and(|a| {
                    a == spec.addr || (spec.addr.port() == 0 && a.ip() == spec.addr.ip())
                });
            if fits {
                adopted.push(l.socket);
            } else {
                rest.push(l);
            }
        }
        *inherited = rest;
        if adopted.is_empty() {
            for (w, slot) in per_worker.iter_mut().enumerate() {
                let socket = bind_listener(&spec)?;
                if w == 0 {
                    spec.addr = bound_addr(&spec, &socket)?;
                }
                slot.push(BoundListener {
                    spec: spec.clone(),
                    socket,
                });
            }
            continue;
        }
        let count = adopted.len();
        for (j, socket) in adopted.into_iter().enumerate() {
            if j == 0 {
                spec.addr = bound_addr(&spec, &socket)?;
            }
            socket
                .set_nonblocking(true)
                .map_err(|source| WorkerError::Bind {
                    name: Arc::clone(&spec.name),
                    addr: spec.addr,
                    step: "make the inherited socket non-blocking",
                    source,
                })?;
            if let Some(slot) = per_worker.get_mut(j % workers) {
                slot.push(BoundListener {
                    spec: spec.clone(),
                    socket,
                });
            }
        }
        // Workers beyond the inherited sockets share them (duplicates of the same sockets)
        // rather than binding new ones: a new socket would join the reuse-port group at once
        // and take a share of new connections, which a new process that fails before the old
        // one says "go" would reset when it exits.
        let shared: Vec<TcpListener> = per_worker
            .iter()
            .take(count)
            .filter_map(|w| w.iter().find(|b| b.spec.index == spec.index))
            .map(|b| b.socket.try_clone())
            .collect::<io::Result<_>>()
            .map_err(|source| WorkerError::Bind {
                name: Arc::clone(&spec.name),
                addr: spec.addr,
                step: "share an inherited socket",
                source,
            })?;
        for (k, slot) in per_worker.iter_mut().skip(count).enumerate() {
            let Some(socket) = shared.get(k % shared.len().max(1)) else {
                break;
            };
            let socket = socket.try_clone().map_err(|source| WorkerError::Bind {
                name: Arc::clone(&spec.name),
                addr: spec.addr,
                step: "share an inherited socket",
                source,
            })?;
            slot.push(BoundListener {
                spec: spec.clone(),
                socket,
            });
        }
    }
    Ok(per_worker)
}

/// The (device, inode) of a socket: duplicates of one socket share it.
fn socket_identity(socket: &TcpListener) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::File::from(OwnedFd::from(socket.try_clone()?));
    let meta = file.metadata()?;
    Ok((meta.dev(), meta.ino()))
}

fn bound_addr(spec: &ListenerSpec, socket: &TcpListener) -> Result<SocketAddr, WorkerError> {
    socket.local_addr().map_err(|source| WorkerError::Bind {
        name: Arc::clone(&spec.name),
        addr: spec.addr,
        step: "read the bound address",
        source,
    })
}

/// The driver entry for `kind`, or an error when that driver is not part of this build.
pub fn driver_entry<H>(kind: DriverKind) -> Result<DriverEntry<H::Cx>, WorkerError>
where
    H: ConnHandler + 'static,
{
    match kind {
        DriverKind::Epoll => Ok(crate::proxy::epoll::run::<H>),
        DriverKind::Uring => Ok(crate::proxy::uring::run::<H>),
    }
}

/// The running workers: their threads, the stop handle, the addresses they serve.
pub struct WorkerSet {
    threads: Vec<JoinHandle<Result<(), DriverError>>>,
    /// A duplicate of every listener socket (same open socket), kept so a zero-downtime upgrade
    /// can hand them to the next process; dropped when the workers stop.
    handoff: std::sync::Mutex<Vec<InheritedListenerRef>>,
    stop: StopHandle,
    stats: Vec<Arc<DriverStats>>,
    local_addrs: Vec<SocketAddr>,
    driver: DriverKind,
}

#[derive(Debug)]
struct InheritedListenerRef {
    name: Arc<str>,
    socket: TcpListener,
}

/// What a [`WorkerSet`] is started with (besides the handler type and the `Cx` factory).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub driver: DriverKind,
    /// Number of worker threads (at least 1).
    pub workers: usize,
    pub listeners: Vec<ListenerSpec>,
    pub conn_limit: Arc<ConnLimit>,
    pub tuning: Tuning,
    /// Start with accepting paused until [`WorkerSet::resume_accepting`] (a process started by
    /// an upgrade, before its predecessor says "go").
    pub accept_paused: bool,
}

impl WorkerSet {
    /// Binds every listener once per worker, then starts `config.workers` threads named
    /// `arc-worker-N`, each running the chosen driver with the `Cx` that `make_cx(N)` builds
    /// on that thread. Bind errors are reported here, before any thread starts.
    pub fn spawn<H, F>(config: WorkerConfig, make_cx: F) -> Result<WorkerSet, WorkerError>
    where
        H: ConnHandler + 'static,
        H::Cx: 'static,
        F: Fn(usize) -> H::Cx + Send + Sync + 'static,
    {
        Self::spawn_adopting::<H, F>(config, &mut Vec::new(), make_cx)
    }

    /// [`WorkerSet::spawn`] that first adopts inherited listener sockets (see [`adopt_all`]).
    pub fn spawn_adopting<H, F>(
        config: WorkerConfig,
        inherited: &mut Vec<InheritedListener>,
        make_cx: F,
    ) -> Result<WorkerSet, WorkerError>
    where
        H: ConnHandler + 'static,
        H::Cx: 'static,
        F: Fn(usize) -> H::Cx + Send + Sync + 'static,
    {
        let entry = driver_entry::<H>(config.driver)?;
        let workers = config.workers.max(1);
        let bound = adopt_all(&config.listeners, workers, inherited)?;
        let mut handoff = Vec::new();
        let mut seen = Vec::new();
        for l in bound.iter().flatten() {
            // A socket shared by several workers is handed over once.
            if let Ok(meta) = socket_identity(&l.socket) {
                let id = meta;
                if seen.contains(&id) {
                    continue;
                }
                seen.push(id);
            }
            let socket = l.socket.try_clone().map_err(|source| WorkerError::Setup {
                what: "a handoff copy of a listener socket",
                source,
            })?;
            handoff.push(InheritedListenerRef {
                name: Arc::clone(&l.spec.name),
                socket,
            });
        }
        let local_addrs = bound
            .first()
            .map(|l| l.iter().map(|b| b.spec.addr).collect())
            .unwrap_or_default();
        let (stop, signals) = StopHandle::new(workers)?;
        if config.accept_paused {
            stop.pause_accepting();
        }
        let make_cx = Arc::new(make_cx);
        let mut set = WorkerSet {
            threads: Vec::with_capacity(workers),
            handoff: std::sync::Mutex::new(handoff),
            stop,
            stats: Vec::with_capacity(workers),
            local_addrs,
            driver: config.driver,
        };
        for (worker, (listeners, signal)) in bound.into_iter().zip(signals).enumerate() {
            let stats = Arc::new(DriverStats::default());
            set.stats.push(Arc::clone(&stats));
            let conn_limit = Arc::clone(&config.conn_limit);
            let tuning = config.tuning;
            let make_cx = Arc::clone(&make_cx);
            let spawned = std::thread::Builder::new()
                .name(format!("arc-worker-{worker}"))
                .spawn(move || {
                    let cx = make_cx(worker);
                    entry(DriverParams {
                        worker,
                        listeners,
                        conn_limit,
                        stop: signal,
                        cx,
                        tuning,
                        stats,
                    })
                });
            match spawned {
                Ok(handle) => set.threads.push(handle),
                Err(source) => {
                    set.stop.stop();
                    let _ = set.join_threads();
                    return Err(WorkerError::Setup {
                        what: "a worker thread",
                        source,
                    });
                }
            }
        }
        Ok(set)
    }

    /// The address each listener serves (ports resolved when the config said 0), in order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The driver the workers run.
    pub fn driver(&self) -> DriverKind {
        self.driver
    }

    /// A handle that stops the workers (for signal handlers, admin endpoints, tests).
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Asks every worker to stop (see [`DriverParams`] for what stopping means). The handoff
    /// copies of the listener sockets are closed too, so a listener no other process holds
    /// stops taking connections.
    pub fn stop(&self) {
        if let Ok(mut h) = self.handoff.lock() {
            h.clear();
        }
        self.stop.stop();
    }

    /// Lets workers started with accepting paused accept (see [`WorkerConfig::accept_paused`]).
    pub fn resume_accepting(&self) {
        self.stop.resume_accepting();
    }

    /// The stop grace the workers use from now on when the drain starts (a reloaded
    /// `lifecycle.drain_timeout`).
    pub fn set_stop_grace(&self, grace: Duration) {
        self.stop.set_grace(grace);
    }

    /// Fresh duplicates of every listener socket (listener name, socket), for handing to the
    /// next process of a zero-downtime upgrade. Empty once the workers were stopped.
    pub fn listener_sockets(&self) -> io::Result<Vec<(Arc<str>, TcpListener)>> {
        let Ok(h) = self.handoff.lock() else {
            return Ok(Vec::new());
        };
        h.iter()
            .map(|l| Ok((Arc::clone(&l.name), l.socket.try_clone()?)))
            .collect()
    }

    /// The workers' heartbeats (for the watchdog).
    pub fn heartbeats(&self) -> &Arc<Heartbeats> {
        self.stop.heartbeats()
    }

    /// Per-worker counters, in worker order.
    pub fn stats(&self) -> &[Arc<DriverStats>] {
        &self.stats
    }

    /// Sum of one counter over all workers.
    pub fn total(&self, pick: impl Fn(&DriverStats) -> &AtomicU64) -> u64 {
        self.stats.iter().map(|s| DriverStats::get(pick(s))).sum()
    }

    /// Waits for every worker to finish; the first error (in worker order) is returned.
    pub fn join(mut self) -> Result<(), WorkerError> {
        self.join_threads()
    }

    fn join_threads(&mut self) -> Result<(), WorkerError> {
        let mut first = Ok(());
        for (worker, handle) in self.threads.drain(..).enumerate() {
            let result = match handle.join() {
                Ok(Ok(())) => Ok(()),
                Ok(Err(source)) => Err(WorkerError::Driver { worker, source }),
                Err(_) => Err(WorkerError::Panicked(worker)),
            };
            if first.is_ok() {
                first = result;
            }
        }
        first
    }
}

impl Drop for WorkerSet {
    /// Stops and joins the workers if the owner did not.
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop.stop();
            let _ = self.join_threads();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Instant;

    fn spec(name: &str, addr: SocketAddr) -> ListenerSpec {
        ListenerSpec {
            index: 0,
            name: Arc::from(name),
            addr,
            tls: None,
        }
    }

    #[test]
    fn port_zero_is_shared_by_every_worker() {
        let specs = [spec("http", SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))];
        let bound = bind_all(&specs, 3).unwrap();
        assert_eq!(bound.len(), 3);
        let port = bound[0][0].socket.local_addr().unwrap().port();
        assert_ne!(port, 0);
        for worker in &bound {
            assert_eq!(worker[0].socket.local_addr().unwrap().port(), port);
            assert_eq!(worker[0].spec.addr.port(), port);
        }
    }

    #[test]
    fn ipv6_wildcard_accepts_ipv4_clients() {
        let specs = [spec("v6", "[::]:0".parse().unwrap())];
        let Ok(bound) = bind_all(&specs, 1) else {
            // A host without IPv6 cannot run this check.
            return;
        };
        let port = bound[0][0].spec.addr.port();
        let client = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port));
        assert!(client.is_ok(), "IPv4 client refused: {client:?}");
    }

    #[test]
    fn bind_error_names_the_listener_and_address() {
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind_all(&[spec("public-https", addr)], 1).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("public-https"), "{text}");
        assert!(text.contains(&addr.to_string()), "{text}");
        assert!(
            matches!(err, WorkerError::Bind { step: "bind", .. }),
            "{err:?}"
        );
    }

    fn inherit(bound: Vec<Vec<BoundListener>>) -> Vec<InheritedListener> {
        bound
            .into_iter()
            .flatten()
            .map(|b| InheritedListener {
                name: b.spec.name.to_string(),
                socket: b.socket,
            })
            .collect()
    }

    fn inode(l: &TcpListener) -> u64 {
        use std::os::fd::AsRawFd;
        let link = std::fs::read_link(format!("/proc/self/fd/{}", l.as_raw_fd())).unwrap();
        // "socket:[12345]"
        link.to_string_lossy()
            .trim_start_matches("socket:[")
            .trim_end_matches(']')
            .parse()
            .unwrap()
    }

    #[test]
    fn fewer_workers_adopt_every_inherited_socket() {
        let specs = [spec("http", SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))];
        let old = bind_all(&specs, 3).unwrap();
        let port = old[0][0].spec.addr.port();
        let sockets: Vec<u64> = old.iter().map(|w| inode(&w[0].socket)).collect();
        let mut inherited = inherit(old);
        let new = adopt_all(&specs, 2, &mut inherited).unwrap();
        assert!(inherited.is_empty());
        // Three sockets over two workers: none is closed (its queue would be reset).
        assert_eq!(new[0].len(), 2);
        assert_eq!(new[1].len(), 1);
        let mut adopted: Vec<u64> = new.iter().flatten().map(|b| inode(&b.socket)).collect();
        adopted.sort_unstable();
        let mut expected = sockets.clone();
        expected.sort_unstable();
        assert_eq!(adopted, expected, "the same sockets, not new ones");
        assert!(new.iter().flatten().all(|b| b.spec.addr.port() == port));
    }

    #[test]
    fn more_workers_share_the_inherited_sockets_and_bind_only_new_listeners() {
        let specs = [
            spec("http", SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            ListenerSpec {
                index: 1,
                ..spec("other", SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            },
        ];
        let old = bind_all(&specs[..1], 2).unwrap();
        let port = old[0][0].spec.addr.port();
        let mut first: Vec<u64> = old.iter().map(|w| inode(&w[0].socket)).collect();
        first.sort_unstable();
        let mut inherited = inherit(old);
        // A stray socket under a name no listener has is left to the caller.
        inherited.push(InheritedListener {
            name: "gone".into(),
            socket: TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap(),
        });
        let new = adopt_all(&specs, 3, &mut inherited).unwrap();
        assert_eq!(inherited.len(), 1);
        assert_eq!(inherited[0].name, "gone");
        // Three workers over two inherited sockets: no new socket joins the group.
        let mut http: Vec<u64> = new.iter().map(|w| inode(&w[0].socket)).collect();
        http.sort_unstable();
        http.dedup();
        assert_eq!(http, first);
        for w in &new {
            assert_eq!(w.len(), 2);
            assert_eq!(w[0].socket.local_addr().unwrap().port(), port);
            assert_eq!(w[0].spec.index, 0);
            assert_eq!(w[1].spec.index, 1);
        }
        // The "other" listener was bound fresh; all its workers share one port.
        let other = new[0][1].spec.addr.port();
        assert!(
            new.iter()
                .all(|w| w[1].socket.local_addr().unwrap().port() == other)
        );
    }

    #[test]
    fn accept_gate_and_grace_reach_every_signal() {
        let (handle, signals) = StopHandle::new(2).unwrap();
        assert!(signals.iter().all(|s| s.accepting() && s.grace().is_none()));
        handle.pause_accepting();
        assert!(signals.iter().all(|s| !s.accepting()));
        handle.set_grace(Duration::from_secs(6));
        assert!(
            signals
                .iter()
                .all(|s| s.grace() == Some(Duration::from_secs(6)))
        );
        let mut buf = [0u8; 8];
        handle.resume_accepting();
        for s in &signals {
            assert!(s.accepting());
            assert!(!s.is_stopped());
            // Resuming wakes the loop.
            assert_eq!(rustix::io::read(s.fd(), &mut buf), Ok(8));
        }
    }

    #[test]
    fn heartbeats_name_the_worker_that_stopped_turning() {
        let (handle, signals) = StopHandle::new(2).unwrap();
        let hb = Arc::clone(handle.heartbeats());
        for s in &signals {
            s.beat();
        }
        let now = Instant::now();
        assert!(hb.stalled(now, Duration::from_secs(1)).is_empty());
        std::thread::sleep(Duration::from_millis(30));
        signals[1].beat();
        let now = Instant::now();
        assert_eq!(hb.stalled(now, Duration::from_millis(20)), vec![0]);
        assert!(hb.oldest(now) >= Duration::from_millis(30));
        assert_eq!(
            hb.stalled(now + Duration::from_secs(10), Duration::from_secs(5)),
            vec![0, 1]
        );
    }

    #[test]
    fn stop_handle_wakes_every_signal() {
        let (handle, signals) = StopHandle::new(2).unwrap();
        assert!(signals.iter().all(|s| !s.is_stopped()));
        let mut buf = [0u8; 8];
        assert!(
            rustix::io::read(signals[0].fd(), &mut buf).is_err(),
            "not yet readable"
        );
        handle.stop();
        for s in &signals {
            assert!(s.is_stopped());
            assert_eq!(rustix::io::read(s.fd(), &mut buf), Ok(8));
        }
        assert!(handle.is_stopped());
    }
}
