//! Messages on peer links: hellos (a peer is who the edge says it is), subscriptions, chunks
//! from parents and neighbours (each checked before it is played or forwarded), maps, repair
//! requests (a favour with a budget per link), and links opening and closing.

use super::*;

impl PeerCore {
    pub(super) fn on_peer(&mut self, now: Instant, link: LinkId, msg: PeerLink) {
        // Mesh messages are welcome on any open link. A map still in flight when its link closed
        // must not be kept: links are never reused, so it would stay for good.
        match msg {
            PeerLink::BufferMap { first_seq, bits } => {
                if self.is_open(link) {
                    self.repair.on_map(link, first_seq, bits);
                    // An answer to our WantMaps: what we are missing may be asked for now,
                    // not at the next tick.
                    if !self.cfg.pull_only && self.maps_asked.is_some() {
                        self.plan_repair(now);
                    }
                }
                return;
            }
            PeerLink::Request { seq } => {
                if !self.is_open(link) {
                    return;
                }
                // Repairs are a favour with a budget per link: a neighbour asking faster is told
                // NotHave and asks elsewhere.
                let budget = self
                    .repair_budget
                    .entry(link)
                    .or_insert_with(|| TokenBucket::new(REPAIRS_PER_SEC, REPAIR_BURST))
                    .try_take(now, 1.0);
                match self.buffer.get(seq).filter(|_| budget).cloned() {
                    Some(c) => {
                        self.repair.count_served();
                        self.up_queue.push_back((link, c));
                        self.trim_up_queue();
                        self.drain_up(now);
                    }
                    None => self.out.push_back(Output::Send { link, msg: PeerLink::NotHave { seq } }),
                }
                return;
            }
            PeerLink::NotHave { seq } => {
                self.repair.on_not_have(link, seq);
                return;
            }
            PeerLink::WantMaps => {
                if self.is_open(link) {
                    let first = self.map_wanted.insert(link, now + MAP_LEASE).is_none();
                    // The first map goes at once: the asker is repairing now.
                    if first && let Some(map) = self.buffer_map_msg() {
                        self.out.push_back(Output::Send { link, msg: map });
                    }
                }
                return;
            }
            _ => {}
        }
        if let Some(&pid) = self.link_parent.get(&link) {
            match msg {
                PeerLink::Chunk(c) => {
                    if !self.authentic(&c) {
                        // Never played, never forwarded; the sender is reported and dropped, and
                        // the edge gives us another parent.
                        self.out.push_back(Output::ToEdge(ToEdge::BadChunk { from: pid, seq: c.seq() }));
                        self.close(link);
                        self.parent_gone(link, Trouble::Lost);
                        return;
                    }
                    let s = self.substream_of(&c);
                    let pushed = self.parents.get(&pid).is_some_and(|p| p.mask & (1u64 << s) != 0);
                    if pushed && let Some(sub) = self.substreams.get_mut(usize::from(s)) {
                        sub.parent_sent = true;
                    }
                    self.received_from(Some(pid), c.payload.len());
                    let wanted = pushed || self.repair.on_chunk(link, c.seq());
                    if wanted {
                        self.stats.bytes_from_peers += c.payload.len() as u64;
                        self.on_chunk(c);
                    }
                }
                PeerLink::Bye => {
                    self.close(link);
                    self.parent_gone(link, Trouble::Lost);
                }
                _ => {}
            }
            return;
        }
        let msg = match msg {
            PeerLink::Chunk(c) => {
                // From a neighbour or child: taken only as the answer to our own request.
                let from = self
                    .mesh
                    .get(&link)
                    .copied()
                    .or_else(|| self.children.get(&link).filter(|c| c.trusted).and_then(|c| c.peer));
                self.received_from(from, c.payload.len());
                if self.repair.on_chunk(link, c.seq()) {
                    if self.authentic(&c) {
                        self.stats.bytes_from_peers += c.payload.len() as u64;
                        self.on_chunk(c);
                    } else {
                        if let Some(&from) = self.mesh.get(&link) {
                            self.out.push_back(Output::ToEdge(ToEdge::BadChunk { from, seq: c.seq() }));
                        }
                        self.drop_link(link);
                    }
                }
                return;
            }
            other => other,
        };
        if self.mesh.contains_key(&link) {
            if msg == PeerLink::Bye {
                self.drop_link(link);
            }
            return;
        }
        let Some(child) = self.children.get_mut(&link) else { return };
        match msg {
            PeerLink::Hello { version, channel, .. }
                if (version != CLIENT_PROTOCOL_VERSION || channel != self.cfg.channel) =>
            {
                self.children.remove(&link);
                self.close(link);
            }
            // A peer is who the edge says it is: a Hello naming another (to borrow its
            // introduction) ends the link.
            PeerLink::Hello { peer, .. } if child.peer.is_some_and(|p| p != peer) => {
                self.stats.impostors += 1;
                self.children.remove(&link);
                self.close(link);
            }
            PeerLink::Hello { peer, .. } if !child.trusted => {
                child.peer = Some(peer);
                if self.introduced.knows(peer, now) {
                    self.trust_child(now, link);
                }
            }
            PeerLink::Subscribe { substreams, from_seq } if !child.trusted => {
                child.pending = Some((substreams, from_seq));
            }
            PeerLink::Subscribe { substreams, from_seq } => self.subscribe_child(now, link, substreams, from_seq),
            PeerLink::Bye => {
                self.children.remove(&link);
                self.close(link);
            }
            // Chunks from a child are not ours to take; requests are answered by the mesh (later).
            _ => {}
        }
    }

    /// An open link to a peer we may deal with: one we made, or an introduced child.
    pub(super) fn is_open(&self, link: LinkId) -> bool {
        self.children.get(&link).is_some_and(|c| c.trusted)
            || self.mesh.contains_key(&link)
            || self.link_parent.contains_key(&link)
    }

    /// Every link [`PeerCore::is_open`] accepts: parents, mesh neighbours, introduced children.
    pub(super) fn open_links(&self) -> Vec<LinkId> {
        let children = self.children.iter().filter(|(_, c)| c.trusted).map(|(l, _)| l);
        self.link_parent.keys().chain(self.mesh.keys()).chain(children).copied().collect()
    }

    pub(super) fn drop_link(&mut self, link: LinkId) {
        self.mesh.remove(&link);
        self.children.remove(&link);
        self.close(link);
    }

    /// Closes `link`, forgetting its buffer map and requests (else they pile up for good: links
    /// are never reused).
    pub(super) fn close(&mut self, link: LinkId) {
        self.repair.link_gone(link);
        self.repair_budget.remove(&link);
        self.out.push_back(Output::Close { link });
    }
}
