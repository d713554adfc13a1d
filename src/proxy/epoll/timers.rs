//! The epoll worker's timer queue: a binary min-heap of (deadline, what) entries with lazy
//! cancellation. An owner remembers the one deadline it has scheduled; an entry whose
//! deadline no longer matches its owner's is dropped when popped. An owner whose deadline
//! moves later keeps its earlier entry and re-arms when it fires, so the heap holds about one
//! entry per owner however often handlers push their deadlines back.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::slab::SlotId;

/// What a timer entry wakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// A downstream connection's deadline (handler deadline, close flush or lingering close).
    Down(SlotId),
    /// An upstream connection's connect timeout.
    UpConnect(SlotId),
}

/// Min-heap of deadlines.
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, TimerKind)>>,
}

impl Timers {
    pub fn new() -> Self {
        Timers {
            heap: BinaryHeap::new(),
        }
    }

    pub fn push(&mut self, at: Instant, kind: TimerKind) {
        self.heap.push(Reverse((at, kind)));
    }

    /// The earliest deadline queued (possibly a cancelled one: waking early is harmless).
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes one entry due at `now`, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, TimerKind)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

/// Decides whether an owner whose current deadline is `wanted` needs a new heap entry, given
/// the entry it already has scheduled. Returns the deadline to push, if any.
pub(crate) fn rearm(scheduled: Option<Instant>, wanted: Option<Instant>) -> Option<Instant> {
    match (scheduled, wanted) {
        (_, None) => None,
        (None, Some(w)) => Some(w),
        (Some(s), Some(w)) if w < s => Some(w),
        (Some(_), Some(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id(i: u32) -> SlotId {
        SlotId {
            index: i,
            generation: 0,
        }
    }

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let t0 = Instant::now();
        let mut t = Timers::new();
        t.push(t0 + Duration::from_millis(30), TimerKind::Down(id(3)));
        t.push(t0 + Duration::from_millis(10), TimerKind::UpConnect(id(1)));
        t.push(t0 + Duration::from_millis(20), TimerKind::Down(id(2)));
        assert_eq!(t.next(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(t.pop_due(t0), None);
        let now = t0 + Duration::from_millis(25);
        assert_eq!(
            t.pop_due(now).map(|e| e.1),
            Some(TimerKind::UpConnect(id(1)))
        );
        assert_eq!(t.pop_due(now).map(|e| e.1), Some(TimerKind::Down(id(2))));
        assert_eq!(t.pop_due(now), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn rearm_pushes_only_earlier_deadlines() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(5);
        assert_eq!(rearm(None, None), None);
        assert_eq!(rearm(None, Some(t0)), Some(t0));
        assert_eq!(
            rearm(Some(t0), Some(later)),
            None,
            "fires early, re-arms then"
        );
        assert_eq!(rearm(Some(later), Some(t0)), Some(t0));
        assert_eq!(
            rearm(Some(t0), None),
            None,
            "stale entry is ignored when it fires"
        );
    }
}
