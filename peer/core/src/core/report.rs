//! What the peer tells its edge about itself: the per-interval report (played and stalled time,
//! bytes by source, and bytes per sender the edge checks upload claims against) and its stats.

use super::*;
use proto::quality::LatencyHistogram;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PeerStats {
    pub play: PlayStats,
    pub bytes_from_edge: u64,
    pub bytes_from_peers: u64,
    pub bytes_up: u64,
    pub up_dropped: u64,
    /// Links closed because the peer's Hello named another peer than the edge's signalling did.
    pub impostors: u64,
    pub startup: Option<Duration>,
    pub parents: usize,
    pub children: usize,
    pub push: bool,
    pub buffered_ms: u64,
    pub late_reports: u64,
    pub lost_reports: u64,
    /// Chunks dropped because they failed their signature check.
    pub bad_chunks: u64,
    /// Links from peers the edge never introduced, cut off.
    pub strangers: u64,
    /// The edge gave the channel key: every chunk is checked.
    pub verifying: bool,
    pub repair: RepairStats,
    pub mesh: usize,
    /// Open peer links of any kind (parents, children, mesh).
    pub links: usize,
    /// The startup timeline of LiveSky §4.2, from the join request.
    pub timeline: Timeline,
    /// Chunks played, by glass-to-glass latency (once the driver gave the wall clock).
    pub latency: LatencyHistogram,
    /// Chunks received while playing (first copies) by how far behind ingest they arrived: the
    /// feed delay the edge's tracker weighs parents by.
    pub feed_delay: LatencyHistogram,
    /// Glass-to-glass latency of the chunk played last, ms.
    pub latency_ms: Option<u64>,
    /// The buffer target now (the player's own, or the channel's `target_latency_ms` if lower).
    pub buffer_target_ms: u32,
    /// Our id at the edge, once welcomed.
    pub peer_id: Option<PeerId>,
    /// Our NAT's class and our address as the edge's STUN server saw it ([`Input::Nat`]).
    pub nat: NatClass,
    pub stun_addr: Option<SocketAddr>,
}

/// When each startup step happened, measured from the join request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    /// The edge's first reply (Welcome).
    pub login_reply: Option<Duration>,
    pub first_data: Option<Duration>,
    /// Playback started (the start threshold was buffered).
    pub playback: Option<Duration>,
    /// 90 % of the configured buffer was held.
    pub buffer_full: Option<Duration>,
}

impl PeerCore {
    /// Counts media that came from peer `from`, taken or not: the edge checks senders' upload
    /// claims against it, and a sender did spend its upload on a chunk we had already, or on
    /// the answer to a request that timed out meanwhile.
    pub(super) fn received_from(&mut self, from: Option<PeerId>, bytes: usize) {
        if let Some(p) = from {
            *self.received_from.entry(p).or_default() += bytes as u64;
        }
    }

    pub(super) fn report(&mut self, now: Instant) {
        // Between edges the counts wait for the next one: no report is dropped on a move.
        if !matches!(self.phase, Phase::Joined { .. }) {
            return;
        }
        let cur = self.stats();
        let prev = self.reported;
        let r = PeerReport {
            interval_ms: now.saturating_duration_since(self.last_report_at).as_millis() as u32,
            played_ms: cur.play.played_ms.saturating_sub(prev.play.played_ms) as u32,
            stalled_ms: cur.play.stalled_ms.saturating_sub(prev.play.stalled_ms) as u32,
            stalls: (cur.play.stalls - prev.play.stalls) as u32,
            bytes_from_edge: cur.bytes_from_edge - prev.bytes_from_edge,
            bytes_from_peers: cur.bytes_from_peers - prev.bytes_from_peers,
            bytes_up: cur.bytes_up - prev.bytes_up,
            startup_ms: cur.startup.map(|d| d.as_millis() as u32),
            latency: cur.latency.since(&prev.latency),
            delay_ms: cur.feed_delay.since(&prev.feed_delay).quantile_ms(0.5),
            from_peers: {
                let mut v: Vec<(PeerId, u64)> = std::mem::take(&mut self.received_from).into_iter().collect();
                v.sort_by_key(|&(p, b)| (std::cmp::Reverse(b), p));
                v.truncate(proto::peer::MAX_REPORTED_SENDERS);
                v
            },
        };
        self.reported = cur;
        self.last_report_at = now;
        self.out.push_back(Output::ToEdge(ToEdge::Report(r)));
    }

    pub fn stats(&self) -> PeerStats {
        PeerStats {
            play: self.buffer.stats_at(self.last_now),
            parents: self.parents.len(),
            // Linked peers that subscribed to something (mesh neighbours only ask for repairs).
            children: self.children.values().filter(|c| c.mask != 0).count(),
            push: self.push,
            buffered_ms: self.buffer.buffered_ms(),
            verifying: self.verifier.is_some(),
            repair: self.repair.stats(),
            mesh: self.mesh.len(),
            links: self.link_parent.len() + self.children.len() + self.mesh.len(),
            timeline: Timeline { playback: self.stats.startup, ..self.stats.timeline },
            buffer_target_ms: self.cfg.buffer.buffer_ms,
            peer_id: match self.phase {
                Phase::Joined { id, .. } => Some(id),
                _ => None,
            },
            ..self.stats
        }
    }
}
