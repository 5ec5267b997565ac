//! The edge's decisions, with no IO (LiveSky §2.2, §3.1): the adaptive scaling model ([`model`]),
//! the four-stage admission controller ([`admission`]), the tracker and per-substream push trees
//! ([`tree`]), the client service ([`service`]) that turns the client protocol into those
//! decisions, and when an HTTP-TS viewer's next write is due ([`pacing`]). Time comes in as an argument; the tokio driver (`sn-edge`), the simulator and the
//! tests all drive these same types.

pub mod admission;
pub mod feeder;
pub mod model;
pub mod pacing;
pub mod service;
pub mod tree;
