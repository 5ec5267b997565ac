//! MPEG-TS packet helpers and the resynchronising packetiser.
//!
//! Everything here works on borrowed 188-byte packets and never panics on malformed fields: a
//! field that does not fit inside the packet reads as absent.

use proto::TS_PACKET_LEN;

pub const SYNC_BYTE: u8 = 0x47;
pub const PID_PAT: u16 = 0x0000;
pub const PID_NULL: u16 = 0x1fff;
/// PTS/DTS are 33-bit counters of a 90 kHz clock.
pub const TS_WRAP: u64 = 1 << 33;
pub type Packet = [u8; TS_PACKET_LEN];

pub fn pid(p: &Packet) -> u16 {
    (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2])
}

/// payload_unit_start_indicator: a PES or PSI section starts in this packet.
pub fn pusi(p: &Packet) -> bool {
    p[1] & 0x40 != 0
}

pub fn has_adaptation(p: &Packet) -> bool {
    p[3] & 0x20 != 0
}

pub fn has_payload(p: &Packet) -> bool {
    p[3] & 0x10 != 0
}

pub fn cc(p: &Packet) -> u8 {
    p[3] & 0x0f
}

pub fn set_cc(p: &mut Packet, cc: u8) {
    p[3] = (p[3] & 0xf0) | (cc & 0x0f);
}

/// Adaptation field bytes after its length byte, if present and well-formed.
fn adaptation(p: &Packet) -> Option<&[u8]> {
    if !has_adaptation(p) {
        return None;
    }
    let len = usize::from(p[4]);
    if len == 0 || 5 + len > TS_PACKET_LEN {
        return None;
    }
    Some(&p[5..5 + len])
}

pub fn random_access(p: &Packet) -> bool {
    adaptation(p).is_some_and(|af| af[0] & 0x40 != 0)
}

pub fn discontinuity(p: &Packet) -> bool {
    adaptation(p).is_some_and(|af| af[0] & 0x80 != 0)
}

/// PCR in 27 MHz ticks.
pub fn pcr(p: &Packet) -> Option<u64> {
    let af = adaptation(p)?;
    if af[0] & 0x10 == 0 || af.len() < 7 {
        return None;
    }
    let b = &af[1..7];
    let base = (u64::from(b[0]) << 25)
        | (u64::from(b[1]) << 17)
        | (u64::from(b[2]) << 9)
        | (u64::from(b[3]) << 1)
        | (u64::from(b[4]) >> 7);
    let ext = (u64::from(b[4] & 1) << 8) | u64::from(b[5]);
    Some(base * 300 + ext)
}

/// Rewrites the PCR (27 MHz) in place; no-op if the packet carries none.
pub fn set_pcr(p: &mut Packet, value: u64) {
    if pcr(p).is_none() {
        return;
    }
    let base = (value / 300) % TS_WRAP;
    let ext = value % 300;
    let b = &mut p[6..12];
    b[0] = (base >> 25) as u8;
    b[1] = (base >> 17) as u8;
    b[2] = (base >> 9) as u8;
    b[3] = (base >> 1) as u8;
    b[4] = (((base & 1) as u8) << 7) | 0x7e | ((ext >> 8) as u8 & 1);
    b[5] = ext as u8;
}

/// Offset of the payload within the packet, if any.
pub fn payload_offset(p: &Packet) -> Option<usize> {
    if !has_payload(p) {
        return None;
    }
    let off = if has_adaptation(p) { 5 + usize::from(p[4]) } else { 4 };
    (off < TS_PACKET_LEN).then_some(off)
}

pub fn payload(p: &Packet) -> Option<&[u8]> {
    payload_offset(p).map(|o| &p[o..])
}

