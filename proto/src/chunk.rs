//! The chunk: LiveSky's "frame", the unit that is relayed, buffered, signed and split into substreams.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::name::ChannelId;
use crate::wire::{Reader, WireError, put_short_str};

pub const TS_PACKET_LEN: usize = 188;
/// Hard cap on one chunk's payload. A single H.264 access unit of a 1080p intra frame stays well
/// below this; the chunker cuts anything longer so that no frame ever has to exceed it.
pub const MAX_CHUNK_PAYLOAD: usize = 2 * 1024 * 1024;

const CHUNK_FORMAT_VERSION: u8 = 1;
const FLAG_HAS_SIGNATURE: u8 = 0x80;

/// Chunk flags. Bit 7 is reserved on the wire for "signature follows".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct ChunkFlags(u8);

impl ChunkFlags {
    /// The chunk starts a random-access point (video IDR/I frame, or any audio-only slice) and
    /// begins with PAT+PMT, so a player can start decoding here.
    pub const KEYFRAME: ChunkFlags = ChunkFlags(0x01);
    /// Timestamps or continuity do not follow from the previous chunk (source restarted, gap).
    pub const DISCONTINUITY: ChunkFlags = ChunkFlags(0x02);
    const KNOWN: u8 = 0x03;

    pub const fn empty() -> Self {
        ChunkFlags(0)
    }
    pub fn contains(self, other: ChunkFlags) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn insert(&mut self, other: ChunkFlags) {
        self.0 |= other.0;
    }
    pub fn bits(self) -> u8 {
        self.0
    }
}

impl std::ops::BitOr for ChunkFlags {
    type Output = ChunkFlags;
    fn bitor(self, rhs: Self) -> Self {
        ChunkFlags(self.0 | rhs.0)
    }
}

/// Which substream a chunk belongs to (§2.3: frames round-robin over K substreams).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubstreamId(pub u16);

