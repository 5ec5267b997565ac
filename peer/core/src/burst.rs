//! When a joining peer stops waiting for the edge's start burst and asks its tree parents for
//! chunks. Subscribing while the burst flows puts live chunks ahead of it, and playback would
//! start at the live edge on a thin buffer; waiting on a burst that trickles (an edge at its
//! egress capacity) keeps the peer from starting at all, so a burst that does not outrun real
//! time is not waited for.

use std::time::Duration;

// std's `Instant` on native targets; `performance.now()` in a browser, where std's panics.
use web_time::Instant;

/// No edge chunk for this long (after the welcome): the burst is over or never came.
const QUIET: Duration = Duration::from_millis(300);
/// How long a burst is watched before it is judged too slow.
const JUDGE_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct BurstWatch {
    welcomed_at: Instant,
    last_chunk: Instant,
    /// Since the first edge chunk after the welcome: its arrival, and the media time span (90 kHz,
    /// lowest and highest) of the edge's chunks since — a burst reaches back from the live edge,
    /// so its first chunk need not be its oldest.
    seen: Option<(Instant, u64, u64)>,
    /// Set once the burst was judged too slow, so the verdict does not flip back.
    too_slow: bool,
}

impl BurstWatch {
    pub fn new(now: Instant) -> Self {
        Self { welcomed_at: now, last_chunk: now, seen: None, too_slow: false }
    }

    /// A (re-)welcome: a new edge's burst starts.
    pub fn welcomed(&mut self, now: Instant) {
        *self = Self::new(now);
    }

    /// A chunk from the edge, with its media timestamp (90 kHz).
    pub fn chunk(&mut self, now: Instant, media_ts: u64) {
        self.last_chunk = now;
        let (_, lo, hi) = self.seen.get_or_insert((now, media_ts, media_ts));
        *lo = (*lo).min(media_ts);
        *hi = (*hi).max(media_ts);
    }

    /// Whether waiting for the burst is over: it went quiet, or it brings media no faster than
    /// it plays.
    pub fn over(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.welcomed_at) >= QUIET
            && now.saturating_duration_since(self.last_chunk) >= QUIET
        {
            return true;
        }
        if let Some((at, lo, hi)) = self.seen {
            let watched = now.saturating_duration_since(at);
            let media = Duration::from_micros((hi - lo) * 100 / 9);
            self.too_slow |= watched >= JUDGE_AFTER && media < watched;
        }
        self.too_slow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK_90K: u64 = 3_600; // 40 ms

    #[test]
    fn a_burst_is_waited_for_until_it_goes_quiet() {
        let t0 = Instant::now();
        let mut w = BurstWatch::new(t0);
        // A live chunk first, then four times real time for 2 s from 8 s back.
        w.chunk(t0, 1_000 * CHUNK_90K);
        for i in 0..200u64 {
            let now = t0 + Duration::from_millis(10 * i);
            w.chunk(now, (800 + i) * CHUNK_90K);
            assert!(!w.over(now), "gave up on a fast burst at {i}");
        }
        let last = t0 + Duration::from_millis(1990);
        assert!(!w.over(last + Duration::from_millis(299)));
        assert!(w.over(last + Duration::from_millis(300)));
    }

    #[test]
    fn a_burst_slower_than_real_time_is_not_waited_for() {
        let t0 = Instant::now();
        let mut w = BurstWatch::new(t0);
        // Every 100 ms a 40 ms chunk: never quiet, but 0.4 × real time.
        let mut over_at = None;
        for i in 0..40u64 {
            let now = t0 + Duration::from_millis(100 * i);
            w.chunk(now, i * CHUNK_90K);
            if over_at.is_none() && w.over(now) {
                over_at = Some(i);
            }
        }
        assert_eq!(over_at, Some(10), "judged after a second of watching");
        // A re-welcome watches the next edge's burst afresh.
        let now = t0 + Duration::from_secs(4);
        w.welcomed(now);
        assert!(!w.over(now + Duration::from_millis(100)));
    }

    #[test]
    fn no_burst_at_all_is_over_once_the_welcome_is_quiet() {
        let t0 = Instant::now();
        let mut w = BurstWatch::new(t0);
        assert!(!w.over(t0 + Duration::from_millis(200)));
        assert!(w.over(t0 + Duration::from_millis(300)));
    }
}
