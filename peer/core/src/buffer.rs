//! The playback buffer (sans-IO): chunks by seq, a playout clock, and the stall accounting that
//! feeds Q1 = TP/(TP+TB) and the rebuffering rate (LiveSky §4.4). Playback starts at a keyframe
//! once `start_ms` of contiguous media is held; a missing chunk at its deadline is a stall, and
//! after `max_stall_ms` with later chunks at hand the hole is skipped rather than waited on forever.

use std::time::Duration;

// std's `Instant` on native targets; `performance.now()` in a browser, where std's panics.
use web_time::Instant;

use proto::Chunk;

use crate::seqmap::SeqMap;

#[derive(Debug, Clone)]
pub struct BufferConfig {
    /// B: media kept ahead of playback (15 s, or ~3 s in low-latency mode).
    pub buffer_ms: u32,
    /// Contiguous media needed before playback starts: with the edge's start burst this is there
    /// at once; without one (edge at capacity) it is the smallest cushion a peer starts with.
    pub start_ms: u32,
    /// A stall longer than this skips to the next chunk held.
    pub max_stall_ms: u32,
    /// Played media kept for children and neighbours that ask for it.
    pub keep_ms: u32,
    /// Playback this far behind the newest chunk held (after stalls, say) jumps ahead at the next
    /// keyframe to about `buffer_ms` behind, rather than drifting further from live (0: never).
    pub max_lag_ms: u32,
}

impl BufferConfig {
    /// Low-latency mode: `target_ms` of buffer, caught up once lagging 2 s beyond it.
    pub fn low_latency(target_ms: u32) -> Self {
        let target_ms = target_ms.max(1_000);
        Self {
            buffer_ms: target_ms,
            start_ms: (target_ms / 3).clamp(500, 2_000),
            max_stall_ms: 1_500,
            keep_ms: 5_000,
            max_lag_ms: target_ms + 2_000,
        }
    }
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self { buffer_ms: 15_000, start_ms: 2_000, max_stall_ms: 3_000, keep_ms: 10_000, max_lag_ms: 30_000 }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PlayStats {
    pub played_chunks: u64,
    /// Media time played (TP).
    pub played_ms: u64,
    pub stalls: u64,
    /// Time stalled after playback started (TB).
    pub stalled_ms: u64,
    pub duplicates: u64,
    pub skipped_chunks: u64,
    /// Jumps ahead to get back within the buffer target of live ([`BufferConfig::max_lag_ms`]).
    pub catchups: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Waiting,
    Playing { clock_at: Instant, clock_ts: u64 },
    Stalled { since: Instant },
}

pub struct PlayBuffer {
    cfg: BufferConfig,
    chunks: SeqMap,
    state: State,
    next: Option<u64>,
    last_played_ts: u64,
    /// The furthest media timestamp played (for TP).
    played_to_ts: u64,
    frame_90k: u64,
    started_at: Option<Instant>,
    stats: PlayStats,
}

const GRACE_90K: u64 = 9_000;
/// Widest span of seqs held (10 min of 25 frames/s); a chunk further ahead pushes old ones out.
const MAX_SPAN: u64 = 16_384;

impl PlayBuffer {
    pub fn new(cfg: BufferConfig) -> Self {
        Self {
            cfg,
            chunks: SeqMap::new(MAX_SPAN),
            state: State::Waiting,
            next: None,
            last_played_ts: 0,
            played_to_ts: 0,
            frame_90k: 3_600,
            started_at: None,
            stats: PlayStats::default(),
        }
    }

    pub fn stats(&self) -> PlayStats {
        self.stats
    }

    /// The stats at `now`, counting a stall still going on (a player that never resumes must
    /// not show 0 ms stalled).
    pub fn stats_at(&self, now: Instant) -> PlayStats {
        let mut st = self.stats;
        if let State::Stalled { since } = self.state {
            st.stalled_ms += now.saturating_duration_since(since).as_millis() as u64;
        }
        st
    }

    /// New settings (the channel's latency target arrived with the edge's welcome).
    pub fn set_config(&mut self, cfg: BufferConfig) {
        self.cfg = cfg;
    }

    pub fn started_at(&self) -> Option<Instant> {
        self.started_at
    }

    pub fn is_stalled(&self) -> bool {
        matches!(self.state, State::Stalled { .. })
    }

    /// The next seq playback needs (once started).
    pub fn next_seq(&self) -> Option<u64> {
        self.next
    }

