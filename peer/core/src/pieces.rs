//! Peer-link frames on WebRTC data channels: webrtc-rs delivers messages of at most 16 KiB, and
//! keyframe chunks are larger, so each frame is cut into pieces with a one-byte header (1 = more
//! follows, 0 = last) and put back together on arrival, bounded by the frame limit. The native
//! driver and the browser's both use this, so the two ends of a mixed link agree byte for byte.

use bytes::{BufMut, Bytes, BytesMut};

/// Largest data-channel message webrtc-rs delivers, less the header.
pub const PIECE: usize = 16 * 1024 - 1;

/// Cuts a frame into data-channel messages.
pub fn pieces(frame: &[u8]) -> Vec<BytesMut> {
    let n = frame.len().div_ceil(PIECE).max(1);
    (0..n)
        .map(|i| {
            let part = &frame[i * PIECE..((i + 1) * PIECE).min(frame.len())];
            let mut m = BytesMut::with_capacity(part.len() + 1);
            m.put_u8(u8::from(i + 1 < n));
            m.put_slice(part);
            m
        })
        .collect()
}

/// Puts frames back together.
#[derive(Default)]
pub struct Reassembly {
    buf: BytesMut,
}

impl Reassembly {
    /// `None` when the input is malformed or the frame too large (the link must close);
    /// `Some(Some(frame))` when `piece` completed a frame.
    pub fn push(&mut self, piece: &[u8]) -> Option<Option<Bytes>> {
        let (&more, data) = piece.split_first()?;
        if more > 1 || self.buf.len() + data.len() > proto::DEFAULT_MAX_FRAME {
            return None;
        }
        self.buf.extend_from_slice(data);
        Some((more == 0).then(|| self.buf.split().freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_cutting_into_pieces() {
        for len in [0usize, 1, PIECE - 1, PIECE, PIECE + 1, 5 * PIECE + 7] {
            let frame = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>());
            let mut r = Reassembly::default();
            let parts = pieces(&frame);
            let (last, rest) = parts.split_last().unwrap();
            for p in rest {
                assert_eq!(r.push(p), Some(None));
            }
            assert_eq!(r.push(last), Some(Some(frame)), "len {len}");
        }
        let mut r = Reassembly::default();
        assert_eq!(r.push(&[]), None, "empty message");
        assert_eq!(r.push(&[7, 1, 2]), None, "bad header");
    }

    #[test]
    fn an_oversized_frame_is_refused() {
        let mut r = Reassembly::default();
        let piece = vec![1u8; PIECE + 1];
        let mut refused = false;
        for _ in 0..=(proto::DEFAULT_MAX_FRAME / PIECE + 1) {
            if r.push(&piece).is_none() {
                refused = true;
                break;
            }
        }
        assert!(refused, "a frame past the limit must end the link");
    }
}
