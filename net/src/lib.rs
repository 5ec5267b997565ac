//! The network plumbing every LiveSky-rs role shares (service nodes, the management center, the
//! GSLB): the hardened HTTP server ([`httpd`]: header and idle timeouts, connection caps), the
//! caps and accept loop of every listener ([`limits`]), TLS on the SN↔MC control link keyed by
//! the identities ([`mc_tls`], [`mclink`]), Prometheus helpers ([`metrics`]) and the JSON client
//! the control plane polls with ([`http`]). No decisions live here: only sockets.

pub mod clock;
pub mod http;
pub mod httpd;
pub mod limits;
pub mod mc_tls;
pub mod mclink;
pub mod metrics;
pub mod pagefile;
pub mod takeover;
pub mod workers;
