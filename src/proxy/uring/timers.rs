//! The worker's connection timers: a min-heap of (deadline, connection) with lazy deletion.
//!
//! A connection records the earliest deadline it has in the heap; it pushes a new entry only
//! when its handler's deadline moves earlier, so each connection holds at most a couple of
//! entries however often its deadline changes. A popped entry that no longer matches what the
//! connection recorded is stale and skipped by the caller.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::slab::Id;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    at: Instant,
    idx: u32,
    generation: u32,
}

/// Deadlines of the worker's connections.
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
}

impl Timers {
    pub fn push(&mut self, at: Instant, conn: Id) {
        self.heap.push(Reverse(Entry {
            at,
            idx: conn.idx,
            generation: conn.generation,
        }));
    }

    /// The earliest deadline held (possibly stale).
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|e| e.0.at)
    }

    /// Pops one entry due at `now` or earlier.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, Id)> {
        if self.heap.peek()?.0.at > now {
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

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_due_entries_in_deadline_order() {
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
