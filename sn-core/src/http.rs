//! The node's HTTP surface shared by every role: `/metrics`, `/status`, and on Tier 0 the
//! broadcaster push endpoint `PUT|POST /ingest/{channel}` (chunked MPEG-TS, as ffmpeg sends it).

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use proto::ChannelId;
use serde_json::json;
use tracing::{info, warn};

use livesky_net::http::{bearer, text_error};

use crate::hub::HubState;
use crate::node::Node;
use crate::source::{ClaimError, Publisher};

pub fn base_router(node: Node) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/ingest/{channel}", post(ingest).put(ingest).layer(DefaultBodyLimit::disable()))
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

fn presented_key<'a>(query: &'a HashMap<String, String>, headers: &'a HeaderMap) -> Option<&'a str> {
    if let Some(k) = query.get("key") {
        return Some(k);
    }
    if let Some(k) = headers.get("x-stream-key").and_then(|v| v.to_str().ok()) {
        return Some(k);
    }
    bearer(headers)
}

async fn ingest(
    State(node): State<Node>,
    Path(channel): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let channel = match ChannelId::new(&channel) {
        Ok(c) => c,
        Err(e) => return text_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if let Err(refusal) = crate::source::check_push(&node, &channel, presented_key(&query, &headers)) {
        use crate::source::PushRefusal as R;
        let status = match refusal {
            R::NotHere(_) | R::Unknown => StatusCode::NOT_FOUND,
            R::NotPush(_) => StatusCode::CONFLICT,
            R::KeyMissing(_) => StatusCode::UNAUTHORIZED,
            R::KeyWrong(_) => StatusCode::FORBIDDEN,
        };
        return text_error(status, refusal.to_string());
    }
    let mut publisher = match Publisher::claim(&node, &channel, "http") {
        Ok(p) => p,
        Err(e @ ClaimError::Busy(_)) => return text_error(StatusCode::CONFLICT, e.to_string()),
        Err(e @ ClaimError::NotHere(_)) => return text_error(StatusCode::NOT_FOUND, e.to_string()),
    };
    info!(%channel, "broadcaster connected (HTTP push)");
    let mut stream = body.into_data_stream();
    let idle = node.config().limits.ingest_idle_timeout();
    loop {
        let next = tokio::select! {
            _ = node.cancelled() => {
                publisher.count_session("shutdown");
                return text_error(StatusCode::SERVICE_UNAVAILABLE, "node is shutting down");
            }
            _ = publisher.taken_over() => {
                info!(%channel, "broadcaster cut off: another publisher took the channel over");
                publisher.count_session("taken_over");
                return text_error(StatusCode::CONFLICT, format!("another publisher took channel {channel} over"));
            }
            n = tokio::time::timeout(idle, stream.next()) => match n {
                Ok(n) => n,
                Err(_) => {
                    warn!(%channel, ?idle, "broadcaster sent nothing; the channel is free again");
                    node.metrics().ingest_protocol_errors.with_label_values(&["http", "timeout"]).inc();
                    publisher.finish("aborted");
                    return text_error(
                        StatusCode::REQUEST_TIMEOUT,
                        format!("no data for {idle:?}: the upload is closed and channel {channel} is free"),
                    );
                }
            },
        };
        match next {
            None => break,
            Some(Ok(data)) => {
                if let Err(e) = publisher.feed(&data) {
                    warn!(%channel, error = %e, "rejecting broadcaster feed");
                    publisher.count_error(&e);
                    publisher.count_session("error");
                    return text_error(StatusCode::BAD_REQUEST, format!("channel {channel}: {e}"));
                }
            }
            Some(Err(e)) => {
                info!(%channel, error = %e, bytes = publisher.bytes, "broadcaster connection ended abruptly");
                publisher.finish("aborted");
                return text_error(StatusCode::BAD_REQUEST, format!("upload interrupted: {e}"));
            }
        }
    }
    let (bytes, chunks) = (publisher.bytes, publisher.chunks);
    info!(%channel, bytes, chunks, "broadcaster finished");
    publisher.finish("ok");
    text_error(StatusCode::OK, format!("ok: {bytes} bytes, {chunks} chunks on channel {channel}"))
}
