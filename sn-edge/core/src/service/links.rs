//! Who the edge put in touch with whom. Every peer link starts with the edge introducing two of
//! its clients (a parent and its child, or mesh neighbours); a client may only say something
//! about a peer it was introduced to: report its chunks as forged, confirm bytes from it, or
//! have signalling relayed to it. A stranger's word about a client it never met counts for
//! nothing, so one attacker cannot get honest peers banned, vouch for a sybil's upload, or
//! flood a victim's signalling queue.

use std::collections::VecDeque;

use proto::DetMap;
use proto::peer::PeerId;

/// Introductions remembered per client (its mesh, its parents over time, its children): the
/// oldest go first.
const MAX_LINKS: usize = 256;

#[derive(Default)]
pub(super) struct Links {
    of: DetMap<PeerId, VecDeque<PeerId>>,
}

impl Links {
    /// The edge introduced `a` and `b` to each other.
    pub fn link(&mut self, a: PeerId, b: PeerId) {
        for (x, y) in [(a, b), (b, a)] {
            let list = self.of.entry(x).or_default();
            if !list.contains(&y) {
                if list.len() >= MAX_LINKS {
                    list.pop_front();
                }
                list.push_back(y);
            }
        }
    }

    pub fn linked(&self, a: PeerId, b: PeerId) -> bool {
        self.of.get(&a).is_some_and(|l| l.contains(&b))
    }

    /// `peer` left: its own list goes (others keep its id; ids are never reused).
    pub fn forget(&mut self, peer: PeerId) {
        self.of.remove(&peer);
    }
}

/// A stable key for an identity string (token client id, else address): reporters are counted
/// by identity, and the simulator must give the same result on every run.
pub(super) fn identity_key(identity: &str) -> u64 {
    identity.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_mutual_bounded_and_forgotten() {
        let mut l = Links::default();
        l.link(PeerId(1), PeerId(2));
        assert!(l.linked(PeerId(1), PeerId(2)) && l.linked(PeerId(2), PeerId(1)));
        assert!(!l.linked(PeerId(1), PeerId(3)));
        for p in (10..(10 + MAX_LINKS as u64)).map(PeerId) {
            l.link(PeerId(1), p);
        }
        assert!(!l.linked(PeerId(1), PeerId(2)), "the oldest introduction made room");
        assert!(l.linked(PeerId(2), PeerId(1)), "the other side's list is its own");
        l.forget(PeerId(2));
        assert!(!l.linked(PeerId(2), PeerId(1)));
        assert_ne!(identity_key("ip:10.0.0.1"), identity_key("ip:10.0.0.2"));
    }
}
