//! The TS side of the remuxer: PAT/PMT, PES packetisation, PCR and continuity counters for one
//! program with at most one H.264 and one AAC stream. Writing cannot fail: everything that could be
//! wrong with the input was rejected before an elementary-stream frame reached this module.

use proto::TS_PACKET_LEN;

use crate::psi::crc32_mpeg2;
use crate::ts::{PID_PAT, SYNC_BYTE, TS_WRAP};

pub const PMT_PID: u16 = 0x1000;
pub const VIDEO_PID: u16 = 0x100;
pub const AUDIO_PID: u16 = 0x101;
const STREAM_TYPE_H264: u8 = 0x1b;
const STREAM_TYPE_AAC_ADTS: u8 = 0x0f;
const PROGRAM_NUMBER: u16 = 1;

/// PCR runs this far behind the decode time it is derived from: a player that paces itself by PCR
/// (VLC) then has every PES in hand before its DTS, even when RTMP interleaves audio a little late.
const PCR_DELAY_90K: u64 = 500 * 90;
/// A decode-time step beyond these is an encoder restart, not jitter: the PCR follows it at once and
/// the packet says so (discontinuity_indicator), which the chunker turns into a DISCONTINUITY chunk.
const PCR_MAX_FORWARD_90K: u64 = 10 * 90_000;
const PCR_MAX_BACKWARD_90K: u64 = 2 * 90_000;

const PAYLOAD_LEN: usize = TS_PACKET_LEN - 4;

/// Which elementary streams the PMT lists; a stream is listed once its decoder config was seen.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Streams {
    pub video: bool,
    pub audio: bool,
}

impl Streams {
    /// The PCR goes with video when there is video: its PES starts are regular and it is what a
    /// player's clock must not run ahead of.
    fn pcr_pid(self) -> u16 {
        if self.video { VIDEO_PID } else { AUDIO_PID }
    }
}

/// Continuity-counter slots, one per PID we write.
#[derive(Clone, Copy)]
enum Slot {
    Pat = 0,
    Pmt = 1,
    Video = 2,
    Audio = 3,
}

#[derive(Debug, Default)]
pub struct TsMux {
    cc: [u8; 4],
    declared: Streams,
    pmt_version: u8,
    psi_due: bool,
    last_pcr: Option<u64>,
    pes: Vec<u8>,
}

impl TsMux {
    pub fn new() -> Self {
        Self { psi_due: true, ..Self::default() }
    }

    /// One H.264 access unit (Annex B). Keyframes get PAT+PMT right before them, so each is a place
    /// where the chunker can start a chunk that a player can start from.
    pub fn write_video(&mut self, streams: Streams, dts: u64, pts: u64, keyframe: bool, au: &[u8], out: &mut Vec<u8>) {
        self.declare(streams);
        if keyframe || self.psi_due {
            self.write_psi(out);
        }
        let pcr = (self.declared.pcr_pid() == VIDEO_PID).then(|| self.next_pcr(dts));
        let dts = (pts != dts).then_some(dts);
        self.build_pes(0xe0, pts, dts, true, au);
        let pes = std::mem::take(&mut self.pes);
        packetize(&mut self.cc[Slot::Video as usize], VIDEO_PID, &pes, keyframe, pcr, out);
        self.pes = pes;
    }

    /// One ADTS frame.
    pub fn write_audio(&mut self, streams: Streams, pts: u64, frame: &[u8], out: &mut Vec<u8>) {
        self.declare(streams);
        if self.psi_due {
            self.write_psi(out);
        }
        let pcr = (self.declared.pcr_pid() == AUDIO_PID).then(|| self.next_pcr(pts));
        self.build_pes(0xc0, pts, None, false, frame);
        let pes = std::mem::take(&mut self.pes);
        packetize(&mut self.cc[Slot::Audio as usize], AUDIO_PID, &pes, false, pcr, out);
        self.pes = pes;
    }

