//! The chunker (Tier 0): turns aligned TS packets into chunks, one per video access unit (a new chunk
//! where a PES of the video PID starts), flagged KEYFRAME at random-access points; audio-only feeds
//! are cut into 100 ms slices. Every keyframe chunk begins with PAT+PMT (the encoder's own copies
//! when it sent them just before the keyframe, else the latest ones re-inserted), so any keyframe is
//! a place where a player, an HLS segment or a new viewer can start.
//!
//! Sans-IO: packets in, [`ChunkDraft`]s out; the caller assigns seq, wall-clock time and signature.

use bytes::{Bytes, BytesMut};
use proto::{MAX_CHUNK_PAYLOAD, TS_PACKET_LEN};

use crate::psi::{PsiEvent, PsiTracker};
use crate::ts::{self, PID_NULL, PID_PAT, Packet, Unwrapper};

/// One nominal video frame at 25 fps in 90 kHz ticks; the step used when timestamps jump.
const NOMINAL_FRAME_90K: u64 = 3600;

#[derive(Debug, Clone)]
pub struct ChunkerConfig {
    /// Audio-only feeds: slice length (the design's 100 ms).
    pub audio_slice_90k: u64,
    /// Audio-only feeds: how often a slice is marked KEYFRAME (and carries PAT+PMT).
    pub audio_keyframe_interval_90k: u64,
    /// A chunk is cut when it would grow past this, whatever the stream does.
    pub max_chunk_bytes: usize,
    /// A timestamp step larger than this (or going backwards) is a discontinuity.
    pub max_ts_jump_90k: u64,
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        Self {
            audio_slice_90k: 9_000,
            audio_keyframe_interval_90k: 90_000,
            // Margin for re-inserted PAT/PMT (a PMT section spans at most 6 packets).
            max_chunk_bytes: (MAX_CHUNK_PAYLOAD / TS_PACKET_LEN - 16) * TS_PACKET_LEN,
            max_ts_jump_90k: 10 * 90_000,
        }
    }
}

/// A finished chunk before it gets its channel, seq, wall-clock time and signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkDraft {
    pub payload: Bytes,
    pub keyframe: bool,
    pub discontinuity: bool,
    pub media_ts: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerStats {
    pub packets_in: u64,
    pub dropped_before_psi: u64,
    pub null_packets: u64,
    pub chunks: u64,
    pub keyframes: u64,
    pub psi_inserted: u64,
    pub cut_by_size: u64,
    pub discontinuities: u64,
}

/// Maps the feed's 33-bit decode timestamps onto a monotonic media clock, absorbing wraps and
/// restarts, so media time never runs backwards downstream.
#[derive(Debug, Clone)]
struct MediaClock {
    unwrap: Unwrapper,
    last_in: Option<u64>,
    offset: i128,
    next_base: u64,
    last_out: u64,
    max_jump: u64,
}

impl MediaClock {
    fn map(&mut self, raw: u64) -> (u64, bool) {
        let u = self.unwrap.unwrap(raw);
        let jumped = match self.last_in {
            None => {
                self.offset = i128::from(self.next_base) - i128::from(u);
                false
            }
            Some(l) => u + self.max_jump.min(90_000) < l || u > l + self.max_jump,
        };
        if jumped {
            self.offset = i128::from(self.last_out + NOMINAL_FRAME_90K) - i128::from(u);
        }
        self.last_in = Some(u);
        let out = (i128::from(u) + self.offset).max(0) as u64;
        self.last_out = self.last_out.max(out);
        (out, jumped)
    }
}

struct Open {
    buf: BytesMut,
    keyframe: bool,
    discontinuity: bool,
    media_ts: u64,
}

pub struct Chunker {
    cfg: ChunkerConfig,
    psi: PsiTracker,
    latest_pat: Option<Packet>,
    latest_pmt: Vec<Packet>,
    pmt_building: Vec<Packet>,
    psi_cc: [u8; 2],
    current: Option<Open>,
    /// Packets from the first PSI packet after the current unit's start: they belong with the next
    /// unit if that is a keyframe (encoders send PAT/PMT right before a keyframe).
    tail: BytesMut,
    tail_has_pat: bool,
    tail_has_pmt: bool,
    clock: MediaClock,
    pending_discontinuity: bool,
    audio_slice_start: Option<u64>,
    audio_next_key: u64,
    /// Newest raw decode timestamps of the video and the first audio stream (A/V drift).
    last_video_raw: Option<u64>,
    last_audio_raw: Option<u64>,
    stats: ChunkerStats,
}

