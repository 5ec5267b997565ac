//! The peer player (LiveSky §2.3, §3.2): a sans-IO core that joins an edge, fills a playback buffer
//! from the edge's start burst, receives per-substream pushed chunks from tree parents, forwards
//! substreams to its children within its upload cap and asks the edge for help when a parent is
//! lost or late ([`core`], [`buffer`], [`repair`]); plus the IO driver ([`driver`]: TCP to the
//! edge; WebRTC data channels between peers ([`rtc`]), or TCP where hosts accept connections) and
//! the viewer's local output ([`output`]); [`nat`] tests the NAT it is behind.

pub mod driver;
mod links;
pub mod nat;
pub mod output;
pub mod rtc;

pub use livesky_peer_core::{buffer, core, introduce, pieces, repair};
