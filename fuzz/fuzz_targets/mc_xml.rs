//! Management-center control messages: XML documents (config pushes and updates, heartbeats,
//! reports, lookups). Any body must decode to an error or a message; a config document must
//! apply to a node's config or be refused, never panic.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use proto::{NodeId, WireMessage};
use proto::mc::{McMessage, SnConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = McMessage::decode_body(Bytes::copy_from_slice(data)) else { return };
    if let McMessage::Config(doc) = m {
        let Ok(id) = NodeId::new("edge1") else { return };
        // As a first snapshot, and as an update on top of what the first gave.
        if let Ok(base) = SnConfig::apply(None, &id, (*doc).clone()) {
            let _ = SnConfig::apply(Some(&base), &id, *doc);
        }
    }
});
