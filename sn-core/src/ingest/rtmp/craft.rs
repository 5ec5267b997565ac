//! Hand-made RTMP client bytes, for tests and fuzz seeds: a client handshake, messages cut into
//! chunks, AMF0 values, and the hostile shapes [`super::guard`] refuses. Nothing here is used by
//! the ingest itself.

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};

/// A client's side of the handshake: C0+C1 now, C2 once it has the server's S0+S1+S2.
pub struct ClientHandshake(Handshake);

impl ClientHandshake {
    /// The handshake and the C0+C1 bytes to send first.
    pub fn start() -> (Self, Vec<u8>) {
        let mut hs = Handshake::new(PeerType::Client);
        let c0c1 = hs.generate_outbound_p0_and_p1().unwrap_or_default();
        (ClientHandshake(hs), c0c1)
    }

    /// Feeds the server's bytes; once the handshake is complete, `Some((C2, the server's bytes
    /// that followed its handshake))`.
    pub fn server_bytes(&mut self, bytes: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        match self.0.process_bytes(bytes).ok()? {
            HandshakeProcessResult::InProgress { .. } => None,
            HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                Some((response_bytes, remaining_bytes))
            }
        }
    }
}

/// One message as chunks: a type-0 header on `csid`, then type-3 continuations every
/// `chunk_size` bytes.
pub fn message(csid: u8, type_id: u8, stream_id: u32, timestamp: u32, payload: &[u8], chunk_size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.push(csid & 0x3f);
    out.extend_from_slice(&timestamp.min(0xFF_FFFF).to_be_bytes()[1..]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(type_id);
    out.extend_from_slice(&stream_id.to_le_bytes());
    if timestamp >= 0xFF_FFFF {
        out.extend_from_slice(&timestamp.to_be_bytes());
    }
    for (i, piece) in payload.chunks(chunk_size.max(1)).enumerate() {
        if i > 0 {
            out.push(0xC0 | (csid & 0x3f));
        }
        out.extend_from_slice(piece);
    }
    out
}

/// AMF0 values, written as rml_amf0 reads them.
pub mod amf0 {
    pub fn string(out: &mut Vec<u8>, s: &str) {
        out.push(2);
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    pub fn number(out: &mut Vec<u8>, n: f64) {
        out.push(0);
        out.extend_from_slice(&n.to_be_bytes());
    }
    pub fn null(out: &mut Vec<u8>) {
        out.push(5);
    }
    /// An object of string properties.
    pub fn object(out: &mut Vec<u8>, props: &[(&str, &str)]) {
        out.push(3);
        for (k, v) in props {
            out.extend_from_slice(&(k.len() as u16).to_be_bytes());
            out.extend_from_slice(k.as_bytes());
            string(out, v);
        }
        out.extend_from_slice(&[0, 0, 9]);
    }
    /// Strict arrays of one element each, `depth` deep, around a number.
    pub fn nested_arrays(out: &mut Vec<u8>, depth: usize) {
        for _ in 0..depth {
            out.push(10);
            out.extend_from_slice(&1u32.to_be_bytes());
        }
        number(out, 0.0);
    }
}

/// An AMF0 command message (type 20, chunk stream 3, 128-byte chunks) whose payload `values`
/// writes.
pub fn command(values: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut p = Vec::new();
    values(&mut p);
    message(3, 20, 0, 0, &p, 128)
}

/// The `connect` command to application `app`.
pub fn connect(app: &str) -> Vec<u8> {
    command(|p| {
        amf0::string(p, "connect");
        amf0::number(p, 1.0);
        amf0::object(p, &[("app", app), ("type", "nonprivate")]);
    })
}
