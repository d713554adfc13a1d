//! A per-worker pool of idle keep-alive upstream connections.
//!
//! Generic over the driver's connection handle `S` so that both io drivers share the policy:
//! at most `max_idle` idle connections per [`PoolKey`], most recently used first (warm
//! connections are reused, cold ones age out), expiry after `idle_timeout`. The pool never
//! touches sockets: the driver closes what [`Pool::expire`] and [`Pool::remove_where`] hand
//! back, and tells the pool when an idle connection turned stale (peer closed, data arrived).
//! Time is an argument. Owned by one worker: no locks. With gauges attached
//! ([`Pool::with_gauges`]) the pool publishes its idle count per key to the worker's
//! single-writer pool gauges (`arc_upstream_pool_idle`, `/api/v1/upstreams`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::{EndpointCell, PoolGauges};
use crate::proxy::io::PoolKey;

/// A connection that sat idle at least this long is probed (non-blocking peek) before reuse.
/// One returned more recently skips the probe (a syscall per request under load): a peer's
/// idle-timeout close cannot have happened yet, an unexpected close still raised the driver's
/// idle watch, and a close racing the checkout is replayed like any failure of a reused
/// connection before its answer.
pub const PROBE_AFTER_IDLE: Duration = Duration::from_millis(500);

struct Idle<S> {
    conn: S,
    since: Instant,
    timeout: Duration,
}

/// The idle connections of one key, with its gauge cell once known (so publishing the idle
/// count after a checkout or checkin is a store, not a map lookup).
struct Slot<S> {
    list: Vec<Idle<S>>,
    cell: Option<Arc<EndpointCell>>,
}

impl<S> Default for Slot<S> {
    fn default() -> Self {
        Slot {
            list: Vec::new(),
            cell: None,
        }
    }
}

/// Keys are configuration data (upstream names, resolved endpoints), never request bytes, so
/// a fast hasher serves.
type SlotMap<S> = HashMap<PoolKey, Slot<S>, foldhash::fast::RandomState>;

/// Idle upstream connections of one worker.
pub struct Pool<S> {
    idle: SlotMap<S>,
    count: usize,
    hits: u64,
    misses: u64,
    gauges: Option<PoolGauges>,
}

impl<S> Default for Pool<S> {
    fn default() -> Self {
        Pool {
            idle: SlotMap::default(),
            count: 0,
            hits: 0,
            misses: 0,
            gauges: None,
        }
    }
}