/// Byte offsets (within the packet) of the PTS and DTS fields of a PES header starting here.
fn pes_timestamp_offsets(p: &Packet) -> (Option<usize>, Option<usize>) {
    let none = (None, None);
    if !pusi(p) {
        return none;
    }
    let Some(off) = payload_offset(p) else { return none };
    let pl = &p[off..];
    if pl.len() < 9 || pl[0..3] != [0, 0, 1] {
        return none;
    }
    // Streams without the optional PES header (padding, private_stream_2, ECM/EMM, ...).
    if matches!(pl[3], 0xbc | 0xbe | 0xbf | 0xf0 | 0xf1 | 0xf2 | 0xf8 | 0xff) || pl[6] & 0xc0 != 0x80 {
        return none;
    }
    let flags = pl[7] >> 6;
    let pts = (flags & 0b10 != 0 && pl.len() >= 14).then_some(off + 9);
    let dts = (flags == 0b11 && pl.len() >= 19).then_some(off + 14);
    (pts, dts)
}

fn read_ts(b: &[u8]) -> u64 {
    (u64::from((b[0] >> 1) & 0x07) << 30)
        | (u64::from(b[1]) << 22)
        | (u64::from(b[2] >> 1) << 15)
        | (u64::from(b[3]) << 7)
        | u64::from(b[4] >> 1)
}

fn write_ts(b: &mut [u8], ts: u64) {
    let ts = ts % TS_WRAP;
    b[0] = (b[0] & 0xf0) | (((ts >> 30) as u8 & 0x07) << 1) | 1;
    b[1] = (ts >> 22) as u8;
    b[2] = (((ts >> 15) as u8 & 0x7f) << 1) | 1;
    b[3] = (ts >> 7) as u8;
    b[4] = ((ts as u8 & 0x7f) << 1) | 1;
}

/// (PTS, DTS) of a PES header starting in this packet.
pub fn pes_timestamps(p: &Packet) -> (Option<u64>, Option<u64>) {
    let (pts, dts) = pes_timestamp_offsets(p);
    (pts.map(|o| read_ts(&p[o..o + 5])), dts.map(|o| read_ts(&p[o..o + 5])))
}

/// Decode timestamp of a PES starting here (DTS, or PTS when DTS is absent).
pub fn pes_decode_ts(p: &Packet) -> Option<u64> {
    let (pts, dts) = pes_timestamps(p);
    dts.or(pts)
}

/// Adds `delta` (mod 2^33) to the PTS and DTS of a PES header starting in this packet.
pub fn shift_pes_timestamps(p: &mut Packet, delta: u64) {
    let (pts, dts) = pes_timestamp_offsets(p);
    for off in [pts, dts].into_iter().flatten() {
        let v = read_ts(&p[off..off + 5]);
        write_ts(&mut p[off..off + 5], v.wrapping_add(delta));
    }
}

/// Turns 33-bit wrapping timestamps into a monotonic-ish u64 line.
#[derive(Debug, Default, Clone)]
pub struct Unwrapper {
    last: Option<u64>,
    epoch: u64,
}

impl Unwrapper {
    pub fn unwrap(&mut self, raw: u64) -> u64 {
        let raw = raw % TS_WRAP;
        if let Some(last) = self.last {
            if raw + TS_WRAP / 2 < last {
                self.epoch += TS_WRAP;
            } else if raw > last + TS_WRAP / 2 && self.epoch >= TS_WRAP {
                // A slightly late timestamp from before the wrap.
                self.last = Some(last);
                return self.epoch - TS_WRAP + raw;
            }
        }
        self.last = Some(raw);
        self.epoch + raw
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TsError {
    #[error(
        "input is not MPEG-TS: no run of 188-byte packets starting with sync byte 0x47 in the first {examined} bytes"
    )]
    NotMpegTs { examined: u64 },
    #[error("lost MPEG-TS sync and skipped {skipped} bytes without finding it again")]
    SyncLost { skipped: u64 },
}

/// Counters kept by [`Resync`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResyncStats {
    pub packets: u64,
    pub skipped_bytes: u64,
    pub sync_losses: u64,
}