    /// Media time between consecutive chunks, as played so far.
    pub fn frame_90k(&self) -> u64 {
        self.frame_90k
    }

    /// Media time per chunk, from the chunks held (before playback has measured it).
    pub fn frame_estimate(&self) -> Option<u64> {
        let ((s0, c0), (s1, c1)) = (self.chunks.first()?, self.chunks.last()?);
        (s1 > s0).then(|| c1.header.media_ts.saturating_sub(c0.header.media_ts) / (s1 - s0)).filter(|f| *f > 0)
    }

    pub fn newest_seq(&self) -> Option<u64> {
        self.chunks.last().map(|(s, _)| s)
    }

    pub fn get(&self, seq: u64) -> Option<&Chunk> {
        self.chunks.get(seq)
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.chunks.contains_key(seq)
    }

    /// Seqs held from `seq` on, in order.
    pub fn seqs_from(&self, seq: u64) -> impl Iterator<Item = u64> {
        self.chunks.range_from(seq).map(|(s, _)| s)
    }

    /// Chunks held from `seq` on, in order.
    pub fn from(&self, seq: u64) -> impl Iterator<Item = &Chunk> {
        self.chunks.range_from(seq).map(|(_, c)| c)
    }

    /// Media buffered ahead of playback (contiguous from the next chunk to play), in ms.
    pub fn buffered_ms(&self) -> u64 {
        let Some(start) = self.next.or_else(|| self.chunks.first().map(|(s, _)| s)) else { return 0 };
        let Some(first) = self.chunks.get(start) else { return 0 };
        let mut last = first.header.media_ts;
        let mut seq = start;
        while let Some(c) = self.chunks.get(seq + 1) {
            last = c.header.media_ts;
            seq += 1;
        }
        last.saturating_sub(first.header.media_ts) / 90
    }

    /// Adds a chunk; false for one already held or already played.
    pub fn insert(&mut self, chunk: Chunk) -> bool {
        let seq = chunk.seq();
        if self.next.is_some_and(|n| seq < n) || !self.chunks.insert(seq, chunk) {
            self.stats.duplicates += 1;
            return false;
        }
        true
    }

