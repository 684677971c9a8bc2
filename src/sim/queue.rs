//! The engine's event queue: events in time order, ties in the order they were scheduled.
//!
//! A binary heap does this in O(log n) with a cache miss at nearly every level once tens of thousands of
//! probes are pending, which made the heap the largest single cost of a 10,000-node run. Nearly every event
//! is scheduled less than a few seconds ahead, so this queue is a timing wheel instead: a ring of 1 ms slots
//! covering the next `SLOTS` ms, each an unsorted list, sorted only when time reaches it; events beyond the
//! ring wait in a heap and move into it as it turns. Pops come out in exactly the heap's order, (time, then
//! scheduling sequence), so a run does not depend on which queue it used.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Simulated time in µs.
type Micros = u64;

const SLOT: Micros = 1_000;
const SLOTS: usize = 8_192;

/// What the queue orders by: (time, sequence), unique per event.
pub(super) trait Timed {
    fn key(&self) -> (Micros, u64);
}

struct Far<T>(T);

impl<T: Timed> PartialEq for Far<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0.key() == other.0.key()
    }
}
impl<T: Timed> Eq for Far<T> {}
impl<T: Timed> PartialOrd for Far<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T: Timed> Ord for Far<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.key().cmp(&other.0.key())
    }
}

pub(super) struct EventQueue<T> {
    /// The ring: slot `s` (absolute, `at / SLOT`) lives at `s % SLOTS` while `base <= s < base + SLOTS`.
    ring: Vec<Vec<T>>,
    /// The absolute slot being drained; `current` holds what is left of it, sorted so that `pop` takes the
    /// earliest from the end.
    base: u64,
    current: Vec<T>,
    far: BinaryHeap<Reverse<Far<T>>>,
    len: usize,
    /// How many events the ring holds.
    in_ring: usize,
}

impl<T: Timed> EventQueue<T> {
    pub(super) fn new() -> Self {
        Self {
            ring: (0..SLOTS).map(|_| Vec::new()).collect(),
            base: 0,
            current: Vec::new(),
            far: BinaryHeap::new(),
            len: 0,
            in_ring: 0,
        }
    }

    pub(super) fn push(&mut self, event: T) {
        self.len += 1;
        let slot = event.key().0 / SLOT;
        if slot <= self.base {
            // Now (or, by a caller's mistake, earlier): into the sorted remainder of the current slot.
            let key = event.key();
            let at = self.current.partition_point(|e| e.key() > key);
            self.current.insert(at, event);
        } else if slot < self.base + SLOTS as u64 {
            self.ring[(slot % SLOTS as u64) as usize].push(event);
            self.in_ring += 1;
        } else {
            self.far.push(Reverse(Far(event)));
        }
    }

    pub(super) fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        while self.current.is_empty() {
            self.base += 1;
            // Events from beyond the ring that now fit in it.
            while self.far.peek().is_some_and(|Reverse(Far(e))| e.key().0 / SLOT < self.base + SLOTS as u64) {
                let Reverse(Far(event)) = self.far.pop().expect("peeked");
                let slot = event.key().0 / SLOT;
                self.ring[(slot % SLOTS as u64) as usize].push(event);
                self.in_ring += 1;
            }
            if self.in_ring == 0 {
                // Only far events are left: jump to the first of them.
                let next = self.far.peek().map(|Reverse(Far(e))| e.key().0 / SLOT).expect("len > 0");
                self.base = next - 1;
                continue;
            }
            // Take the slot's list and leave it empty, not the drained one: passing a drained list on would let
            // the largest lists ever seen collect in the ring.
            self.current = std::mem::take(&mut self.ring[(self.base % SLOTS as u64) as usize]);
            self.in_ring -= self.current.len();
            self.current.sort_unstable_by_key(|e| Reverse(e.key()));
        }
        self.len -= 1;
        self.current.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[derive(Debug, PartialEq, Eq)]
    struct E(Micros, u64);

    impl Timed for E {
        fn key(&self) -> (Micros, u64) {
            (self.0, self.1)
        }
    }

    #[test]
    fn pops_in_time_then_sequence_order_like_a_heap() {
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut queue = EventQueue::new();
            let mut heap = BinaryHeap::new();
            let (mut now, mut seq) = (0, 0);
            for _ in 0..20_000 {
                if rng.gen_bool(0.55) {
                    // Mostly soon, sometimes the same µs, sometimes far beyond the ring.
                    let ahead = match rng.gen_range(0..10) {
                        0 => 0,
                        1 => rng.gen_range(0..30_000_000),
                        _ => rng.gen_range(0..3_000_000),
                    };
                    seq += 1;
                    queue.push(E(now + ahead, seq));
                    heap.push(Reverse((now + ahead, seq)));
                } else {
                    let popped = queue.pop();
                    assert_eq!(popped.as_ref().map(|e| (e.0, e.1)), heap.pop().map(|Reverse(k)| k), "seed {seed}");
                    if let Some(e) = popped {
                        now = e.0;
                    }
                }
            }
            while let Some(Reverse(k)) = heap.pop() {
                assert_eq!(queue.pop().map(|e| (e.0, e.1)), Some(k));
            }
            assert_eq!(queue.pop(), None);
        }
    }
}
