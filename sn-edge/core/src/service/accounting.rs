//! Honest accounting (NetSession §6.2's accounting attacks): a client's claimed upload is checked
//! against what the clients it fed say they took from it. Receivers report on their own clock,
//! once a report interval, so a claim is judged only once every receiver has had a full interval
//! (and a quarter) to confirm it; a receiver that vanishes never confirms what it got since its
//! last report, so its parents are excused that much. A client whose claims outrun what is
//! confirmed is flagged, and its claims leave the edge's upload figures (what P2P billing and the
//! NAT contribution are computed from).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use proto::DetMap;
use proto::peer::{PeerId, PeerReport};

/// Claims may exceed confirmations by this factor plus [`SLACK`] before a client is flagged:
/// honest clients lose some confirmation to children that vanish; inflators claim many times
/// what they send.
const FACTOR: u64 = 2;
const SLACK: u64 = 1 << 20;
/// Longest report interval believed (a client cannot slow judgement down beyond it).
const MAX_INTERVAL_MS: u32 = 600_000;

struct Ledger {
    claimed: u64,
    /// (report time, claims up to it), from the newest report old enough to judge on.
    history: VecDeque<(Instant, u64)>,
    /// What receivers confirmed, plus what vanished receivers could not.
    confirmed: u64,
    flagged: bool,
    /// The client's last report (or its join): what it received since is not confirmed yet.
    since: Instant,
}

#[derive(Default)]
pub(super) struct Accounting {
    ledgers: DetMap<PeerId, Ledger>,
    /// The longest report interval clients have shown (they report on their own schedule).
    longest_ms: u32,
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
    pub fn join(&mut self, peer: PeerId, now: Instant) {
        self.ledgers.entry(peer).or_insert(Ledger {
            claimed: 0,
            history: VecDeque::new(),
            confirmed: 0,
            flagged: false,
            since: now,
        });
    }

    /// `peer` left without a last report. What its parents sent it since its previous report can
    /// never be confirmed, so each is excused up to that: `fed_by` holds each parent and the
    /// substreams it fed; `sub_rate` is a substream's bytes per second.
    pub fn vanished(&mut self, peer: PeerId, now: Instant, fed_by: &[(PeerId, u64)], sub_rate: u64) {
        let Some(gone) = self.ledgers.remove(&peer) else { return };
        let secs = now.saturating_duration_since(gone.since).as_secs_f64();
        for &(parent, substreams) in fed_by {
            if let Some(l) = self.ledgers.get_mut(&parent) {
                // Twice the stream's rate: a new child's catch-up comes faster than live.
                let excused = (substreams.saturating_mul(sub_rate) as f64 * secs * 2.0) as u64;
                l.confirmed = l.confirmed.saturating_add(excused);
            }
        }
    }

