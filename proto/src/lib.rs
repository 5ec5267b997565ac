//! Wire types shared by all LiveSky-rs parts.
//!
//! The unit of live data is the [`Chunk`] (the paper's "frame"): whole 188-byte MPEG-TS packets of one
//! video access unit (or a 100 ms audio slice) with a header naming its channel and `seq`. Substream
//! `s` of a channel is every chunk with `seq % K == s` (LiveSky §2.3). Service nodes talk to each other
//! with [`SnMessage`] frames through [`SnCodec`], whose decoder checks every length before allocating.
//! Tier 0 signs chunks with the channel's Ed25519 key ([`sign`]) so downstream parts can reject tampering.
//! The operators' files ([`config`], [`limits`]) and the management center's documents and feeds
//! ([`mc`], [`mc_api`]) are defined here too, so every role reads them without pulling in another's
//! network stack.

pub mod backoff;
pub mod calendar;
pub mod chunk;
pub mod codec;
pub mod config;
pub mod limits;
pub mod mc;
pub mod mc_api;
pub mod message;
pub mod name;
pub mod nat;
pub mod peer;
pub mod quality;
pub mod rate;
pub mod rng;
pub mod sign;
pub mod token;
mod wire;

pub use chunk::{Chunk, ChunkFlags, ChunkHeader, MAX_CHUNK_PAYLOAD, SubstreamId, TS_PACKET_LEN};
pub use codec::{CodecError, DEFAULT_MAX_FRAME, FrameCodec, SnCodec, WireMessage};
pub use message::{
    Hello, LinkSide, PROTOCOL_VERSION, RefuseCode, SnMessage, SourceStatus, StartAt, Subscribe, link_proof,
};
pub use name::{ChannelId, NameError, NodeId};
pub use rate::TokenBucket;
pub use sign::{
    ChannelSigner, ChannelVerifier, NodeKey, NodePublicKey, SignatureError, check_public_key, verify_node_signature,
};
pub use wire::WireError;

/// A hash map whose iteration order is the same in every process (FxHash: no per-process keys).
/// The sans-IO cores iterate their maps when deciding, and the simulator must repeat a run exactly
/// for a seed; std's `RandomState` differs per process. Only for keys the system assigns itself
/// (peer, link and connection ids), never for keys an outsider chooses (addresses): those keep
/// `RandomState` against hash flooding. FxHash is also several times cheaper than SipHash on the
/// integer ids these maps are keyed by.
pub type DetMap<K, V> = std::collections::HashMap<K, V, DetHasher>;
pub type DetHasher = rustc_hash::FxBuildHasher;
