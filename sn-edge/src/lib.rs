//! The edge SN (LiveSky §2.2): an SN in the last tier that serves viewers. Today it serves legacy
//! clients — continuous HTTP-TS from a keyframe ([`ts_viewer`]) and live HLS ([`hls`],
//! [`hls_http`]) — from the node's shared ring, with no per-viewer copies and bounded memory per
//! viewer. The tracker, seed and admission-controller roles come with the peer protocol.

// Handlers return `Result<_, Response>` so an error is answered where it is found; the size of
// `Response` is irrelevant on this path.
#![allow(clippy::result_large_err)]

pub mod admission;
pub mod hls;
pub mod hls_http;
mod metrics;
pub mod model;
pub mod service;
pub mod tree;
pub mod ts_viewer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use proto::ChannelId;
use sn_core::Node;
use sn_core::http::{base_router, text_error};
use tokio::sync::watch;

pub use metrics::EdgeMetrics;

/// Shared state of one edge's HTTP side.
pub struct Edge {
    pub node: Node,
    pub metrics: EdgeMetrics,
    hls: Mutex<HashMap<ChannelId, Arc<hls_http::HlsChannel>>>,
    /// Ticks every `viewer_coalesce_ms`: caught-up viewers all wake on the same tick, so the
    /// edge works in short bursts instead of being woken by thousands of scattered timers.
    flush_clock: Option<watch::Receiver<u64>>,
}

impl Edge {
    pub fn new(node: Node) -> Arc<Edge> {
        let metrics = EdgeMetrics::new(&node.metrics().registry);
        let period = Duration::from_millis(node.config().edge.viewer_coalesce_ms);
        let flush_clock = (!period.is_zero()).then(|| {
            let (tx, rx) = watch::channel(0u64);
            let n = node.clone();
            node.spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = n.cancelled() => return,
                        _ = tick.tick() => tx.send_modify(|t| *t += 1),
                    }
                }
            });
            rx
        });
        Arc::new(Edge { node, metrics, hls: Mutex::new(HashMap::new()), flush_clock })
    }

    fn settings(&self) -> &sn_core::EdgeSettings {
        &self.node.config().edge
    }

    fn secs(v: f64) -> Duration {
        Duration::from_secs_f64(v)
    }
}

/// The edge's whole HTTP surface: node endpoints plus viewer routes.
pub fn router(edge: Arc<Edge>) -> Router {
    let viewer = Router::new()
        .route("/live/{file}", get(live_file))
        .route("/live/{channel}/index.m3u8", get(playlist))
        .route("/live/{channel}/{segment}", get(segment))
        .with_state(edge.clone());
    base_router(edge.node.clone()).merge(viewer)
}

fn channel_from(name: &str) -> Result<ChannelId, Response> {
    ChannelId::new(name).map_err(|e| text_error(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn live_file(State(edge): State<Arc<Edge>>, Path(file): Path<String>) -> Response {
    let Some(name) = file.strip_suffix(".ts") else {
        return text_error(StatusCode::NOT_FOUND, "use /live/CHANNEL.ts or /live/CHANNEL/index.m3u8");
    };
    match channel_from(name) {
        Ok(channel) => ts_viewer::serve(edge, channel).await,
        Err(r) => r,
    }
}

async fn playlist(State(edge): State<Arc<Edge>>, Path(channel): Path<String>) -> Response {
    match channel_from(&channel) {
        Ok(channel) => hls_http::playlist(edge, channel).await,
        Err(r) => r,
    }
}

async fn segment(State(edge): State<Arc<Edge>>, Path((channel, segment)): Path<(String, String)>) -> Response {
    let channel = match channel_from(&channel) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match segment.strip_suffix(".ts").and_then(|n| n.parse::<u64>().ok()) {
        Some(msn) => hls_http::segment(edge, channel, msn).await,
        None => text_error(StatusCode::NOT_FOUND, format!("no segment {segment:?}; segments are named N.ts")),
    }
}
