//! The worker's pool of idle upstream connections as both io drivers run it: the pool itself
//! ([`Pool`]), when it must be swept (idle expiry, endpoints that left the routing table), the
//! liveness probe rule at checkout, and the stop-time clear.
//!
//! Generic over the driver's connection handle `S` (a slot id): the pool never touches a
//! socket. What it hands back is for the driver to close; the one syscall of a checkout (the
//! liveness peek) is a closure the driver passes in, asked only for a connection that sat idle
//! at least [`PROBE_AFTER_IDLE`]. Time is an argument.
//!
//! The next expiry is kept as a hint (the earliest instant an idle connection may expire):
//! lowered on every checkin, recomputed exactly only after a sweep. An early hint is harmless —
//! the sweep then finds nothing and recomputes — and it spares the per-turn scan of every idle
//! entry that an exact value would cost under keep-alive load.

use std::time::Instant;

use crate::metrics::PoolGauges;
use crate::proxy::io::{PoolKey, PoolLimits};
use crate::proxy::upstream::pool::{PROBE_AFTER_IDLE, Pool};

/// The outcome of [`WorkerPool::checkout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkout<S> {
    /// A live idle connection for the key, if there was one.
    pub conn: Option<S>,
    /// Connections the liveness probe found stale (closed by the peer, or with unexpected
    /// bytes): they were handed back for closing, the driver counts them.
    pub stale: usize,
}

/// Idle upstream connections of one worker, with their sweeping.
pub struct WorkerPool<S> {
    pool: Pool<S>,
    /// Earliest instant an idle connection may expire (see the module doc).
    next_expiry: Option<Instant>,
    /// The handler's endpoints epoch the last departed-endpoint sweep saw.
    endpoints_epoch: u64,
}

impl<S: Copy + PartialEq> WorkerPool<S> {
    /// An empty pool publishing its idle counts to `gauges` (`None`: no gauges).
    pub fn new(gauges: Option<PoolGauges>) -> Self {
        WorkerPool {
            pool: Pool::with_gauges(gauges),
            next_expiry: None,
            endpoints_epoch: 0,
        }
    }