impl Chunker {
    /// `continue_after`: the media time of the channel's last chunk when a new publisher takes over
    /// an existing channel; the first chunk is then flagged DISCONTINUITY and media time continues.
    pub fn new(cfg: ChunkerConfig, continue_after: Option<u64>) -> Self {
        let clock = MediaClock {
            unwrap: Unwrapper::default(),
            last_in: None,
            offset: 0,
            next_base: continue_after.map_or(0, |t| t + NOMINAL_FRAME_90K),
            last_out: continue_after.unwrap_or(0),
            max_jump: cfg.max_ts_jump_90k,
        };
        Self {
            cfg,
            psi: PsiTracker::default(),
            latest_pat: None,
            latest_pmt: Vec::new(),
            pmt_building: Vec::new(),
            psi_cc: [0; 2],
            current: None,
            tail: BytesMut::new(),
            tail_has_pat: false,
            tail_has_pmt: false,
            clock,
            pending_discontinuity: continue_after.is_some(),
            audio_slice_start: None,
            audio_next_key: 0,
            last_video_raw: None,
            last_audio_raw: None,
            stats: ChunkerStats::default(),
        }
    }

    pub fn stats(&self) -> ChunkerStats {
        self.stats
    }

    /// Newest video decode time minus newest audio decode time (ms), once both were seen: an
    /// encoder whose audio and video clocks part shows here long before viewers complain.
    pub fn av_drift_ms(&self) -> Option<i64> {
        let (v, a) = (self.last_video_raw?, self.last_audio_raw?);
        // Timestamps are 33-bit and wrap: the difference is taken on that circle.
        const WRAP: u64 = 1 << 33;
        let d = v.wrapping_sub(a) % WRAP;
        let d = if d >= WRAP / 2 { d as i64 - WRAP as i64 } else { d as i64 };
        Some(d / 90)
    }

    /// True once a PMT has been seen and the feed has video.
    pub fn has_video(&self) -> bool {
        self.psi.program.as_ref().is_some_and(|p| p.video_pid.is_some())
    }

    pub fn push(&mut self, p: &Packet) -> Option<ChunkDraft> {
        self.stats.packets_in += 1;
        let pid = ts::pid(p);
        if pid == PID_NULL {
            self.stats.null_packets += 1;
            return None;
        }
        match self.psi.push(p) {
            PsiEvent::Pat { complete } => {
                if complete {
                    self.latest_pat = Some(*p);
                }
                self.tail_has_pat = true;
                self.tail.extend_from_slice(p);
                return None;
            }
            PsiEvent::Pmt { complete, changed } => {
                // A PMT section is at most 1024 bytes: more packets than that hold is garbage.
                if ts::pusi(p) || self.pmt_building.len() >= 8 {
                    self.pmt_building.clear();
                }
                self.pmt_building.push(*p);
                if complete {
                    self.latest_pmt = std::mem::take(&mut self.pmt_building);
                    if changed && self.current.is_some() {
                        self.pending_discontinuity = true;
                    }
                }
                self.tail_has_pmt = true;
                self.tail.extend_from_slice(p);
                return None;
            }
            PsiEvent::NotPsi => {}
        }
        let Some(program) = self.psi.program.as_ref() else {
            self.stats.dropped_before_psi += 1;
            return None;
        };
        if ts::pusi(p) {
            if program.video_pid == Some(pid) {
                self.last_video_raw = ts::pes_decode_ts(p).or(self.last_video_raw);
            } else if program.audio_pids.first() == Some(&pid) {
                self.last_audio_raw = ts::pes_decode_ts(p).or(self.last_audio_raw);
            }
            if let Some(vpid) = program.video_pid {
                if pid == vpid {
                    let keyframe = ts::random_access(p) || es_starts_random_access(p, program.video_stream_type);
                    let disc = ts::discontinuity(p);
                    return self.start_unit(p, keyframe, disc);
                }
            } else if program.audio_pids.first() == Some(&pid)
                && let Some(out) = self.maybe_start_audio_slice(p)
            {
                return out;
            }
        }
        self.append(p)
    }

    /// End of feed: the chunk being built, if any.
    pub fn finish(&mut self) -> Option<ChunkDraft> {
        let mut open = self.current.take()?;
        open.buf.extend_from_slice(&std::mem::take(&mut self.tail));
        Some(self.finalize(open))
    }

    fn maybe_start_audio_slice(&mut self, p: &Packet) -> Option<Option<ChunkDraft>> {
        let raw = ts::pes_decode_ts(p)?;
        let (t, jumped) = self.clock.map(raw);
        let due = match self.audio_slice_start {
            None => true,
            Some(start) => jumped || t >= start + self.cfg.audio_slice_90k,
        };
        if !due {
            return None;
        }
        self.audio_slice_start = Some(t);
        let keyframe = self.current.is_none() || jumped || t >= self.audio_next_key;
        if keyframe {
            self.audio_next_key = t + self.cfg.audio_keyframe_interval_90k;
        }
        Some(self.open_unit(p, keyframe, jumped, t))
    }

    fn start_unit(&mut self, p: &Packet, keyframe: bool, disc_flag: bool) -> Option<ChunkDraft> {
        let (media_ts, jumped) = match ts::pes_decode_ts(p) {
            Some(raw) => self.clock.map(raw),
            None => (self.clock.last_out, false),
        };
        self.open_unit(p, keyframe, disc_flag || jumped, media_ts)
    }

