//! The peer player's decisions, with no IO (LiveSky §2.3, §3.2): the core that joins an edge, fills
//! a playback buffer from the start burst, takes pushed substreams from tree parents, forwards
//! within its upload cap and repairs from mesh neighbours ([`core`], [`buffer`], [`repair`]).
//! Time and randomness come in as arguments: the native driver (`livesky-peer`), the simulator,
//! the fuzz targets and — built for `wasm32-unknown-unknown` — a browser page drive the same code.

pub mod buffer;
mod burst;
pub mod core;
pub mod introduce;
pub mod pieces;
pub mod repair;
mod seqmap;
