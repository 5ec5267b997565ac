//! When an HTTP-TS viewer's next write is due (issue 25).
//!
//! A live server that writes every viewer on every flush tick pays a system call and a packet
//! per viewer per tick: at 100 ms that alone is ten times what nginx pays to send a file, which
//! it may send seconds ahead. A live edge cannot send bytes that do not exist yet, but it need
//! not send each byte as soon as it exists either: a player only needs a byte before it plays it.
//!
//! What the edge knows of a player's buffer, without any report from it: had the player started
//! playing the moment its first byte was written, it would now be at media time
//! `first + (now - start)`; everything written beyond that is buffered. Players start later than
//! that (they fill a start threshold first), so this is a lower bound. It can never be more than
//! the lead the viewer started with (the media between its first keyframe and live): a live
//! player cannot gain on the source, and capping there also ignores a jump forward in the
//! source's timestamps. While the bound stays above `margin` (and one more tick) the edge holds
//! the viewer's new bytes and writes them later in one larger write; a viewer that starts a
//! second behind live is then written about once a second instead of ten times, and never gets a
//! byte later than `margin` before it needs it. A source that pauses drains the bound, so the
//! viewer is written on every tick again and gets the first bytes after the pause at once.

use std::time::{Duration, Instant};

/// How the edge paces viewer writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaceSettings {
    /// The flush clock's period: a viewer not written on this tick waits for the next.
    pub tick: Duration,
    /// The least buffer (lower bound) a viewer is left with.
    pub margin: Duration,
    /// The longest a viewer's bytes are held; zero turns pacing off (written every tick).
    pub max_hold: Duration,
}

/// One viewer's pacing state.
#[derive(Debug, Clone)]
pub struct Pace {
    /// The player's clock would start here at the earliest (the viewer joined).
    start: Instant,
    /// Media time (90 kHz) of the viewer's first chunk: where its player starts.
    first_ts: u64,
    /// Media time between the first chunk and live when the viewer joined.
    lead: Duration,
    /// Media time of the last chunk written whole; none yet: the start burst is due.
    sent_ts: Option<u64>,
    last_write: Instant,
    /// Written on every tick (pacing off, or the viewer skipped and its player's clock is unknown).
    every_tick: bool,
}

impl Pace {
    /// A viewer joining now whose first chunk has media time `first_ts`, `lead` behind live.
    pub fn new(now: Instant, first_ts: u64, lead: Duration) -> Self {
        Self { start: now, first_ts, lead, sent_ts: None, last_write: now, every_tick: false }
    }

    /// A viewer written on every tick from now on: one that asked for low latency, or one that
    /// skipped ahead (its player has a gap in its stream; how it deals with one, waiting or
    /// jumping, is unknown, so nothing is held back).
    pub fn every_tick(&mut self) {
        self.every_tick = true;
    }

    /// Chunks up to media time `last_ts` were written whole at `now`.
    pub fn wrote(&mut self, now: Instant, last_ts: u64) {
        self.sent_ts = Some(last_ts);
        self.last_write = now;
    }

    /// The player's buffer at `now`, at least (zero if it may be starved).
    pub fn buffered(&self, now: Instant) -> Duration {
        let Some(sent) = self.sent_ts else { return Duration::ZERO };
        // A timestamp that went back (a new source) counts as nothing sent ahead.
        let sent_media = Duration::from_micros(sent.saturating_sub(self.first_ts).saturating_mul(100) / 9);
        let played = now.saturating_duration_since(self.start);
        sent_media.saturating_sub(played).min(self.lead)
    }

