//! Which peers may link to this one: those its edge introduced (as a child it was told to feed,
//! or a mesh neighbour it was named to). A stranger that connects and says hello gets nothing —
//! no chunks, no maps, no answers — and is cut off if no introduction follows within
//! [`WAIT`]: the edge's note may trail the peer's own connect by a moment.

use std::time::Duration;

// std's `Instant` on native targets; `performance.now()` in a browser, where std's panics.
use web_time::Instant;

use proto::DetMap;
use proto::peer::PeerId;

/// How long an introduction stays good (a child may connect after retries), and how long a
/// link waits for one.
pub const KEEP: Duration = Duration::from_secs(120);
pub const WAIT: Duration = Duration::from_secs(5);
/// Introductions held at most (the oldest go first).
const MAX: usize = 4096;

#[derive(Default)]
pub struct Introductions {
    known: DetMap<PeerId, Instant>,
}

impl Introductions {
    pub fn add(&mut self, peer: PeerId, now: Instant) {
        if self.known.len() >= MAX {
            self.known.retain(|_, at| now.saturating_duration_since(*at) < KEEP);
            if self.known.len() >= MAX
                && let Some(oldest) = self.known.iter().min_by_key(|(p, at)| (**at, **p)).map(|(p, _)| *p)
            {
                self.known.remove(&oldest);
            }
        }
        self.known.insert(peer, now);
    }

    pub fn knows(&self, peer: PeerId, now: Instant) -> bool {
        self.known.get(&peer).is_some_and(|at| now.saturating_duration_since(*at) < KEEP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn introductions_are_kept_for_a_while_and_bounded() {
        let t0 = Instant::now();
        let mut i = Introductions::default();
        assert!(!i.knows(PeerId(7), t0));
        i.add(PeerId(7), t0);
        assert!(i.knows(PeerId(7), t0 + Duration::from_secs(60)));
        assert!(!i.knows(PeerId(7), t0 + KEEP));
        for p in 0..(MAX as u64 + 10) {
            i.add(PeerId(100 + p), t0 + Duration::from_millis(p));
        }
        assert!(i.known.len() <= MAX);
        assert!(i.knows(PeerId(100 + MAX as u64 + 9), t0 + Duration::from_secs(1)), "the newest stay");
    }
}