    pub fn report(&mut self, peer: PeerId, r: &PeerReport, now: Instant) -> Verdict {
        for &(sender, bytes) in &r.from_peers {
            if sender != peer
                && let Some(l) = self.ledgers.get_mut(&sender)
            {
                l.confirmed = l.confirmed.saturating_add(bytes);
            }
        }
        self.longest_ms = self.longest_ms.max(r.interval_ms.min(MAX_INTERVAL_MS));
        let window = Duration::from_millis(u64::from(self.longest_ms) * 5 / 4);
        let Some(l) = self.ledgers.get_mut(&peer) else { return Verdict::Counted };
        l.since = now;
        if l.flagged {
            return Verdict::Excluded;
        }
        l.claimed = l.claimed.saturating_add(r.bytes_up);
        l.history.push_back((now, l.claimed));
        while l.history.get(1).is_some_and(|&(t, _)| t + window <= now) {
            l.history.pop_front();
        }
        // Claims up to a report every receiver has since had a whole interval to confirm. (A
        // client's last report, as it leaves, comes early: judging its claims up to the report
        // before, as receivers had not reported since, flagged 0.17 % of honest clients.)
        let judged = l.history.front().filter(|&&(t, _)| t + window <= now).map_or(0, |&(_, c)| c);
        if judged > l.confirmed.saturating_mul(FACTOR).saturating_add(SLACK) {
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

    const MINUTE: Duration = Duration::from_secs(60);

    fn report(up: u64, from: &[(PeerId, u64)]) -> PeerReport {
        PeerReport { interval_ms: 60_000, bytes_up: up, from_peers: from.to_vec(), ..Default::default() }
    }

    #[test]
    fn claims_backed_by_receivers_count_and_inflated_ones_are_flagged() {
        let t0 = Instant::now();
        let mut a = Accounting::default();
        for p in (1..=5).map(PeerId) {
            a.join(p, t0);
        }
        // Peer 1 sends 3 MB a minute to 2 and 3, and says so; they confirm on their own minute.
        for i in 1..=5 {
            let t = t0 + MINUTE * i;
            assert_eq!(a.report(PeerId(1), &report(3 << 20, &[]), t), Verdict::Counted);
            a.report(PeerId(2), &report(0, &[(PeerId(1), 2 << 20)]), t + MINUTE / 3);
            a.report(PeerId(3), &report(0, &[(PeerId(1), 1 << 20)]), t + MINUTE / 2);
        }
        // Peer 4 feeds 2 with 1 MB a minute but claims 30.
        let mut verdicts = Vec::new();
        for i in 1..=4 {
            let t = t0 + MINUTE * (5 + i);
            verdicts.push(a.report(PeerId(4), &report(30 << 20, &[]), t));
            a.report(PeerId(2), &report(0, &[(PeerId(4), 1 << 20)]), t + MINUTE / 3);
        }
        assert_eq!(verdicts[..2], [Verdict::Counted, Verdict::Counted], "not judged before receivers reported");
        assert_eq!(verdicts[2..], [Verdict::Flagged { earlier: 60 << 20 }, Verdict::Excluded]);
        assert_eq!(a.flagged(), 1);
        a.report(PeerId(2), &report(0, &[(PeerId(99), 1 << 30)]), t0 + MINUTE * 10);
        assert_eq!(a.ledgers.len(), 5, "senders that are not clients get no books");
        // A client cannot confirm its own claims.
        for i in 1..=2 {
            assert_eq!(
                a.report(PeerId(5), &report(30 << 20, &[(PeerId(5), 30 << 20)]), t0 + MINUTE * (10 + i)),
                Verdict::Counted
            );
        }
        assert!(matches!(
            a.report(PeerId(5), &report(0, &[(PeerId(5), 30 << 20)]), t0 + MINUTE * 13),
            Verdict::Flagged { .. }
        ));
    }

    /// The simulator's finding: an honest sender that left (its last report comes early) was
    /// judged on claims its receivers had not had the time to confirm.
    #[test]
    fn a_leaving_sender_is_not_judged_before_its_receivers_could_confirm() {
        let t0 = Instant::now();
        let mut a = Accounting::default();
        a.join(PeerId(1), t0);
        a.join(PeerId(2), t0 + MINUTE / 2);
        a.report(PeerId(2), &report(0, &[]), t0 + MINUTE / 2 + MINUTE);
        assert_eq!(a.report(PeerId(1), &report(3 << 20, &[]), t0 + MINUTE), Verdict::Counted);
        // Leaving 2 s later, before 2's next report confirms the 3 MB.
        assert_eq!(a.report(PeerId(1), &report(100_000, &[]), t0 + MINUTE + Duration::from_secs(2)), Verdict::Counted);
    }

    /// A child that vanished cannot confirm its last minute: its parent is excused that.
    #[test]
    fn a_parent_whose_child_vanished_is_excused_what_the_child_never_confirmed() {
        let t0 = Instant::now();
        let sub_rate = 400 * 125 / 4;
        let claim = 2 * sub_rate * 60;
        for vanished in [false, true] {
            let mut a = Accounting::default();
            a.join(PeerId(1), t0);
            a.join(PeerId(2), t0);
            assert_eq!(a.report(PeerId(1), &report(claim, &[]), t0 + MINUTE), Verdict::Counted);
            if vanished {
                a.vanished(PeerId(2), t0 + MINUTE + MINUTE / 2, &[(PeerId(1), 2)], sub_rate);
            }
            assert_eq!(a.report(PeerId(1), &report(claim, &[]), t0 + 2 * MINUTE), Verdict::Counted);
            let verdict = a.report(PeerId(1), &report(claim, &[]), t0 + 3 * MINUTE);
            assert_eq!(verdict == Verdict::Counted, vanished, "vanished child: {vanished}");
        }
        // The excuse is bounded by the time the child was there: a liar gains little by it.
        let mut a = Accounting::default();
        a.join(PeerId(1), t0);
        a.join(PeerId(2), t0);
        a.report(PeerId(1), &report(30 << 20, &[]), t0 + MINUTE);
        a.vanished(PeerId(2), t0 + MINUTE, &[(PeerId(1), 2)], sub_rate);
        a.report(PeerId(1), &report(0, &[]), t0 + 2 * MINUTE);
        assert!(matches!(a.report(PeerId(1), &report(0, &[]), t0 + 3 * MINUTE), Verdict::Flagged { .. }));
    }
}
