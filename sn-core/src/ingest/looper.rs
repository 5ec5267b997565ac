//! Loops a recorded TS clip as an endless live feed (the demo source, and an operator's test card):
//! each pass shifts PTS/DTS/PCR by the clip's duration and renumbers continuity counters, and
//! packets are released on the clip's own PCR clock, so a player sees one smooth, continuous stream.
//!
//! Sans-IO: the caller says how much time has passed; the looper hands out the packets now due.

use std::collections::HashMap;

use crate::psi::PsiTracker;
use crate::ts::{self, Packet, TS_WRAP};

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("clip is not usable MPEG-TS: {0}")]
    NotTs(#[from] ts::TsError),
    #[error("clip has no PAT/PMT, so its streams cannot be identified")]
    NoProgram,
    #[error("clip has no PCR on its PCR PID, so it cannot be paced in real time")]
    NoPcr,
    #[error("clip is too short to loop: it needs at least two timestamped access units on its main stream")]
    TooShort,
}

pub struct Looper {
    packets: Vec<Packet>,
    /// Release time of each packet in one pass, 90 kHz ticks from the pass start.
    due_90k: Vec<u64>,
    duration_90k: u64,
    pass: u64,
    pos: usize,
    cc: HashMap<u16, u8>,
}

impl Looper {
    pub fn new(clip: &[u8]) -> Result<Looper, LoopError> {
        let packets = crate::resync_all(clip)?;
        let mut psi = PsiTracker::default();
        for p in &packets {
            psi.push(p);
            if psi.program.is_some() {
                break;
            }
        }
        let program = psi.program.ok_or(LoopError::NoProgram)?;
        let main_pid = program.video_pid.or(program.audio_pids.first().copied()).ok_or(LoopError::NoProgram)?;

        // Pass length from the main stream's decode timestamps: span plus one frame interval.
        let stamps: Vec<u64> =
            packets.iter().filter(|p| ts::pid(p) == main_pid).filter_map(ts::pes_decode_ts).collect();
        let (Some(&first), Some(&last)) = (stamps.first(), stamps.last()) else {
            return Err(LoopError::TooShort);
        };
        let span = last.wrapping_sub(first) % TS_WRAP;
        if stamps.len() < 2 || span == 0 {
            return Err(LoopError::TooShort);
        }
        let duration_90k = span + span / (stamps.len() as u64 - 1);
        let packets = trim_to_duration(packets, duration_90k);

        // Pace on the PCR: interpolate linearly by packet index between PCR samples.
        let pcrs: Vec<(usize, u64)> = packets
            .iter()
            .enumerate()
            .filter(|(_, p)| ts::pid(p) == program.pcr_pid)
            .filter_map(|(i, p)| ts::pcr(p).map(|v| (i, v / 300)))
            .collect();
        if pcrs.len() < 2 {
            return Err(LoopError::NoPcr);
        }
        let base = pcrs[0].1;
        let rel = |v: u64| v.wrapping_sub(base) % TS_WRAP;
        let mut due_90k = Vec::with_capacity(packets.len());
        let mut seg = 0;
        for i in 0..packets.len() {
            while seg + 2 < pcrs.len() && i >= pcrs[seg + 1].0 {
                seg += 1;
            }
            let (i0, t0) = (pcrs[seg].0 as i64, rel(pcrs[seg].1) as i64);
            let (i1, t1) = (pcrs[seg + 1].0 as i64, rel(pcrs[seg + 1].1) as i64);
            let t = t0 + (t1 - t0) * (i as i64 - i0) / (i1 - i0).max(1);
            due_90k.push(t.clamp(0, duration_90k as i64) as u64);
        }
        // Keep release times monotonic whatever the interpolation did at the edges.
        for i in 1..due_90k.len() {
            due_90k[i] = due_90k[i].max(due_90k[i - 1]);
        }
        Ok(Looper { packets, due_90k, duration_90k, pass: 0, pos: 0, cc: HashMap::new() })
    }

    pub fn duration_90k(&self) -> u64 {
        self.duration_90k
    }

    /// Time (90 kHz, since the feed started) at which the next packet is due.
    pub fn next_due_90k(&self) -> u64 {
        self.pass * self.duration_90k + self.due_90k[self.pos]
    }

    /// Appends every packet due by `elapsed_90k` to `out`; returns how many.
    pub fn take_due(&mut self, elapsed_90k: u64, out: &mut Vec<u8>) -> usize {
        let mut n = 0;
        while self.next_due_90k() <= elapsed_90k {
            let mut p = self.packets[self.pos];
            let shift = (self.pass * self.duration_90k) % TS_WRAP;
            if shift != 0 {
                ts::shift_pes_timestamps(&mut p, shift);
                if let Some(pcr) = ts::pcr(&p) {
                    ts::set_pcr(&mut p, (pcr + shift * 300) % (TS_WRAP * 300));
                }
            }
            self.renumber(&mut p);
            out.extend_from_slice(&p);
            n += 1;
            self.pos += 1;
            if self.pos == self.packets.len() {
                self.pos = 0;
                self.pass += 1;
            }
        }
        n
    }