    /// A new stream set means a new PMT version, written before the next PES.
    fn declare(&mut self, streams: Streams) {
        if streams == self.declared {
            return;
        }
        if self.declared != Streams::default() {
            self.pmt_version = (self.pmt_version + 1) & 0x1f;
        }
        self.declared = streams;
        self.psi_due = true;
    }

    /// (PCR base in 90 kHz, discontinuity) for a PES with decode time `dts` on the PCR PID.
    fn next_pcr(&mut self, dts: u64) -> (u64, bool) {
        let target = (dts + TS_WRAP - PCR_DELAY_90K) % TS_WRAP;
        let restart = || dts.saturating_sub(PCR_DELAY_90K);
        let (pcr, jump) = match self.last_pcr {
            // Timestamps start near 0: the PCR waits at 0 rather than wrapping to just below 2^33.
            None => (restart(), false),
            Some(last) => {
                let forward = (target + TS_WRAP - last) % TS_WRAP;
                if forward <= PCR_MAX_FORWARD_90K {
                    (target, false)
                } else if TS_WRAP - forward <= PCR_MAX_BACKWARD_90K {
                    // Slightly out of order: the PCR must never go back, so it waits.
                    (last, false)
                } else {
                    (restart(), true)
                }
            }
        };
        self.last_pcr = Some(pcr);
        (pcr, jump)
    }

    fn build_pes(&mut self, stream_id: u8, pts: u64, dts: Option<u64>, aligned: bool, es: &[u8]) {
        let header_data_len: usize = if dts.is_some() { 10 } else { 5 };
        let len = 3 + header_data_len + es.len();
        // 0 = unbounded, which MPEG-TS allows for video only; audio frames are always small enough.
        let len_field = u16::try_from(len).unwrap_or(0);
        let pes = &mut self.pes;
        pes.clear();
        pes.extend_from_slice(&[0, 0, 1, stream_id]);
        pes.extend_from_slice(&len_field.to_be_bytes());
        // '10' marker; data_alignment_indicator when the payload starts with an access unit.
        pes.push(if aligned { 0x84 } else { 0x80 });
        pes.push(if dts.is_some() { 0xc0 } else { 0x80 });
        pes.push(header_data_len as u8);
        match dts {
            Some(dts) => {
                push_timestamp(pes, 0b0011, pts);
                push_timestamp(pes, 0b0001, dts);
            }
            None => push_timestamp(pes, 0b0010, pts),
        }
        pes.extend_from_slice(es);
    }

    fn write_psi(&mut self, out: &mut Vec<u8>) {
        let pmt_pid = [0xe0 | (PMT_PID >> 8) as u8, PMT_PID as u8];
        let mut pat = vec![0x00, 0, 0, 0x00, 0x01, 0xc1, 0, 0];
        pat.extend_from_slice(&PROGRAM_NUMBER.to_be_bytes());
        pat.extend_from_slice(&pmt_pid);
        write_section(&mut self.cc[Slot::Pat as usize], PID_PAT, &mut pat, out);

        let pcr_pid = self.declared.pcr_pid();
        let mut pmt = vec![0x02, 0, 0];
        pmt.extend_from_slice(&PROGRAM_NUMBER.to_be_bytes());
        pmt.extend_from_slice(&[0xc1 | (self.pmt_version << 1), 0, 0]);
        pmt.extend_from_slice(&[0xe0 | (pcr_pid >> 8) as u8, pcr_pid as u8, 0xf0, 0]);
        let listed = [
            (self.declared.video, STREAM_TYPE_H264, VIDEO_PID),
            (self.declared.audio, STREAM_TYPE_AAC_ADTS, AUDIO_PID),
        ];
        for (_, stream_type, pid) in listed.into_iter().filter(|s| s.0) {
            pmt.extend_from_slice(&[stream_type, 0xe0 | (pid >> 8) as u8, pid as u8, 0xf0, 0]);
        }
        write_section(&mut self.cc[Slot::Pmt as usize], PMT_PID, &mut pmt, out);
        self.psi_due = false;
    }
}

