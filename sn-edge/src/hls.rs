//! HLS segmenter (sans-IO): chunks in, a live sliding-window playlist, segments and LL-HLS parts
//! out. Segments start at keyframes (every keyframe chunk carries PAT+PMT) and close at the first
//! keyframe at least the target length after their start. With parts on (RFC 8216bis low-latency
//! HLS) each segment is also cut, at chunk boundaries, into parts no longer than the part target,
//! published as they close so a player can sit a second or two behind live.
//!
//! Segments, parts and the playlist are each one `Bytes`, made once when they change: every
//! request is served from those, with no copy or allocation of its own.

mod playlist;

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use proto::{Chunk, ChunkFlags};

#[derive(Debug, Clone)]
pub struct SegmenterConfig {
    pub target_90k: u64,
    /// LL-HLS part target; 0 = plain HLS (no parts, no blocking reload).
    pub part_90k: u64,
    /// Segments listed in the playlist.
    pub window: usize,
    /// Extra segments kept after leaving the playlist, for players that fetch a little late.
    pub keep_extra: usize,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        Self { target_90k: 2 * 90_000, part_90k: 0, window: 6, keep_extra: 4 }
    }
}

/// An LL-HLS partial segment: whole chunks, so whole TS packets.
#[derive(Debug)]
pub struct Part {
    pub body: Bytes,
    /// Quoted entity tag, made as a segment's is.
    pub etag: Bytes,
    pub duration_90k: u64,
    /// Starts with a keyframe chunk (PAT+PMT first): a player may start here.
    pub independent: bool,
}

#[derive(Debug)]
pub struct Segment {
    /// Media sequence number.
    pub msn: u64,
    /// The segment's bytes (whole TS packets, from a keyframe chunk).
    pub body: Bytes,
    /// Chunks it was made of.
    pub chunks: usize,
    /// Quoted entity tag: the sequence number, start time and length, so a segment made again
    /// after a restart (the same number, other media) never matches a cached one.
    pub etag: Bytes,
    pub duration_90k: u64,
    /// Timestamps do not follow from the previous segment.
    pub discontinuity: bool,
    /// When Tier 0 cut its first chunk (Unix ms): the playlist's `EXT-X-PROGRAM-DATE-TIME`, so a
    /// player can tell how far behind the ingest it plays.
    pub ingest_ms: u64,
    /// Its LL-HLS parts (empty with parts off).
    pub parts: Vec<Arc<Part>>,
    /// The HTTP layer's response head for it, made on the first request that needs it
    /// ([`crate::hls_http::segment_head`]): once per segment, not per request.
    pub http_head: OnceLock<Bytes>,
}

/// The segment being filled, and its part being filled.
struct Open {
    msn: u64,
    chunks: Vec<Bytes>,
    bytes: usize,
    start_ts: u64,
    last_ts: u64,
    frames: u64,
    discontinuity: bool,
    ingest_ms: u64,
    parts: Vec<Arc<Part>>,
    /// Where in `chunks` the open part starts, its media time, and whether it starts at a keyframe.
    part_first: usize,
    part_start_ts: u64,
    part_independent: bool,
}

impl Open {
    /// Closes the open part (if it has chunks) at `end_ts`; true if one was published.
    fn close_part(&mut self, end_ts: u64) -> bool {
        let chunks = &self.chunks[self.part_first..];
        let duration_90k = end_ts.saturating_sub(self.part_start_ts);
        if chunks.is_empty() || duration_90k == 0 {
            return false;
        }
        let body = join(chunks);
        let etag = etag(&format!("{}.{}", self.msn, self.parts.len()), self.part_start_ts, body.len());
        self.parts.push(Arc::new(Part { body, etag, duration_90k, independent: self.part_independent }));
        self.part_first = self.chunks.len();
        true
    }

    /// Where the media ends if nothing follows: one frame past the last chunk.
    fn estimated_end(&self) -> u64 {
        let span = self.last_ts - self.start_ts;
        self.last_ts + span.checked_div(self.frames).unwrap_or(0)
    }
}

fn join(chunks: &[Bytes]) -> Bytes {
    let mut body = bytes::BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
    for c in chunks {
        body.extend_from_slice(c);
    }
    body.freeze()
}