impl<S> Pool<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A pool that publishes its idle count per key to `gauges` (`None`: no gauges).
    pub fn with_gauges(gauges: Option<PoolGauges>) -> Self {
        Pool {
            gauges,
            ..Self::default()
        }
    }

    /// Publishes the idle count of `slot` (the slot of `key`).
    fn publish(gauges: &mut Option<PoolGauges>, key: &PoolKey, slot: &mut Slot<S>) {
        let Some(g) = gauges.as_mut() else {
            return;
        };
        let n = slot.list.len();
        match &slot.cell {
            Some(c) => c.set_idle(n),
            // A zero for a pair never seen creates nothing.
            None if n == 0 => g.set_idle(&key.upstream, key.endpoint, 0),
            None => {
                let c = g.cell(&key.upstream, key.endpoint);
                c.set_idle(n);
                slot.cell = Some(c);
            }
        }
    }

    fn publish_all(&mut self) {
        if let Some(g) = self.gauges.as_mut() {
            // Keys of one endpoint may differ in other settings (TLS after a reload): summed.
            g.reset_idle(|upstream, endpoint| {
                self.idle
                    .iter()
                    .filter(|(k, _)| k.endpoint == endpoint && *k.upstream == **upstream)
                    .map(|(_, s)| s.list.len())
                    .sum()
            });
        }
    }

    /// Takes the most recently returned live connection for `key`, if any (a hit), discarding
    /// entries whose idle timeout has passed into `expired` for the caller to close.
    pub fn checkout(&mut self, key: &PoolKey, now: Instant, expired: &mut Vec<S>) -> Option<S> {
        self.checkout_aged(key, now, expired).map(|(conn, _)| conn)
    }

    /// [`Pool::checkout`], also telling how long the connection sat idle (drivers skip the
    /// liveness probe for a connection returned moments ago).
    pub fn checkout_aged(
        &mut self,
        key: &PoolKey,
        now: Instant,
        expired: &mut Vec<S>,
    ) -> Option<(S, Duration)> {
        let mut found = None;
        if let Some(slot) = self.idle.get_mut(key) {
            while let Some(entry) = slot.list.pop() {
                self.count -= 1;
                let idle = now.saturating_duration_since(entry.since);
                if idle < entry.timeout {
                    found = Some((entry.conn, idle));
                    break;
                }
                expired.push(entry.conn);
            }
            // An emptied list stays in the map: the next checkin of the same key (the usual
            // keep-alive cycle) then neither hashes a new entry in nor allocates a new list.
            // `expire` and `remove_where` prune empty lists.
            Self::publish(&mut self.gauges, key, slot);
        }
        if found.is_some() {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        found
    }

    /// Returns a reusable connection to the pool. When the key already holds `max_idle`
    /// connections the oldest one is handed back for closing (or `conn` itself when
    /// `max_idle == 0`).
    pub fn checkin(
        &mut self,
        key: PoolKey,
        conn: S,
        max_idle: usize,
        idle_timeout: Duration,
        now: Instant,
    ) -> Option<S> {
        if max_idle == 0 || idle_timeout.is_zero() {
            return Some(conn);
        }
        // The usual keep-alive cycle finds the key's slot: one lookup, no key clone.
        let slot = match self.idle.get_mut(&key) {
            Some(slot) => slot,
            None => self.idle.entry(key.clone()).or_default(),
        };
        let list = &mut slot.list;
        list.push(Idle {
            conn,
            since: now,
            timeout: idle_timeout,
        });
        self.count += 1;
        let evicted = if list.len() > max_idle {
            self.count -= 1;
            Some(list.remove(0).conn)
        } else {
            None
        };
        Self::publish(&mut self.gauges, &key, slot);
        evicted
    }

    /// Removes idle connections matching `pred` (e.g. the one the driver saw close, or all of an
    /// endpoint that left the routing table) and returns them for closing.
    pub fn remove_where(&mut self, mut pred: impl FnMut(&PoolKey, &S) -> bool) -> Vec<S> {
        let mut out = Vec::new();
        self.idle.retain(|key, slot| {
            let list = &mut slot.list;
            let mut i = 0;
            while i < list.len() {
                if pred(key, &list[i].conn) {
                    out.push(list.remove(i).conn);
                } else {
                    i += 1;
                }
            }
            !list.is_empty()
        });
        self.count -= out.len();
        if !out.is_empty() {
            self.publish_all();
        }
        out
    }

    /// Removes every connection whose idle timeout has passed and returns them for closing.
    pub fn expire(&mut self, now: Instant) -> Vec<S> {
        let mut out = Vec::new();
        self.idle.retain(|_, slot| {
            let list = &mut slot.list;
            let mut i = 0;
            while i < list.len() {
                if now.saturating_duration_since(list[i].since) >= list[i].timeout {
                    out.push(list.remove(i).conn);
                } else {
                    i += 1;
                }
            }
            !list.is_empty()
        });
        self.count -= out.len();
        if !out.is_empty() {
            self.publish_all();
        }
        out
    }

    /// The earliest time an idle connection expires, to arm the worker's timer.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.idle
            .values()
            .flat_map(|s| s.list.iter().map(|e| e.since + e.timeout))
            .min()
    }

    /// Idle connections held.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// (hits, misses) of `checkout` since the pool was made.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::Arc;

    fn key(port: u16) -> PoolKey {
        PoolKey {
            endpoint: SocketAddr::from(([10, 0, 0, 1], port)),
            upstream: Arc::from("app"),
            tls: None,
        }
    }

    #[test]
    fn reuses_most_recent_first_and_counts_hits() {
        let t0 = Instant::now();
        let mut p = Pool::new();
        let mut dead = Vec::new();
        assert_eq!(p.checkout(&key(1), t0, &mut dead), None);
        assert_eq!(p.checkin(key(1), "a", 4, Duration::from_secs(60), t0), None);
        assert_eq!(p.checkin(key(1), "b", 4, Duration::from_secs(60), t0), None);
        assert_eq!(p.len(), 2);
        assert_eq!(p.checkout(&key(2), t0, &mut dead), None, "other endpoint");
        assert_eq!(p.checkout(&key(1), t0, &mut dead), Some("b"));
        assert_eq!(p.checkout(&key(1), t0, &mut dead), Some("a"));
        assert_eq!(p.checkout(&key(1), t0, &mut dead), None);
        assert!(dead.is_empty());
        assert_eq!(p.stats(), (2, 3));
        assert!(p.is_empty());
    }

    #[test]
    fn checkout_keeps_the_emptied_list_and_reports_the_idle_time() {
        let mut p: Pool<u32> = Pool::new();
        let t0 = Instant::now();
        let mut dead = Vec::new();
        assert!(
            p.checkin(key(1), 7, 4, Duration::from_secs(10), t0)
                .is_none()
        );
        let later = t0 + Duration::from_millis(250);
        assert_eq!(
            p.checkout_aged(&key(1), later, &mut dead),
            Some((7, Duration::from_millis(250)))
        );
        assert!(p.is_empty());
        // The emptied list is kept for the next checkin of the key and pruned by `expire`.
        assert_eq!(p.idle.get(&key(1)).map(|s| s.list.len()), Some(0));
        assert!(p.expire(later).is_empty());
        assert!(!p.idle.contains_key(&key(1)));
        assert_eq!(p.checkout_aged(&key(1), later, &mut dead), None);
        assert!(dead.is_empty());
    }

    #[test]
    fn max_idle_hands_back_the_oldest() {
        let t0 = Instant::now();
        let mut p = Pool::new();
        assert_eq!(p.checkin(key(1), 1, 2, Duration::from_secs(60), t0), None);
        assert_eq!(p.checkin(key(1), 2, 2, Duration::from_secs(60), t0), None);
        assert_eq!(
            p.checkin(key(1), 3, 2, Duration::from_secs(60), t0),
            Some(1)
        );
        assert_eq!(p.len(), 2);
        assert_eq!(
            p.checkin(key(1), 4, 0, Duration::from_secs(60), t0),
            Some(4)
        );
    }

    #[test]
    fn idle_timeout_expires_connections() {
        let t0 = Instant::now();
        let mut p = Pool::new();
        p.checkin(key(1), "old", 4, Duration::from_secs(10), t0);
        p.checkin(
            key(1),
            "new",
            4,
            Duration::from_secs(10),
            t0 + Duration::from_secs(5),
        );
        assert_eq!(p.next_expiry(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(p.expire(t0 + Duration::from_secs(9)), Vec::<&str>::new());
        assert_eq!(p.expire(t0 + Duration::from_secs(10)), vec!["old"]);
        let mut dead = Vec::new();
        // At checkout, an expired entry is handed back for closing instead of reused.
        p.checkin(key(2), "x", 4, Duration::from_secs(1), t0);
        assert_eq!(
            p.checkout(&key(2), t0 + Duration::from_secs(2), &mut dead),
            None
        );
        assert_eq!(dead, vec!["x"]);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn remove_where_drops_stale_and_departed_endpoints() {
        let t0 = Instant::now();
        let mut p = Pool::new();
        p.checkin(key(1), 10, 4, Duration::from_secs(60), t0);
        p.checkin(key(1), 11, 4, Duration::from_secs(60), t0);
        p.checkin(key(2), 20, 4, Duration::from_secs(60), t0);
        assert_eq!(p.remove_where(|_, c| *c == 11), vec![11]);
        assert_eq!(p.remove_where(|k, _| k.endpoint.port() == 2), vec![20]);
        assert_eq!(p.len(), 1);
        let mut dead = Vec::new();
        assert_eq!(p.checkout(&key(1), t0, &mut dead), Some(10));
    }

    #[test]
    fn gauges_follow_the_idle_count_per_key() {
        let metrics = crate::metrics::Metrics::new();
        let worker = metrics.register_worker();
        let gauges = worker.pool.as_ref().map(|g| g.sibling());
        let mut p = Pool::with_gauges(gauges);
        let t0 = Instant::now();
        let idle = |port: u16| {
            metrics
                .pool_snapshot()
                .iter()
                .find(|s| s.endpoint.port() == port)
                .map_or(0, |s| s.idle)
        };
        p.checkin(key(1), 1, 4, Duration::from_secs(10), t0);
        p.checkin(key(1), 2, 4, Duration::from_secs(10), t0);
        p.checkin(key(2), 3, 4, Duration::from_secs(60), t0);
        assert_eq!((idle(1), idle(2)), (2, 1));
        let mut dead = Vec::new();
        assert_eq!(p.checkout(&key(1), t0, &mut dead), Some(2));
        assert_eq!(idle(1), 1);
        assert_eq!(p.expire(t0 + Duration::from_secs(10)), vec![1]);
        assert_eq!((idle(1), idle(2)), (0, 1));
        assert_eq!(p.remove_where(|_, c| *c == 3), vec![3]);
        assert_eq!(idle(2), 0);
        assert!(
            metrics.pool_snapshot().is_empty(),
            "all-zero entries are hidden"
        );
    }
}
