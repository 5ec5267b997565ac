//! The DNS global server load balancer (LiveSky §2.2): answers `CHANNEL.ZONE` with the nearest,
//! lightly loaded live edge, locating clients by EDNS Client Subnet or resolver address through a
//! prefix → (region, ISP) map, with an HTTP 302 fallback. The prefix database ([`geo`]) and the
//! choice ([`choose`]) are sans-IO; the servers around them are thin.

pub mod choose;
pub mod geo;
