//! The contract between the worker set and an io driver: what a driver receives
//! ([`DriverParams`]), its entry point's shape ([`DriverEntry`]), its tuning, its counters and
//! its errors.
//!
//! A driver is a function with the shape of [`DriverEntry`]:
//! `fn run<H: ConnHandler>(params: DriverParams<H::Cx>) -> Result<(), DriverError>`.
//! It runs on the worker's thread until [`DriverParams::stop`] fires and every connection has
//! finished (or the stop grace period passed), then returns. See [`DriverParams`] for what a
//! driver receives and must honour; the per-connection half of the contract (the handler a
//! driver calls) is [`crate::proxy::io`]. The drivers import this module, [`crate::proxy::listener`]
//! and [`crate::proxy::stop`], never the worker set that spawns them.

#![forbid(unsafe_code)]

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::proxy::io::ConnLimit;
use crate::proxy::listener::BoundListener;
use crate::proxy::stop::StopSignal;

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
///   [`crate::proxy::stop::HEARTBEAT_TICK`], so the watchdog sees the worker alive;
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
