//! The management center (LiveSky §2 "System Management"): the SN registry and membership
//! ([`registry`]), the operators' TOML turned into versioned per-SN XML pushed incrementally
//! ([`store`]), and the tokio driver ([`server`]; SN control links in `sn_links`) with the HTTP API ([`http`]).

pub mod dashboard;
pub mod http;
pub mod metrics;
pub mod noc;
pub mod registry;
pub mod reports;
pub mod server;
pub mod settings;
mod sn_links;
pub mod store;
pub mod tokens;

pub use server::{McError, McServer};
pub use settings::McSettings;
