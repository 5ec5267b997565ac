//! The ingest path for MPEG-TS: any bytes through the resynchronising packetiser, the chunker
//! (PES timestamps, PCR, PAT/PMT tracking, keyframe detection) and the PSI section parsers.
//! Never a panic; every chunk is whole packets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sn_core::chunker::{Chunker, ChunkerConfig};
use sn_core::psi::{parse_pat, parse_pmt};
use sn_core::ts::Resync;

fuzz_target!(|data: &[u8]| {
    let _ = parse_pat(data);
    let _ = parse_pmt(data);
    let mut resync = Resync::default();
    let mut chunker = Chunker::new(ChunkerConfig::default(), data.first().map(|&b| u64::from(b) * 3600));
    let mut chunks = Vec::new();
    // Two reads, split where the second byte says.
    let cut = data.get(1).map_or(0, |&b| usize::from(b) * 7).min(data.len());
    for part in [&data[..cut], &data[cut..]] {
        let _ = resync.feed(part, |p| chunks.extend(chunker.push(p)));
    }
    resync.finish(|p| chunks.extend(chunker.push(p)));
    for c in chunks {
        assert_eq!(c.payload.len() % proto::TS_PACKET_LEN, 0, "a chunk is whole packets");
    }
});
