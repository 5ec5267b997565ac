//! The node's HTTP surface shared by every role: `/metrics`, `/status`, and on Tier 0 the
//! broadcaster push endpoint (`PUT|POST /ingest/{channel}`, [`crate::ingest::http_push`]).

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::hub::HubState;
use crate::node::Node;

pub fn base_router(node: Node) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route(
            "/ingest/{channel}",
            post(crate::ingest::http_push::ingest)
                .put(crate::ingest::http_push::ingest)
                .layer(DefaultBodyLimit::disable()),
        )
        .with_state(node)
}

async fn metrics(State(node): State<Node>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], node.metrics().render()).into_response()
}

async fn status(State(node): State<Node>) -> Json<serde_json::Value> {
    let cfg = node.config();
    let channels: Vec<_> = node
        .hubs()
        .iter()
        .map(|h| {
            let s = h.status();
            let (stats, span_ms) = h.ring_stats();
            let ring = h.ring();
            let (health, ingest) = (ring.health(), h.ingest());
            json!({
                "id": h.id.as_str(),
                "state": match s.state {
                    HubState::Pending => "pending",
                    HubState::Ready => "ready",
                    HubState::NotFound => "not_found",
                    HubState::Closed => "closed",
                },
                "source_live": s.source.is_live(),
                "source": s.source.as_str(),
                "first_seq": ring.first_seq(),
                "last_seq": ring.last_seq(),
                "ring_chunks": stats.chunks,
                "ring_bytes": stats.bytes,
                "ring_span_ms": span_ms,
                "users": h.users(),
                // Ingest health (meaningful on the channel's origin): the stream's rate over
                // the ring, its keyframe spacing, and sessions ended by errors.
                "kbps": health.kbps.map_or(0, |k| k as u64),
                "keyframe_interval_ms": health.keyframe_interval_ms,
                "frame_rate": health.frame_rate.map(|f| (f * 100.0).round() / 100.0),
                "protocol": ingest.protocol,
                "av_drift_ms": ingest.av_drift_ms,
                "ingest_errors": crate::metrics::total_for(&node.metrics().ingest_errors, h.id.as_str()),
                "public_key": node.source(&h.id).map(|s| s.signer.verifier().to_hex()),
            })
        })
        .collect();
    Json(json!({
        "node": cfg.id.as_str(),
        "tier": cfg.tier,
        "role": format!("{:?}", cfg.role).to_lowercase(),
        "channels": channels,
    }))
}
