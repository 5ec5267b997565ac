//! What the NOC sees now (sans-IO): the edges' heartbeats carry running totals per channel;
//! rates are the change over the last `WINDOW` of samples, summed over edges. A bounded history
//! of overview points feeds the dashboard's chart, so a dashboard left open costs nothing more
//! over time.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use proto::NodeId;
use proto::mc::ReportRow;
use proto::quality::LatencyHistogram;
use serde::Serialize;

/// Rates are measured over this much of the latest samples.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Q2 over this much: clients report once a minute, so a shorter window would seldom hold one.
pub const Q2_WINDOW: Duration = Duration::from_secs(60);
/// Startup delays from the reports of this long ago at most.
pub const STARTUP_WINDOW: Duration = Duration::from_secs(600);
/// Startup samples kept at most (a flash crowd beyond this is sampled by arrival).
const MAX_STARTUPS: usize = 10_000;
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
    pub leaves_per_min: f64,
    /// Stalls (rebuffering events) per minute.
    pub stalls_per_min: f64,
    /// Playing time over playing + stalled time in the last minute (None: nobody reported).
    pub q1: Option<f64>,
    /// Share of client reports (one per client a minute) in the last minute without a stall.
    pub q2: Option<f64>,
    /// Startup delays reported in the last 10 minutes.
    pub startup_p50_ms: Option<u32>,
    pub startup_p95_ms: Option<u32>,
    /// Glass-to-glass latency of the chunks LiveSky clients played in the last minute.
    pub latency_p50_ms: Option<u32>,
    pub latency_p95_ms: Option<u32>,
    pub edges_reporting: usize,
    /// LiveSky clients flagged for upload claims their receivers do not confirm (since each
    /// edge started), and the claimed bytes left out of the P2P figures.
    pub inflated_clients: u64,
    pub excluded_up_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelOnEdge {
    pub edge: String,
    pub users: u64,
    pub livesky: u64,
    pub cdn_mbps: f64,
    pub p2p_mbps: f64,
    pub stage: u8,
    /// Glass-to-glass latency on this edge in the last minute.
    pub latency_p50_ms: Option<u32>,
    pub latency_p95_ms: Option<u32>,
}

#[derive(Debug, Default)]
pub struct Noc {
    samples: BTreeMap<NodeId, VecDeque<Sample>>,
    history: VecDeque<Overview>,
    startups: VecDeque<(Instant, u32)>,
}

/// Sums of the counters of a sample's rows.
#[derive(Default, Clone, Copy)]
struct Sums {
    users: u64,
    livesky: u64,
    joins: u64,
    reports: u64,
    stalled_reports: u64,
    cdn: u64,
    p2p: u64,
    stalls: u64,
    played: u64,
    stalled: u64,
    inflated: u64,
    excluded_up: u64,
}

/// Where an edge's rates are measured from: its newest sample at least [`WINDOW`] older than
/// the last one (or its oldest); with the last sample and the seconds between them.
type Sample = (Instant, Vec<ReportRow>);

fn rate_span(q: &VecDeque<Sample>) -> Option<(&Sample, &Sample, f64)> {
    let last = q.back()?;
    let base = q.iter().rev().find(|(t, _)| last.0.saturating_duration_since(*t) >= WINDOW).or(q.front())?;
    Some((base, last, last.0.saturating_duration_since(base.0).as_secs_f64()))
}

/// P2P bit/s of `rows`: the clients' latest reports (`p2p_bps`) where the edge sends them, else
/// the reported bytes' growth over the window (an edge from before the live figure).
fn live_p2p_bps<'a>(rows: impl Iterator<Item = &'a ReportRow>, from_bytes: f64) -> f64 {
    let live: u64 = rows.map(|r| r.p2p_bps).sum();
    if live > 0 { live as f64 } else { from_bytes }
}

/// Latency counts of a sample's rows, all channels.
fn latency_of(rows: &[ReportRow]) -> LatencyHistogram {
    rows.iter().fold(LatencyHistogram::default(), |mut h, r| {
        h.merge(&r.latency());
        h
    })
}

