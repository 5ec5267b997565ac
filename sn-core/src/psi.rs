//! PAT/PMT parsing: just enough PSI to know which PID carries video and which carry audio, so the
//! chunker can cut at access units and a keyframe chunk can carry the tables a player needs.

use crate::ts::{self, PID_PAT, Packet};

const MAX_SECTION: usize = 1024;

/// Reassembles one PSI table's sections from TS packets of one PID.
#[derive(Debug, Default)]
pub struct SectionAssembler {
    buf: Vec<u8>,
    want: Option<usize>,
}

impl SectionAssembler {
    /// Returns a complete section (CRC checked) when this packet finishes one.
    pub fn push(&mut self, p: &Packet) -> Option<Vec<u8>> {
        let payload = ts::payload(p)?;
        if ts::pusi(p) {
            let pointer = usize::from(*payload.first()?);
            let start = 1 + pointer;
            if start >= payload.len() {
                self.reset();
                return None;
            }
            self.buf.clear();
            self.buf.extend_from_slice(&payload[start..]);
            self.want = None;
        } else if self.buf.is_empty() {
            return None;
        } else {
            self.buf.extend_from_slice(payload);
        }
        if self.want.is_none() && self.buf.len() >= 3 {
            let len = 3 + ((usize::from(self.buf[1] & 0x0f) << 8) | usize::from(self.buf[2]));
            if !(12..=MAX_SECTION).contains(&len) {
                self.reset();
                return None;
            }
            self.want = Some(len);
        }
        let want = self.want?;
        if self.buf.len() < want {
            return None;
        }
        let section = self.buf[..want].to_vec();
        self.reset();
        (crc32_mpeg2(&section) == 0).then_some(section)
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.want = None;
    }
}

/// CRC-32/MPEG-2; over a whole section including its CRC field the result is 0.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04c1_1db7 } else { crc << 1 };
        }
    }
    crc
}

/// PMT PIDs listed by a PAT section (program 0, the NIT, excluded).
pub fn parse_pat(section: &[u8]) -> Option<Vec<u16>> {
    if section.first() != Some(&0x00) || section.get(5)? & 0x01 == 0 {
        return None;
    }
    let body = section.get(8..section.len().checked_sub(4)?)?;
    Some(
        body.chunks_exact(4)
            .filter(|e| u16::from_be_bytes([e[0], e[1]]) != 0)
            .map(|e| (u16::from(e[2] & 0x1f) << 8) | u16::from(e[3]))
            .collect(),
    )
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProgramMap {
    pub pcr_pid: u16,
    pub video_pid: Option<u16>,
    pub video_stream_type: u8,
    pub audio_pids: Vec<u16>,
    pub all_pids: Vec<u16>,
}

pub fn is_video_stream_type(t: u8) -> bool {
    // MPEG-1/2 video, MPEG-4 part 2, H.264, HEVC, VVC, VC-1, AVS2/3.
    matches!(t, 0x01 | 0x02 | 0x10 | 0x1b | 0x24 | 0x33 | 0xea | 0xd2 | 0xd4)
}

pub fn is_audio_stream_type(t: u8) -> bool {
    // MPEG-1/2 audio, AAC ADTS, AAC LATM, AC-3, E-AC-3, DTS.
    matches!(t, 0x03 | 0x04 | 0x0f | 0x11 | 0x81 | 0x87 | 0x82 | 0x8a)
}

pub fn parse_pmt(section: &[u8]) -> Option<ProgramMap> {
    if section.first() != Some(&0x02) || section.get(5)? & 0x01 == 0 {
        return None;
    }
    let end = section.len().checked_sub(4)?;
    let pcr_pid = (u16::from(section.get(8)? & 0x1f) << 8) | u16::from(*section.get(9)?);
    let info_len = (usize::from(section.get(10)? & 0x0f) << 8) | usize::from(*section.get(11)?);
    let mut i = 12 + info_len;
    let mut map = ProgramMap { pcr_pid, ..Default::default() };
    while i + 5 <= end {
        let stream_type = section[i];
        let pid = (u16::from(section[i + 1] & 0x1f) << 8) | u16::from(section[i + 2]);
        let es_info_len = (usize::from(section[i + 3] & 0x0f) << 8) | usize::from(section[i + 4]);
        map.all_pids.push(pid);
        if is_video_stream_type(stream_type) && map.video_pid.is_none() {
            map.video_pid = Some(pid);
            map.video_stream_type = stream_type;
        } else if is_audio_stream_type(stream_type) {
            map.audio_pids.push(pid);
        }
        i += 5 + es_info_len;
    }
    Some(map)
}

/// Tracks the current PAT and PMT of a stream (first program only, as broadcasters send one).
#[derive(Debug, Default)]
pub struct PsiTracker {
    pat: SectionAssembler,
    pmt: SectionAssembler,
    pub pmt_pid: Option<u16>,
    pub program: Option<ProgramMap>,
}

/// What a packet meant to the PSI tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsiEvent {
    NotPsi,
    /// A PAT packet; `complete` when it finished a valid section.
    Pat {
        complete: bool,
    },
    /// A PMT packet; `changed` when a finished section differs from the last program map.
    Pmt {
        complete: bool,
        changed: bool,
    },
}

