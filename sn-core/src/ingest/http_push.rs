//! HTTP push on Tier 0: `PUT|POST /ingest/{channel}` with chunked MPEG-TS, as ffmpeg sends it; the
//! stream key as `?key=`, `X-Stream-Key` or `Authorization: Bearer`.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use livesky_net::http::{bearer, text_error};
use proto::ChannelId;
use tracing::{info, warn};

use super::source::{ClaimError, Publisher};
use crate::node::Node;

fn presented_key<'a>(query: &'a HashMap<String, String>, headers: &'a HeaderMap) -> Option<&'a str> {
    if let Some(k) = query.get("key") {
        return Some(k);
    }
    if let Some(k) = headers.get("x-stream-key").and_then(|v| v.to_str().ok()) {
        return Some(k);
    }
    bearer(headers)
}

pub(crate) async fn ingest(
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
    if let Err(refusal) = super::source::check_push(&node, &channel, presented_key(&query, &headers)) {
        use super::source::PushRefusal as R;
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
