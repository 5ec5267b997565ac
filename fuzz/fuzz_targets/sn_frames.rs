//! SN↔SN frames (hello, subscribe, chunks with signatures, …) as they come off a socket: any
//! bytes, in any split, through the length-prefixed codec. It must never panic, never buffer
//! past its limit, and every frame it accepts must survive a re-encode unchanged.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use proto::{Chunk, SnCodec, SnMessage};
use tokio_util::codec::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the stream is split, as reads of a socket would.
    let Some((&cut, body)) = data.split_first() else { return };
    let cut = usize::from(cut).min(body.len());
    let mut codec = SnCodec::new(64 * 1024);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for part in [&body[..cut], &body[cut..]] {
        buf.extend_from_slice(part);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(m)) => got.push(m),
                Ok(None) | Err(_) => break,
            }
        }
    }
    for m in got {
        let mut out = BytesMut::new();
        if codec.encode(m.clone(), &mut out).is_ok() {
            let again: Option<SnMessage> = codec.decode(&mut out).ok().flatten();
            assert_eq!(again.as_ref(), Some(&m), "a decoded frame re-encodes to itself");
        }
    }
    // A chunk body alone (what a signature check reads).
    if let Ok(c) = Chunk::decode(bytes::Bytes::copy_from_slice(body)) {
        let mut out = BytesMut::new();
        c.encode(&mut out);
        assert_eq!(out.len(), c.encoded_len());
    }
});
