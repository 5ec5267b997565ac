//! Honest accounting (NetSession §6.2's accounting attacks): a client's claimed upload is checked
//! against what the clients it fed say they took from it. Receivers report on their own minute,
//! so a sender's claims are judged only up to its previous report — by then every receiver has
//! reported past that point — and with room for receivers that left without a last report. A
//! client whose claims outrun that is flagged, and its claims leave the edge's upload figures
//! (what P2P billing and the NAT contribution are computed from).

use proto::DetMap;
use proto::peer::{PeerId, PeerReport};

/// Claims may exceed confirmations by this factor plus [`SLACK`] before a client is flagged:
/// honest clients lose some confirmation to children that vanish; inflators claim many times
/// what they send.
const FACTOR: u64 = 2;
const SLACK: u64 = 1 << 20;

#[derive(Default)]
struct Ledger {
    claimed: u64,
    /// Claims up to the client's previous report.
    judged: u64,
    confirmed: u64,
    flagged: bool,
}

#[derive(Default)]
pub(super) struct Accounting {
    ledgers: DetMap<PeerId, Ledger>,
}

/// What one report did to the books.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The claim counts.
    Counted,
    /// The client is flagged: none of its claims count, `earlier` of them already had.
    Flagged { earlier: u64 },
    /// Flagged before: this claim does not count.
    Excluded,
}

impl Accounting {
    /// Opens the books of a client (only clients' confirmations are kept: a receiver naming a
    /// sender that left, or never was, costs nothing).
    pub fn join(&mut self, peer: PeerId) {
        self.ledgers.entry(peer).or_default();
    }

    pub fn report(&mut self, peer: PeerId, r: &PeerReport) -> Verdict {
        for &(sender, bytes) in &r.from_peers {
            if sender != peer
                && let Some(l) = self.ledgers.get_mut(&sender)
            {
                l.confirmed = l.confirmed.saturating_add(bytes);
            }
        }
        let Some(l) = self.ledgers.get_mut(&peer) else { return Verdict::Counted };
        if l.flagged {
            return Verdict::Excluded;
        }
        l.judged = l.claimed;
        l.claimed = l.claimed.saturating_add(r.bytes_up);
        if l.judged > l.confirmed.saturating_mul(FACTOR).saturating_add(SLACK) {
            l.flagged = true;
            return Verdict::Flagged { earlier: l.claimed - r.bytes_up };
        }
        Verdict::Counted
    }

    pub fn forget(&mut self, peer: PeerId) {
        self.ledgers.remove(&peer);
    }

    #[cfg(test)]
    fn flagged(&self) -> usize {
        self.ledgers.values().filter(|l| l.flagged).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(up: u64, from: &[(PeerId, u64)]) -> PeerReport {
        PeerReport { bytes_up: up, from_peers: from.to_vec(), ..Default::default() }
    }

    #[test]
    fn claims_backed_by_receivers_count_and_inflated_ones_are_flagged() {
        let mut a = Accounting::default();
        for p in 1..=5 {
            a.join(p);
        }
        // Peer 1 sends 3 MB a minute to 2 and 3, and says so; they confirm a minute later.
        for _ in 0..5 {
            assert_eq!(a.report(1, &report(3 << 20, &[])), Verdict::Counted);
            a.report(2, &report(0, &[(1, 2 << 20)]));
            a.report(3, &report(0, &[(1, 1 << 20)]));
        }
        // Peer 4 feeds 2 with 1 MB a minute but claims 30.
        let mut verdicts = Vec::new();
        for _ in 0..3 {
            verdicts.push(a.report(4, &report(30 << 20, &[])));
            a.report(2, &report(0, &[(4, 1 << 20)]));
        }
        assert_eq!(verdicts, [Verdict::Counted, Verdict::Flagged { earlier: 30 << 20 }, Verdict::Excluded]);
        assert_eq!(a.flagged(), 1);
        a.report(2, &report(0, &[(99, 1 << 30)]));
        assert_eq!(a.ledgers.len(), 5, "senders that are not clients get no books");
        // A client cannot confirm its own claims.
        assert_eq!(a.report(5, &report(30 << 20, &[(5, 30 << 20)])), Verdict::Counted);
        assert!(matches!(a.report(5, &report(30 << 20, &[(5, 30 << 20)])), Verdict::Flagged { .. }));
    }
}