fn etag(name: &str, start_ts: u64, len: usize) -> Bytes {
    Bytes::from(format!("\"{name}-{start_ts:x}-{len:x}\""))
}

/// Whether a blocking playlist request (`_HLS_msn`, `_HLS_part`) can be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    Now,
    Later,
    /// More than two segments ahead of the playlist: RFC 8216bis says 400.
    TooFar,
}

/// A part asked for by number.
#[derive(Debug, Clone)]
pub enum PartAt {
    Here(Arc<Part>),
    /// The open segment's next part (what the preload hint names) or the next segment's first:
    /// a request for it waits.
    Soon,
    Never,
}

pub struct Segmenter {
    cfg: SegmenterConfig,
    done: VecDeque<Arc<Segment>>,
    open: Option<Open>,
    next_msn: u64,
    /// Discontinuities in segments already dropped from `done`.
    dropped_discontinuities: u64,
    pending_discontinuity: bool,
    last_seq: Option<u64>,
    max_duration_90k: u64,
    /// The broadcast ended (its publisher did not come back): the playlist says so.
    ended: bool,
    /// Bumped whenever a part or segment is published or the broadcast ends.
    version: u64,
    /// The playlist as of `version`.
    rendered: Option<Bytes>,
}

impl Segmenter {
    pub fn new(cfg: SegmenterConfig) -> Self {
        let max_duration_90k = cfg.target_90k;
        Self {
            cfg,
            done: VecDeque::new(),
            open: None,
            next_msn: 0,
            dropped_discontinuities: 0,
            pending_discontinuity: false,
            last_seq: None,
            max_duration_90k,
            ended: false,
            version: 0,
            rendered: None,
        }
    }

    pub fn segments(&self) -> usize {
        self.done.len()
    }

    /// Changes with every published part or segment (what blocked requests wait on).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The broadcast is over: its last segment is closed and the playlist gets `#EXT-X-ENDLIST`,
    /// so players finish instead of polling. A later broadcast reopens the playlist.
    pub fn end(&mut self) {
        self.close(None);
        self.ended = true;
        self.publish();
    }

    pub fn push(&mut self, chunk: &Chunk) {
        let was_ended = std::mem::take(&mut self.ended);
        let before = self.version;
        let h = &chunk.header;
        let gap = self.last_seq.is_some_and(|l| h.seq != l + 1);
        self.last_seq = Some(h.seq);
        if gap || h.flags.contains(ChunkFlags::DISCONTINUITY) {
            self.close(None);
            // The first segment after a gap or a source change is flagged, except at the very start.
            self.pending_discontinuity = self.next_msn > 0;
        }
        match &self.open {
            None if !h.is_keyframe() => {}
            Some(o) if h.is_keyframe() && h.media_ts.saturating_sub(o.start_ts) >= self.cfg.target_90k => {
                self.close(Some(h.media_ts));
            }
            _ => {}
        }
        if self.open.is_some() || h.is_keyframe() {
            self.add(chunk);
        }
        if was_ended || self.version != before {
            self.publish();
        }
    }

    fn add(&mut self, chunk: &Chunk) {
        let h = &chunk.header;
        let part_90k = self.cfg.part_90k;
        let open = self.open.get_or_insert_with(|| Open {
            msn: self.next_msn,
            chunks: Vec::new(),
            bytes: 0,
            start_ts: h.media_ts,
            last_ts: h.media_ts,
            frames: 0,
            discontinuity: std::mem::take(&mut self.pending_discontinuity),
            ingest_ms: h.ingest_ms,
            parts: Vec::new(),
            part_first: 0,
            part_start_ts: h.media_ts,
            part_independent: true,
        });
        // The open part closes before a chunk that would take it past the part target (the
        // chunk's own length taken as the step from the last one): parts never exceed it.
        let step = h.media_ts.saturating_sub(open.last_ts);
        if part_90k > 0
            && open.part_first < open.chunks.len()
            && h.media_ts.saturating_sub(open.part_start_ts) + step > part_90k
            && open.close_part(h.media_ts)
        {
            self.version += 1;
        }
        if open.part_first == open.chunks.len() {
            open.part_start_ts = h.media_ts;
            open.part_independent = h.is_keyframe();
        }
        open.chunks.push(chunk.payload.clone());
        open.bytes += chunk.payload.len();
        if h.media_ts > open.last_ts {
            open.frames += 1;
        }
        open.last_ts = open.last_ts.max(h.media_ts);
    }

