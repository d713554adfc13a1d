//! The worker's connection timers: an indexed min-heap with exactly one entry per connection.
//!
//! Each connection slot has at most one deadline in the heap; a side table (by slot index)
//! holds where that entry sits, so a deadline moves in place (up or down the heap) and is
//! removed in place, and no stale entries pile up: the heap's memory is one 16-byte entry and
//! one 4-byte position per connection. A slot reused by a new connection takes over the
//! slot's entry. The driver moves a deadline only when it gets earlier; a deadline that moved
//! later fires early and is set again then, which keeps the work per request small.

#![forbid(unsafe_code)]

use std::num::NonZeroU64;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::slab::Id;

/// The position of a slot without an entry.
const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    at: Slim,
    conn: Id,
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

/// The close state machine of the session layer keeps its deadline in this form, so a
/// connection's close state costs 8 bytes of deadline, not 16.
impl crate::proxy::session::close::Stamp for Slim {
    fn from_instant(t: Instant) -> Self {
        Slim::from(t)
    }

    fn instant(self) -> Instant {
        self.get()
    }
}

/// Deadlines of the worker's connections.
#[derive(Default)]
pub(crate) struct Timers {
    /// A binary min-heap on `at`.
    heap: Vec<Entry>,
    /// By slot index: where the slot's entry is in `heap` (`NONE`: it has none).
    pos: Vec<u32>,
}

impl Timers {
    /// The deadline `conn` has in the heap.
    pub fn get(&self, conn: Id) -> Option<Slim> {
        let i = *self.pos.get(conn.idx as usize)?;
        self.heap
            .get(i as usize)
            .filter(|e| e.conn == conn)
            .map(|e| e.at)
    }

    /// Sets the deadline of `conn`, moving its entry (or the entry a previous connection of
    /// the same slot left) in place, or adding one.
    pub fn set(&mut self, conn: Id, at: Slim) {
        let slot = conn.idx as usize;
        if self.pos.len() <= slot {
            self.pos.resize(slot + 1, NONE);
        }
        let i = self.pos.get(slot).copied().unwrap_or(NONE) as usize;
        let Some(e) = self.heap.get_mut(i) else {
            let i = self.heap.len();
            self.heap.push(Entry { at, conn });
            self.place(i);
            self.sift_up(i);
            return;
        };
        let earlier = at < e.at;
        *e = Entry { at, conn };
        if earlier {
            self.sift_up(i);
        } else {
            self.sift_down(i);
        }
    }

    /// Removes the deadline of `conn` (no-op when it has none).
    pub fn remove(&mut self, conn: Id) {
        let Some(&i) = self.pos.get(conn.idx as usize) else {
            return;
        };
        if self.heap.get(i as usize).is_some_and(|e| e.conn == conn) {
            self.take(i as usize);
        }
    }

    /// The earliest deadline held.
    pub fn next(&self) -> Option<Instant> {
        self.heap.first().map(|e| e.at.get())
    }