impl PsiTracker {
    pub fn is_psi_pid(&self, pid: u16) -> bool {
        pid == PID_PAT || Some(pid) == self.pmt_pid
    }

    pub fn push(&mut self, p: &Packet) -> PsiEvent {
        let pid = ts::pid(p);
        if pid == PID_PAT {
            let pmts = self.pat.push(p).as_deref().and_then(parse_pat);
            if let Some(&first) = pmts.as_ref().and_then(|v| v.first())
                && self.pmt_pid != Some(first)
            {
                self.pmt_pid = Some(first);
                self.pmt = SectionAssembler::default();
            }
            return PsiEvent::Pat { complete: pmts.is_some() };
        }
        if Some(pid) == self.pmt_pid {
            let Some(map) = self.pmt.push(p).as_deref().and_then(parse_pmt) else {
                return PsiEvent::Pmt { complete: false, changed: false };
            };
            let changed = self.program.as_ref() != Some(&map);
            self.program = Some(map);
            return PsiEvent::Pmt { complete: true, changed };
        }
        PsiEvent::NotPsi
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ts::tests::packet;

    /// A single-packet PSI section packet with a correct CRC.
    pub(crate) fn section_packet(pid: u16, cc: u8, section_wo_crc: &[u8]) -> Packet {
        let mut p = packet(pid, cc);
        p[1] |= 0x40;
        p[4] = 0; // pointer field
        let mut sec = section_wo_crc.to_vec();
        let crc = crc32_mpeg2(&sec);
        sec.extend_from_slice(&crc.to_be_bytes());
        p[5..5 + sec.len()].copy_from_slice(&sec);
        p
    }

    pub(crate) fn pat_packet(cc: u8, pmt_pid: u16) -> Packet {
        let sec = [0x00, 0xb0, 13, 0x00, 0x01, 0xc1, 0, 0, 0x00, 0x01, 0xe0 | (pmt_pid >> 8) as u8, pmt_pid as u8];
        section_packet(PID_PAT, cc, &sec)
    }

    /// PMT with H.264 on `video` (if any) and AAC on `audio`.
    pub(crate) fn pmt_packet(cc: u8, pmt_pid: u16, video: Option<u16>, audio: u16) -> Packet {
        let mut streams = Vec::new();
        if let Some(v) = video {
            streams.extend_from_slice(&[0x1b, 0xe0 | (v >> 8) as u8, v as u8, 0xf0, 0]);
        }
        streams.extend_from_slice(&[0x0f, 0xe0 | (audio >> 8) as u8, audio as u8, 0xf0, 0]);
        let pcr = video.unwrap_or(audio);
        let section_len = 9 + streams.len() + 4;
        let mut sec =
            vec![0x02, 0xb0, section_len as u8, 0x00, 0x01, 0xc1, 0, 0, 0xe0 | (pcr >> 8) as u8, pcr as u8, 0xf0, 0];
        sec.extend_from_slice(&streams);
        section_packet(pmt_pid, cc, &sec)
    }

    #[test]
    fn crc_of_known_vector() {
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_e6e7);
    }

    #[test]
    fn tracks_pat_then_pmt() {
        let mut t = PsiTracker::default();
        assert_eq!(t.push(&pat_packet(0, 0x1000)), PsiEvent::Pat { complete: true });
        assert_eq!(t.pmt_pid, Some(0x1000));
        assert_eq!(t.push(&pmt_packet(0, 0x1000, Some(0x100), 0x101)), PsiEvent::Pmt { complete: true, changed: true });
        let prog = t.program.clone().unwrap();
        assert_eq!(prog.video_pid, Some(0x100));
        assert_eq!(prog.audio_pids, vec![0x101]);
        assert_eq!(
            t.push(&pmt_packet(1, 0x1000, Some(0x100), 0x101)),
            PsiEvent::Pmt { complete: true, changed: false }
        );
    }

    #[test]
    fn corrupt_sections_are_ignored() {
        let mut t = PsiTracker::default();
        let mut p = pat_packet(0, 0x1000);
        p[12] ^= 0xff;
        t.push(&p);
        assert_eq!(t.pmt_pid, None, "CRC mismatch must not be believed");
        let mut q = pat_packet(0, 0x1000);
        q[4] = 250; // pointer field beyond the packet
        t.push(&q);
        let mut r = pat_packet(0, 0x1000);
        r[6] = 0xbf;
        r[7] = 0xff; // absurd section length
        t.push(&r);
        assert_eq!(t.pmt_pid, None);
    }
}