impl SubstreamId {
    /// Substream of `seq` when the channel is split into `k` substreams; `k == 0` is treated as 1.
    pub fn of(seq: u64, k: u16) -> SubstreamId {
        SubstreamId((seq % u64::from(k.max(1))) as u16)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkHeader {
    pub channel: ChannelId,
    /// Monotonic per channel, assigned by Tier 0; identical on every node that relays the chunk.
    pub seq: u64,
    /// Wall-clock milliseconds since the Unix epoch when Tier 0 cut the chunk (for latency).
    pub ingest_ms: u64,
    /// 90 kHz media time (DTS of the first PES starting in the chunk, unwrapped past 2^33);
    /// used for segment durations and playback deadlines.
    pub media_ts: u64,
    pub flags: ChunkFlags,
}

impl ChunkHeader {
    pub fn is_keyframe(&self) -> bool {
        self.flags.contains(ChunkFlags::KEYFRAME)
    }

    /// The header bytes covered by the signature (everything but the signature itself).
    pub(crate) fn put_signed_part(&self, out: &mut BytesMut, payload_len: usize) {
        out.put_u8(CHUNK_FORMAT_VERSION);
        out.put_u8(self.flags.bits());
        put_short_str(out, self.channel.as_str());
        out.put_u64(self.seq);
        out.put_u64(self.ingest_ms);
        out.put_u64(self.media_ts);
        out.put_u32(payload_len as u32);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub header: ChunkHeader,
    /// Whole TS packets; shared, never copied per receiver.
    pub payload: Bytes,
    /// Shared like the payload: a chunk is cloned once per receiver, and an inline signature would
    /// make every queued message 64 bytes larger.
    pub signature: Option<Arc<[u8; 64]>>,
}

impl Chunk {
    pub fn seq(&self) -> u64 {
        self.header.seq
    }
    pub fn substream(&self, k: u16) -> SubstreamId {
        SubstreamId::of(self.header.seq, k)
    }

    pub fn encoded_len(&self) -> usize {
        1 + 1
            + 1
            + self.header.channel.as_str().len()
            + 8 * 3
            + 4
            + self.payload.len()
            + if self.signature.is_some() { 64 } else { 0 }
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.encoded_len());
        let mut flags = self.header.flags.bits();
        if self.signature.is_some() {
            flags |= FLAG_HAS_SIGNATURE;
        }
        out.put_u8(CHUNK_FORMAT_VERSION);
        out.put_u8(flags);
        put_short_str(out, self.header.channel.as_str());
        out.put_u64(self.header.seq);
        out.put_u64(self.header.ingest_ms);
        out.put_u64(self.header.media_ts);
        out.put_u32(self.payload.len() as u32);
        out.put_slice(&self.payload);
        if let Some(sig) = &self.signature {
            out.put_slice(&sig[..]);
        }
    }

    pub(crate) fn decode_from(r: &mut Reader) -> Result<Chunk, WireError> {
        let version = r.u8("chunk format version")?;
        if version != CHUNK_FORMAT_VERSION {
            return Err(WireError::UnknownValue { what: "chunk format version", value: version.into() });
        }
        let raw_flags = r.u8("chunk flags")?;
        if raw_flags & !(ChunkFlags::KNOWN | FLAG_HAS_SIGNATURE) != 0 {
            return Err(WireError::UnknownValue { what: "chunk flags", value: raw_flags.into() });
        }
        let channel = r.channel()?;
        let seq = r.u64("chunk seq")?;
        let ingest_ms = r.u64("chunk ingest time")?;
        let media_ts = r.u64("chunk media time")?;
        let len = r.u32("chunk payload length")? as usize;
        if len > MAX_CHUNK_PAYLOAD {
            return Err(WireError::TooLarge { len, max: MAX_CHUNK_PAYLOAD });
        }
        let payload = r.bytes(len, "chunk payload")?;
        check_ts_payload(&payload)?;
        let signature =
            if raw_flags & FLAG_HAS_SIGNATURE != 0 { Some(Arc::new(r.array::<64>("chunk signature")?)) } else { None };
        let header =
            ChunkHeader { channel, seq, ingest_ms, media_ts, flags: ChunkFlags(raw_flags & ChunkFlags::KNOWN) };
        Ok(Chunk { header, payload, signature })
    }

    /// Decodes one chunk that fills `buf` exactly.
    pub fn decode(buf: Bytes) -> Result<Chunk, WireError> {
        let mut r = Reader::new(buf);
        let chunk = Self::decode_from(&mut r)?;
        r.finish("chunk")?;
        Ok(chunk)
    }
}

/// A payload must be whole TS packets, each starting with the sync byte, or a viewer's demuxer
/// would lose sync on data we vouched for.
pub fn check_ts_payload(payload: &[u8]) -> Result<(), WireError> {
    if !payload.len().is_multiple_of(TS_PACKET_LEN) {
        return Err(WireError::PartialPackets { len: payload.len() });
    }
    match payload.chunks_exact(TS_PACKET_LEN).position(|p| p[0] != 0x47) {
        Some(index) => Err(WireError::BadSync { index }),
        None => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_chunk(seq: u64, packets: usize) -> Chunk {
        let mut payload = vec![0u8; packets * TS_PACKET_LEN];
        for (i, p) in payload.chunks_exact_mut(TS_PACKET_LEN).enumerate() {
            p[0] = 0x47;
            p[3] = (i % 16) as u8;
            p[4] = seq as u8;
        }
        Chunk {
            header: ChunkHeader {
                channel: ChannelId::new("demo").unwrap(),
                seq,
                ingest_ms: 1_700_000_000_000 + seq,
                media_ts: seq * 3600,
                flags: if seq.is_multiple_of(50) { ChunkFlags::KEYFRAME } else { ChunkFlags::empty() },
            },
            payload: Bytes::from(payload),
            signature: None,
        }
    }

    #[test]
    fn round_trip_with_and_without_signature() {
        for sig in [None, Some(Arc::new([7u8; 64]))] {
            let mut c = sample_chunk(50, 3);
            c.signature = sig;
            let mut buf = BytesMut::new();
            c.encode(&mut buf);
            assert_eq!(buf.len(), c.encoded_len());
            assert_eq!(Chunk::decode(buf.freeze()).unwrap(), c);
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut c = sample_chunk(1, 2);
        c.signature = Some(Arc::new([1u8; 64]));
        let mut buf = BytesMut::new();
        c.encode(&mut buf);
        let full = buf.freeze();
        for cut in 0..full.len() {
            assert!(Chunk::decode(full.slice(..cut)).is_err(), "cut at {cut} decoded");
        }
    }

    #[test]
    fn rejects_bad_payloads_and_flags() {
        let c = sample_chunk(3, 2);
        let mut buf = BytesMut::new();
        c.encode(&mut buf);
        let mut bad_sync = buf.clone();
        let payload_start = buf.len() - c.payload.len();
        bad_sync[payload_start + TS_PACKET_LEN] = 0x00;
        assert!(matches!(Chunk::decode(bad_sync.freeze()), Err(WireError::BadSync { index: 1 })));
        let mut bad_flags = buf.clone();
        bad_flags[1] = 0x40;
        assert!(matches!(Chunk::decode(bad_flags.freeze()), Err(WireError::UnknownValue { .. })));
        let mut trailing = buf.clone();
        trailing.put_u8(0);
        assert!(matches!(Chunk::decode(trailing.freeze()), Err(WireError::Trailing { .. })));
    }

    #[test]
    fn oversized_payload_length_rejected_before_reading() {
        let c = sample_chunk(3, 1);
        let mut buf = BytesMut::new();
        c.encode(&mut buf);
        let len_at = buf.len() - c.payload.len() - 4;
        buf[len_at..len_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(Chunk::decode(buf.freeze()), Err(WireError::TooLarge { .. })));
    }

    #[test]
    fn substreams_round_robin() {
        let ids: Vec<u16> = (0..8).map(|s| SubstreamId::of(s, 4).0).collect();
        assert_eq!(ids, [0, 1, 2, 3, 0, 1, 2, 3]);
        assert_eq!(SubstreamId::of(17, 0), SubstreamId(0));
    }
}