/// 33-bit timestamp in the PES header's 5-byte layout, marker bits set.
fn push_timestamp(buf: &mut Vec<u8>, prefix: u8, ts: u64) {
    let ts = ts % TS_WRAP;
    buf.extend_from_slice(&[
        (prefix << 4) | (((ts >> 30) as u8 & 0x07) << 1) | 1,
        (ts >> 22) as u8,
        (((ts >> 15) as u8 & 0x7f) << 1) | 1,
        (ts >> 7) as u8,
        ((ts as u8 & 0x7f) << 1) | 1,
    ]);
}

/// Fills in section_length and the CRC, then writes the section as one packet (ours are tiny).
fn write_section(cc: &mut u8, pid: u16, section: &mut Vec<u8>, out: &mut Vec<u8>) {
    let section_len = section.len() - 3 + 4;
    section[1] = 0xb0 | (section_len >> 8) as u8;
    section[2] = section_len as u8;
    let crc = crc32_mpeg2(section);
    section.extend_from_slice(&crc.to_be_bytes());
    let mut p = [0xffu8; TS_PACKET_LEN];
    p[..4].copy_from_slice(&[SYNC_BYTE, 0x40 | (pid >> 8) as u8, pid as u8, 0x10 | *cc]);
    *cc = (*cc + 1) & 0x0f;
    p[4] = 0; // pointer_field
    // PSI is the one place where 0xff after the data is the standard stuffing.
    p[5..5 + section.len()].copy_from_slice(section);
    out.extend_from_slice(&p);
}

/// Cuts one PES into packets. The first carries PCR and random_access_indicator when asked; the last
/// is padded with adaptation-field stuffing, since 0xff in the payload would be read as PES data.
fn packetize(cc: &mut u8, pid: u16, pes: &[u8], random_access: bool, pcr: Option<(u64, bool)>, out: &mut Vec<u8>) {
    let mut rest = pes;
    let mut first = true;
    while first || !rest.is_empty() {
        let mut p = [0xffu8; TS_PACKET_LEN];
        p[0] = SYNC_BYTE;
        p[1] = if first { 0x40 } else { 0 } | (pid >> 8) as u8 & 0x1f;
        p[2] = pid as u8;
        // Adaptation-field content (flags and PCR), without its length byte.
        let mut af = [0u8; 7];
        let mut af_len = 0;
        if first && (random_access || pcr.is_some()) {
            af[0] = if random_access { 0x40 } else { 0 };
            af_len = 1;
            if let Some((base, discontinuity)) = pcr {
                af[0] |= 0x10 | if discontinuity { 0x80 } else { 0 };
                let base = base % TS_WRAP;
                af[1..7].copy_from_slice(&[
                    (base >> 25) as u8,
                    (base >> 17) as u8,
                    (base >> 9) as u8,
                    (base >> 1) as u8,
                    ((base as u8 & 1) << 7) | 0x7e,
                    0,
                ]);
                af_len = 7;
            }
        }
        let room = PAYLOAD_LEN - if af_len > 0 { 1 + af_len } else { 0 };
        let take = rest.len().min(room);
        let stuffing = room - take;
        // Total adaptation-field length byte value; None when the packet has no adaptation field.
        let af_field = match (af_len, stuffing) {
            (0, 0) => None,
            (0, s) => Some(s - 1),
            (n, s) => Some(n + s),
        };
        p[3] = if af_field.is_some() { 0x30 } else { 0x10 } | *cc;
        *cc = (*cc + 1) & 0x0f;
        let mut pos = 4;
        if let Some(len) = af_field {
            p[4] = len as u8;
            if af_len > 0 {
                p[5..5 + af_len].copy_from_slice(&af[..af_len]);
            } else if len > 0 {
                p[5] = 0; // flags byte of a stuffing-only field
            }
            pos = 5 + len;
        }
        p[pos..pos + take].copy_from_slice(&rest[..take]);
        debug_assert_eq!(pos + take, TS_PACKET_LEN);
        rest = &rest[take..];
        first = false;
        out.extend_from_slice(&p);
    }
}
