//! The paper's quality figures (LiveSky §4), computed in one place for the edge's log, `livesky mc
//! report`, the swarm table, the simulator and the NOC, so they all mean the same thing:
//!
//! - **Q1**, playback continuity: played / (played + stalled) time of a session or a period;
//! - **Q2**, the share of clients that did not rebuffer: 1 − NB/NT over reports (or edge-minutes);
//! - **P2P share**: bytes (or bit/s) that came from peers over all bytes delivered.
//!
//! Q1 and Q2 are `None` with nothing to judge (no playing time, no reports): a dashboard shows "–",
//! not a perfect score.

/// Q1 = played / (played + stalled).
pub fn q1(played_ms: u64, stalled_ms: u64) -> Option<f64> {
    let total = played_ms.saturating_add(stalled_ms);
    (total > 0).then(|| played_ms as f64 / total as f64)
}

/// Q2 = 1 − stalled / all, over reports (or clients) in a period.
pub fn q2(stalled: u64, all: u64) -> Option<f64> {
    (all > 0).then(|| 1.0 - stalled.min(all) as f64 / all as f64)
}

/// Share of the delivered amount that came from peers (0 when nothing was delivered). Takes bytes
/// or rates alike.
pub fn p2p_share(from_peers: f64, from_cdn: f64) -> f64 {
    let total = from_peers + from_cdn;
    if total > 0.0 { from_peers / total } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_to_judge_is_none_not_perfect() {
        assert_eq!(q1(0, 0), None);
        assert_eq!(q1(900, 100), Some(0.9));
        assert_eq!(q2(0, 0), None);
        assert_eq!(q2(1, 4), Some(0.75));
        assert_eq!(q2(9, 4), Some(0.0), "more stalled than reported is clamped");
        assert_eq!(p2p_share(0.0, 0.0), 0.0);
        assert_eq!(p2p_share(3.0, 1.0), 0.75);
    }
}
