//! Viewer-facing metrics of an edge, registered on the node's registry.

use prometheus::{IntCounterVec, IntGaugeVec, Registry};
use sn_core::metrics::{counter, int_gauge};

pub struct EdgeMetrics {
    pub viewers: IntGaugeVec,
    pub viewer_sessions: IntCounterVec,
    pub viewer_bytes: IntCounterVec,
    pub viewer_skips: IntCounterVec,
    pub viewer_drops: IntCounterVec,
    pub hls_requests: IntCounterVec,
}

impl EdgeMetrics {
    pub fn new(r: &Registry) -> Self {
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
            viewer_skips: counter(
                r,
                "viewer_skips_total",
                "Lagging viewers skipped ahead to the newest keyframe",
                &["channel"],
            ),
            viewer_drops: counter(r, "viewer_drops_total", "Viewers disconnected by the edge", &["channel", "reason"]),
            hls_requests: counter(
                r,
                "hls_requests_total",
                "HLS requests by type and status",
                &["channel", "type", "code"],
            ),
        }
    }
}
