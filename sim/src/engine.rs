//! The discrete-event engine: virtual time in microseconds, an event queue that pops in (time,
//! insertion) order so equal-time events keep their causal order, and a seeded RNG. Nothing here
//! reads a clock: a run is a pure function of its scenario and seed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Virtual time, µs since the start of the run.
pub type Micros = u64;

pub const SECOND: Micros = 1_000_000;

pub fn micros(d: Duration) -> Micros {
    d.as_micros() as Micros
}

/// Maps virtual time onto the `Instant`s the cores take. The cores only compare and subtract
/// instants, so any base gives the same decisions.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    pub fn new(base: Instant) -> Self {
        Self { base }
    }

    pub fn at(&self, t: Micros) -> Instant {
        self.base + Duration::from_micros(t)
    }

    /// Virtual time of an instant a core returned (never before the base).
    pub fn micros_of(&self, i: Instant) -> Micros {
        micros(i.saturating_duration_since(self.base))
    }
}

struct Item<E> {
    at: Micros,
    seq: u64,
    ev: E,
}

impl<E> PartialEq for Item<E> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl<E> Eq for Item<E> {}
impl<E> PartialOrd for Item<E> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<E> Ord for Item<E> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// Events by time; ties in insertion order.
pub struct Queue<E> {
    heap: BinaryHeap<Reverse<Item<E>>>,
    seq: u64,
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Self { heap: BinaryHeap::new(), seq: 0 }
    }
}

impl<E> Queue<E> {
    pub fn push(&mut self, at: Micros, ev: E) {
        self.seq += 1;
        self.heap.push(Reverse(Item { at, seq: self.seq, ev }));
    }

    /// The next event at or before `until`.
    pub fn pop_until(&mut self, until: Micros) -> Option<(Micros, E)> {
        if self.heap.peek().is_some_and(|Reverse(i)| i.at <= until) {
            self.heap.pop().map(|Reverse(i)| (i.at, i.ev))
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// The seeded RNG of the simulator: seeded per edge so edges can run on any thread in any order.
pub use proto::rng::SplitMix64 as Rng;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_pops_by_time_then_insertion() {
        let mut q = Queue::default();
        q.push(5, "b");
        q.push(1, "a");
        q.push(5, "c");
        q.push(9, "d");
        let got: Vec<_> = std::iter::from_fn(|| q.pop_until(5)).collect();
        assert_eq!(got, [(1, "a"), (5, "b"), (5, "c")]);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn rng_is_seeded_and_roughly_uniform() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let mut r = Rng::new(7);
        assert_eq!(a, (0..4).map(|_| r.next_u64()).collect::<Vec<_>>());
        let mean = (0..10_000).map(|_| r.exp(2.0)).sum::<f64>() / 10_000.0;
        assert!((mean - 2.0).abs() < 0.1, "{mean}");
        let hits = (0..10_000).filter(|_| r.chance(0.3)).count();
        assert!((2800..3200).contains(&hits), "{hits}");
    }
}
