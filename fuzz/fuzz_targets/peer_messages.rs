//! The peer protocol's three message sets: client → edge (joins, reports, signals), edge → client
//! (welcome, feeds, chunks) and peer ↔ peer (hello, subscribe, chunks, buffer maps, requests).
//! Any body must decode to an error or to a message that re-encodes to the same bytes' meaning.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use proto::WireMessage;
use proto::peer::{FromEdge, PeerLink, ToEdge};

fn round_trip<M: WireMessage + PartialEq + std::fmt::Debug>(body: &[u8]) {
    if let Ok(m) = M::decode_body(Bytes::copy_from_slice(body)) {
        let mut out = BytesMut::new();
        m.encode_body(&mut out);
        let again = M::decode_body(out.freeze());
        assert_eq!(again.as_ref().ok(), Some(&m), "{} re-encodes to itself", m.kind());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    match which % 3 {
        0 => round_trip::<ToEdge>(body),
        1 => round_trip::<FromEdge>(body),
        _ => round_trip::<PeerLink>(body),
    }
});