/// Cuts an arbitrary byte stream into aligned TS packets, finding sync at the start and again
/// after any corruption (three sync bytes 188 apart are required to lock).
pub struct Resync {
    buf: Vec<u8>,
    locked: bool,
    ever_locked: bool,
    examined: u64,
    skipped_since_lock: u64,
    stats: ResyncStats,
    /// Give up on a stream that never locks within this many bytes.
    pub max_initial_search: u64,
    /// Give up when this many bytes pass without regaining sync.
    pub max_resync_skip: u64,
}

impl Default for Resync {
    fn default() -> Self {
        Self {
            buf: Vec::with_capacity(64 * 1024),
            locked: false,
            ever_locked: false,
            examined: 0,
            skipped_since_lock: 0,
            stats: ResyncStats::default(),
            max_initial_search: 64 * 1024,
            max_resync_skip: 4 * 1024 * 1024,
        }
    }
}

const LOCK_SPAN: usize = 2 * TS_PACKET_LEN + 1;

impl Resync {
    pub fn stats(&self) -> ResyncStats {
        self.stats
    }

    /// Feeds bytes; calls `out` for every aligned packet. Leftover partial packets are kept.
    pub fn feed(&mut self, data: &[u8], mut out: impl FnMut(&Packet)) -> Result<(), TsError> {
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        loop {
            if self.locked {
                // Emit a packet only once the next one's sync byte confirms the alignment, so
                // garbage that happens to start with 0x47 is not passed on as a packet.
                if self.buf.len() - pos < TS_PACKET_LEN + 1 {
                    break;
                }
                if self.buf[pos] == SYNC_BYTE && self.buf[pos + TS_PACKET_LEN] == SYNC_BYTE {
                    let pkt: &Packet = self.buf[pos..pos + TS_PACKET_LEN].try_into().expect("len checked");
                    out(pkt);
                    self.stats.packets += 1;
                    pos += TS_PACKET_LEN;
                    continue;
                }
                self.locked = false;
                self.stats.sync_losses += 1;
            }
            // Hunting: find three sync bytes 188 apart.
            let avail = &self.buf[pos..];
            if avail.len() < LOCK_SPAN {
                break;
            }
            let limit = avail.len() - LOCK_SPAN + 1;
            match (0..limit).find(|&i| {
                avail[i] == SYNC_BYTE
                    && avail[i + TS_PACKET_LEN] == SYNC_BYTE
                    && avail[i + 2 * TS_PACKET_LEN] == SYNC_BYTE
            }) {
                Some(i) => {
                    self.skip(i as u64);
                    pos += i;
                    self.locked = true;
                    self.ever_locked = true;
                    self.skipped_since_lock = 0;
                }
                None => {
                    self.skip(limit as u64);
                    pos += limit;
                    self.check_limits()?;
                    break;
                }
            }
        }
        self.buf.drain(..pos);
        self.check_limits()
    }

    /// End of input: emits the last whole packet held back for confirmation.
    pub fn finish(&mut self, mut out: impl FnMut(&Packet)) {
        if self.locked && self.buf.len() >= TS_PACKET_LEN && self.buf[0] == SYNC_BYTE {
            let pkt: &Packet = self.buf[..TS_PACKET_LEN].try_into().expect("len checked");
            out(pkt);
            self.stats.packets += 1;
        }
        self.buf.clear();
    }

    fn skip(&mut self, n: u64) {
        self.stats.skipped_bytes += n;
        self.skipped_since_lock += n;
        if !self.ever_locked {
            self.examined += n;
        }
    }