    /// Closes the open segment, ending at `end_ts` (the next keyframe) or estimated from its frames.
    fn close(&mut self, end_ts: Option<u64>) {
        let Some(mut o) = self.open.take() else { return };
        let end = end_ts.unwrap_or_else(|| o.estimated_end());
        let duration_90k = end.saturating_sub(o.start_ts);
        if duration_90k == 0 {
            return;
        }
        if self.cfg.part_90k > 0 {
            o.close_part(end);
        }
        self.max_duration_90k = self.max_duration_90k.max(duration_90k);
        self.done.push_back(Arc::new(Segment {
            msn: o.msn,
            body: join(&o.chunks),
            chunks: o.chunks.len(),
            etag: etag(&o.msn.to_string(), o.start_ts, o.bytes),
            duration_90k,
            discontinuity: o.discontinuity,
            ingest_ms: o.ingest_ms,
            parts: o.parts,
            http_head: OnceLock::new(),
        }));
        self.next_msn += 1;
        self.version += 1;
        while self.done.len() > self.cfg.window + self.cfg.keep_extra {
            if let Some(old) = self.done.pop_front() {
                self.dropped_discontinuities += u64::from(old.discontinuity);
            }
        }
    }

    fn publish(&mut self) {
        self.version += 1;
        self.rendered = playlist::render(self).map(Bytes::from);
    }

    pub fn segment(&self, msn: u64) -> Option<Arc<Segment>> {
        let first = self.done.front()?.msn;
        let seg = self.done.get(usize::try_from(msn.checked_sub(first)?).ok()?)?;
        (seg.msn == msn).then(|| seg.clone())
    }

    /// Part `index` of segment `msn`.
    pub fn part(&self, msn: u64, index: usize) -> PartAt {
        if msn < self.next_msn {
            return match self.segment(msn).and_then(|s| s.parts.get(index).cloned()) {
                Some(p) => PartAt::Here(p),
                None => PartAt::Never,
            };
        }
        let open_parts = self.open.as_ref().map_or(0, |o| o.parts.len());
        match self.open.as_ref().and_then(|o| o.parts.get(index)) {
            Some(p) if msn == self.next_msn => PartAt::Here(p.clone()),
            _ if self.ended || self.cfg.part_90k == 0 => PartAt::Never,
            _ if msn == self.next_msn && index <= open_parts + 1 => PartAt::Soon,
            _ if msn == self.next_msn + 1 && index == 0 => PartAt::Soon,
            _ => PartAt::Never,
        }
    }

    /// Whether the playlist holds segment `msn` (complete), or its part `part`.
    pub fn ready(&self, msn: u64, part: Option<usize>) -> Ready {
        if self.ended && self.rendered.is_some() {
            return Ready::Now;
        }
        // The last segment the playlist lists is `next_msn - 1`; two past it is the limit.
        if msn > self.next_msn + 1 {
            return Ready::TooFar;
        }
        let has_part = match (part, &self.open) {
            (Some(p), Some(o)) => msn == o.msn && o.parts.len() > p,
            _ => false,
        };
        if self.rendered.is_some() && (msn < self.next_msn || has_part) { Ready::Now } else { Ready::Later }
    }

    /// Whether a player may start on the playlist: two whole segments, or the broadcast over.
    /// With one, a low-latency player starts in the newest segment, whose audio (muxed a little
    /// after the video) ends before its video does, and nothing follows it yet: hls.js then loads
    /// that segment's parts again and again and stalls once, until the next segment begins
    /// (seen in headless Chromium; `tests/hls.rs` starts on a brand-new channel).
    pub fn startable(&self) -> bool {
        self.rendered.is_some() && (self.done.len() >= 2 || self.ended)
    }

    /// The live playlist; `None` until the first segment is complete.
    pub fn playlist(&self) -> Option<Bytes> {
        self.rendered.clone()
    }
}

#[cfg(test)]
mod tests;
