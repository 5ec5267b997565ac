//! The per-channel ring buffer every SN keeps (≥ 30 s): it lets a child resume from an exact seq
//! after failover, lets a new edge start with a backlog, and bounds memory by time and by bytes.

use std::collections::VecDeque;

use proto::Chunk;

#[derive(Debug, Clone)]
pub struct RingConfig {
    /// Media time kept (the design's "≥ 30 s").
    pub keep_ms: u64,
    /// Hard memory bound; wins over `keep_ms` for absurd bitrates.
    pub max_bytes: usize,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self { keep_ms: 30_000, max_bytes: 256 * 1024 * 1024 }
    }
}

/// Where a reader stands relative to the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPos {
    /// Chunks were copied out; read again from this seq.
    Next(u64),
    /// The reader's seq was evicted; the oldest held is this one.
    Behind { oldest: u64 },
}

/// Rate, keyframe spacing and frame rate of the media a ring holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RingHealth {
    pub kbps: Option<f64>,
    pub keyframe_interval_ms: Option<u64>,
    pub frame_rate: Option<f64>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RingStats {
    pub chunks: usize,
    pub bytes: usize,
    pub evicted: u64,
    pub rejected_old: u64,
}

pub struct ChunkRing {
    cfg: RingConfig,
    chunks: VecDeque<Chunk>,
    bytes: usize,
    evicted: u64,
    rejected_old: u64,
}

impl ChunkRing {
    pub fn new(cfg: RingConfig) -> Self {
        Self { cfg, chunks: VecDeque::new(), bytes: 0, evicted: 0, rejected_old: 0 }
    }

    pub fn stats(&self) -> RingStats {
        RingStats {
            chunks: self.chunks.len(),
            bytes: self.bytes,
            evicted: self.evicted,
            rejected_old: self.rejected_old,
        }
    }

    pub fn first_seq(&self) -> Option<u64> {
        self.chunks.front().map(Chunk::seq)
    }

    pub fn last_seq(&self) -> Option<u64> {
        self.chunks.back().map(Chunk::seq)
    }

    pub fn newest(&self) -> Option<&Chunk> {
        self.chunks.back()
    }

    /// Media time spanned by the held chunks.
    pub fn span_ms(&self) -> u64 {
        match (self.chunks.front(), self.chunks.back()) {
            (Some(a), Some(b)) => b.header.media_ts.saturating_sub(a.header.media_ts) / 90,
            _ => 0,
        }
    }

    /// Appends a chunk. Seqs must increase (gaps are allowed: they are recorded upstream); an old or
    /// repeated seq is refused and counted, which is what keeps relays duplicate-free.
    pub fn push(&mut self, chunk: Chunk) -> bool {
        if self.last_seq().is_some_and(|last| chunk.seq() <= last) {
            self.rejected_old += 1;
            return false;
        }
        self.bytes += chunk.payload.len();
        self.chunks.push_back(chunk);
        self.evict();
        true
    }

    fn evict(&mut self) {
        let keep_90k = self.cfg.keep_ms * 90;
        while self.chunks.len() > 1 {
            let newest_ts = self.chunks.back().map_or(0, |c| c.header.media_ts);
            let front = &self.chunks[0];
            // Keep the oldest chunk while dropping it would leave less than keep_ms behind the newest.
            let second_ts = self.chunks[1].header.media_ts;
            let too_old = newest_ts.saturating_sub(second_ts) >= keep_90k;
            let too_big = self.bytes > self.cfg.max_bytes;
            if !(too_old || too_big) {
                break;
            }
            self.bytes -= front.payload.len();
            self.chunks.pop_front();
            self.evicted += 1;
        }
    }

    fn index_of(&self, seq: u64) -> Result<usize, usize> {
        let first = match self.first_seq() {
            Some(f) => f,
            None => return Err(0),
        };
        // Fast path: contiguous seqs.
        if let Some(i) = seq.checked_sub(first).and_then(|d| usize::try_from(d).ok())
            && self.chunks.get(i).is_some_and(|c| c.seq() == seq)
        {
            return Ok(i);
        }
        self.chunks.binary_search_by_key(&seq, Chunk::seq)
    }

    pub fn get(&self, seq: u64) -> Option<&Chunk> {
        self.index_of(seq).ok().map(|i| &self.chunks[i])
    }

    /// Copies (cheaply: shared payloads) up to `max` chunks with seq ≥ `from` into `out`.
    pub fn read_from(&self, from: u64, max: usize, out: &mut Vec<Chunk>) -> ReadPos {
        self.each_from(from, max, |c| out.push(c.clone()))
    }

    /// Shows `each` up to `max` chunks with seq ≥ `from`, in order, without copying them.
    pub fn each_from(&self, from: u64, max: usize, mut each: impl FnMut(&Chunk)) -> ReadPos {
        let Some(first) = self.first_seq() else { return ReadPos::Next(from) };
        if from < first {
            return ReadPos::Behind { oldest: first };
        }
        let start = match self.index_of(from) {
            Ok(i) | Err(i) => i,
        };
        let mut next = from;
        for c in self.chunks.range(start..).take(max) {
            next = c.seq() + 1;
            each(c);
        }
        ReadPos::Next(next)
    }

    /// Mean media time between the keyframes held (ms); None with fewer than two.
    pub fn keyframe_interval_ms(&self) -> Option<u64> {
        let mut ts = self.chunks.iter().filter(|c| c.header.is_keyframe()).map(|c| c.header.media_ts);
        let first = ts.next()?;
        let (n, last) = ts.fold((0u64, first), |(n, _), t| (n + 1, t));
        (n > 0).then(|| last.saturating_sub(first) / 90 / n)
    }