    fn check_limits(&self) -> Result<(), TsError> {
        if !self.ever_locked && self.examined >= self.max_initial_search {
            return Err(TsError::NotMpegTs { examined: self.examined });
        }
        if self.ever_locked && self.skipped_since_lock >= self.max_resync_skip {
            return Err(TsError::SyncLost { skipped: self.skipped_since_lock });
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn packet(pid: u16, cc: u8) -> Packet {
        let mut p = [0xffu8; TS_PACKET_LEN];
        p[0] = SYNC_BYTE;
        p[1] = (pid >> 8) as u8 & 0x1f;
        p[2] = pid as u8;
        p[3] = 0x10 | (cc & 0x0f);
        p
    }

    #[test]
    fn pcr_and_timestamps_round_trip() {
        let mut p = packet(0x100, 0);
        p[3] = 0x30;
        p[4] = 7;
        p[5] = 0x10;
        p[6..12].fill(0);
        let v = 8_589_934_591u64 * 300 + 299;
        set_pcr(&mut p, v);
        assert_eq!(pcr(&p), Some(v));
        set_pcr(&mut p, 12_345);
        assert_eq!(pcr(&p), Some(12_345));

        let mut q = packet(0x100, 0);
        q[1] |= 0x40;
        let pes = [0u8, 0, 1, 0xe0, 0, 0, 0x80, 0xc0, 10, 0x31, 0, 1, 0, 1, 0x11, 0, 1, 0, 1];
        q[4..4 + pes.len()].copy_from_slice(&pes);
        write_ts(&mut q[13..18], 133_200);
        write_ts(&mut q[18..23], 126_000);
        assert_eq!(pes_timestamps(&q), (Some(133_200), Some(126_000)));
        shift_pes_timestamps(&mut q, TS_WRAP - 1000);
        assert_eq!(pes_timestamps(&q), (Some(132_200), Some(125_000)));
        assert_eq!(q[13] >> 4, 0x3, "PTS prefix bits kept");
    }

    #[test]
    fn unwrapper_crosses_the_33_bit_wrap() {
        let mut u = Unwrapper::default();
        assert_eq!(u.unwrap(TS_WRAP - 10), TS_WRAP - 10);
        assert_eq!(u.unwrap(5), TS_WRAP + 5);
        assert_eq!(u.unwrap(TS_WRAP - 2), TS_WRAP - 2, "late pre-wrap value maps before the wrap");
        assert_eq!(u.unwrap(100), TS_WRAP + 100);
    }

    #[test]
    fn resync_skips_garbage_and_recovers() {
        let mut stream = vec![0x00, 0x47, 0x12];
        for i in 0..5 {
            stream.extend_from_slice(&packet(0x100, i));
        }
        stream.extend_from_slice(&[0x47; 50]);
        for i in 5..10 {
            stream.extend_from_slice(&packet(0x100, i));
        }
        let mut r = Resync::default();
        let mut got = Vec::new();
        // Feed in awkward pieces to exercise the partial-packet path.
        for piece in stream.chunks(77) {
            r.feed(piece, |p| got.push(cc(p))).unwrap();
        }
        assert_eq!(got.len(), 9, "the last packet waits for confirmation");
        r.finish(|p| got.push(cc(p)));
        assert_eq!(got, (0..10).collect::<Vec<u8>>());
        assert_eq!(r.stats().skipped_bytes, 53);
        assert_eq!(r.stats().sync_losses, 1);
    }

    #[test]
    fn non_ts_input_is_rejected() {
        let mut r = Resync::default();
        let text = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(4000);
        assert!(matches!(r.feed(&text, |_| {}), Err(TsError::NotMpegTs { .. })));
    }

    #[test]
    fn endless_garbage_after_lock_is_an_error() {
        let mut r = Resync { max_resync_skip: 10_000, ..Resync::default() };
        let mut s = Vec::new();
        for i in 0..3 {
            s.extend_from_slice(&packet(0x100, i));
        }
        r.feed(&s, |_| {}).unwrap();
        assert!(matches!(r.feed(&vec![0u8; 20_000], |_| {}), Err(TsError::SyncLost { .. })));
    }
}
