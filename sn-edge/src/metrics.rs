//! Metrics of an edge's viewers and LiveSky clients, registered on the node's registry.

use livesky_net::metrics::{counter, float_counter, gauge, int_gauge};
use prometheus::{CounterVec, GaugeVec, IntCounterVec, IntGaugeVec, Registry};
use proto::ChannelId;

use crate::admission::Snapshot;
use crate::service::ServiceStats;

pub struct EdgeMetrics {
    pub viewers: IntGaugeVec,
    pub viewer_sessions: IntCounterVec,
    pub viewer_bytes: IntCounterVec,
    pub viewer_skips: IntCounterVec,
    pub viewer_drops: IntCounterVec,
    pub viewers_refused: IntCounterVec,
    pub hls_requests: IntCounterVec,
    pub stage: IntGaugeVec,
    pub p0: IntGaugeVec,
    pub nc: IntGaugeVec,
    pub bounds: GaugeVec,
    pub alpha: GaugeVec,
    pub admissions: IntGaugeVec,
    pub refocus: IntGaugeVec,
    pub bad_chunk_reports: IntGaugeVec,
    pub bans: IntGaugeVec,
    pub signals: IntGaugeVec,
    pub edge_substreams: IntGaugeVec,
    pub peer_bytes: IntGaugeVec,
    pub client_bytes: IntCounterVec,
    pub stun_requests: IntCounterVec,
    /// What clients said that the edge did not take (issue 20's attacks, counted).
    pub refused_claims: IntGaugeVec,
    pub clients_dropped: IntCounterVec,
    /// The viewer-serving path's cost: bytes written, and the time its tasks spent writing them.
    pub serve_bytes: IntCounterVec,
    pub serve_busy: CounterVec,
    pub serve_bytes_per_cpu_second: GaugeVec,
    /// HTTP-TS chunks put in the channels' spools, by where they went.
    pub spool_chunks: IntCounterVec,
}

impl EdgeMetrics {
    pub fn new(r: &Registry) -> Self {
        let ch = &["channel"];
        Self {
            viewers: int_gauge(
                r,
                "viewers",
                "Viewers connected now (HTTP-TS) or HLS channels active",
                &["channel", "kind"],
            ),
            viewer_sessions: counter(
                r,
                "viewer_sessions_total",
                "Viewer requests by outcome",
                &["channel", "kind", "outcome"],
            ),
            viewer_bytes: counter(r, "viewer_bytes_total", "Media bytes handed to viewers", &["channel", "kind"]),
            viewer_skips: counter(r, "viewer_skips_total", "Lagging viewers skipped ahead to the newest keyframe", ch),
            viewer_drops: counter(r, "viewer_drops_total", "Viewers disconnected by the edge", &["channel", "reason"]),
            viewers_refused: counter(
                r,
                "viewers_refused_total",
                "Viewers and LiveSky clients refused for their token (missing, expired, invalid)",
                &["channel", "reason"],
            ),
            hls_requests: counter(
                r,
                "hls_requests_total",
                "HLS requests by type and status",
                &["channel", "type", "code"],
            ),
            stage: int_gauge(r, "edge_stage", "Adaptive-scaling stage 1-4 of the edge (LiveSky §3.1)", ch),
            p0: int_gauge(r, "edge_clients", "P0: LiveSky clients of this edge", ch),
            nc: int_gauge(r, "edge_push_clients", "Nc: clients served directly", ch),
            bounds: gauge(
                r,
                "edge_stage_bound",
                "Stage bounds: n1c, stage3_above, stage4_above, nc_star",
                &["channel", "bound"],
            ),
            alpha: gauge(
                r,
                "edge_model_alpha",
                "α the stage bounds use: the configured one, or less if the clients offer less upload",
                ch,
            ),
            admissions: int_gauge(
                r,
                "edge_admissions",
                "Joins decided since start, by decision",
                &["channel", "decision"],
            ),
            refocus: int_gauge(
                r,
                "edge_refocus",
                "Substreams the edge fed to rescue clients from churn or for want of a parent, since start",
                ch,
            ),
            bans: int_gauge(
                r,
                "edge_bans",
                "Clients banned for forwarding chunks that failed the signature check, since start",
                ch,
            ),
            bad_chunk_reports: int_gauge(
                r,
                "edge_bad_chunk_reports",
                "Client reports of peer-forwarded chunks that failed their signature check, since start",
                ch,
            ),
            signals: int_gauge(r, "edge_signals_relayed", "WebRTC offers and answers relayed, since start", ch),
            edge_substreams: int_gauge(r, "edge_fed_substreams", "Substreams the edge feeds now", ch),
            peer_bytes: int_gauge(
                r,
                "edge_peer_bytes_reported",
                "Media bytes this edge's clients report having received from peers, since start",
                ch,
            ),
            client_bytes: counter(
                r,
                "edge_client_bytes_total",
                "Chunk bytes sent to LiveSky clients",
                &["channel", "kind"],
            ),
            stun_requests: counter(r, "stun_requests_total", "STUN datagrams by outcome", &["outcome"]),
            refused_claims: int_gauge(
                r,
                "edge_refused_claims",
                "Client messages refused or cut since start (what: signal, bad_chunk_report, confirmation, report_clamped, trouble_before_source)",
                &["channel", "what"],
            ),
            clients_dropped: counter(
                r,
                "edge_clients_dropped_total",
                "LiveSky client connections the edge closed itself (reason: queue_full)",
                &["reason"],
            ),
            serve_bytes: counter(
                r,
                "edge_serve_bytes_total",
                "Bytes the viewer-serving path wrote to viewers' sockets",
                &["kind"],
            ),
            serve_busy: float_counter(
                r,
                "edge_serve_busy_seconds_total",
                "Time the viewer-serving code spent writing (HTTP-TS: fan-out ticks; HLS: non-blocking write calls; neither waits inside)",
                &["kind"],
            ),
            serve_bytes_per_cpu_second: gauge(
                r,
                "edge_serve_bytes_per_cpu_second",
                "Bytes written per CPU-second of the viewer-serving path, since start",
                &["kind"],
            ),
            spool_chunks: counter(
                r,
                "edge_spool_chunks_total",
                "HTTP-TS chunks written to the spool viewers are sent from: to a file in ts_spool_dir, a memory file when none could be made there, or none (sent from the ring by plain writes)",
                &["to"],
            ),
        }
    }

