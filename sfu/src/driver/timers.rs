//! One timer heap for every connection of a driver.
//!
//! Each connection has at most one deadline (`poll_timeout`). When it changes, a new entry is
//! pushed and the old one is left in the heap; stale entries are recognised when they pop (the
//! connection's current deadline differs) and skipped. That keeps updates O(log n) with no scan.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

#[derive(Debug, Default)]
pub(crate) struct TimerQueue<K: Ord + Copy> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Ord + Copy> TimerQueue<K> {
    pub(crate) fn new() -> Self {
        Self {
            heap: BinaryHeap::new(),
        }
    }

    pub(crate) fn schedule(&mut self, at: Instant, key: K) {
        self.heap.push(Reverse((at, key)));
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Pops the next entry due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops stale entries when the heap has grown well past the number of live deadlines.
    pub(crate) fn compact(&mut self, is_current: impl Fn(Instant, K) -> bool) {
        self.heap.retain(|Reverse((at, key))| is_current(*at, *key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        q.schedule(t0 + Duration::from_millis(30), 3u64);
        q.schedule(t0 + Duration::from_millis(10), 1);
        q.schedule(t0 + Duration::from_millis(20), 2);
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(q.pop_due(t0), None);
        let now = t0 + Duration::from_millis(25);
        assert_eq!(q.pop_due(now).map(|e| e.1), Some(1));
        assert_eq!(q.pop_due(now).map(|e| e.1), Some(2));
        assert_eq!(q.pop_due(now), None);
        q.compact(|_, k| k != 3);
        assert_eq!(q.len(), 0);
    }
}