    /// Removes and returns one entry due at `now` or earlier.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Slim, Id)> {
        if self.heap.first()?.at > Slim::from(now) {
            return None;
        }
        self.take(0).map(|e| (e.at, e.conn))
    }

    /// Entries held (one per connection with a deadline).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Removes the entry at heap index `i`.
    fn take(&mut self, i: usize) -> Option<Entry> {
        if i >= self.heap.len() {
            return None;
        }
        let e = self.heap.swap_remove(i);
        if let Some(p) = self.pos.get_mut(e.conn.idx as usize) {
            *p = NONE;
        }
        if i < self.heap.len() {
            self.place(i);
            // The entry moved here from the end may belong above or below.
            self.sift_up(i);
            self.sift_down(i);
        }
        Some(e)
    }

    /// Records that the entry at heap index `i` is there.
    fn place(&mut self, i: usize) {
        if let Some(e) = self.heap.get(i)
            && let Some(p) = self.pos.get_mut(e.conn.idx as usize)
        {
            *p = i as u32;
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            match (self.heap.get(i), self.heap.get(parent)) {
                (Some(e), Some(p)) if e.at < p.at => {}
                _ => break,
            }
            self.heap.swap(i, parent);
            self.place(i);
            i = parent;
        }
        self.place(i);
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let Some(e) = self.heap.get(i) else {
                break;
            };
            let mut least = (i, e.at);
            for c in [l, r] {
                if let Some(ce) = self.heap.get(c)
                    && ce.at < least.1
                {
                    least = (c, ce.at);
                }
            }
            if least.0 == i {
                break;
            }
            self.heap.swap(i, least.0);
            self.place(i);
            i = least.0;
        }
        self.place(i);
    }

    /// Checks the heap order and the position table (tests).
    #[cfg(test)]
    fn check(&self) {
        for (i, e) in self.heap.iter().enumerate() {
            if i > 0 {
                let parent = &self.heap[(i - 1) / 2];
                assert!(parent.at <= e.at, "heap order at {i}");
            }
            assert_eq!(self.pos[e.conn.idx as usize], i as u32, "position of {i}");
        }
        let placed = self.pos.iter().filter(|&&p| p != NONE).count();
        assert_eq!(placed, self.heap.len(), "positions without entries");
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

    fn id(idx: u32) -> Id {
        Id { idx, generation: 0 }
    }

    /// Pops everything (due at `until`) as slot indices, checking the order.
    fn drain(t: &mut Timers, until: Instant) -> Vec<u32> {
        let mut last = None;
        let mut out = Vec::new();
        while let Some((at, cid)) = t.pop_due(until) {
            assert!(last.is_none_or(|l| l <= at), "popped out of order");
            last = Some(at);
            t.check();
            out.push(cid.idx);
        }
        assert_eq!(t.len(), 0);
        out
    }

    #[test]
    fn moving_a_deadline_keeps_one_entry_per_connection() {
        Slim::init();
        let t0 = Instant::now();
        let secs = |s: u64| t0 + Duration::from_secs(s);
        let mut t = Timers::default();
        for i in 0..5u32 {
            t.set(id(i), Slim::from(secs(10 + u64::from(i))));
        }
        // Connection 3 moves earlier three times, connection 1 later: still five entries.
        for s in [8, 5, 1] {
            t.set(id(3), Slim::from(secs(s)));
            t.check();
        }
        t.set(id(1), Slim::from(secs(100)));
        t.check();
        assert_eq!(t.len(), 5);
        assert_eq!(t.get(id(3)), Some(Slim::from(secs(1))));
        assert_eq!(t.get(id(1)), Some(Slim::from(secs(100))));
        assert_eq!(t.next(), Some(secs(1)));
        assert_eq!(t.pop_due(secs(0)), None, "nothing is due yet");
        assert_eq!(drain(&mut t, secs(1000)), vec![3, 0, 2, 4, 1]);
        assert_eq!(t.get(id(3)), None);
    }

    #[test]
    fn removed_deadlines_never_fire() {
        Slim::init();
        let t0 = Instant::now();
        let mut t = Timers::default();
        for i in 0..8u32 {
            t.set(
                id(i),
                Slim::from(t0 + Duration::from_secs(u64::from(8 - i))),
            );
        }
        for i in [7, 0, 4] {
            t.remove(id(i));
            t.check();
            assert_eq!(t.get(id(i)), None);
        }
        t.remove(id(4));
        t.remove(id(100));
        assert_eq!(t.len(), 5);
        assert_eq!(
            drain(&mut t, t0 + Duration::from_secs(60)),
            vec![6, 5, 3, 2, 1]
        );
    }

    #[test]
    fn a_reused_slot_takes_over_its_entry() {
        Slim::init();
        let t0 = Instant::now();
        let mut t = Timers::default();
        let old = Id {
            idx: 2,
            generation: 7,
        };
        let new = Id {
            idx: 2,
            generation: 8,
        };
        t.set(old, Slim::from(t0 + Duration::from_secs(5)));
        t.set(id(1), Slim::from(t0 + Duration::from_secs(3)));
        assert_eq!(t.get(new), None, "another generation's deadline");
        t.remove(new);
        assert_eq!(t.len(), 2, "removing by a stale id leaves the entry");
        t.set(new, Slim::from(t0 + Duration::from_secs(9)));
        t.check();
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(old), None);
        let due: Vec<Id> = std::iter::from_fn(|| t.pop_due(t0 + Duration::from_secs(60)))
            .map(|e| e.1)
            .collect();
        assert_eq!(due, vec![id(1), new]);
    }

    #[test]
    fn many_connections_stay_ordered_under_random_moves() {
        Slim::init();
        let t0 = Instant::now();
        let mut t = Timers::default();
        let mut model: Vec<Option<u64>> = vec![None; 2000];
        // A fixed linear congruential sequence: deterministic and bounded.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            x >> 33
        };
        for round in 0..20_000u32 {
            let slot = (next() % 2000) as u32;
            let ms = next() % 100_000;
            match next() % 4 {
                0 => {
                    t.remove(id(slot));
                    model[slot as usize] = None;
                }
                _ => {
                    t.set(id(slot), Slim::from(t0 + Duration::from_millis(ms)));
                    model[slot as usize] = Some(ms);
                }
            }
            if round % 1000 == 0 {
                t.check();
            }
        }
        t.check();
        assert_eq!(t.len(), model.iter().flatten().count());
        for (i, m) in model.iter().enumerate() {
            let want = m.map(|ms| Slim::from(t0 + Duration::from_millis(ms)));
            assert_eq!(t.get(id(i as u32)), want, "slot {i}");
        }
        // Popping in two steps: only what is due comes out, in order.
        let half = t0 + Duration::from_millis(50_000);
        let first = std::iter::from_fn(|| t.pop_due(half)).count();
        let due = model.iter().flatten().filter(|&&ms| ms <= 50_000).count();
        assert_eq!(first, due);
        t.check();
        let rest = drain(&mut t, t0 + Duration::from_secs(1000));
        assert_eq!(first + rest.len(), model.iter().flatten().count());
    }

    #[test]
    fn pops_due_entries_in_deadline_order() {
        Slim::init();
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.set(id(3), Slim::from(t0 + Duration::from_secs(3)));
        t.set(id(1), Slim::from(t0 + Duration::from_secs(1)));
        t.set(id(2), Slim::from(t0 + Duration::from_secs(2)));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(t.pop_due(t0), None);
        let due = t0 + Duration::from_secs(2);
        assert_eq!(t.pop_due(due).map(|e| e.1.idx), Some(1));
        assert_eq!(t.pop_due(due).map(|e| e.1.idx), Some(2));
        assert_eq!(t.pop_due(due), None);
        assert_eq!(t.len(), 1);
    }
}
