//! The DNS global server load balancer (LiveSky §2.2): answers `CHANNEL.ZONE` with the nearest,
//! lightly loaded live edge, locating clients by EDNS Client Subnet or resolver address through a
//! prefix → (region, ISP) map, with an HTTP 302 fallback. The prefix database ([`geo`]), the
//! choice ([`choose`]) and the zone's answers ([`zone`]) are sans-IO; the servers around them
//! ([`server`]) are thin.

pub mod choose;
pub mod client;
pub mod dns;
pub mod feed;
pub mod geo;
mod http;
pub mod metrics;
pub mod server;
pub mod settings;
pub mod zone;

pub use server::{Gslb, GslbError};
pub use settings::GslbSettings;