    /// The serving path's cost figures for one `kind` of viewer, looked up once.
    pub fn serve_cost(&self, kind: &str) -> ServeCost {
        ServeCost {
            bytes: self.serve_bytes.with_label_values(&[kind]),
            busy: self.serve_busy.with_label_values(&[kind]),
            per_cpu_second: self.serve_bytes_per_cpu_second.with_label_values(&[kind]),
        }
    }

    /// The spool's counters, looked up once.
    pub(crate) fn spool_counters(&self) -> crate::ts_spool::Counters {
        let to = |w: &str| self.spool_chunks.with_label_values(&[w]);
        crate::ts_spool::Counters { file: to("file"), memory_file: to("memory_file"), none: to("none") }
    }

    pub fn observe_service(&self, channel: &ChannelId, snap: &Snapshot, st: &ServiceStats) {
        let ch = channel.as_str();
        self.stage.with_label_values(&[ch]).set(snap.stage as i64);
        self.p0.with_label_values(&[ch]).set(i64::from(snap.p0));
        self.nc.with_label_values(&[ch]).set(i64::from(snap.nc));
        let t = &snap.thresholds;
        let bounds = [
            ("n1c", f64::from(t.n1c)),
            ("stage3_above", t.stage3_above),
            ("stage4_above", t.stage4_above),
            ("nc_star", f64::from(t.nc_star)),
        ];
        self.alpha.with_label_values(&[ch]).set(t.alpha);
        for (b, v) in bounds {
            self.bounds.with_label_values(&[ch, b]).set(v);
        }
        let s = &snap.stats;
        let decisions = [
            ("push", s.push_admits),
            ("p2p", s.p2p_admits),
            ("redirect", st.redirected),
            ("refused", (st.refused_rate + st.refused_other).saturating_sub(st.refused_banned)),
            ("banned", st.refused_banned),
        ];
        for (d, v) in decisions {
            self.admissions.with_label_values(&[ch, d]).set(v as i64);
        }
        self.refocus.with_label_values(&[ch]).set(snap.tree.refocus_total as i64);
        self.bad_chunk_reports.with_label_values(&[ch]).set(st.bad_chunk_reports as i64);
        self.bans.with_label_values(&[ch]).set(st.bans as i64);
        self.signals.with_label_values(&[ch]).set(st.signals_relayed as i64);
        self.edge_substreams.with_label_values(&[ch]).set(snap.tree.edge_substreams as i64);
        self.peer_bytes.with_label_values(&[ch]).set(st.reported.bytes_from_peers as i64);
        let refused = [
            ("signal", st.signals_refused),
            ("bad_chunk_report", st.bad_chunk_refused),
            ("confirmation", st.confirmations_refused),
            ("report_clamped", st.reports_clamped),
            ("trouble_before_source", st.troubles_before_source),
        ];
        for (what, v) in refused {
            self.refused_claims.with_label_values(&[ch, what]).set(v as i64);
        }
    }
}

/// `edge_serve_*{kind}`: bytes written to viewers and the time the serving code spent doing it.
pub struct ServeCost {
    bytes: prometheus::IntCounter,
    busy: prometheus::Counter,
    per_cpu_second: prometheus::Gauge,
}

impl ServeCost {
    pub fn record(&self, bytes: u64, busy: std::time::Duration) {
        self.bytes.inc_by(bytes);
        self.busy.inc_by(busy.as_secs_f64());
        let secs = self.busy.get();
        if secs > 0.0 {
            self.per_cpu_second.set(self.bytes.get() as f64 / secs);
        }
    }
}