    /// Whether the viewer must be written on this tick: by the next one its buffer could be
    /// below the margin, or its bytes were held as long as they may be.
    pub fn due(&self, now: Instant, s: &PaceSettings) -> bool {
        self.every_tick
            || s.max_hold.is_zero()
            || self.buffered(now) < s.margin + s.tick
            || now.saturating_duration_since(self.last_write) + s.tick > s.max_hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 90;
    const SETTINGS: PaceSettings = PaceSettings {
        tick: Duration::from_millis(100),
        margin: Duration::from_millis(500),
        max_hold: Duration::from_millis(2000),
    };

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// A live source at 25 chunks/s starting at media time 0 when the viewer joins with a
    /// 1.5 s lead: what the newest chunk's media time is at wall time `ms`.
    fn live_ts(ms: u64) -> u64 {
        (1500 + ms) / 40 * 40 * MS
    }

    /// Drives the flush clock for `secs`, writing whenever due; returns the write times (ms)
    /// and the least buffer (lower bound) the viewer ever had after its first write.
    fn run(p: &mut Pace, t0: Instant, secs: u64, newest: impl Fn(u64) -> u64) -> (Vec<u64>, Duration) {
        let (mut writes, mut least) = (Vec::new(), Duration::MAX);
        for tick in 0..secs * 10 {
            let ms = tick * 100;
            let now = at(t0, ms);
            if !writes.is_empty() {
                least = least.min(p.buffered(now));
            }
            if p.due(now, &SETTINGS) {
                p.wrote(now, newest(ms));
                writes.push(ms);
            }
        }
        (writes, least)
    }

    #[test]
    fn the_start_burst_is_due_at_once() {
        let t0 = Instant::now();
        let p = Pace::new(t0, 0, Duration::from_millis(1500));
        assert!(p.due(t0, &SETTINGS));
        assert_eq!(p.buffered(t0), Duration::ZERO);
    }

    #[test]
    fn a_viewer_with_a_lead_is_written_about_once_a_second_and_keeps_its_margin() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0, 0, Duration::from_millis(1500));
        let (writes, least) = run(&mut p, t0, 20, live_ts);
        // 1.5 s of lead, 0.5 s margin, one tick of slack: a write about every 0.9 s.
        assert!((20..=25).contains(&writes.len()), "{} writes in 20 s: {writes:?}", writes.len());
        assert!(least >= SETTINGS.margin, "buffer fell to {least:?}");
        // Every interval between writes is the same hold, to the tick.
        let gaps: Vec<u64> = writes.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|&g| (800..=1000).contains(&g)), "{gaps:?}");
    }

    #[test]
    fn a_viewer_without_a_lead_is_written_every_tick() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0, 0, Duration::from_millis(300));
        let (writes, _) = run(&mut p, t0, 5, |ms| ms / 40 * 40 * MS);
        assert_eq!(writes.len(), 50);
    }

    #[test]
    fn holds_are_capped() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0, 0, Duration::from_secs(10));
        let (writes, least) = run(&mut p, t0, 20, |ms| (10_000 + ms) * MS);
        let gaps: Vec<u64> = writes.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|&g| g <= 2000), "{gaps:?}");
        assert!(least >= Duration::from_secs(7), "{least:?}");
    }

    #[test]
    fn a_paused_source_drains_the_bound_and_the_viewer_is_written_every_tick_again() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0, 0, Duration::from_millis(1500));
        // The source stops producing at 3 s, for 4 s, then goes on where it was.
        let paused = |ms: u64| {
            live_ts(if ms < 3000 {
                ms
            } else if ms < 7000 {
                3000
            } else {
                ms - 4000
            })
        };
        let (writes, _) = run(&mut p, t0, 10, paused);
        let during: Vec<u64> = writes.iter().copied().filter(|&w| (4500..7000).contains(&w)).collect();
        assert_eq!(during.len(), 25, "every tick once drained: {writes:?}");
        assert!(writes.contains(&7000), "the first bytes after the pause go at once: {writes:?}");
    }

    #[test]
    fn a_timestamp_jump_forward_is_capped_by_the_lead() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0, 0, Duration::from_millis(1500));
        p.wrote(t0, 3_600_000 * MS);
        assert_eq!(p.buffered(t0), Duration::from_millis(1500));
        // And one that went back leaves nothing ahead.
        let mut q = Pace::new(t0, 1_000 * MS, Duration::from_millis(1500));
        q.wrote(t0, 0);
        assert!(q.due(at(t0, 100), &SETTINGS));
    }

    #[test]
    fn off_or_after_a_skip_means_every_tick() {
        let t0 = Instant::now();
        let off = PaceSettings { max_hold: Duration::ZERO, ..SETTINGS };
        let mut p = Pace::new(t0, 0, Duration::from_secs(5));
        p.wrote(t0, 5_000 * MS);
        assert!(p.due(at(t0, 100), &off));
        assert!(!p.due(at(t0, 100), &SETTINGS));
        p.every_tick();
        assert!(p.due(at(t0, 100), &SETTINGS));
    }
}
