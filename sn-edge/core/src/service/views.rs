//! Who is in the channel, for operators (`/p2p/clients`) and the testbed: each client's address,
//! NAT, and who feeds it — the tree as the tracker holds it.

use super::*;

/// One client as the tracker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientView {
    pub peer: PeerId,
    /// Where its connection comes from (its router's public address, for a peer behind a NAT).
    pub from: SocketAddr,
    pub nat: NatClass,
    /// Its address as the edge's STUN server saw it (from its NAT test).
    pub stun_addr: Option<SocketAddr>,
    pub push: bool,
    pub page: bool,
    /// Per substream: who feeds it.
    pub feeds: Vec<Feed>,
    /// Substreams it forwards to children, and the slots it has.
    pub used_slots: u16,
    pub slots: u16,
}

impl Service {
    /// The first `limit` clients, by id (a channel may hold tens of thousands).
    pub fn client_views(&self, limit: usize) -> Vec<ClientView> {
        let tracker = self.admission.tracker();
        let mut ids: Vec<PeerId> = self.clients.keys().copied().collect();
        ids.sort_unstable();
        ids.truncate(limit);
        ids.into_iter()
            .filter_map(|peer| {
                let c = self.clients.get(&peer)?;
                let (used_slots, slots) = tracker.slots(peer).unwrap_or((0, 0));
                Some(ClientView {
                    peer,
                    from: c.from,
                    nat: c.nat,
                    stun_addr: c.stun_addr,
                    push: tracker.is_push(peer),
                    page: c.page,
                    feeds: tracker.feeds(peer).map(<[Feed]>::to_vec).unwrap_or_default(),
                    used_slots,
                    slots,
                })
            })
            .collect()
    }
}
