//! The seam between the io drivers (`proxy::epoll`, `proxy::uring`) and the proxy core.
//!
//! A downstream connection is a sans-IO state machine (a [`ConnHandler`]): the driver tells it
//! what happened (bytes arrived, an upstream connected, a timer fired, ...) and then asks it what
//! to do next — bytes to write ([`ConnHandler::downstream_out`], [`ConnHandler::upstream_out`]),
//! discrete [`Action`]s, which sides to read ([`Interest`]) and when to wake it
//! ([`ConnHandler::deadline`]). Both drivers run the same handler, so they share every byte of
//! proxy behaviour; the handler is tested without sockets, with virtual time.
//!
//! Driver contract, after *every* callback on a connection:
//! 1. drain [`ConnHandler::poll_action`] until `None` and carry each action out;
//! 2. write whatever `downstream_out()` / `upstream_out()` hold (possibly partially), then report
//!    what was written with `downstream_written(n)` / `upstream_written(n)` — the handler keeps
//!    the bytes until then, so a slow peer holds back the handler through its bounded buffers;
//! 3. read a side only while [`ConnHandler::interest`] asks for it (this is the back-pressure);
//! 4. (re)arm a timer for [`ConnHandler::deadline`] and call `on_timer` when it passes;
//! 5. when the handler says [`ConnHandler::is_closed`], flush nothing more and release the
//!    connection's resources (an attached upstream is closed unless it was released first).
//!
//! TLS is the driver side's business, done by the driver-neutral session layer
//! ([`crate::proxy::session`]): downstream by a handler wrapper on https listeners, upstream
//! for sockets whose [`PoolKey::tls`] is set; the handler sees plaintext.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::time::Instant;

/// What the driver knows about a new downstream connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Index of the listener in the configuration's `listeners[]`.
    pub listener: usize,
    /// True when the connection arrived on a TLS listener (after the handshake).
    pub tls: bool,
    /// SNI host name the client sent, if any.
    pub sni: Option<Box<str>>,
}

/// Identifies a pool of reusable upstream connections (per worker): one endpoint of one upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub endpoint: SocketAddr,
    /// The upstream's name; pools are kept per (upstream, endpoint) so per-upstream limits apply.
    pub upstream: std::sync::Arc<str>,
    /// TLS settings when the upstream speaks HTTPS: part of the key, so TLS and plain
    /// connections (or different SNI/verification settings) never share an entry.
    pub tls: Option<crate::proxy::tls::UpstreamTls>,
}

/// Pool limits for one upstream, carried with the connect request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    pub max_idle: usize,
    pub idle_timeout: std::time::Duration,
    pub connect_timeout: std::time::Duration,
}

/// A discrete request from the handler to its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Attach an upstream connection to `key.endpoint`: an idle one from the worker's pool if
    /// there is a live one, else a new TCP connection (non-blocking, `TCP_NODELAY`), failing
    /// with [`UpstreamError::ConnectTimeout`] after `limits.connect_timeout`. With `key.tls`
    /// the driver runs the TLS handshake (within the same timeout) before answering, and
    /// from then on moves plaintext between the handler and the session. Answer with
    /// `on_upstream_connected(reused)` or `on_upstream_error`.
    ConnectUpstream { key: PoolKey, limits: PoolLimits },
    /// The handler is done with the attached upstream connection: put it back in the pool when
    /// `reusable` (and the pool has room), else close it.
    ReleaseUpstream { reusable: bool },
    /// Close the downstream connection once `downstream_out()` has been written (`flush`), or
    /// at once. The handler reports `is_closed()` after this.
    ///
    /// After a flushed close the driver shuts down the sending side and, when `linger`, keeps
    /// reading and discarding what the client still sends (bounded by `lingering_close`), so
    /// that bytes arriving after the close do not make the kernel answer with a reset that
    /// destroys the response. A handler clears `linger` when nothing more can come: the client
    /// asked for the close and every byte it sent has been read.
    CloseDownstream { flush: bool, linger: bool },
}

/// Why an upstream connection failed, as the driver saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// Connection refused, unreachable, reset before connecting.
    Connect,
    /// The connect did not finish within the timeout.
    ConnectTimeout,
    /// Reset or another error on an established connection.
    Io,
    /// The TLS handshake with the upstream failed (certificate, protocol, alert); the driver
    /// logged the detail.
    Tls,
}

/// Which sides the handler wants to read now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interest {
    pub downstream_read: bool,
    pub upstream_read: bool,
}

/// One downstream connection's proxy logic, driven by an io driver (see the module doc).
///
/// `Cx` is the worker-wide context the driver owns and lends to every call (routing snapshot,
/// per-worker metrics, load-balancing state); nothing in it is shared with other workers.
pub trait ConnHandler: Sized {
    type Cx;

