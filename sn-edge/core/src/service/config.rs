//! A channel's client service settings: the admission model's parameters and the trust rules'
//! thresholds (reports needed to demote or ban, ban length).

use std::net::SocketAddr;
use std::time::Duration;

use proto::ChannelId;

use crate::admission::AdmissionConfig;

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub channel: ChannelId,
    pub admission: AdmissionConfig,
    /// Longest start burst the edge sends (a client asking for a bigger buffer gets this much).
    pub max_burst_ms: u32,
    /// The operator's glass-to-glass target for the channel: bursts no longer, and players told
    /// (in `Welcome`) to buffer no more.
    pub target_latency_ms: Option<u32>,
    /// Other edges' client addresses for redirects: the edge's `[edge] siblings` setting.
    pub siblings: Vec<String>,
    /// Joins per second allowed from one IP address, and the burst allowed.
    pub joins_per_ip_per_sec: f64,
    pub join_burst_per_ip: f64,
    pub stun: Option<SocketAddr>,
    /// Reports needed from distinct children before a parent is taken as unreachable.
    pub unreachable_reports: usize,
    /// Children that must find a parent silent (it took them but sent nothing) before it is
    /// made a leaf: LiveSky §6's peers that deny service. Merely late parents are only left.
    pub silent_reports: usize,
    /// The channel's public key, handed to clients so they can check every chunk.
    pub channel_key: Option<[u8; 32]>,
    /// Distinct clients that must report a sender's bad chunks before it is banned, and for how
    /// long.
    pub ban_reports: usize,
    pub ban_for: Duration,
    /// How often the service sums up a period ([`super::Output::Report`]).
    pub report_every: Duration,
    /// How long the service stays without clients before it says it is idle.
    pub linger: Duration,
}

impl ServiceConfig {
    pub fn new(channel: ChannelId, admission: AdmissionConfig) -> Self {
        Self {
            channel,
            admission,
            max_burst_ms: 15_000,
            target_latency_ms: None,
            siblings: Vec::new(),
            joins_per_ip_per_sec: 5.0,
            join_burst_per_ip: 20.0,
            stun: None,
            unreachable_reports: 2,
            silent_reports: 3,
            channel_key: None,
            ban_reports: 2,
            ban_for: Duration::from_secs(600),
            report_every: Duration::from_secs(60),
            linger: Duration::from_secs(30),
        }
    }
}
