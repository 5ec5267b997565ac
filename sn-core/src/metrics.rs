//! Prometheus metrics of one node. Each node owns a registry (several nodes may share a process in
//! the demo and in tests); roles built on top (the edge) register their own families on it.

use livesky_net::metrics::{counter, gauge, int_gauge, render};
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Registry};

pub use livesky_net::metrics::{total, total_for};

pub struct Metrics {
    pub registry: Registry,
    pub ingest_bytes: IntCounterVec,
    pub ingest_chunks: IntCounterVec,
    pub ingest_keyframes: IntCounterVec,
    pub ingest_skipped_bytes: IntCounterVec,
    pub ingest_errors: IntCounterVec,
    pub ingest_sessions: IntCounterVec,
    /// Ingest health, per channel, on its origin.
    pub ingest_bitrate: GaugeVec,
    pub ingest_keyframe_interval: GaugeVec,
    pub ingest_frame_rate: GaugeVec,
    pub ingest_av_drift: GaugeVec,
    /// Publish attempts turned away (wrong key, unknown channel, channel busy), by protocol.
    pub ingest_refused: IntCounterVec,
    /// Ingest connections ended for protocol faults: malformed input, a library panic, timeouts.
    pub ingest_protocol_errors: IntCounterVec,
    /// Refused and open connections of every listener.
    pub conns: livesky_net::limits::ConnMetrics,
    /// Requests for channel names not in the topology (never a per-name series).
    pub unknown_channels: IntCounterVec,
    pub broadcasts_ended: IntCounterVec,
    pub srt_port_restarts: IntCounterVec,
    pub source_live: IntGaugeVec,
    pub relay_chunks: IntCounterVec,
    pub relay_duplicates: IntCounterVec,
    pub relay_missing: IntCounterVec,
    pub relay_failovers: IntCounterVec,
    pub relay_stalls: IntCounterVec,
    pub children: IntGaugeVec,
    pub child_sessions: IntCounterVec,
    pub child_bytes: IntCounterVec,
    /// SN links refused in the handshake (no_key, bad_proof, not_in_topology, timeout).
    pub sn_link_refused: IntCounterVec,
    pub ring_chunks: IntGaugeVec,
    pub ring_bytes: IntGaugeVec,
    pub ring_span: GaugeVec,
    pub channel_users: IntGaugeVec,
    /// Version of the config the management center pushed last (0: running on its file).
    pub config_version: IntGaugeVec,
}

impl Metrics {
    pub fn new(node: &str, tier: u8, role: &str) -> Metrics {
        let labels = [
            ("node".to_string(), node.to_string()),
            ("tier".to_string(), tier.to_string()),
            ("role".to_string(), role.to_string()),
        ];
        let registry = Registry::new_custom(Some("livesky".into()), Some(labels.into_iter().collect()))
            .expect("valid registry prefix");
        let r = &registry;
        let ch = &["channel"];
        Metrics {
            ingest_bytes: counter(r, "ingest_bytes_total", "MPEG-TS bytes received from broadcasters", ch),
            ingest_chunks: counter(r, "ingest_chunks_total", "Chunks cut at Tier 0", ch),
            ingest_keyframes: counter(r, "ingest_keyframes_total", "Keyframe chunks cut at Tier 0", ch),
            ingest_skipped_bytes: counter(r, "ingest_skipped_bytes_total", "Bytes skipped to regain TS sync", ch),
            ingest_errors: counter(r, "ingest_errors_total", "Ingest sessions ended by an error", &["channel", "kind"]),
            ingest_sessions: counter(
                r,
                "ingest_sessions_total",
                "Publisher sessions by outcome",
                &["channel", "outcome"],
            ),
            ingest_bitrate: gauge(r, "ingest_bitrate_kbps", "The broadcast's rate over the ring (kbit/s)", ch),
            ingest_keyframe_interval: gauge(
                r,
                "ingest_keyframe_interval_seconds",
                "Mean media time between the broadcast's keyframes",
                ch,
            ),
            ingest_frame_rate: gauge(r, "ingest_frame_rate", "Video frames per second of the broadcast", ch),
            ingest_av_drift: gauge(
                r,
                "ingest_av_drift_seconds",
                "Newest video minus newest audio decode timestamp (includes the muxer's interleave; watch the trend)",
                ch,
            ),
            ingest_refused: counter(
                r,
                "ingest_refused_total",
                "Publish attempts refused (unknown channel, stream key, busy)",
                &["protocol"],
            ),
            ingest_protocol_errors: counter(
                r,
                "ingest_protocol_errors_total",
                "Ingest connections ended for a protocol fault (kind: malformed, panic, bad_message, timeout)",
                &["protocol", "kind"],
            ),
            conns: livesky_net::limits::ConnMetrics::register(r),
            unknown_channels: counter(
                r,
                "unknown_channel_requests_total",
                "Requests for channels not in the topology, refused before anything opened (via: http, clients, sn)",
                &["via"],
            ),
            srt_port_restarts: counter(
                r,
                "ingest_srt_port_restarts_total",
                "Times the SRT ingest port's task died (srt-tokio) and was restarted; its sessions ended",
                &[],
            ),
            broadcasts_ended: counter(
                r,
                "ingest_broadcasts_ended_total",
                "Broadcasts ended because no publisher came back within the reconnect grace",
                ch,
            ),
            source_live: int_gauge(r, "source_live", "1 while the channel's source is producing", ch),
            relay_chunks: counter(r, "relay_chunks_total", "Chunks accepted from the upstream parent", ch),
            relay_duplicates: counter(r, "relay_duplicates_total", "Duplicate chunks dropped after failover", ch),
            relay_missing: counter(r, "relay_missing_chunks_total", "Chunks never received (gaps)", ch),
            relay_failovers: counter(r, "relay_failovers_total", "Upstream parent changes after loss or stall", ch),
            relay_stalls: counter(
                r,
                "relay_stalls_total",
                "Upstream stalls detected (no chunk for 1 s while live)",
                ch,
            ),
            children: int_gauge(r, "child_sessions", "Downstream SNs subscribed now", ch),
            child_sessions: counter(
                r,
                "child_sessions_total",
                "Downstream SN sessions by outcome",
                &["channel", "outcome"],
            ),
            child_bytes: counter(r, "child_bytes_total", "Chunk payload bytes sent to downstream SNs", ch),
            sn_link_refused: counter(
                r,
                "sn_link_refused_total",
                "SN links refused in the handshake (no_key, bad_proof, not_in_topology, timeout)",
                &["reason"],
            ),
            ring_chunks: int_gauge(r, "ring_chunks", "Chunks held in the ring buffer", ch),
            ring_bytes: int_gauge(r, "ring_bytes", "Payload bytes held in the ring buffer", ch),
            ring_span: gauge(r, "ring_span_seconds", "Media time held in the ring buffer", ch),
            channel_users: int_gauge(r, "channel_users", "Leases holding the channel open (viewers, children)", ch),
            config_version: int_gauge(
                r,
                "config_version",
                "Version of the config the management center pushed last",
                &[],
            ),
            registry,
        }
    }

    pub fn render(&self) -> String {
        render(&self.registry)
    }

    /// Drops every series of a channel the node no longer carries.
    pub fn forget_channel(&self, channel: &str) {
        for g in [&self.ring_chunks, &self.ring_bytes, &self.channel_users, &self.children, &self.source_live] {
            let _ = g.remove_label_values(&[channel]);
        }
        let _ = self.ring_span.remove_label_values(&[channel]);
    }
}
