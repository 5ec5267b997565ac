//! What the NOC sees now (sans-IO): the edges' heartbeats carry running totals per channel;
//! rates are the change over the last `WINDOW` of samples, summed over edges. A bounded history
//! of overview points feeds the dashboard's chart, so a dashboard left open costs nothing more
//! over time.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use proto::NodeId;
use serde::Serialize;
use sn_core::mc::ReportRow;

/// Rates are measured over this much of the latest samples.
pub const WINDOW: Duration = Duration::from_secs(10);
/// How often a point is recorded and dashboards are told.
pub const EVERY: Duration = Duration::from_secs(2);
/// Points kept for the chart: 10 minutes at one point per 2 s.
pub const HISTORY: usize = 300;

/// The system at a glance.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Overview {
    /// Wall clock, ms since the epoch (for the chart's axis).
    pub at_ms: u64,
    pub viewers_livesky: u64,
    pub viewers_legacy: u64,
    pub cdn_mbps: f64,
    pub p2p_mbps: f64,
    /// P2P bytes over all delivered bytes (0 when nothing flowed).
    pub p2p_share: f64,
    pub joins_per_min: f64,
    /// Stalls (rebuffering events) per minute.
    pub stalls_per_min: f64,
    /// Playing time over playing + stalled time in the window (None: nobody reported playing).
    pub q1: Option<f64>,
    pub edges_reporting: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelOnEdge {
    pub edge: String,
    pub users: u64,
    pub livesky: u64,
    pub cdn_mbps: f64,
    pub p2p_mbps: f64,
    pub stage: u8,
}

#[derive(Debug, Default)]
pub struct Noc {
    samples: BTreeMap<NodeId, VecDeque<(Instant, Vec<ReportRow>)>>,
    history: VecDeque<Overview>,
}

/// Sums of the counters of a sample's rows.
#[derive(Default, Clone, Copy)]
struct Sums {
    users: u64,
    livesky: u64,
    joins: u64,
    cdn: u64,
    p2p: u64,
    stalls: u64,
    played: u64,
    stalled: u64,
}

fn sums(rows: &[ReportRow]) -> Sums {
    rows.iter().fold(Sums::default(), |s, r| Sums {
        users: s.users + r.users,
        livesky: s.livesky + r.livesky,
        joins: s.joins + r.joins,
        cdn: s.cdn + r.cdn_bytes,
        p2p: s.p2p + r.p2p_bytes,
        stalls: s.stalls + r.stalls,
        played: s.played + r.played_ms,
        stalled: s.stalled + r.stalled_ms,
    })
}

impl Noc {
    /// An edge's heartbeat at `now`. Samples older than the window (but the last one before
    /// it) are dropped.
    pub fn sample(&mut self, now: Instant, node: &NodeId, rows: Vec<ReportRow>) {
        let q = self.samples.entry(node.clone()).or_default();
        q.push_back((now, rows));
        while q.len() > 2 && q.get(1).is_some_and(|(t, _)| now.saturating_duration_since(*t) >= WINDOW) {
            q.pop_front();
        }
    }

    /// The SN is gone: its numbers leave the overview.
    pub fn forget(&mut self, node: &NodeId) {
        self.samples.remove(node);
    }

    pub fn overview(&self, at_ms: u64) -> Overview {
        let mut o = Overview { at_ms, ..Overview::default() };
        let (mut cdn_bps, mut p2p_bps, mut joins, mut stalls) = (0.0, 0.0, 0.0, 0.0);
        let (mut played, mut stalled) = (0u64, 0u64);
        for q in self.samples.values() {
            let (Some((t1, last)), Some((t0, first))) = (q.back(), q.front()) else { continue };
            let now = sums(last);
            o.viewers_livesky += now.livesky;
            o.viewers_legacy += now.users.saturating_sub(now.livesky);
            o.edges_reporting += 1;
            let secs = t1.saturating_duration_since(*t0).as_secs_f64();
            if secs <= 0.0 {
                continue;
            }
            let before = sums(first);
            // A restarted edge starts its totals again: count nothing rather than a negative.
            let d = |a: u64, b: u64| a.saturating_sub(b) as f64;
            cdn_bps += d(now.cdn, before.cdn) * 8.0 / secs;
            p2p_bps += d(now.p2p, before.p2p) * 8.0 / secs;
            joins += d(now.joins, before.joins) * 60.0 / secs;
            stalls += d(now.stalls, before.stalls) * 60.0 / secs;
            played += now.played.saturating_sub(before.played);
            stalled += now.stalled.saturating_sub(before.stalled);
        }
        o.cdn_mbps = cdn_bps / 1e6;
        o.p2p_mbps = p2p_bps / 1e6;
        o.p2p_share = if cdn_bps + p2p_bps > 0.0 { p2p_bps / (cdn_bps + p2p_bps) } else { 0.0 };
        o.joins_per_min = joins;
        o.stalls_per_min = stalls;
        o.q1 = (played + stalled > 0).then(|| played as f64 / (played + stalled) as f64);
        o
    }

