//! The worker's connection timers: a min-heap of (deadline, connection) with lazy deletion.
//!
//! A connection records the earliest deadline it has in the heap; it pushes a new entry only
//! when its handler's deadline moves earlier, so each connection holds at most a couple of
//! entries however often its deadline changes. A popped entry that no longer matches what the
//! connection recorded is stale and skipped by the caller.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::num::NonZeroU64;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::slab::Id;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    at: Slim,
    idx: u32,
    generation: u32,
}

/// A deadline kept per connection in 8 bytes: nanoseconds since a process-wide base (fixed
/// when the first driver starts), plus one, so that `Option<Slim>` is 8 bytes where an
/// `Option<Instant>` takes 16. Converting back gives the same `Instant` to the nanosecond.
/// A time before the base (never a deadline) counts as the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Slim(NonZeroU64);

impl Slim {
    fn base() -> Instant {
        static BASE: OnceLock<Instant> = OnceLock::new();
        *BASE.get_or_init(Instant::now)
    }

    /// Fixes the base (called when a driver starts, before any deadline exists).
    pub fn init() {
        Self::base();
    }

    pub fn from(t: Instant) -> Slim {
        let nanos = t.saturating_duration_since(Self::base()).as_nanos();
        Slim(NonZeroU64::MIN.saturating_add(u64::try_from(nanos).unwrap_or(u64::MAX - 1)))
    }

    pub fn get(self) -> Instant {
        let base = Self::base();
        base.checked_add(Duration::from_nanos(self.0.get() - 1))
            .unwrap_or(base)
    }
}

/// Deadlines of the worker's connections.
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
}

impl Timers {
    pub fn push(&mut self, at: Instant, conn: Id) {
        self.heap.push(Reverse(Entry {
            at: Slim::from(at),
            idx: conn.idx,
            generation: conn.generation,
        }));
    }

    /// The earliest deadline held (possibly stale).
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|e| e.0.at.get())
    }

    /// Pops one entry due at `now` or earlier.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Slim, Id)> {
        if self.heap.peek()?.0.at > Slim::from(now) {
            return None;
        }
        let e = self.heap.pop()?.0;
        Some((
            e.at,
            Id {
                idx: e.idx,
                generation: e.generation,
            },
        ))
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops every entry `live` rejects (the stale ones: the connection is gone or records
    /// another deadline). Lazy deletion alone lets a connection leave an entry behind each
    /// time its deadline moves earlier; the driver compacts once the heap holds more than
    /// twice its connections, so its memory follows the connection count.
    pub fn compact(&mut self, mut live: impl FnMut(Id, Slim) -> bool) {
        self.heap.retain(|Reverse(e)| {
            live(
                Id {
                    idx: e.idx,
                    generation: e.generation,
                },
                e.at,
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn slim_deadlines_round_trip_in_eight_bytes() {
        assert_eq!(std::mem::size_of::<Option<Slim>>(), 8);
        Slim::init();
        let now = Instant::now();
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_millis(1500),
            Duration::from_secs(86_400 * 365) + Duration::from_nanos(3),
        ] {
            let t = now + d;
            assert_eq!(Slim::from(t).get(), t, "{d:?}");
            assert_eq!(Slim::from(t), Slim::from(t));
        }
        assert_ne!(Slim::from(now), Slim::from(now + Duration::from_nanos(1)));
    }

    #[test]
    fn compaction_keeps_only_the_live_entries_in_order() {
        Slim::init();
        let t0 = Instant::now();
        let id = |idx| Id { idx, generation: 0 };
        let mut t = Timers::default();
        // Connection i moved its deadline earlier three times: 3 - 1 entries are stale.
        for i in 0..10u32 {
            for s in [30u64, 20, 10] {
                t.push(t0 + Duration::from_secs(s + u64::from(i)), id(i));
            }
        }
        assert_eq!(t.len(), 30);
        let current = |cid: Id| Slim::from(t0 + Duration::from_secs(10 + u64::from(cid.idx)));
        // Connection 9 is gone.
        t.compact(|cid, at| cid.idx != 9 && at == current(cid));
        assert_eq!(t.len(), 9);
        let later = t0 + Duration::from_secs(100);
        let popped: Vec<u32> = std::iter::from_fn(|| t.pop_due(later))
            .map(|(at, cid)| {
                assert_eq!(at, current(cid));
                cid.idx
            })
            .collect();
        assert_eq!(popped, (0..9).collect::<Vec<_>>());
    }

    #[test]
    fn pops_due_entries_in_deadline_order() {
        Slim::init();
        let t0 = Instant::now();
        let id = |idx| Id { idx, generation: 0 };
        let mut t = Timers::default();
        t.push(t0 + Duration::from_secs(3), id(3));
        t.push(t0 + Duration::from_secs(1), id(1));
        t.push(t0 + Duration::from_secs(2), id(2));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(t.pop_due(t0), None);
        let due = t0 + Duration::from_secs(2);
        assert_eq!(t.pop_due(due).map(|e| e.1.idx), Some(1));
        assert_eq!(t.pop_due(due).map(|e| e.1.idx), Some(2));
        assert_eq!(t.pop_due(due), None);
        assert_eq!(t.len(), 1);
    }
}