    /// The broadcast as the ring holds it (ingest health, on the channel's origin).
    pub fn health(&self) -> RingHealth {
        let span = self.span_ms();
        RingHealth {
            kbps: (span > 0).then(|| self.bytes as f64 * 8.0 / span as f64),
            keyframe_interval_ms: self.keyframe_interval_ms(),
            frame_rate: self.chunk_rate(),
        }
    }

    /// Chunks per second of media held: the video frame rate (one chunk per access unit), or
    /// 10 for an audio-only feed (100 ms slices). None with fewer than two chunks.
    pub fn chunk_rate(&self) -> Option<f64> {
        let span = self.span_ms();
        (self.chunks.len() > 1 && span > 0).then(|| (self.chunks.len() - 1) as f64 * 1000.0 / span as f64)
    }

    pub fn latest_keyframe(&self) -> Option<u64> {
        self.chunks.iter().rev().find(|c| c.header.is_keyframe()).map(Chunk::seq)
    }

    /// The newest keyframe at least `ms` of media older than the newest chunk, else the oldest
    /// keyframe held: the start of a backlog burst.
    pub fn keyframe_before(&self, ms: u64) -> Option<u64> {
        let newest = self.chunks.back()?.header.media_ts;
        let limit = newest.saturating_sub(ms * 90);
        self.chunks
            .iter()
            .rev()
            .filter(|c| c.header.is_keyframe())
            .find(|c| c.header.media_ts <= limit)
            .or_else(|| self.chunks.iter().find(|c| c.header.is_keyframe()))
            .map(Chunk::seq)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::Bytes;
    use proto::{ChannelId, ChunkFlags, ChunkHeader};

    /// A chunk of one TS packet, 40 ms of media per seq, keyframe every 50.
    pub(crate) fn chunk(seq: u64) -> Chunk {
        let mut p = vec![0xffu8; 188];
        p[0] = 0x47;
        p[4..12].copy_from_slice(&seq.to_be_bytes());
        Chunk {
            header: ChunkHeader {
                channel: ChannelId::new("t").unwrap(),
                seq,
                ingest_ms: seq * 40,
                media_ts: seq * 3600,
                flags: if seq.is_multiple_of(50) { ChunkFlags::KEYFRAME } else { ChunkFlags::empty() },
            },
            payload: Bytes::from(p),
            signature: None,
        }
    }

    #[test]
    fn keeps_at_least_the_window_and_evicts_beyond() {
        let mut r = ChunkRing::new(RingConfig { keep_ms: 30_000, max_bytes: usize::MAX });
        for s in 0..2000 {
            assert!(r.push(chunk(s)));
        }
        assert!(r.span_ms() >= 30_000, "span {}", r.span_ms());
        assert!(r.span_ms() < 30_100);
        assert_eq!(r.last_seq(), Some(1999));
        assert_eq!(r.stats().evicted, r.first_seq().unwrap());
    }

    #[test]
    fn keyframe_spacing_is_measured_over_the_ring() {
        let mut r = ChunkRing::new(RingConfig { keep_ms: 30_000, max_bytes: usize::MAX });
        assert_eq!(r.keyframe_interval_ms(), None);
        // A keyframe every 50 chunks of 40 ms: every 2 s.
        for s in 0..120 {
            r.push(chunk(s));
        }
        assert_eq!(r.keyframe_interval_ms(), Some(2000));
    }

    #[test]
    fn byte_bound_wins() {
        let mut r = ChunkRing::new(RingConfig { keep_ms: 30_000, max_bytes: 188 * 10 });
        for s in 0..100 {
            r.push(chunk(s));
        }
        assert_eq!(r.stats().chunks, 10);
        assert_eq!(r.stats().bytes, 1880);
    }

    #[test]
    fn refuses_old_and_duplicate_seqs() {
        let mut r = ChunkRing::new(RingConfig::default());
        assert!(r.push(chunk(5)));
        assert!(!r.push(chunk(5)));
        assert!(!r.push(chunk(3)));
        assert!(r.push(chunk(9)), "gaps are allowed");
        assert_eq!(r.stats().rejected_old, 2);
        assert!(r.get(9).is_some() && r.get(6).is_none());
    }

    #[test]
    fn reads_resume_exactly_and_report_lag() {
        let mut r = ChunkRing::new(RingConfig { keep_ms: 4_000, max_bytes: usize::MAX });
        for s in 0..300 {
            r.push(chunk(s));
        }
        let mut out = Vec::new();
        assert_eq!(r.read_from(290, 4, &mut out), ReadPos::Next(294));
        assert_eq!(out.iter().map(Chunk::seq).collect::<Vec<_>>(), [290, 291, 292, 293]);
        assert_eq!(r.read_from(400, 4, &mut out), ReadPos::Next(400), "ahead of the ring: wait");
        assert_eq!(r.read_from(10, 4, &mut out), ReadPos::Behind { oldest: r.first_seq().unwrap() });
    }

    #[test]
    fn reads_across_gaps() {
        let mut r = ChunkRing::new(RingConfig::default());
        for s in [1, 2, 5, 6] {
            r.push(chunk(s));
        }
        let mut out = Vec::new();
        assert_eq!(r.read_from(3, 10, &mut out), ReadPos::Next(7));
        assert_eq!(out.iter().map(Chunk::seq).collect::<Vec<_>>(), [5, 6]);
    }

    #[test]
    fn keyframe_lookups() {
        let mut r = ChunkRing::new(RingConfig::default());
        for s in 0..260 {
            r.push(chunk(s));
        }
        assert_eq!(r.latest_keyframe(), Some(250));
        // 259 is newest; 6 s back is seq 109 → newest keyframe at or before: 100.
        assert_eq!(r.keyframe_before(6_000), Some(100));
        assert_eq!(r.keyframe_before(60_000), Some(0), "falls back to the oldest keyframe");
    }
}
