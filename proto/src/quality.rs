//! The paper's quality figures (LiveSky §4), computed in one place for the edge's log, `livesky mc
//! report`, the swarm table, the simulator and the NOC, so they all mean the same thing:
//!
//! - **Q1**, playback continuity: played / (played + stalled) time of a session or a period;
//! - **Q2**, the share of clients that did not rebuffer: 1 − NB/NT over reports (or edge-minutes);
//! - **P2P share**: bytes (or bit/s) that came from peers over all bytes delivered;
//! - **glass-to-glass latency**: wall clock at playback − the chunk's ingest wall clock, kept as a
//!   [`LatencyHistogram`] so that players, edges, the MC and the simulator can add them up and still
//!   give true percentiles (a median of medians is not a median).
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

/// Upper bounds of the latency buckets, ms: fine where a live player should sit (≤ 5 s), coarse
/// beyond; the last bucket holds everything over a minute.
pub const LATENCY_BOUNDS_MS: [u32; 24] = [
    250,
    500,
    750,
    1_000,
    1_250,
    1_500,
    1_750,
    2_000,
    2_500,
    3_000,
    3_500,
    4_000,
    5_000,
    6_000,
    8_000,
    10_000,
    12_500,
    15_000,
    20_000,
    25_000,
    30_000,
    45_000,
    60_000,
    u32::MAX,
];

/// Played chunks counted by glass-to-glass latency. Plain counts, so histograms from many
/// players or intervals merge by addition and subtract to deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencyHistogram {
    pub counts: [u64; LATENCY_BOUNDS_MS.len()],
}

impl LatencyHistogram {
    pub fn record(&mut self, latency_ms: u64) {
        let i =
            LATENCY_BOUNDS_MS.iter().position(|&b| latency_ms <= u64::from(b)).unwrap_or(LATENCY_BOUNDS_MS.len() - 1);
        self.counts[i] = self.counts[i].saturating_add(1);
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &c| a.saturating_add(c))
    }

    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a = a.saturating_add(b);
        }
    }

    /// What was counted since `earlier` (an older copy of this histogram).
    pub fn since(&self, earlier: &LatencyHistogram) -> LatencyHistogram {
        let mut d = *self;
        for (a, b) in d.counts.iter_mut().zip(earlier.counts) {
            *a = a.saturating_sub(b);
        }
        d
    }

    /// The `q` quantile (0..=1) in ms, interpolated within its bucket; `None` when empty. Over a
    /// minute reads as 60,000.
    pub fn quantile_ms(&self, q: f64) -> Option<u32> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut below = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            let upto = below.saturating_add(c);
            if c > 0 && upto as f64 >= rank {
                let lo = if i == 0 { 0 } else { LATENCY_BOUNDS_MS[i - 1] };
                let hi = LATENCY_BOUNDS_MS[i];
                if hi == u32::MAX {
                    return Some(lo);
                }
                let frac = (rank - below as f64) / c as f64;
                return Some(lo + (f64::from(hi - lo) * frac).round() as u32);
            }
            below = upto;
        }
        Some(LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.len() - 2])
    }

    /// p50 and p95, ms.
    pub fn p50_p95(&self) -> Option<(u32, u32)> {
        Some((self.quantile_ms(0.5)?, self.quantile_ms(0.95)?))
    }

    /// Counts with the trailing empty buckets left off (what goes on a wire or in a row).
    pub fn trimmed(&self) -> &[u64] {
        let n = self.counts.iter().rposition(|&c| c > 0).map_or(0, |i| i + 1);
        &self.counts[..n]
    }

    /// From counts as [`LatencyHistogram::trimmed`] gives them; `None` if there are more than buckets.
    pub fn from_counts(counts: &[u64]) -> Option<LatencyHistogram> {
        let mut h = LatencyHistogram::default();
        h.counts.get_mut(..counts.len())?.copy_from_slice(counts);
        Some(h)
    }
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

    #[test]
    fn latency_quantiles_merge_and_deltas() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.p50_p95(), None);
        for ms in [100, 200, 900, 1_100, 1_900, 2_100, 2_200, 2_300, 2_400, 70_000] {
            h.record(ms);
        }
        assert_eq!(h.total(), 10);
        // 5th of 10 is in (1,750, 2,000]: one of one there.
        assert_eq!(h.quantile_ms(0.5), Some(2_000));
        assert_eq!(h.quantile_ms(1.0), Some(60_000), "over a minute reads as a minute");
        let before = h;
        let mut other = LatencyHistogram::default();
        other.record(3_000);
        h.merge(&other);
        assert_eq!(h.since(&before), other);
        assert_eq!(LatencyHistogram::from_counts(h.trimmed()), Some(h));
        assert_eq!(LatencyHistogram::from_counts(&[1; 25]), None, "more counts than buckets");
        let mut tight = LatencyHistogram::default();
        for _ in 0..100 {
            tight.record(2_200);
        }
        let (p50, p95) = tight.p50_p95().unwrap_or_default();
        assert!((2_000..=2_500).contains(&p50) && p95 <= 2_500 && p50 <= p95, "{p50} {p95}");
    }
}