    fn renumber(&mut self, p: &mut Packet) {
        let pid = ts::pid(p);
        let next = match self.cc.get(&pid) {
            None => ts::cc(p),
            Some(&last) if ts::has_payload(p) => (last + 1) & 0x0f,
            Some(&last) => last,
        };
        ts::set_cc(p, next);
        self.cc.insert(pid, next);
    }
}

/// Drops, on every stream, the PES units that start a whole pass after that stream's first one, so
/// a stream that runs on past the main one cannot repeat timestamps at the loop point. Overlap
/// inside a PES (ffmpeg packs many AAC frames per PES) is not cut: clips should end their streams
/// together, as the bundled one does (`-frames:a` when making it).
fn trim_to_duration(mut packets: Vec<Packet>, duration_90k: u64) -> Vec<Packet> {
    let mut first: HashMap<u16, u64> = HashMap::new();
    let mut dropping: HashMap<u16, bool> = HashMap::new();
    packets.retain(|p| {
        let pid = ts::pid(p);
        if let Some(t) = ts::pes_decode_ts(p) {
            let f = *first.entry(pid).or_insert(t);
            dropping.insert(pid, t.wrapping_sub(f) % TS_WRAP >= duration_90k);
        }
        !dropping.get(&pid).copied().unwrap_or(false)
    });
    packets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::{Chunker, ChunkerConfig};

    const CLIP: &[u8] = include_bytes!("../../../livesky/assets/demo.ts");

    #[test]
    fn demo_clip_is_sixteen_seconds() {
        let l = Looper::new(CLIP).unwrap();
        assert_eq!(l.duration_90k(), 16 * 90_000);
    }

    #[test]
    fn three_passes_are_continuous_for_a_player() {
        let mut l = Looper::new(CLIP).unwrap();
        let mut out = Vec::new();
        let n = l.take_due(3 * l.duration_90k() - 1, &mut out);
        assert!(n > 2 * CLIP.len() / 188, "{n} packets");

        // Continuity counters never skip on any PID.
        let mut last: HashMap<u16, u8> = HashMap::new();
        for p in out.chunks_exact(188) {
            let p: &Packet = p.try_into().unwrap();
            if let Some(prev) = last.insert(ts::pid(p), ts::cc(p)) {
                let want = if ts::has_payload(p) { (prev + 1) & 0x0f } else { prev };
                assert_eq!(ts::cc(p), want, "pid {:#x}", ts::pid(p));
            }
        }
        // Video frames stay exactly one frame apart across the loop points.
        let mut c = Chunker::new(ChunkerConfig::default(), None);
        let mut chunks: Vec<_> = out.chunks_exact(188).filter_map(|p| c.push(p.try_into().unwrap())).collect();
        chunks.extend(c.finish());
        assert!(chunks.len() >= 1150, "{}", chunks.len());
        for w in chunks.windows(2) {
            assert_eq!(w[1].media_ts - w[0].media_ts, 3600);
            assert!(!w[1].discontinuity);
        }
        // Audio frames never overlap across loop points either.
        let audio: Vec<u64> = out
            .chunks_exact(188)
            .map(|p| -> &Packet { p.try_into().unwrap() })
            .filter(|p| ts::pid(p) == 0x101)
            .filter_map(ts::pes_decode_ts)
            .collect();
        // ffmpeg packs several AAC frames per PES, each PES a whole number of 1920-tick frames.
        assert!(audio.len() > 100, "{}", audio.len());
        for w in audio.windows(2) {
            assert!(w[1] > w[0] && (w[1] - w[0]) % 1920 == 0, "{} then {}", w[0], w[1]);
        }
        // PCR advances monotonically too.
        let pcrs: Vec<u64> = out.chunks_exact(188).filter_map(|p| ts::pcr(p.try_into().unwrap())).collect();
        assert!(pcrs.windows(2).all(|w| w[1] > w[0]));
    }

    #[test]
    fn pacing_follows_the_clip_clock() {
        let mut l = Looper::new(CLIP).unwrap();
        let mut out = Vec::new();
        let first_second = l.take_due(90_000, &mut out);
        let mut rest = Vec::new();
        let next_second = l.take_due(180_000, &mut rest);
        // About one second of a ~400 kbit/s clip each time (50 kB ≈ 266 packets), not the whole clip.
        assert!((150..450).contains(&first_second), "{first_second}");
        assert!((150..450).contains(&next_second), "{next_second}");
    }

    #[test]
    fn rejects_unusable_clips() {
        assert!(matches!(
            Looper::new(b"not a transport stream at all".repeat(3000).as_slice()),
            Err(LoopError::NotTs(_))
        ));
        let only_pat = crate::psi::tests::pat_packet(0, 0x1000);
        let clip: Vec<u8> = (0..10).flat_map(|_| only_pat).collect();
        assert!(matches!(Looper::new(&clip), Err(LoopError::NoProgram)));
    }
}
