//! Length-prefixed framing for tokio-util's `Framed`, shared by every TCP link: SN↔SN
//! ([`SnCodec`]), peer↔edge control and peer↔peer data (see [`crate::peer`]).
//!
//! Frame: `u32` big-endian length of the body, then the body (type byte first). The length is
//! checked against the codec's limit before any buffer is grown, so a hostile length prefix costs
//! nothing.

use std::marker::PhantomData;

use bytes::{Bytes, BytesMut};

use crate::chunk::MAX_CHUNK_PAYLOAD;
use crate::message::SnMessage;
use crate::wire::WireError;

/// Room for the largest chunk plus its header and signature.
pub const DEFAULT_MAX_FRAME: usize = MAX_CHUNK_PAYLOAD + 4096;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed frame: {0}")]
    Wire(#[from] WireError),
}

/// A message type that travels in frames.
pub trait WireMessage: Sized {
    /// A short name for logs and errors.
    fn kind(&self) -> &'static str;
    /// Writes the body (type byte first), without the length prefix.
    fn encode_body(&self, out: &mut BytesMut);
    /// Decodes one body that fills `body` exactly.
    fn decode_body(body: Bytes) -> Result<Self, WireError>;
}

/// Decodes `In` frames and encodes `Out` frames (the two directions of a link may differ).
pub struct FrameCodec<In, Out> {
    max_frame: usize,
    max_encode: usize,
    _types: PhantomData<fn(Out) -> In>,
}

/// SN↔SN links carry [`SnMessage`] both ways.
pub type SnCodec = FrameCodec<SnMessage, SnMessage>;

impl<In, Out> FrameCodec<In, Out> {
    /// `max_frame` bounds frames both read and written.
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame, max_encode: max_frame, _types: PhantomData }
    }

    /// Reads at most `max_decode`-byte frames but may still write up to the default limit: an
    /// edge sends clients chunks, yet accepts only small control frames from them.
    pub fn with_decode_limit(max_decode: usize) -> Self {
        Self { max_frame: max_decode, max_encode: DEFAULT_MAX_FRAME, _types: PhantomData }
    }

    /// Changes the largest frame read from now on (a link trusted after a handshake may get
    /// larger frames than a stranger).
    pub fn set_decode_limit(&mut self, max_decode: usize) {
        self.max_frame = max_decode;
    }
}

impl<In, Out> Default for FrameCodec<In, Out> {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl<In, Out> Clone for FrameCodec<In, Out> {
    fn clone(&self) -> Self {
        Self { max_frame: self.max_frame, max_encode: self.max_encode, _types: PhantomData }
    }
}

impl<In, Out> std::fmt::Debug for FrameCodec<In, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameCodec").field("max_frame", &self.max_frame).finish()
    }
}

/// tokio-util's traits, for the IO crates (the sans-IO cores build without tokio).
#[cfg(feature = "codec")]
mod tokio_codec {
    use bytes::{Buf, BufMut, BytesMut};
    use tokio_util::codec::{Decoder, Encoder};

    use super::{CodecError, FrameCodec, WireMessage};
    use crate::wire::WireError;

    impl<In: WireMessage, Out> Decoder for FrameCodec<In, Out> {
        type Item = In;
        type Error = CodecError;

        fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, CodecError> {
            if src.len() < 4 {
                return Ok(None);
            }
            let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
            if len > self.max_frame {
                return Err(WireError::TooLarge { len, max: self.max_frame }.into());
            }
            if len == 0 {
                return Err(WireError::Truncated { what: "message type" }.into());
            }
            if src.len() < 4 + len {
                // Grow only up to what this (already bounded) frame needs.
                src.reserve(4 + len - src.len());
                return Ok(None);
            }
            src.advance(4);
            let body = src.split_to(len).freeze();
            Ok(Some(In::decode_body(body)?))
        }
    }

    impl<In, Out: WireMessage> Encoder<Out> for FrameCodec<In, Out> {
        type Error = CodecError;

        fn encode(&mut self, msg: Out, dst: &mut BytesMut) -> Result<(), CodecError> {
            self.encode(&msg, dst)
        }
    }

    impl<In, Out: WireMessage> Encoder<&Out> for FrameCodec<In, Out> {
        type Error = CodecError;

        fn encode(&mut self, msg: &Out, dst: &mut BytesMut) -> Result<(), CodecError> {
            let start = dst.len();
            dst.put_u32(0);
            msg.encode_body(dst);
            let len = dst.len() - start - 4;
            if len > self.max_encode {
                dst.truncate(start);
                return Err(WireError::TooLarge { len, max: self.max_encode }.into());
            }
            dst[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
            Ok(())
        }
    }
}

#[cfg(all(test, feature = "codec"))]
mod tests {
    use super::*;
    use crate::WireMessage;
    use crate::chunk::tests::sample_chunk;
    use crate::message::{Hello, RefuseCode, SourceStatus, StartAt, Subscribe};
    use crate::name::{ChannelId, NodeId};
    use bytes::BufMut;
    use tokio_util::codec::{Decoder, Encoder};

