//! The `livesky` binary's library half: starting nodes from a topology file ([`launch`]), the
//! one-command demo ([`demo`]) and benchmarks ([`bench`]). Kept as a library so the workspace
//! integration tests start exactly what operators start.

pub mod bench;
pub mod demo;
pub mod endpoints;
pub mod gslb_cmd;
pub mod launch;
pub mod mc_cmd;
pub mod peer_cmd;
pub mod sim_cmd;
pub mod swarm;

/// The bundled 16 s H.264+AAC clip (≈400 kbit/s) that `builtin:demo` loop sources play.
pub const DEMO_CLIP: &[u8] = include_bytes!("../assets/demo.ts");

/// The demo's prefix database for the GSLB, also shipped as `configs/geo.csv`.
pub const DEMO_GEO: &str = include_str!("../../configs/geo.csv");

/// The demo topology, also shipped as `configs/demo.toml`.
pub const DEMO_TOPOLOGY: &str = include_str!("../../configs/demo.toml");
