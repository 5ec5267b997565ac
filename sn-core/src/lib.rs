//! The service node (SN): the relay every tier runs (LiveSky §2.1).
//!
//! Tier 0 takes a broadcaster's MPEG-TS (HTTP push, raw TCP, origin pull or a looped file), cuts it
//! into signed chunks ([`chunker`]) and keeps a ring buffer per channel ([`ring`]). Downstream SNs
//! subscribe per channel on demand to a parent or same-tier peer and fail over without gap or
//! duplicate ([`upstream`], sans-IO); the tokio drivers around these cores stay thin.

mod apply;
pub mod book;
pub mod chunker;
pub mod http;
pub mod hub;
pub mod ingest;
mod link;
pub mod metrics;
pub mod node;
pub mod psi;
pub mod ring;
pub mod spool;
pub mod ts;
pub mod upstream;

pub use ingest::{flv, looper, rtmp, source, srt};
pub use node::{AddressBook, Node, NodeError, NodeListeners, NodeSpec, OpenError, Origin};
pub use proto::config::{AdmissionSettings, ChannelConfig, EdgeSettings, NodeConfig, Role, SourceConfig, Topology};

/// Splits a whole in-memory TS file into packets (used for clips and tests).
pub fn resync_all(data: &[u8]) -> Result<Vec<ts::Packet>, ts::TsError> {
    let mut r = ts::Resync::default();
    let mut out = Vec::with_capacity(data.len() / proto::TS_PACKET_LEN);
    r.feed(data, |p| out.push(*p))?;
    r.finish(|p| out.push(*p));
    Ok(out)
}
pub mod mc_client;
