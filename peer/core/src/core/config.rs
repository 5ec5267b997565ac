//! A peer player's settings.

use std::net::SocketAddr;
use std::time::Duration;

use proto::ChannelId;

use crate::buffer::BufferConfig;
use crate::repair::RepairConfig;

#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub channel: ChannelId,
    pub token: String,
    /// Upload offered (the edge caps it); also the rate of the local upload limiter.
    pub upload_kbps: u32,
    /// Where this peer accepts links from children.
    pub listen: Option<SocketAddr>,
    pub buffer: BufferConfig,
    pub heartbeat: Duration,
    pub report_interval: Duration,
    /// A fed substream this far behind the newest chunk counts as a late parent.
    pub late_ms: u32,
    /// Backlog a parent sends a new child, at most: a whole buffer, so a child the edge had no
    /// room to burst to still starts with a full buffer (paced by the upload cap).
    pub catchup_ms: u32,
    /// Mesh pull repair (window 0 disables it).
    pub repair: RepairConfig,
    /// Mesh neighbours (from the edge's list) this peer links to for repair.
    pub mesh_links: usize,
    /// How often buffer maps go to neighbours.
    pub map_interval: Duration,
    /// Longest sleep between housekeeping wake-ups (lateness checks, heartbeats).
    pub tick: Duration,
    /// Pure mesh pull (the simulator's CoolStreaming-like baseline): no parents; every chunk a
    /// neighbour's buffer map shows is pulled, playback starting from what was pulled.
    pub pull_only: bool,
    /// Redirects followed to reach this edge (sent in the join).
    pub redirects: u8,
    /// The NAT class the first join carries, when known beforehand (the simulator's clients;
    /// a player measures it after its welcome, [`super::Input::Nat`]).
    pub nat: proto::nat::NatClass,
    /// Misbehaviour for the tests of the defences against it (cargo feature `faults`).
    #[cfg(feature = "faults")]
    pub faults: Faults,
}

/// The ways a test makes a peer misbehave.
#[cfg(feature = "faults")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Flip a byte in every chunk forwarded to children.
    pub tamper: bool,
    /// Accept children but never forward them anything.
    pub deny: bool,
}

impl PeerConfig {
    pub fn new(channel: ChannelId) -> Self {
        Self {
            channel,
            token: String::new(),
            upload_kbps: 600,
            listen: None,
            buffer: BufferConfig::default(),
            heartbeat: Duration::from_secs(5),
            // Live figures on the NOC: at most ~10 s old (per-minute rows are the edge's).
            report_interval: Duration::from_secs(10),
            late_ms: 2_000,
            catchup_ms: 15_000,
            repair: RepairConfig::default(),
            mesh_links: 4,
            map_interval: Duration::from_secs(1),
            tick: Duration::from_millis(200),
            pull_only: false,
            redirects: 0,
            nat: proto::nat::NatClass::Unknown,
            #[cfg(feature = "faults")]
            faults: Faults::default(),
        }
    }

    /// Low-latency mode: a `target_ms` buffer (the edge's start burst and the start point follow
    /// from it), caught up at a keyframe when lagging beyond it, a parent's backlog no deeper
    /// than the target, and lateness noticed after a second.
    pub fn low_latency(mut self, target_ms: u32) -> Self {
        self.buffer = BufferConfig::low_latency(target_ms);
        self.catchup_ms = self.buffer.buffer_ms;
        self.late_ms = 1_000;
        self
    }
}
