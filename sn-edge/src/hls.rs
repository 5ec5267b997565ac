//! HLS segmenter (sans-IO): chunks in, a live sliding-window playlist and segments out. Segments
//! start at keyframes (every keyframe chunk carries PAT+PMT) and close at the first keyframe at
//! least the target length after their start. A segment is one `Bytes`, joined once when it
//! closes, with its entity tag: every request for it is served from that, with no copy or
//! allocation of its own.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::Arc;

use bytes::Bytes;
use proto::{Chunk, ChunkFlags};

#[derive(Debug, Clone)]
pub struct SegmenterConfig {
    pub target_90k: u64,
    /// Segments listed in the playlist.
    pub window: usize,
    /// Extra segments kept after leaving the playlist, for players that fetch a little late.
    pub keep_extra: usize,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        Self { target_90k: 2 * 90_000, window: 6, keep_extra: 4 }
    }
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
}

struct Open {
    chunks: Vec<Bytes>,
    bytes: usize,
    start_ts: u64,
    last_ts: u64,
    frames: u64,
    discontinuity: bool,
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
        }
    }

    pub fn segments(&self) -> usize {
        self.done.len()
    }

    /// The broadcast is over: its last segment is closed and the playlist gets `#EXT-X-ENDLIST`,
    /// so players finish instead of polling. A later broadcast reopens the playlist.
    pub fn end(&mut self) {
        self.close(None);
        self.ended = true;
    }

    pub fn push(&mut self, chunk: &Chunk) {
        self.ended = false;
        let h = &chunk.header;
        let gap = self.last_seq.is_some_and(|l| h.seq != l + 1);
        self.last_seq = Some(h.seq);
        if gap || h.flags.contains(ChunkFlags::DISCONTINUITY) {
            self.close(None);
            // The first segment after a gap or a source change is flagged, except at the very start.
            self.pending_discontinuity = self.next_msn > 0;
        }
        match &self.open {
            None if !h.is_keyframe() => return,
            Some(o) if h.is_keyframe() && h.media_ts.saturating_sub(o.start_ts) >= self.cfg.target_90k => {
                self.close(Some(h.media_ts));
            }
            _ => {}
        }
        let open = self.open.get_or_insert_with(|| Open {
            chunks: Vec::new(),
            bytes: 0,
            start_ts: h.media_ts,
            last_ts: h.media_ts,
            frames: 0,
            discontinuity: std::mem::take(&mut self.pending_discontinuity),
        });
        open.chunks.push(chunk.payload.clone());
        open.bytes += chunk.payload.len();
        if h.media_ts > open.last_ts {
            open.frames += 1;
        }
        open.last_ts = open.last_ts.max(h.media_ts);
    }

    /// Closes the open segment, ending at `end_ts` (the next keyframe) or estimated from its frames.
    fn close(&mut self, end_ts: Option<u64>) {
        let Some(o) = self.open.take() else { return };
        let span = o.last_ts - o.start_ts;
        let frame = span.checked_div(o.frames).unwrap_or(0);
        let duration_90k = end_ts.map_or(span + frame, |e| e.saturating_sub(o.start_ts));
        if duration_90k == 0 {
            return;
        }
        self.max_duration_90k = self.max_duration_90k.max(duration_90k);
        let mut body = bytes::BytesMut::with_capacity(o.bytes);
        for c in &o.chunks {
            body.extend_from_slice(c);
        }
        let etag = Bytes::from(format!("\"{}-{:x}-{:x}\"", self.next_msn, o.start_ts, o.bytes));
        self.done.push_back(Arc::new(Segment {
            msn: self.next_msn,
            body: body.freeze(),
            chunks: o.chunks.len(),
            etag,
            duration_90k,
            discontinuity: o.discontinuity,
        }));
        self.next_msn += 1;
        while self.done.len() > self.cfg.window + self.cfg.keep_extra {
            if let Some(old) = self.done.pop_front() {
                self.dropped_discontinuities += u64::from(old.discontinuity);
            }
        }
    }

    pub fn segment(&self, msn: u64) -> Option<Arc<Segment>> {
        let first = self.done.front()?.msn;
        let seg = self.done.get(usize::try_from(msn.checked_sub(first)?).ok()?)?;
        (seg.msn == msn).then(|| seg.clone())
    }

    /// The live playlist; `None` until the first segment is complete.
    pub fn playlist(&self) -> Option<String> {
        if self.done.is_empty() {
            return None;
        }
        let listed = self.done.len().min(self.cfg.window);
        let hidden = self.done.len() - listed;
        let disc_seq =
            self.dropped_discontinuities + self.done.iter().take(hidden).filter(|s| s.discontinuity).count() as u64;
        // The target never shrinks, as RFC 8216 requires it to stay constant for the playlist.
        let target = self.max_duration_90k.div_ceil(90_000);
        let mut out = String::with_capacity(128 + listed * 40);
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{}\n#EXT-X-DISCONTINUITY-SEQUENCE:{disc_seq}\n",
            self.done[hidden].msn
        );
        for s in self.done.iter().skip(hidden) {
            if s.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let _ = write!(out, "#EXTINF:{:.3},\n{}.ts\n", s.duration_90k as f64 / 90_000.0, s.msn);
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{ChannelId, ChunkHeader};

    /// 25 fps chunks, keyframe every `gop` frames.
    fn chunk(seq: u64, gop: u64, flags: ChunkFlags) -> Chunk {
        let mut p = vec![0xffu8; 188];
        p[0] = 0x47;
        let mut f = flags;
        if seq.is_multiple_of(gop) {
            f.insert(ChunkFlags::KEYFRAME);
        }
        Chunk {
            header: ChunkHeader {
                channel: ChannelId::new("c").unwrap(),
                seq,
                ingest_ms: 0,
                media_ts: 1_000_000 + seq * 3600,
                flags: f,
            },
            payload: Bytes::from(p),
            signature: None,
        }
    }

    fn feed(s: &mut Segmenter, seqs: impl Iterator<Item = u64>, gop: u64) {
        for q in seqs {
            s.push(&chunk(q, gop, ChunkFlags::empty()));
        }
    }

    #[test]
    fn cuts_at_keyframes_after_the_target_and_slides() {
        let mut s = Segmenter::new(SegmenterConfig::default());
        assert_eq!(s.playlist(), None);
        feed(&mut s, 0..=1000, 50); // 2 s GOP
        let pl = s.playlist().unwrap();
        assert!(pl.starts_with("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n"), "{pl}");
        assert_eq!(pl.matches("#EXTINF:2.000,").count(), 6, "{pl}");
        // 1000 frames = 20 segments done; the window lists the last 6 (14..=19).
        assert!(pl.contains("#EXT-X-MEDIA-SEQUENCE:14\n"), "{pl}");
        assert!(pl.ends_with("19.ts\n"));
        let seg = s.segment(19).unwrap();
        assert_eq!((seg.chunks, seg.body.len()), (50, 50 * 188));
        assert_eq!(&seg.etag[..], format!("\"19-{:x}-{:x}\"", 1_000_000 + 950 * 3600, 50 * 188).as_bytes());
        assert!(s.segment(9).is_none(), "older than window + extra");
        assert!(s.segment(10).is_some(), "kept a little past the window");
        assert!(s.segment(20).is_none(), "still open");
    }

    #[test]
    fn short_gops_are_grouped_long_gops_raise_the_target() {
        let mut s = Segmenter::new(SegmenterConfig::default());
        feed(&mut s, 0..=200, 25); // 1 s GOP → 2 s segments
        assert!(s.playlist().unwrap().contains("#EXTINF:2.000,"));
        let mut s = Segmenter::new(SegmenterConfig::default());
        feed(&mut s, 0..=250, 125); // 5 s GOP
        let pl = s.playlist().unwrap();
        assert!(pl.contains("#EXT-X-TARGETDURATION:5\n") && pl.contains("#EXTINF:5.000,"), "{pl}");
    }

    #[test]
    fn waits_for_a_keyframe_to_start() {
        let mut s = Segmenter::new(SegmenterConfig::default());
        feed(&mut s, 30..=150, 50);
        let seg = s.segment(0).unwrap();
        assert_eq!(seg.chunks, 50, "chunks before the first keyframe are not served");
    }

    #[test]
    fn gaps_and_source_changes_are_discontinuities() {
        let mut s = Segmenter::new(SegmenterConfig { window: 3, keep_extra: 0, ..SegmenterConfig::default() });
        feed(&mut s, 0..=120, 50);
        feed(&mut s, 150..=260, 50); // 121..149 never arrived
        let pl = s.playlist().unwrap();
        assert_eq!(pl.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{pl}");
        assert!(pl.contains("#EXTINF:0.840,"), "closed early with its own length: {pl}");
        feed(&mut s, 261..=600, 50);
        let pl = s.playlist().unwrap();
        assert!(pl.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{pl}");
        assert!(!pl.contains("#EXT-X-DISCONTINUITY\n"));
        let mut s = Segmenter::new(SegmenterConfig::default());
        feed(&mut s, 0..=60, 50);
        s.push(&chunk(61, 61, ChunkFlags::DISCONTINUITY));
        feed(&mut s, 62..=200, 61);
        assert!(s.playlist().unwrap().contains("#EXT-X-DISCONTINUITY\n"));
    }

    #[test]
    fn an_ended_broadcast_closes_its_last_segment_and_the_playlist() {
        let mut s = Segmenter::new(SegmenterConfig::default());
        feed(&mut s, 0..=120, 50);
        let before = s.segments();
        s.end();
        assert_eq!(s.segments(), before + 1, "the open segment is listed too");
        let pl = s.playlist().unwrap();
        assert!(pl.ends_with("#EXT-X-ENDLIST\n"), "{pl}");
        s.push(&chunk(121, 121, ChunkFlags::DISCONTINUITY | ChunkFlags::KEYFRAME));
        assert!(!s.playlist().unwrap().contains("ENDLIST"), "a new broadcast reopens the playlist");
    }
}