    /// A new downstream connection was accepted (and its TLS handshake, if any, finished).
    fn new(cx: &mut Self::Cx, info: ConnInfo, now: Instant) -> Self;

    fn on_downstream_data(&mut self, cx: &mut Self::Cx, data: &[u8], now: Instant);
    /// The client closed its sending side (read returned 0).
    fn on_downstream_eof(&mut self, cx: &mut Self::Cx, now: Instant);
    /// The downstream socket failed (reset, ...); the handler closes.
    fn on_downstream_error(&mut self, cx: &mut Self::Cx, now: Instant);
    fn on_upstream_connected(&mut self, cx: &mut Self::Cx, reused: bool, now: Instant);
    fn on_upstream_data(&mut self, cx: &mut Self::Cx, data: &[u8], now: Instant);
    /// The upstream closed its sending side.
    fn on_upstream_eof(&mut self, cx: &mut Self::Cx, now: Instant);
    fn on_upstream_error(&mut self, cx: &mut Self::Cx, err: UpstreamError, now: Instant);
    fn on_timer(&mut self, cx: &mut Self::Cx, now: Instant);

    /// Bytes to write to the client; the driver reports progress with `downstream_written`.
    fn downstream_out(&self) -> &[u8];
    /// Optional zero-copy form of `downstream_out` for a driver that must own the bytes of a
    /// send in flight: moves every pending downstream byte into `buf` (empty, from the driver)
    /// by swapping buffers, and returns true. The moved bytes stay pending for the handler
    /// (back-pressure, accounting) until `downstream_written` reports them; the driver sends
    /// all of them, in order, before it looks at `downstream_out` again. False (the default)
    /// moves nothing and the driver copies from `downstream_out`.
    fn lend_downstream_out(&mut self, _buf: &mut Vec<u8>) -> bool {
        false
    }
    fn downstream_written(&mut self, cx: &mut Self::Cx, n: usize, now: Instant);
    /// Bytes to write to the attached upstream connection.
    fn upstream_out(&self) -> &[u8];
    fn upstream_written(&mut self, cx: &mut Self::Cx, n: usize, now: Instant);

    fn poll_action(&mut self) -> Option<Action>;
    fn interest(&self) -> Interest;
    /// The earliest time `on_timer` must be called, if any.
    fn deadline(&self) -> Option<Instant>;
    /// True once the connection is finished; the driver frees it.
    fn is_closed(&self) -> bool;

    /// A new connection was refused (`max_connections`); the handler side counts it.
    fn on_refused(_cx: &mut Self::Cx) {}

    /// A number that changes whenever upstream endpoints may have left the routing table. The
    /// driver reads it once per loop turn; when it changed, idle pooled connections whose key
    /// [`ConnHandler::keep_pooled`] rejects are closed.
    fn endpoints_epoch(_cx: &mut Self::Cx) -> u64 {
        0
    }

    /// Whether idle pooled connections for `key` may stay pooled.
    fn keep_pooled(_cx: &mut Self::Cx, _key: &PoolKey) -> bool {
        true
    }

    /// Gauges the driver's pool publishes its idle counts to (called once, when the driver
    /// builds its pool).
    fn pool_gauges(_cx: &mut Self::Cx) -> Option<crate::metrics::PoolGauges> {
        None
    }

    /// The worker started draining (called once, before `on_drain` reaches the open
    /// connections): handlers created from now on are born draining.
    fn begin_drain(_cx: &mut Self::Cx) {}

    /// The worker drains: finish what is under way, then close (see the core's drain rules).
    /// The driver carries out the resulting actions as after any callback.
    fn on_drain(&mut self, _cx: &mut Self::Cx, _now: Instant) {}
}

/// Process-wide bound on downstream connections (`max_connections`), shared by the workers.
/// Touched once per accepted and once per closed connection, never per request.
#[derive(Debug)]
pub struct ConnLimit {
    max: u64,
    active: std::sync::atomic::AtomicU64,
}

impl ConnLimit {
    pub fn new(max: u64) -> Self {
        ConnLimit {
            max,
            active: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Takes a slot for a new connection; false = over the limit (close it at once, count it).
    pub fn try_acquire(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back the slot of a closed connection.
    pub fn release(&self) {
        use std::sync::atomic::Ordering;
        let _ = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }

    pub fn active(&self) -> u64 {
        self.active.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_limit_refuses_over_max_and_recovers() {
        let l = ConnLimit::new(2);
        assert!(l.try_acquire());
        assert!(l.try_acquire());
        assert!(!l.try_acquire());
        assert_eq!(l.active(), 2);
        l.release();
        assert!(l.try_acquire());
        l.release();
        l.release();
        l.release();
        assert_eq!(l.active(), 0);
    }
}
