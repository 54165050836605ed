//! Deadlines for every connection of one worker: a min-heap with lazy deletion.
//!
//! Each connection keeps the deadline it has scheduled; a new entry is pushed only
//! when a connection needs waking *earlier* than it is already scheduled for. When an
//! entry fires, the worker asks the connection for its real next deadline, which may
//! have moved later (an idle timer pushed back by traffic); stale entries cost one pop.
//! Nothing ever scans all connections.

use super::token::ConnId;
use crate::clock::Tick;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A heap of `(deadline, connection)` pairs, 16 bytes each.
#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Tick, ConnId)>>,
}

impl Timers {
    /// Schedules a wake-up for `id` at `at`.
    pub fn schedule(&mut self, at: Tick, id: ConnId) {
        self.heap.push(Reverse((at, id)));
    }

    /// The earliest pending deadline.
    pub fn next_deadline(&self) -> Option<Tick> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Pops one entry that is due at `now`.
    pub fn pop_due(&mut self, now: Tick) -> Option<ConnId> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse((_, id))| id),
            _ => None,
        }
    }

    /// Number of entries, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let t0 = crate::fuzzing::virtual_epoch();
        let at = |d: Duration| Tick::from(t0 + d);
        let mut t = Timers::default();
        let a = ConnId {
            index: 1,
            generation: 0,
        };
        let b = ConnId {
            index: 2,
            generation: 0,
        };
        t.schedule(at(Duration::from_secs(2)), a);
        t.schedule(at(Duration::from_secs(1)), b);
        assert_eq!(t.next_deadline(), Some(at(Duration::from_secs(1))));
        assert_eq!(t.pop_due(at(Duration::ZERO)), None);
        assert_eq!(t.pop_due(at(Duration::from_secs(1))), Some(b));
        assert_eq!(t.pop_due(at(Duration::from_secs(1))), None);
        assert_eq!(t.pop_due(at(Duration::from_secs(3))), Some(a));
        assert_eq!(std::mem::size_of::<Reverse<(Tick, ConnId)>>(), 16);
        assert!(t.is_empty());
    }
}