    fn all_messages() -> Vec<SnMessage> {
        let ch = ChannelId::new("news").unwrap();
        let mut signed = sample_chunk(7, 5);
        signed.signature = Some(std::sync::Arc::new([3; 64]));
        vec![
            SnMessage::Hello(Hello { version: 1, node: NodeId::new("edge-1").unwrap(), tier: 2, nonce: [7; 32] }),
            SnMessage::Challenge { nonce: [1; 32], proof: [2; 64] },
            SnMessage::Auth { proof: [3; 64] },
            SnMessage::Subscribe(Subscribe { channel: ch.clone(), start: StartAt::Live, path: vec![] }),
            SnMessage::Subscribe(Subscribe {
                channel: ch.clone(),
                start: StartAt::Seq(u64::MAX - 1),
                path: vec![NodeId::new("a").unwrap(), NodeId::new("b").unwrap()],
            }),
            SnMessage::Subscribe(Subscribe {
                channel: ch.clone(),
                start: StartAt::Backlog { ms: 15_000 },
                path: vec![],
            }),
            SnMessage::SubscribeOk { channel: ch.clone(), source: SourceStatus::Live, verify_key: None },
            SnMessage::SubscribeOk { channel: ch.clone(), source: SourceStatus::Idle, verify_key: Some([9; 32]) },
            SnMessage::SubscribeErr {
                channel: ch.clone(), code: RefuseCode::Loop, reason: "loop via a → b ✓".into()
            },
            SnMessage::Chunk(sample_chunk(0, 1)),
            SnMessage::Chunk(signed),
            SnMessage::SourceState { channel: ch.clone(), source: SourceStatus::Idle },
            SnMessage::SourceState { channel: ch, source: SourceStatus::Ended },
            SnMessage::Keepalive,
        ]
    }

    fn encode_all(msgs: &[SnMessage]) -> BytesMut {
        let mut codec = SnCodec::default();
        let mut buf = BytesMut::new();
        for m in msgs {
            codec.encode(m, &mut buf).unwrap();
        }
        buf
    }

    #[test]
    fn round_trip_every_message_even_byte_by_byte() {
        let msgs = all_messages();
        let wire = encode_all(&msgs);
        let mut codec = SnCodec::default();
        let mut src = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            src.put_u8(*b);
            while let Some(m) = codec.decode(&mut src).unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, msgs);
        assert!(src.is_empty());
    }

    #[test]
    fn oversized_frame_rejected_from_its_prefix() {
        let mut codec = SnCodec::new(1024);
        let mut src = BytesMut::from(&[0x00, 0x00, 0x04, 0x01][..]);
        assert!(matches!(codec.decode(&mut src), Err(CodecError::Wire(WireError::TooLarge { len: 1025, .. }))));
        let mut src = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1][..]);
        assert!(codec.decode(&mut src).is_err());
        assert!(src.capacity() < 1 << 20, "decoder must not allocate for a hostile length");
    }

    #[test]
    fn encoder_refuses_frames_over_the_limit() {
        let mut codec = SnCodec::new(100);
        let mut buf = BytesMut::new();
        assert!(codec.encode(&SnMessage::Chunk(sample_chunk(1, 2)), &mut buf).is_err());
        assert!(buf.is_empty());
    }

    #[test]
    fn truncated_bodies_are_errors_not_panics() {
        for m in all_messages() {
            let mut body = BytesMut::new();
            m.encode_body(&mut body);
            let body = body.freeze();
            for cut in 0..body.len() {
                assert!(SnMessage::decode_body(body.slice(..cut)).is_err(), "{} cut at {cut}", m.kind());
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        // A fixed xorshift sequence: deterministic, covers every type byte and odd lengths.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 200) as usize;
            let mut body = BytesMut::with_capacity(len);
            let mut y = x;
            for _ in 0..len {
                y = y.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                body.put_u8((y >> 56) as u8);
            }
            if let Some(first) = body.first_mut() {
                *first = (x % 9) as u8;
            }
            let _ = SnMessage::decode_body(body.freeze());
        }
    }

    #[test]
    fn zero_length_and_unknown_type_are_errors() {
        let mut codec = SnCodec::default();
        assert!(codec.decode(&mut BytesMut::from(&[0u8, 0, 0, 0][..])).is_err());
        assert!(matches!(
            codec.decode(&mut BytesMut::from(&[0u8, 0, 0, 1, 0x7f][..])),
            Err(CodecError::Wire(WireError::UnknownType(0x7f)))
        ));
    }
}