fn sums(rows: &[ReportRow]) -> Sums {
    rows.iter().fold(Sums::default(), |s, r| Sums {
        users: s.users + r.users,
        livesky: s.livesky + r.livesky,
        joins: s.joins + r.joins,
        reports: s.reports + r.reports,
        stalled_reports: s.stalled_reports + r.stalled_reports,
        cdn: s.cdn + r.cdn_bytes,
        p2p: s.p2p + r.p2p_bytes,
        stalls: s.stalls + r.stalls,
        played: s.played + r.played_ms,
        stalled: s.stalled + r.stalled_ms,
        inflated: s.inflated + r.inflated,
        excluded_up: s.excluded_up + r.excluded_up_bytes,
    })
}

impl Noc {
    /// An edge's heartbeat at `now`. Samples older than the Q2 window (but the last one
    /// before it) are dropped.
    pub fn sample(&mut self, now: Instant, node: &NodeId, rows: Vec<ReportRow>) {
        let q = self.samples.entry(node.clone()).or_default();
        q.push_back((now, rows));
        while q.len() > 2 && q.get(1).is_some_and(|(t, _)| now.saturating_duration_since(*t) >= Q2_WINDOW) {
            q.pop_front();
        }
    }

    /// Startup delays from a report the MC just stored.
    pub fn startups(&mut self, now: Instant, delays: impl IntoIterator<Item = u32>) {
        for d in delays {
            if self.startups.len() == MAX_STARTUPS {
                self.startups.pop_front();
            }
            self.startups.push_back((now, d));
        }
    }

