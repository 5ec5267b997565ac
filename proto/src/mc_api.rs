//! What the management center's HTTP API serves to programs, as JSON: `GET /edges` is the
//! GSLB's view of the edges (live ones only, with their load and place).

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EdgesView {
    /// The registry's membership version.
    pub version: u64,
    pub edges: Vec<EdgeView>,
    pub channels: Vec<ChannelRate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeView {
    pub id: String,
    pub region: String,
    pub isp: String,
    /// Addresses clients reach it at.
    pub addrs: Vec<IpAddr>,
    pub http: SocketAddr,
    /// LiveSky client port.
    pub clients: Option<SocketAddr>,
    /// Clients served now (last heartbeat).
    pub users: u64,
    pub capacity_kbps: u64,
    /// Channels in overflow (stage 4).
    pub full: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelRate {
    pub id: String,
    pub bitrate_kbps: u32,
}

/// The addresses to advertise: the configured ones, else the specific listen addresses.
pub fn advertised(configured: &[IpAddr], listening: &[SocketAddr]) -> Vec<IpAddr> {
    if !configured.is_empty() {
        return configured.to_vec();
    }
    let mut out: Vec<IpAddr> = Vec::new();
    for a in listening {
        let ip = a.ip();
        if !ip.is_unspecified() && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}
