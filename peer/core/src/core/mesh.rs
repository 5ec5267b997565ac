//! The mesh: neighbours the edge named, the buffer maps they asked for, and the repair (or, in
//! a pure mesh, the pull) of chunks missing near the playback deadline.

use super::*;

impl PeerCore {
    /// Links to up to `mesh_links` of the neighbours the edge named.
    pub(super) fn link_mesh(&mut self, list: Vec<(PeerId, SocketAddr)>) {
        let me = self.peer_id();
        for (id, addr) in list {
            if self.mesh.len() >= self.cfg.mesh_links {
                break;
            }
            if Some(id) == me || self.mesh.values().any(|&p| p == id) {
                continue;
            }
            let link = LinkId::Out(self.next_link);
            self.next_link += 1;
            self.mesh.insert(link, id);
            self.out.push_back(Output::Connect { link, peer: id, addr });
        }
    }

    /// Buffer maps go to the links that asked for them lately; in a pure mesh, which pulls
    /// everything by maps, to every neighbour.
    pub(super) fn send_maps(&mut self, now: Instant) {
        self.map_wanted.retain(|_, until| *until > now);
        // A pure mesh has no parents: its open links are its neighbours.
        let targets: Vec<LinkId> = if self.cfg.pull_only {
            self.open_links()
        } else {
            self.map_wanted.keys().copied().filter(|&l| self.is_open(l)).collect()
        };
        if targets.is_empty() {
            return;
        }
        if let Some(map) = self.buffer_map_msg() {
            for link in targets {
                self.out.push_back(Output::Send { link, msg: map.clone() });
            }
        }
    }

    /// Asks every linked peer for its buffer map (we have chunks to repair), at most once per
    /// half lease.
    pub(super) fn want_maps(&mut self, now: Instant) {
        if self.maps_asked.is_some_and(|at| now.saturating_duration_since(at) < MAP_LEASE / 2) {
            return;
        }
        self.maps_asked = Some(now);
        for link in self.open_links() {
            self.out.push_back(Output::Send { link, msg: PeerLink::WantMaps });
        }
    }

    /// Our buffer map: which of the last 256 chunks we hold.
    pub(super) fn buffer_map_msg(&self) -> Option<PeerLink> {
        let newest = self.buffer.newest_seq()?;
        const SPAN: usize = 256;
        let first = newest.saturating_sub(SPAN as u64 - 1);
        let bits = buffer_map(first, SPAN, self.buffer.seqs_from(first));
        Some(PeerLink::BufferMap { first_seq: first, bits })
    }

    /// Asks neighbours for chunks missing close to their playback deadline.
    pub(super) fn plan_repair(&mut self, now: Instant) {
        if self.cfg.pull_only {
            return self.plan_pull(now);
        }
        let (Some(next), Some(newest)) = (self.buffer.next_seq(), self.buffer.newest_seq()) else { return };
        if self.repair.config().window_ms == 0 {
            return;
        }
        // A chunk is missing once every substream has delivered something later (2 rounds), or,
        // when it plays within the lead, once any later chunk is here: the deadline comes from
        // the playback point, not from how coarse the substreams are.
        let settled = newest.saturating_sub(2 * u64::from(self.k()));
        let frame = self.buffer.frame_90k().max(1);
        let urgent = (next + chunks_in(self.repair.config().lead_ms, frame)).min(newest);
        let end = settled.max(urgent).min(next + chunks_in(self.repair.config().window_ms, frame));
        let missing: Vec<u64> = (next..end).filter(|&s| !self.buffer.contains(s)).collect();
        if missing.is_empty() {
            return;
        }
        self.want_maps(now);
        self.ask(now, &missing);
    }

    /// Requests `missing` chunks from the neighbours most likely to have them.
    pub(super) fn ask(&mut self, now: Instant, missing: &[u64]) {
        let mut reqs = Vec::new();
        self.repair.plan(now, missing, &mut reqs);
        for (link, seq) in reqs {
            self.out.push_back(Output::Send { link, msg: PeerLink::Request { seq } });
        }
    }

    /// Pure mesh: pull everything neighbours hold from where playback is (or, before it starts,
    /// from the start threshold's worth behind the newest chunk any neighbour holds).
    pub(super) fn plan_pull(&mut self, now: Instant) {
        let Some(known) = self.repair.newest_known().max(self.buffer.newest_seq()) else { return };
        // Two chunks first, to learn how much media a chunk holds.
        let Some(frame) = self.buffer.frame_estimate() else {
            let missing: Vec<u64> =
                [known.saturating_sub(1), known].into_iter().filter(|&s| !self.buffer.contains(s)).collect();
            return self.ask(now, &missing);
        };
        let start_back = chunks_in(self.cfg.buffer.start_ms, frame) + 2;
        let next = self.buffer.next_seq().unwrap_or_else(|| known.saturating_sub(start_back));
        let window = chunks_in(self.cfg.buffer.buffer_ms, frame);
        let missing: Vec<u64> = (next..=known.min(next + window)).filter(|&s| !self.buffer.contains(s)).collect();
        if missing.is_empty() {
            return;
        }
        self.ask(now, &missing);
    }
}

/// How many chunks of `frame_90k` media each make `ms` (rounded down).
fn chunks_in(ms: u32, frame_90k: u64) -> u64 {
    u64::from(ms) * 90 / frame_90k
}