    /// Appends every chunk now due to `out`, starting, stalling, resuming or skipping as needed.
    pub fn poll_play(&mut self, now: Instant, out: &mut Vec<Chunk>) {
        if self.state == State::Waiting && !self.try_start(now) {
            return;
        }
        loop {
            match self.state {
                State::Waiting => return,
                State::Stalled { since } => {
                    let Some(next) = self.next else { return };
                    if let Some(c) = self.chunks.get(next) {
                        self.stats.stalled_ms += now.saturating_duration_since(since).as_millis() as u64;
                        self.state = State::Playing { clock_at: now, clock_ts: c.header.media_ts };
                    } else if now.saturating_duration_since(since)
                        >= Duration::from_millis(u64::from(self.cfg.max_stall_ms))
                    {
                        let held = self.chunks.range_from(next).next().map(|(s, _)| s);
                        match held {
                            Some(s) => {
                                self.stats.skipped_chunks += s - next;
                                self.next = Some(s);
                                // Far behind live with holes ahead (a substream's parents were
                                // gone a while): a keyframe near live, not one hole after
                                // another (its keyframes may be in the missing substream, so
                                // playing on never meets one to catch up at).
                                if self.catch_up(now, s) {
                                    continue;
                                }
                                // More holes just ahead: on at the first keyframe with a
                                // start's worth of media after it, not one stall per hole.
                                if self.run_from(s) < u64::from(self.cfg.start_ms) * 90
                                    && let Some((k, ts)) = self.resume_point(s)
                                {
                                    self.stats.skipped_chunks += k - s;
                                    self.jump(now, k, ts);
                                    continue;
                                }
                            }
                            None => return,
                        }
                    } else {
                        return;
                    }
                }
                State::Playing { clock_at, clock_ts } => {
                    let position = clock_ts + now.saturating_duration_since(clock_at).as_micros() as u64 * 9 / 100;
                    let Some(next) = self.next else { return };
                    let due_keyframe =
                        self.chunks.get(next).is_some_and(|c| c.header.media_ts <= position && c.header.is_keyframe());
                    if due_keyframe && self.catch_up(now, next) {
                        continue;
                    }
                    match self.chunks.get(next) {
                        Some(c) if c.header.media_ts <= position => {
                            let (ts, c) = (c.header.media_ts, c.clone());
                            out.push(c);
                            self.count_played(ts);
                            self.last_played_ts = ts;
                            self.stats.played_chunks += 1;
                            self.next = Some(next + 1);
                        }
                        Some(_) => return,
                        None => {
                            if position > self.last_played_ts + self.frame_90k + GRACE_90K {
                                self.stats.stalls += 1;
                                self.state = State::Stalled { since: now };
                            }
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Starts at the earliest keyframe of the contiguous run that reaches the newest chunk held,
    /// once `start_ms` of media follows it: playback never starts in front of a known hole
    /// (a start burst still arriving behind live chunks, say).
    fn try_start(&mut self, now: Instant) -> bool {
        let need = u64::from(self.cfg.start_ms) * 90;
        let Some((newest_seq, newest)) = self.chunks.last() else { return false };
        let newest_ts = newest.header.media_ts;
        // Walk back from the newest chunk while seqs are contiguous; remember the earliest keyframe.
        let mut start: Option<(u64, u64)> = None;
        let mut expect = newest_seq;
        for (seq, c) in self.chunks.rev_to(newest_seq) {
            if seq != expect {
                break;
            }
            if c.header.is_keyframe() {
                start = Some((seq, c.header.media_ts));
            }
            expect = seq.wrapping_sub(1);
        }
        let start = start.filter(|&(_, ts)| newest_ts.saturating_sub(ts) >= need);
        let Some((k, ts)) = start.or_else(|| self.oldest_run_start(need)) else { return false };
        self.next = Some(k);
        self.state = State::Playing { clock_at: now, clock_ts: ts };
        self.started_at = Some(now);
        self.chunks.retain(|s, _| s >= k);
        true
    }

    /// Media time played (TP) grows with the furthest timestamp played: chunks cut from a
    /// stream with B-frames come in presentation order only roughly, and counting each step up
    /// from the chunk before counted the reordered stretches twice (reports claimed more play
    /// than their interval held). A step back of more than 10 s is a timestamp reset.
    fn count_played(&mut self, ts: u64) {
        if self.stats.played_chunks > 0 && ts > self.played_to_ts {
            let d = ts - self.played_to_ts;
            self.stats.played_ms += d.min(90_000) / 90;
            self.frame_90k = d.min(90_000);
            self.played_to_ts = ts;
        } else if self.stats.played_chunks == 0 || self.played_to_ts.saturating_sub(ts) > 900_000 {
            self.played_to_ts = ts;
        }
    }

    /// At keyframe `at`, about to play: if that is more than `max_lag_ms` behind the newest chunk
    /// held, jumps to the earliest later keyframe within `buffer_ms` of it (true if it did).
    fn catch_up(&mut self, now: Instant, at: u64) -> bool {
        let (Some(at_c), Some((_, newest))) = (self.chunks.get(at), self.chunks.last()) else { return false };
        let newest_ts = newest.header.media_ts;
        let lag = newest_ts.saturating_sub(at_c.header.media_ts);
        if self.cfg.max_lag_ms == 0 || lag <= u64::from(self.cfg.max_lag_ms) * 90 {
            return false;
        }
        let within = u64::from(self.cfg.buffer_ms) * 90;
        let Some((k, ts)) = self
            .chunks
            .range_from(at + 1)
            .find(|(_, c)| c.header.is_keyframe() && newest_ts.saturating_sub(c.header.media_ts) <= within)
            .map(|(s, c)| (s, c.header.media_ts))
        else {
            return false;
        };
        self.stats.skipped_chunks += k - at;
        self.stats.catchups += 1;
        self.jump(now, k, ts);
        true
    }

    /// Plays on from chunk `k` (media time `ts`) now (ending a stall: its time counts).
    fn jump(&mut self, now: Instant, k: u64, ts: u64) {
        if let State::Stalled { since } = self.state {
            self.stats.stalled_ms += now.saturating_duration_since(since).as_millis() as u64;
        }
        self.next = Some(k);
        self.last_played_ts = ts.saturating_sub(self.frame_90k);
        self.played_to_ts = self.last_played_ts;
        self.state = State::Playing { clock_at: now, clock_ts: ts };
    }

    /// Media time (90 kHz) held without a hole from chunk `from` on.
    fn run_from(&self, from: u64) -> u64 {
        let mut expect = from;
        let mut span: Option<(u64, u64)> = None;
        for (seq, c) in self.chunks.range_from(from) {
            if seq != expect {
                break;
            }
            expect = seq + 1;
            let ts = c.header.media_ts;
            span = Some(span.map_or((ts, ts), |(first, last)| (first, last.max(ts))));
        }
        span.map_or(0, |(first, last)| last - first)
    }

    /// The first keyframe from chunk `from` on with `start_ms` of media after it, without a hole.
    fn resume_point(&self, from: u64) -> Option<(u64, u64)> {
        let need = u64::from(self.cfg.start_ms) * 90;
        let mut run: Option<(u64, u64)> = None;
        let mut expect = from;
        for (seq, c) in self.chunks.range_from(from) {
            if seq != expect {
                run = None;
            }
            expect = seq + 1;
            let ts = c.header.media_ts;
            if run.is_none() && c.header.is_keyframe() {
                run = Some((seq, ts));
            }
            if let Some((k, kts)) = run
                && ts.saturating_sub(kts) >= need
            {
                return Some((k, kts));
            }
        }
        None
    }

    /// Where to start when no run reaches the newest chunk with enough in it: a substream that
    /// lags the others keeps holes just behind the newest chunk, and a peer waiting for a whole run
    /// there never started (seen in CI, holding 25 s). Once the run from the oldest chunk held
    /// holds a whole buffer (so a start burst still arriving never takes this path): that run's
    /// latest keyframe with the start threshold after it.
    fn oldest_run_start(&self, need: u64) -> Option<(u64, u64)> {
        let (first, c) = self.chunks.first()?;
        let first_ts = c.header.media_ts;
        let (mut seq, mut end_ts) = (first, first_ts);
        let mut keyframes = Vec::new();
        while let Some(c) = self.chunks.get(seq) {
            if c.header.is_keyframe() {
                keyframes.push((seq, c.header.media_ts));
            }
            end_ts = c.header.media_ts;
            seq += 1;
        }
        if end_ts.saturating_sub(first_ts) < u64::from(self.cfg.buffer_ms) * 90 {
            return None;
        }
        keyframes.into_iter().rev().find(|&(_, ts)| end_ts.saturating_sub(ts) >= need)
    }

    /// When `poll_play` next has something to do.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        match self.state {
            State::Waiting => None,
            State::Stalled { since } => {
                // Past the skip deadline with nothing later at hand there is nothing to do until
                // a chunk arrives (which plays at once): no deadline, or a driver would spin.
                let skip_at = since + Duration::from_millis(u64::from(self.cfg.max_stall_ms));
                (skip_at > now).then_some(skip_at)
            }
            State::Playing { clock_at, clock_ts } => {
                let target = match self.next.and_then(|n| self.chunks.get(n)) {
                    Some(c) => c.header.media_ts,
                    None => self.last_played_ts + self.frame_90k + GRACE_90K + 1,
                };
                let ahead_us = target.saturating_sub(clock_ts) * 100 / 9;
                Some((clock_at + Duration::from_micros(ahead_us)).max(now))
            }
        }
    }

    /// Drops played chunks older than `keep_ms`, and anything implausibly far ahead.
    pub fn evict(&mut self) {
        let Some(next) = self.next else {
            // Before playback: keep at most the buffer's worth from the newest chunk back.
            if let Some(newest) = self.chunks.last().map(|(_, c)| c.header.media_ts) {
                let floor = newest.saturating_sub(u64::from(self.cfg.buffer_ms + self.cfg.keep_ms) * 90);
                self.chunks.retain(|_, c| c.header.media_ts >= floor);
            }
            return;
        };
        let floor = self.last_played_ts.saturating_sub(u64::from(self.cfg.keep_ms) * 90);
        while let Some((seq, c)) = self.chunks.first() {
            if seq < next && c.header.media_ts < floor {
                self.chunks.pop_first();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proto::{ChannelId, ChunkFlags, ChunkHeader};

    fn chunk(seq: u64) -> Chunk {
        let mut p = vec![0xffu8; 188];
        p[0] = 0x47;
        Chunk {
            header: ChunkHeader {
                channel: ChannelId::new("c").unwrap(),
                seq,
                ingest_ms: 0,
                media_ts: seq * 3600,
                flags: if seq.is_multiple_of(50) { ChunkFlags::KEYFRAME } else { ChunkFlags::empty() },
            },
            payload: Bytes::from(p),
            signature: None,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn played(b: &mut PlayBuffer, now: Instant) -> Vec<u64> {
        let mut out = Vec::new();
        b.poll_play(now, &mut out);
        out.iter().map(Chunk::seq).collect()
    }

    #[test]
    fn starts_at_a_keyframe_once_enough_is_buffered_then_plays_in_real_time() {
        let t0 = Instant::now();
        let mut b = PlayBuffer::new(BufferConfig::default());
        for s in 40..70 {
            b.insert(chunk(s));
        }
        assert!(played(&mut b, t0).is_empty(), "only 19 chunks after the keyframe at 50: < 2 s");
        // A hole between older and newer chunks: only the run reaching the newest chunk counts.
        b.insert(chunk(120));
        assert!(played(&mut b, t0).is_empty(), "the run ending at 120 has no keyframe yet");
        for s in (70..400).filter(|s| *s != 120) {
            b.insert(chunk(s));
        }
        assert_eq!(played(&mut b, t0), [50], "starts at keyframe 50 and plays its first chunk");
        assert_eq!(b.started_at(), Some(t0));
        assert_eq!(played(&mut b, t0 + ms(1000)), (51..=75).collect::<Vec<_>>(), "25 chunks per second");
        assert!(b.buffered_ms() > 12_000);
        assert!(!b.insert(chunk(60)), "already played");
    }

    #[test]
    fn a_hole_stalls_then_resumes_and_counts_stalled_time() {
        let t0 = Instant::now();
        let mut b = PlayBuffer::new(BufferConfig::default());
        for s in 0..60 {
            b.insert(chunk(s));
        }
        played(&mut b, t0);
        for s in 61..100 {
            b.insert(chunk(s));
        }
        assert_eq!(played(&mut b, t0 + ms(2360)).last(), Some(&59));
        played(&mut b, t0 + ms(2600));
        assert!(b.is_stalled());
        assert_eq!(b.stats().stalls, 1);
        // While it lasts the stall counts, as it will once it ends.
        assert_eq!(b.stats_at(t0 + ms(2900)).stalled_ms, 300);
        b.insert(chunk(60));
        assert_eq!(played(&mut b, t0 + ms(3000)).first(), Some(&60));
        assert_eq!(b.stats().stalled_ms, 400);
        assert!(!b.is_stalled());
    }

    /// Issue 24's testbed: a player whose parents of two substreams were gone half a minute got
    /// the others back and then skipped one hole after another, 3 s each, ever further behind
    /// live (the keyframes were in the missing substreams, so it never met one to catch up at).
    #[test]
    fn a_stall_far_behind_live_jumps_to_a_keyframe_near_live() {
        let t0 = Instant::now();
        let mut b = PlayBuffer::new(BufferConfig::default());
        for s in 0..60 {
            b.insert(chunk(s));
        }
        played(&mut b, t0);
        assert_eq!(played(&mut b, t0 + ms(2_400)).last(), Some(&59));
        // Later: half the chunks of the next 25 s (odd ones only), then everything up to live.
        for s in (61..700).step_by(2) {
            b.insert(chunk(s));
        }
        for s in 700..=1000 {
            b.insert(chunk(s));
        }
        assert!(played(&mut b, t0 + ms(6_000)).is_empty() && b.is_stalled());
        let out = played(&mut b, t0 + ms(9_100));
        assert_eq!(b.stats().catchups, 1, "{:?}", b.stats());
        assert_eq!(out.first(), Some(&700), "the first keyframe within the buffer of live");
    }

    /// A substream missing for a while leaves a hole every few chunks: after one stall the
    /// player goes on at the first keyframe with a start's worth of media after it, rather than
    /// stalling 3 s on each hole.
    #[test]
    fn holes_ahead_are_skipped_to_a_whole_run_at_once() {
        let t0 = Instant::now();
        let mut b = PlayBuffer::new(BufferConfig::default());
        for s in 0..60 {
            b.insert(chunk(s));
        }
        played(&mut b, t0);
        played(&mut b, t0 + ms(2_400));
        for s in (61..200).step_by(2).chain(200..=400) {
            b.insert(chunk(s));
        }
        assert!(played(&mut b, t0 + ms(3_000)).is_empty() && b.is_stalled());
        let out = played(&mut b, t0 + ms(6_100));
        assert_eq!(out.first(), Some(&200), "on at keyframe 200, where the holes end");
        assert_eq!(b.stats().stalls, 1);
        assert_eq!(b.stats().catchups, 0);
    }

    #[test]
    fn a_lost_chunk_is_skipped_after_max_stall() {
        let t0 = Instant::now();
        let mut b = PlayBuffer::new(BufferConfig { max_stall_ms: 1000, ..BufferConfig::default() });
        for s in 0..60 {
            b.insert(chunk(s));
        }
        played(&mut b, t0);
        for s in 61..200 {
            b.insert(chunk(s));
        }
        played(&mut b, t0 + ms(2600));
        assert!(b.is_stalled());
        let after = played(&mut b, t0 + ms(3700));
        assert_eq!(after.first(), Some(&61));
        assert_eq!(b.stats().skipped_chunks, 1);
    }

    #[test]
    fn played_time_counts_media_once_when_timestamps_are_reordered() {
        let t0 = Instant::now();
        let mut b = PlayBuffer::new(BufferConfig::default());
        // B-frames: each pair of 40 ms chunks arrives in swapped timestamp order.
        let ts = |seq: u64| if seq.is_multiple_of(50) { seq * 3600 } else { (seq ^ 1) * 3600 };
        for s in 0..300u64 {
            let mut c = chunk(s);
            c.header.media_ts = ts(s);
            b.insert(c);
        }
        played(&mut b, t0);
        played(&mut b, t0 + ms(4_000));
        let st = b.stats();
        assert!(st.played_chunks >= 99, "{st:?}");
        assert!((3_900..=4_040).contains(&st.played_ms), "4 s of media played, counted once: {st:?}");
    }

    #[test]
    fn playback_that_fell_behind_the_target_catches_up_at_a_keyframe() {
        let t0 = Instant::now();
        let cfg = BufferConfig { max_stall_ms: 10_000, ..BufferConfig::low_latency(3_000) };
        assert_eq!((cfg.start_ms, cfg.max_lag_ms), (1_000, 5_000));
        let mut b = PlayBuffer::new(cfg);
        for s in 0..110 {
            b.insert(chunk(s));
        }
        assert_eq!(played(&mut b, t0), [0], "4.36 s behind the newest chunk at most: no catch-up");
        assert_eq!(played(&mut b, t0 + ms(4_600)).last(), Some(&109));
        assert!(b.is_stalled(), "110 is missing");
        for s in 111..=300 {
            b.insert(chunk(s));
        }
        b.insert(chunk(110));
        assert_eq!(played(&mut b, t0 + ms(8_000)), [110], "resumes where it stalled");
        assert_eq!(b.stats().catchups, 0);
        // Keyframe 150 is due 6 s behind 300: jump to the first keyframe within 3 s of it.
        let next = played(&mut b, t0 + ms(9_600));
        assert_eq!(next, (111..150).chain([250]).collect::<Vec<_>>());
        assert_eq!((b.stats().catchups, b.stats().skipped_chunks), (1, 100));
        // Then on in real time from there, no second jump.
        assert_eq!(played(&mut b, t0 + ms(10_000)), (251..=260).collect::<Vec<_>>());
        assert_eq!(b.stats().catchups, 1);
        assert!(b.buffered_ms() <= 3_000);
    }

    #[test]
    fn eviction_keeps_recent_history_only() {
        let t0 = Instant::now();
        let mut b = PlayBuffer::new(BufferConfig { keep_ms: 2_000, max_lag_ms: 0, ..BufferConfig::default() });
        for s in 0..1000 {
            b.insert(chunk(s));
        }
        played(&mut b, t0);
        played(&mut b, t0 + ms(20_000));
        b.evict();
        let oldest = b.from(0).next().unwrap().seq();
        assert!((445..=451).contains(&oldest), "kept 2 s behind playback at 500: oldest {oldest}");
    }

    /// A substream whose parent runs 1.6 s behind the others leaves holes just behind the newest
    /// chunk at every moment: no run reaching it ever holds a keyframe and 2 s after it.
    #[test]
    fn a_lagging_substream_does_not_keep_playback_from_starting() {
        let t0 = Instant::now();
        let mut b = PlayBuffer::new(BufferConfig::default());
        let mut started_with = None;
        for s in 0..600u64 {
            if s % 4 != 3 {
                b.insert(chunk(s));
            }
            if let Some(late) = s.checked_sub(40).filter(|l| l % 4 == 3) {
                b.insert(chunk(late));
            }
            let out = played(&mut b, t0);
            if started_with.is_none() && !out.is_empty() {
                started_with = Some((s, out[0]));
            }
        }
        let (at, first) = started_with.expect("playback started");
        assert_eq!(first % 50, 0, "at a keyframe");
        assert!(at < 430, "once 15 s are held from the oldest chunk, not later: started when {at} had arrived");
    }
}
