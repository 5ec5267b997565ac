//! The edge's per-period reports to the management center (LiveSky §4.2): per channel, users at
//! the end of the period, joins and leaves, bytes served by the CDN (to viewers and LiveSky
//! clients) and by peers (as the clients report it), stalls, playing and stalled time, and the
//! adaptive-scaling stage. Periods are aligned on the wall clock, so every edge's rows for a
//! minute line up in the report store. Reports go through the SN's spool: none is lost while the
//! MC is away.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus::core::Collector;
use proto::mc::{ReportRow, ReportXml};
use proto::quality::LatencyHistogram;
use sn_core::mc_client::McClient;
use tracing::warn;

use crate::Edge;

/// Cumulative figures of one channel; a report row is the difference of two.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    users: u64,
    livesky: u64,
    joins: u64,
    cdn_bytes: u64,
    p2p_bytes: u64,
    p2p_bps: u64,
    stalls: u64,
    played_ms: u64,
    stalled_ms: u64,
    reports: u64,
    stalled_reports: u64,
    inflated: u64,
    excluded_up_bytes: u64,
    stage: u8,
    latency: LatencyHistogram,
}

/// Sum of the series of `metric` whose `channel` label is `channel` (and `outcome` label, if
/// given, is `outcome`).
fn sum_for(metric: &impl Collector, channel: &str, outcome: Option<&str>) -> u64 {
    let mut sum = 0.0;
    for family in metric.collect() {
        for m in family.get_metric() {
            let label = |name: &str| m.get_label().iter().find(|l| l.name() == name).map(|l| l.value().to_string());
            if label("channel").as_deref() != Some(channel)
                || outcome.is_some_and(|o| label("outcome").as_deref() != Some(o))
            {
                continue;
            }
            // A series is a counter or a gauge; the other reads 0.
            sum += m.get_counter().get_value() + m.get_gauge().get_value();
        }
    }
    sum.max(0.0) as u64
}

fn totals(edge: &Edge) -> BTreeMap<String, Totals> {
    let m = &edge.metrics;
    let mut out: BTreeMap<String, Totals> = BTreeMap::new();
    let mut channels: Vec<String> = edge.node.hubs().iter().map(|h| h.id.to_string()).collect();
    let views = edge.clients.views();
    channels.extend(views.iter().map(|(c, _, _)| c.to_string()));
    for ch in channels {
        let t = out.entry(ch.clone()).or_default();
        t.users = sum_for(&m.viewers, &ch, None);
        t.joins = sum_for(&m.viewer_sessions, &ch, Some("ok"));
        t.cdn_bytes = sum_for(&m.viewer_bytes, &ch, None) + sum_for(&m.client_bytes, &ch, None);
    }
    for (ch, snap, st) in views {
        let t = out.entry(ch.to_string()).or_default();
        t.users += u64::from(snap.p0);
        t.livesky = u64::from(snap.p0);
        t.joins += snap.stats.joins;
        t.p2p_bytes = st.reported.bytes_from_peers;
        t.p2p_bps = st.p2p_bytes_per_sec.saturating_mul(8);
        t.stalls = st.reported.stalls;
        t.played_ms = st.reported.played_ms;
        t.stalled_ms = st.reported.stalled_ms;
        t.reports = st.reported.reports;
        t.stalled_reports = st.reported.stalled_reports;
        t.inflated = st.inflated_clients;
        t.excluded_up_bytes = st.excluded_bytes_up;
        t.stage = snap.stage as u8;
        t.latency = st.reported.latency;
    }
    out
}

fn row(channel: &str, before: &Totals, now: &Totals) -> ReportRow {
    let joins = now.joins.saturating_sub(before.joins);
    ReportRow {
        channel: channel.to_string(),
        users: now.users,
        livesky: now.livesky,
        joins,
        // users_end = users_start + joins − leaves.
        leaves: (before.users + joins).saturating_sub(now.users),
        cdn_bytes: now.cdn_bytes.saturating_sub(before.cdn_bytes),
        p2p_bytes: now.p2p_bytes.saturating_sub(before.p2p_bytes),
        p2p_bps: now.p2p_bps,
        stalls: now.stalls.saturating_sub(before.stalls),
        played_ms: now.played_ms.saturating_sub(before.played_ms),
        stalled_ms: now.stalled_ms.saturating_sub(before.stalled_ms),
        reports: now.reports.saturating_sub(before.reports),
        stalled_reports: now.stalled_reports.saturating_sub(before.stalled_reports),
        inflated: now.inflated.saturating_sub(before.inflated),
        excluded_up_bytes: now.excluded_up_bytes.saturating_sub(before.excluded_up_bytes),
        stage: now.stage,
        startup_ms: Default::default(),
        latency: now.latency.since(&before.latency).trimmed().to_vec().into(),
    }
}

/// Running totals per channel for heartbeats: a row from zero to now.
pub fn live(edge: &Edge) -> Vec<ReportRow> {
    let zero = Totals::default();
    totals(edge).iter().map(|(ch, t)| ReportRow { leaves: 0, ..row(ch, &zero, t) }).collect()
}

use livesky_net::clock::unix_ms as wall_ms;

/// Reports every `every` (a minute in production) until the node stops.
pub fn spawn_reporter(edge: Arc<Edge>, client: McClient, every: Duration) {
    let period = (every.as_millis() as u64).max(1);
    let node = edge.node.clone();
    node.clone().spawn(async move {
        let mut before = totals(&edge);
        let mut start = wall_ms() / period * period;
        loop {
            let end = start + period;
            let wait = Duration::from_millis(end.saturating_sub(wall_ms()));
            tokio::select! {
                _ = node.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let now = totals(&edge);
            let rows = now
                .iter()
                .map(|(ch, t)| {
                    let mut r = row(ch, before.get(ch).unwrap_or(&Totals::default()), t);
                    if let Ok(id) = proto::ChannelId::new(ch) {
                        let samples = edge.clients.take_startups(&id);
                        r.startup_ms = samples.into();
                    }
                    r
                })
                .collect();
            let r = ReportXml {
                node: node.id().clone(),
                id: format!("{start:020}"),
                start_ms: start,
                period_ms: period,
                rows,
            };
            if let Err(e) = client.submit(&r) {
                warn!(node = %node.id(), error = %e, "cannot spool a report; this period is lost");
            }
            before = now;
            start = end;
        }
    });
}