    /// When the driver must call [`WorkerPool::expire`] next (possibly early), if ever.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.next_expiry
    }

    /// Idle connections held.
    pub fn len(&self) -> usize {
        self.pool.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pool.is_empty()
    }

    /// Takes the most recently returned live connection for `key`. Expired entries and the
    /// ones `probe` finds stale are pushed to `close` (for the driver to close). `probe` is
    /// asked only for connections idle at least [`PROBE_AFTER_IDLE`]: one returned moments ago
    /// is reused without a syscall.
    pub fn checkout(
        &mut self,
        key: &PoolKey,
        now: Instant,
        close: &mut Vec<S>,
        mut probe: impl FnMut(S) -> bool,
    ) -> Checkout<S> {
        let mut stale = 0;
        while let Some((conn, idle)) = self.pool.checkout_aged(key, now, close) {
            if idle < PROBE_AFTER_IDLE || probe(conn) {
                return Checkout {
                    conn: Some(conn),
                    stale,
                };
            }
            stale += 1;
            close.push(conn);
        }
        Checkout { conn: None, stale }
    }

    /// Returns a released reusable connection to the pool. Hands back the connection to
    /// close when the key is over `limits.max_idle` (the oldest one, or `conn` itself when the
    /// pool keeps none for the key).
    pub fn checkin(
        &mut self,
        key: PoolKey,
        conn: S,
        limits: PoolLimits,
        now: Instant,
    ) -> Option<S> {
        let evicted = self
            .pool
            .checkin(key, conn, limits.max_idle, limits.idle_timeout, now);
        if evicted != Some(conn) {
            let at = now + limits.idle_timeout;
            self.next_expiry = Some(self.next_expiry.map_or(at, |t| t.min(at)));
        }
        evicted
    }

    /// Removes one idle connection (the driver saw it turn stale); true when it was pooled.
    pub fn remove(&mut self, conn: S) -> bool {
        !self.pool.remove_where(|_, c| *c == conn).is_empty()
    }

    /// Connections whose idle timeout passed by `now`, for closing. Free of work (and of
    /// allocation) until the expiry hint is due.
    pub fn expire(&mut self, now: Instant) -> Vec<S> {
        if self.next_expiry.is_none_or(|t| t > now) {
            return Vec::new();
        }
        let expired = self.pool.expire(now);
        self.next_expiry = self.pool.next_expiry();
        expired
    }

    /// When `epoch` (the handler's [`crate::proxy::io::ConnHandler::endpoints_epoch`]) changed
    /// since the last call, removes the idle connections whose key `keep` rejects (endpoints
    /// that left the routing table) and returns them for closing.
    pub fn sweep_departed(&mut self, epoch: u64, mut keep: impl FnMut(&PoolKey) -> bool) -> Vec<S> {
        if epoch == self.endpoints_epoch {
            return Vec::new();
        }
        self.endpoints_epoch = epoch;
        let departed = self.pool.remove_where(|key, _| !keep(key));
        self.next_expiry = self.pool.next_expiry();
        departed
    }

    /// Empties the pool (the worker stops, or tears down); returns everything for closing.
    pub fn clear(&mut self) -> Vec<S> {
        self.next_expiry = None;
        self.pool.remove_where(|_, _| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    fn key(port: u16) -> PoolKey {
        PoolKey {
            endpoint: SocketAddr::from(([127, 0, 0, 1], port)),
            upstream: Arc::from("app"),
            tls: None,
        }
    }

    fn limits(max_idle: usize, idle_secs: u64) -> PoolLimits {
        PoolLimits {
            max_idle,
            idle_timeout: Duration::from_secs(idle_secs),
            connect_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_fresh_connection_is_reused_without_a_probe_an_old_one_only_if_live() {
        let t0 = Instant::now();
        let mut pool = WorkerPool::<u32>::new(None);
        let mut close = Vec::new();
        assert_eq!(pool.checkin(key(1), 7, limits(4, 60), t0), None);
        let mut probed = Vec::new();
        let got = pool.checkout(&key(1), t0 + Duration::from_millis(10), &mut close, |c| {
            probed.push(c);
            false
        });
        assert_eq!(
            got,
            Checkout {
                conn: Some(7),
                stale: 0
            }
        );
        assert!(probed.is_empty(), "returned moments ago: no probe");

        // Two connections idle long enough to be probed: the newest is stale, the older live.
        pool.checkin(key(1), 1, limits(4, 60), t0);
        pool.checkin(key(1), 2, limits(4, 60), t0);
        let later = t0 + PROBE_AFTER_IDLE + Duration::from_millis(1);
        let got = pool.checkout(&key(1), later, &mut close, |c| {
            probed.push(c);
            c == 1
        });
        assert_eq!(
            got,
            Checkout {
                conn: Some(1),
                stale: 1
            }
        );
        assert_eq!(probed, vec![2, 1], "most recently returned first");
        assert_eq!(close, vec![2], "the stale one is handed back for closing");
        assert!(pool.is_empty());
        let miss = pool.checkout(&key(1), later, &mut close, |_| true);
        assert_eq!(
            miss,
            Checkout {
                conn: None,
                stale: 0
            }
        );
    }

    #[test]
    fn expired_entries_are_handed_back_at_checkout_and_by_the_sweep() {
        let t0 = Instant::now();
        let mut pool = WorkerPool::<u32>::new(None);
        pool.checkin(key(1), 1, limits(4, 5), t0);
        pool.checkin(key(2), 2, limits(4, 10), t0);
        assert_eq!(pool.next_expiry(), Some(t0 + Duration::from_secs(5)));
        assert!(
            pool.expire(t0 + Duration::from_secs(4)).is_empty(),
            "nothing due before the hint"
        );
        assert_eq!(pool.expire(t0 + Duration::from_secs(5)), vec![1]);
        assert_eq!(pool.next_expiry(), Some(t0 + Duration::from_secs(10)));
        let mut close = Vec::new();
        let got = pool.checkout(&key(2), t0 + Duration::from_secs(11), &mut close, |_| true);
        assert_eq!(got.conn, None);
        assert_eq!(close, vec![2], "expired at checkout: closed, not reused");
    }

    #[test]
    fn an_early_expiry_hint_finds_nothing_and_is_recomputed() {
        let t0 = Instant::now();
        let mut pool = WorkerPool::<u32>::new(None);
        pool.checkin(key(1), 1, limits(4, 5), t0);
        let mut close = Vec::new();
        // Checked out again: the hint stays early (harmless).
        assert_eq!(
            pool.checkout(&key(1), t0, &mut close, |_| true).conn,
            Some(1)
        );
        pool.checkin(key(1), 1, limits(4, 5), t0 + Duration::from_secs(3));
        assert_eq!(pool.next_expiry(), Some(t0 + Duration::from_secs(5)));
        assert!(pool.expire(t0 + Duration::from_secs(5)).is_empty());
        assert_eq!(
            pool.next_expiry(),
            Some(t0 + Duration::from_secs(8)),
            "recomputed exactly after the sweep"
        );
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn checkin_over_max_idle_hands_back_the_oldest() {
        let t0 = Instant::now();
        let mut pool = WorkerPool::<u32>::new(None);
        assert_eq!(pool.checkin(key(1), 1, limits(2, 60), t0), None);
        assert_eq!(pool.checkin(key(1), 2, limits(2, 60), t0), None);
        assert_eq!(pool.checkin(key(1), 3, limits(2, 60), t0), Some(1));
        assert_eq!(pool.checkin(key(1), 4, limits(0, 60), t0), Some(4));
        assert_eq!(pool.len(), 2);
        assert!(pool.remove(2));
        assert!(!pool.remove(2), "already gone");
        assert_eq!(pool.clear(), vec![3]);
        assert_eq!(pool.next_expiry(), None);
    }

    #[test]
    fn departed_endpoints_are_swept_once_per_epoch_change() {
        let t0 = Instant::now();
        let mut pool = WorkerPool::<u32>::new(None);
        pool.checkin(key(1), 1, limits(4, 60), t0);
        pool.checkin(key(2), 2, limits(4, 60), t0);
        let mut asked = 0;
        assert!(
            pool.sweep_departed(0, |_| {
                asked += 1;
                false
            })
            .is_empty()
        );
        assert_eq!(asked, 0, "same epoch: no sweep");
        let gone = pool.sweep_departed(1, |k| k.endpoint.port() != 2);
        assert_eq!(gone, vec![2]);
        assert!(pool.sweep_departed(1, |_| false).is_empty(), "epoch seen");
        assert_eq!(pool.len(), 1);
    }
}
