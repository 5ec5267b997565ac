//! The peer player (LiveSky §2.3, §3.2): a sans-IO core that joins an edge, fills a playback buffer
//! from the edge's start burst, receives per-substream pushed chunks from tree parents, forwards
//! substreams to its children within its upload cap and asks the edge for help when a parent is
//! lost or late ([`core`], [`buffer`]); plus the IO driver ([`driver`]: TCP to the edge, TCP
//! between peers until the WebRTC transport arrives).

pub mod buffer;
pub mod core;
pub mod driver;
pub mod output;
pub mod repair;
pub mod rtc;
