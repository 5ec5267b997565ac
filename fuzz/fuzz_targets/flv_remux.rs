//! RTMP ingest remuxing: any sequence of FLV video/audio tag bodies through `FlvToTs`, then its TS
//! through the resync and the chunker. Never a panic; the output is always whole 188-byte packets.
//!
//! Input: records of `kind` (bit 0: 0 video, 1 audio; bit 1: absolute timestamp), a timestamp (u32
//! LE when absolute, else a u16 LE step from the last one, so runs of frames stay close in time),
//! a u16 LE body length (cut to what is left) and the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sn_core::chunker::{Chunker, ChunkerConfig};
use sn_core::flv::FlvToTs;
use sn_core::ts::Resync;

fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, tail) = data.split_at(n.min(data.len()));
    *data = tail;
    head
}

fn le(bytes: &[u8]) -> u32 {
    bytes.iter().rev().fold(0, |acc, &b| (acc << 8) | u32::from(b))
}

fuzz_target!(|data: &[u8]| {
    let mut remux = FlvToTs::new();
    let mut resync = Resync::default();
    let mut chunker = Chunker::new(ChunkerConfig::default(), None);
    let mut rest = data;
    let mut ts = 0u32;
    let mut out = Vec::new();
    while let [kind, ..] = *rest {
        rest = &rest[1..];
        ts = if kind & 2 != 0 { le(take(&mut rest, 4)) } else { ts.wrapping_add(le(take(&mut rest, 2))) };
        let len = le(take(&mut rest, 2)) as usize;
        let body = take(&mut rest, len);
        let before = out.len();
        let result = if kind & 1 == 0 { remux.video(ts, body, &mut out) } else { remux.audio(ts, body, &mut out) };
        if result.is_err() {
            assert_eq!(out.len(), before, "an error writes nothing");
        }
        let new = &out[before..];
        assert_eq!(new.len() % 188, 0, "whole TS packets");
        assert!(new.chunks(188).all(|p| p[0] == 0x47), "every packet starts with the sync byte");
    }
    let mut chunks = Vec::new();
    let _ = resync.feed(&out, |p| chunks.extend(chunker.push(p)));
    resync.finish(|p| chunks.extend(chunker.push(p)));
    chunks.extend(chunker.finish());
    for c in chunks {
        assert_eq!(c.payload.len() % 188, 0, "a chunk is whole packets");
    }
});