    fn open_unit(&mut self, p: &Packet, keyframe: bool, discontinuity: bool, media_ts: u64) -> Option<ChunkDraft> {
        let mut buf = BytesMut::with_capacity(64 * TS_PACKET_LEN);
        let finished = match self.current.take() {
            Some(mut open) => {
                if !keyframe {
                    open.buf.extend_from_slice(&self.tail);
                    self.tail.clear();
                }
                Some(self.finalize(open))
            }
            None => None,
        };
        if keyframe
            && !(self.tail_has_pat && self.tail_has_pmt)
            && let Some(pat) = &self.latest_pat
        {
            buf.extend_from_slice(pat);
            for pmt in &self.latest_pmt {
                buf.extend_from_slice(pmt);
            }
            self.stats.psi_inserted += 1;
        }
        buf.extend_from_slice(&self.tail);
        buf.extend_from_slice(p);
        self.tail.clear();
        self.tail_has_pat = false;
        self.tail_has_pmt = false;
        let discontinuity = discontinuity || std::mem::take(&mut self.pending_discontinuity);
        self.current = Some(Open { buf, keyframe, discontinuity, media_ts });
        finished
    }

    fn append(&mut self, p: &Packet) -> Option<ChunkDraft> {
        let Some(open) = self.current.as_mut() else {
            // Before the first unit starts, keep packets for it.
            self.tail.extend_from_slice(p);
            return None;
        };
        if !self.tail.is_empty() {
            self.tail.extend_from_slice(p);
            if open.buf.len() + self.tail.len() <= self.cfg.max_chunk_bytes {
                return None;
            }
            // A runaway tail (PSI but no new unit) is folded into the chunk and cut by size below.
            let tail = std::mem::take(&mut self.tail);
            self.tail_has_pat = false;
            self.tail_has_pmt = false;
            return self.append_bytes(&tail);
        }
        self.append_bytes(p)
    }

    fn append_bytes(&mut self, bytes: &[u8]) -> Option<ChunkDraft> {
        let max = self.cfg.max_chunk_bytes;
        let open = self.current.as_mut()?;
        if open.buf.len() + bytes.len() <= max {
            open.buf.extend_from_slice(bytes);
            return None;
        }
        // Cut by size: the continuation is not a random-access point.
        self.stats.cut_by_size += 1;
        let media_ts = open.media_ts;
        let room = (max - open.buf.len()) / TS_PACKET_LEN * TS_PACKET_LEN;
        open.buf.extend_from_slice(&bytes[..room]);
        let full = self.current.take()?;
        let done = self.finalize(full);
        let mut buf = BytesMut::with_capacity(bytes.len() - room);
        buf.extend_from_slice(&bytes[room..]);
        self.current = Some(Open { buf, keyframe: false, discontinuity: false, media_ts });
        Some(done)
    }

    fn finalize(&mut self, open: Open) -> ChunkDraft {
        let mut buf = open.buf;
        // PSI continuity counters are ours: copies were inserted, so renumber in output order.
        let pmt_pid = self.psi.pmt_pid;
        for pkt in buf.chunks_exact_mut(TS_PACKET_LEN) {
            let pkt: &mut Packet = pkt.try_into().expect("exact chunks");
            let pid = ts::pid(pkt);
            let slot = if pid == PID_PAT {
                0
            } else if Some(pid) == pmt_pid {
                1
            } else {
                continue;
            };
            ts::set_cc(pkt, self.psi_cc[slot]);
            self.psi_cc[slot] = (self.psi_cc[slot] + 1) & 0x0f;
        }
        self.stats.chunks += 1;
        self.stats.keyframes += u64::from(open.keyframe);
        self.stats.discontinuities += u64::from(open.discontinuity);
        ChunkDraft {
            payload: buf.freeze(),
            keyframe: open.keyframe,
            discontinuity: open.discontinuity,
            media_ts: open.media_ts,
        }
    }
}

/// Fallback keyframe detection for encoders that do not set random_access_indicator: an SPS or
/// IDR NAL unit (H.264) or VPS/SPS/IRAP (HEVC) in the first packet of the access unit.
fn es_starts_random_access(p: &Packet, stream_type: u8) -> bool {
    let Some(pl) = ts::payload(p) else { return false };
    if pl.len() < 9 || pl[0..3] != [0, 0, 1] {
        return false;
    }
    let es_start = 9 + usize::from(pl[8]);
    let Some(es) = pl.get(es_start..) else { return false };
    es.windows(4).any(|w| {
        w[0..3] == [0, 0, 1]
            && match stream_type {
                0x1b => matches!(w[3] & 0x1f, 5 | 7),
                0x24 => matches!((w[3] >> 1) & 0x3f, 16..=21 | 32 | 33),
                _ => false,
            }
    })
}

#[cfg(test)]
mod tests;