    /// Appends the overview now to the chart's history (bounded).
    pub fn record(&mut self, at_ms: u64) -> Overview {
        let o = self.overview(at_ms);
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(o.clone());
        o
    }

    /// One channel per edge: users now (of which LiveSky) and the CDN and P2P rates.
    pub fn channel(&self, channel: &str) -> Vec<ChannelOnEdge> {
        let mut out = Vec::new();
        for (node, q) in &self.samples {
            let (Some((t1, last)), Some((t0, first))) = (q.back(), q.front()) else { continue };
            let Some(now) = last.iter().find(|r| r.channel == channel) else { continue };
            let before = first.iter().find(|r| r.channel == channel).cloned().unwrap_or_default();
            let secs = t1.saturating_duration_since(*t0).as_secs_f64();
            let rate = |a: u64, b: u64| if secs > 0.0 { a.saturating_sub(b) as f64 * 8.0 / secs / 1e6 } else { 0.0 };
            out.push(ChannelOnEdge {
                edge: node.to_string(),
                users: now.users,
                livesky: now.livesky,
                cdn_mbps: rate(now.cdn_bytes, before.cdn_bytes),
                p2p_mbps: rate(now.p2p_bytes, before.p2p_bytes),
                stage: now.stage,
            });
        }
        out
    }

    pub fn history(&self) -> impl Iterator<Item = &Overview> {
        self.history.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ch: &str, users: u64, livesky: u64, cdn: u64, p2p: u64, played: u64, stalled: u64) -> ReportRow {
        ReportRow {
            channel: ch.into(),
            users,
            livesky,
            cdn_bytes: cdn,
            p2p_bytes: p2p,
            played_ms: played,
            stalled_ms: stalled,
            ..ReportRow::default()
        }
    }

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn rates_are_deltas_over_the_window_summed_over_edges() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut n = Noc::default();
        // Edge a: 1 Mbit/s from the CDN; edge b: 3 Mbit/s P2P and 1 Mbit/s CDN over 2 s.
        n.sample(t0, &id("a"), vec![row("demo", 3, 1, 0, 0, 0, 0)]);
        n.sample(t0 + s, &id("a"), vec![row("demo", 3, 1, 125_000, 0, 1000, 0)]);
        n.sample(t0, &id("b"), vec![row("demo", 10, 10, 0, 0, 0, 0), row("live", 2, 0, 0, 0, 0, 0)]);
        n.sample(
            t0 + 2 * s,
            &id("b"),
            vec![row("demo", 10, 10, 250_000, 750_000, 900, 100), row("live", 2, 0, 0, 0, 0, 0)],
        );
        let o = n.overview(42);
        assert_eq!((o.viewers_livesky, o.viewers_legacy, o.edges_reporting), (11, 4, 2));
        assert!((o.cdn_mbps - 2.0).abs() < 1e-9, "{o:?}");
        assert!((o.p2p_mbps - 3.0).abs() < 1e-9);
        assert!((o.p2p_share - 0.6).abs() < 1e-9);
        assert_eq!(o.q1, Some(1900.0 / 2000.0));
        n.forget(&id("b"));
        assert_eq!(n.overview(43).viewers_livesky, 1);
    }

    #[test]
    fn samples_and_history_stay_bounded() {
        let t0 = Instant::now();
        let mut n = Noc::default();
        for i in 0..1000u64 {
            n.sample(t0 + Duration::from_secs(i), &id("a"), vec![row("demo", 1, 0, i * 1000, 0, 0, 0)]);
            n.record(i);
        }
        assert!(n.samples[&id("a")].len() <= 12);
        assert_eq!(n.history().count(), HISTORY);
        // 1000 bytes a second = 8 kbit/s.
        assert!((n.overview(0).cdn_mbps - 0.008).abs() < 1e-9);
    }

    #[test]
    fn a_restarted_edge_counts_nothing_rather_than_negative() {
        let t0 = Instant::now();
        let mut n = Noc::default();
        n.sample(t0, &id("a"), vec![row("demo", 1, 0, 10_000, 0, 0, 0)]);
        n.sample(t0 + Duration::from_secs(1), &id("a"), vec![row("demo", 1, 0, 5, 0, 0, 0)]);
        assert_eq!(n.overview(0).cdn_mbps, 0.0);
    }
}