    fn startup_percentiles(&self, now: Instant) -> (Option<u32>, Option<u32>) {
        let mut recent: Vec<u32> = self
            .startups
            .iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) <= STARTUP_WINDOW)
            .map(|(_, d)| *d)
            .collect();
        if recent.is_empty() {
            return (None, None);
        }
        recent.sort_unstable();
        let at = |q: f64| recent[((recent.len() - 1) as f64 * q).round() as usize];
        (Some(at(0.5)), Some(at(0.95)))
    }

    /// The SN is gone: its numbers leave the overview.
    pub fn forget(&mut self, node: &NodeId) {
        self.samples.remove(node);
    }

    /// The overview at `now` (wall clock `at_ms` for the chart).
    pub fn overview(&self, now_at: Instant, at_ms: u64) -> Overview {
        let mut o = Overview { at_ms, ..Overview::default() };
        (o.startup_p50_ms, o.startup_p95_ms) = self.startup_percentiles(now_at);
        let (mut cdn_bps, mut p2p_bps, mut joins, mut leaves, mut stalls) = (0.0, 0.0, 0.0, 0.0, 0.0);
        let (mut played, mut stalled, mut reports, mut stalled_reports) = (0u64, 0u64, 0u64, 0u64);
        let mut latency = LatencyHistogram::default();
        for q in self.samples.values() {
            let Some(((_, first), (_, last), secs)) = rate_span(q) else { continue };
            // Q1 and Q2 from the oldest sample kept (clients report once a minute), rates over
            // the last WINDOW.
            let oldest = sums(&q[0].1);
            let last_sums = sums(last);
            reports += last_sums.reports.saturating_sub(oldest.reports);
            stalled_reports += last_sums.stalled_reports.saturating_sub(oldest.stalled_reports);
            // Playing and stalled time come in client reports too (once a minute).
            played += last_sums.played.saturating_sub(oldest.played);
            stalled += last_sums.stalled.saturating_sub(oldest.stalled);
            latency.merge(&latency_of(last).since(&latency_of(&q[0].1)));
            let now = last_sums;
            o.viewers_livesky += now.livesky;
            o.viewers_legacy += now.users.saturating_sub(now.livesky);
            o.edges_reporting += 1;
            o.inflated_clients += now.inflated;
            o.excluded_up_bytes += now.excluded_up;
            if secs <= 0.0 {
                continue;
            }
            let before = sums(first);
            // A restarted edge starts its totals again: count nothing rather than a negative.
            let d = |a: u64, b: u64| a.saturating_sub(b) as f64;
            cdn_bps += d(now.cdn, before.cdn) * 8.0 / secs;
            p2p_bps += live_p2p_bps(last.iter(), d(now.p2p, before.p2p) * 8.0 / secs);
            joins += d(now.joins, before.joins) * 60.0 / secs;
            // users_now = users_before + joins − leaves.
            leaves += d(before.users + now.joins.saturating_sub(before.joins), now.users) * 60.0 / secs;
            stalls += d(now.stalls, before.stalls) * 60.0 / secs;
        }
        o.cdn_mbps = cdn_bps / 1e6;
        o.p2p_mbps = p2p_bps / 1e6;
        o.p2p_share = proto::quality::p2p_share(p2p_bps, cdn_bps);
        o.joins_per_min = joins;
        o.leaves_per_min = leaves;
        o.q2 = proto::quality::q2(stalled_reports, reports);
        o.stalls_per_min = stalls;
        o.q1 = proto::quality::q1(played, stalled);
        (o.latency_p50_ms, o.latency_p95_ms) = (latency.quantile_ms(0.5), latency.quantile_ms(0.95));
        o
    }

    /// Appends the overview now to the chart's history (bounded).
    pub fn record(&mut self, now: Instant, at_ms: u64) -> Overview {
        let o = self.overview(now, at_ms);
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
            let Some(((_, first), (_, last), secs)) = rate_span(q) else { continue };
            let Some(now) = last.iter().find(|r| r.channel == channel) else { continue };
            let before = first.iter().find(|r| r.channel == channel).cloned().unwrap_or_default();
            let rate = |a: u64, b: u64| if secs > 0.0 { a.saturating_sub(b) as f64 * 8.0 / secs / 1e6 } else { 0.0 };
            let oldest = q[0].1.iter().find(|r| r.channel == channel).map(ReportRow::latency).unwrap_or_default();
            let latency = now.latency().since(&oldest);
            out.push(ChannelOnEdge {
                edge: node.to_string(),
                users: now.users,
                livesky: now.livesky,
                cdn_mbps: rate(now.cdn_bytes, before.cdn_bytes),
                p2p_mbps: live_p2p_bps(std::iter::once(now), rate(now.p2p_bytes, before.p2p_bytes) * 1e6) / 1e6,
                stage: now.stage,
                latency_p50_ms: latency.quantile_ms(0.5),
                latency_p95_ms: latency.quantile_ms(0.95),
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
    fn clients_flagged_for_inflated_claims_are_shown_per_edge_summed() {
        let t0 = Instant::now();
        let mut n = Noc::default();
        let flagged = |k: u64| ReportRow { inflated: k, excluded_up_bytes: k << 20, ..row("demo", 5, 5, 0, 0, 0, 0) };
        n.sample(t0, &id("a"), vec![flagged(1)]);
        n.sample(t0, &id("b"), vec![flagged(2), flagged(0)]);
        let o = n.overview(t0, 1);
        assert_eq!((o.inflated_clients, o.excluded_up_bytes), (3, 3 << 20));
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
        let o = n.overview(t0 + 2 * s, 42);
        assert_eq!((o.viewers_livesky, o.viewers_legacy, o.edges_reporting), (11, 4, 2));
        assert!((o.cdn_mbps - 2.0).abs() < 1e-9, "{o:?}");
        assert!((o.p2p_mbps - 3.0).abs() < 1e-9);
        assert!((o.p2p_share - 0.6).abs() < 1e-9);
        assert_eq!(o.q1, Some(1900.0 / 2000.0));
        // An edge that sends the clients' live P2P rate: that, not the lumpy byte totals.
        n.sample(t0 + 2 * s, &id("a"), vec![ReportRow { p2p_bps: 500_000, ..row("demo", 3, 1, 250_000, 0, 2000, 0) }]);
        let o = n.overview(t0 + 2 * s, 42);
        assert!((o.p2p_mbps - 3.5).abs() < 1e-9, "{o:?}");
        assert_eq!(n.channel("demo").iter().map(|c| c.p2p_mbps).sum::<f64>(), 3.5);
        n.forget(&id("b"));
        assert_eq!(n.overview(t0 + 2 * s, 43).viewers_livesky, 1);
    }

    #[test]
    fn samples_and_history_stay_bounded() {
        let t0 = Instant::now();
        let mut n = Noc::default();
        for i in 0..1000u64 {
            n.sample(t0 + Duration::from_secs(i), &id("a"), vec![row("demo", 1, 0, i * 1000, 0, 0, 0)]);
            n.record(t0 + Duration::from_secs(i), i);
            n.startups(t0 + Duration::from_secs(i), (0..20).map(|k| k * 100));
        }
        assert!(n.samples[&id("a")].len() <= 62);
        assert_eq!(n.history().count(), HISTORY);
        assert_eq!(n.startups.len(), MAX_STARTUPS);
        // 1000 bytes a second = 8 kbit/s.
        let end = t0 + Duration::from_secs(999);
        assert!((n.overview(end, 0).cdn_mbps - 0.008).abs() < 1e-9);
    }

    #[test]
    fn a_restarted_edge_counts_nothing_rather_than_negative() {
        let t0 = Instant::now();
        let mut n = Noc::default();
        n.sample(t0, &id("a"), vec![row("demo", 1, 0, 10_000, 0, 0, 0)]);
        n.sample(t0 + Duration::from_secs(1), &id("a"), vec![row("demo", 1, 0, 5, 0, 0, 0)]);
        assert_eq!(n.overview(t0, 0).cdn_mbps, 0.0);
    }

    #[test]
    fn leaves_q2_and_startup_percentiles() {
        let t0 = Instant::now();
        let mut n = Noc::default();
        let a = id("a");
        // 10 users, then 30 s later 8 after 4 joins: 6 left. 10 reports, 2 with a stall.
        let r = |users, joins, reports, stalled| ReportRow {
            channel: "demo".into(),
            users,
            joins,
            reports,
            stalled_reports: stalled,
            ..ReportRow::default()
        };
        n.sample(t0, &a, vec![r(10, 100, 50, 5)]);
        n.sample(t0 + Duration::from_secs(30), &a, vec![r(8, 104, 60, 7)]);
        let o = n.overview(t0 + Duration::from_secs(30), 0);
        assert!((o.joins_per_min - 8.0).abs() < 1e-9, "{o:?}");
        assert!((o.leaves_per_min - 12.0).abs() < 1e-9, "{o:?}");
        assert_eq!(o.q2, Some(0.8));
        assert_eq!((o.startup_p50_ms, o.startup_p95_ms), (None, None));
        n.startups(t0, (1..=100).map(|k| k * 10));
        let o = n.overview(t0 + Duration::from_secs(30), 0);
        assert_eq!((o.startup_p50_ms, o.startup_p95_ms), (Some(510), Some(950)));
        // Ten minutes later they have aged out.
        assert_eq!(n.overview(t0 + Duration::from_secs(700), 0).startup_p50_ms, None);
    }

    #[test]
    fn latency_is_what_was_played_over_the_window_on_every_edge() {
        let t0 = Instant::now();
        let mut n = Noc::default();
        let r = |counts: Vec<u64>| ReportRow { channel: "demo".into(), latency: counts.into(), ..ReportRow::default() };
        // Edge a played 100 chunks at ≤ 250 ms long ago, then 100 in (1.75, 2] s; edge b 100 in (4, 5] s.
        n.sample(t0, &id("a"), vec![r(vec![100])]);
        n.sample(t0, &id("b"), vec![r(vec![])]);
        n.sample(t0 + Duration::from_secs(10), &id("a"), vec![r(vec![100, 0, 0, 0, 0, 0, 0, 100])]);
        n.sample(t0 + Duration::from_secs(10), &id("b"), vec![r([vec![0; 12], vec![100]].concat())]);
        let o = n.overview(t0 + Duration::from_secs(10), 0);
        assert_eq!((o.latency_p50_ms, o.latency_p95_ms), (Some(2_000), Some(4_900)), "{o:?}");
        let per_edge: Vec<_> = n.channel("demo").iter().map(|e| e.latency_p50_ms).collect();
        assert_eq!(per_edge, [Some(1_875), Some(4_500)]);
    }
}
