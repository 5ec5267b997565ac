//! The peer's local output: the reassembled stream as continuous HTTP-TS (`/live.ts`) for any
//! player on this machine, starting each new player at the latest keyframe; plus the peer's
//! Prometheus metrics (`/metrics`) and its state as JSON (`/status`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use proto::Chunk;
use proto::quality::LATENCY_BOUNDS_MS;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::core::PeerStats;

/// Fans the played stream out to local players.
pub struct LocalOutput {
    /// Chunks since the latest keyframe: where a new player starts.
    recent: Mutex<VecDeque<Chunk>>,
    live: broadcast::Sender<Chunk>,
    metrics: PeerMetrics,
    stats: Mutex<PeerStats>,
}

struct PeerMetrics {
    registry: Registry,
    received: IntCounterVec,
    sent: IntCounter,
    stalls: IntCounter,
    catchups: IntCounter,
    startup: Gauge,
    buffer: Gauge,
    links: IntGaugeVec,
    latency: Histogram,
}

impl PeerMetrics {
    fn new() -> Self {
        let registry = Registry::new_custom(Some("livesky_peer".into()), None).expect("valid prefix");
        let received =
            IntCounterVec::new(Opts::new("received_bytes_total", "Chunk bytes received by source"), &["from"])
                .expect("static");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("static");
        let gauge = |name: &str, help: &str| Gauge::new(name, help).expect("static");
        let sent = counter("sent_bytes_total", "Chunk bytes uploaded to children");
        let stalls = counter("stalls_total", "Playback stalls since start");
        let catchups = counter("catchups_total", "Jumps ahead at a keyframe after falling behind the buffer target");
        let startup = gauge("startup_seconds", "Join request to playback start (NaN until playback starts)");
        startup.set(f64::NAN);
        let buffer = gauge("buffer_seconds", "Media buffered ahead of playback");
        let links = IntGaugeVec::new(Opts::new("links", "Parent and child links"), &["role"]).expect("static");
        for c in [
            Box::new(received.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(sent.clone()),
            Box::new(stalls.clone()),
            Box::new(catchups.clone()),
        ] {
            registry.register(c).expect("registered once");
        }
        for g in [startup.clone(), buffer.clone()] {
            registry.register(Box::new(g)).expect("registered once");
        }
        registry.register(Box::new(links.clone())).expect("registered once");
        // The core's latency buckets, so each count lands in the bucket it was counted in.
        let bounds =
            LATENCY_BOUNDS_MS[..LATENCY_BOUNDS_MS.len() - 1].iter().map(|&ms| f64::from(ms) / 1000.0).collect();
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "latency_seconds",
                "Glass-to-glass latency of played chunks: playback wall clock − ingest",
            )
            .buckets(bounds),
        )
        .expect("static");
        registry.register(Box::new(latency.clone())).expect("registered once");
        Self { registry, received, sent, stalls, catchups, startup, buffer, links, latency }
    }
}

impl LocalOutput {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            recent: Mutex::new(VecDeque::new()),
            live: broadcast::channel(1024).0,
            metrics: PeerMetrics::new(),
            stats: Mutex::new(PeerStats::default()),
        })
    }

    /// The next chunk played.
    pub fn push(&self, chunk: Chunk) {
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if chunk.header.is_keyframe() {
                recent.clear();
            }
            // A stream without keyframes for a long time still must not grow this without bound.
            if recent.len() < 4096 {
                recent.push_back(chunk.clone());
            }
        }
        let _ = self.live.send(chunk);
    }

    /// Every chunk played from now on, as the local player gets it.
    pub fn subscribe(&self) -> broadcast::Receiver<Chunk> {
        self.live.subscribe()
    }

    /// Latest statistics (for `/status` and `/metrics`).
    pub fn observe(&self, s: &PeerStats) {
        let m = &self.metrics;
        let prev = std::mem::replace(&mut *self.stats.lock().unwrap_or_else(|e| e.into_inner()), *s);
        // A redirect starts a new session whose counts restart at zero: counters keep growing.
        let grown = |now: u64, before: u64| if now >= before { now - before } else { now };
        m.received.with_label_values(&["edge"]).inc_by(grown(s.bytes_from_edge, prev.bytes_from_edge));
        m.received.with_label_values(&["peer"]).inc_by(grown(s.bytes_from_peers, prev.bytes_from_peers));
        m.sent.inc_by(grown(s.bytes_up, prev.bytes_up));
        m.stalls.inc_by(grown(s.play.stalls, prev.play.stalls));
        m.catchups.inc_by(grown(s.play.catchups, prev.play.catchups));
        m.startup.set(s.startup.map_or(f64::NAN, |d| d.as_secs_f64()));
        m.buffer.set(s.buffered_ms as f64 / 1000.0);
        m.links.with_label_values(&["parent"]).set(s.parents as i64);
        m.links.with_label_values(&["child"]).set(s.children as i64);
        // The core counts by bucket; each new count is observed at its bucket's bound (the sum is
        // an upper estimate). A new session's counts restart at zero.
        let new = if s.latency.total() >= prev.latency.total() { s.latency.since(&prev.latency) } else { s.latency };
        for (i, &n) in new.counts.iter().enumerate() {
            let at = f64::from(LATENCY_BOUNDS_MS[i].min(LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.len() - 2])) / 1000.0;
            for _ in 0..n.min(100_000) {
                m.latency.observe(at);
            }
        }
    }

    pub fn stats(&self) -> PeerStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves `/live.ts`, `/metrics` and `/status` until `cancel`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut stats: watch::Receiver<PeerStats>,
        cancel: CancellationToken,
    ) {
        let me = self.clone();
        let watcher = cancel.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = watcher.cancelled() => return,
                    r = stats.changed() => {
                        if r.is_err() {
                            return;
                        }
                        let s = *stats.borrow_and_update();
                        me.observe(&s);
                    }
                }
            }
        });
        let app = Router::new()
            .route("/live.ts", get(live))
            .route("/metrics", get(metrics))
            .route("/status", get(status))
            .with_state(self);
        let _ = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await;
    }
}

async fn live(State(out): State<Arc<LocalOutput>>) -> Response {
    let start: Vec<Bytes> =
        out.recent.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|c| c.payload.clone()).collect();
    let rx = out.live.subscribe();
    // After a lag the player resumes at the next keyframe, so it always gets decodable data.
    let body = futures_util::stream::unfold(
        (start.into_iter(), rx, !start_is_empty(&out)),
        |(mut first, mut rx, mut synced)| async move {
            if let Some(b) = first.next() {
                return Some((Ok::<_, Infallible>(b), (first, rx, synced)));
            }
            loop {
                match rx.recv().await {
                    Ok(c) => {
                        if !synced && !c.header.is_keyframe() {
                            continue;
                        }
                        synced = true;
                        return Some((Ok(c.payload), (first, rx, synced)));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => synced = false,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    ([(header::CONTENT_TYPE, "video/mp2t"), (header::CACHE_CONTROL, "no-cache")], Body::from_stream(body))
        .into_response()
}

fn start_is_empty(out: &LocalOutput) -> bool {
    out.recent.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
}

async fn metrics(State(out): State<Arc<LocalOutput>>) -> Response {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&out.metrics.registry.gather(), &mut buf);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], buf).into_response()
}

async fn status(State(out): State<Arc<LocalOutput>>) -> axum::Json<serde_json::Value> {
    let s = out.stats();
    axum::Json(serde_json::json!({
        "startup_ms": s.startup.map(|d| d.as_millis() as u64),
        "buffer_ms": s.buffered_ms,
        "buffer_target_ms": s.buffer_target_ms,
        "latency_ms": s.latency_ms,
        "latency_p50_ms": s.latency.quantile_ms(0.5),
        "latency_p95_ms": s.latency.quantile_ms(0.95),
        "push": s.push,
        "peer_id": s.peer_id.map(|p| p.0),
        "nat": s.nat.as_str(),
        "stun_addr": s.stun_addr.map(|a| a.to_string()),
        "parents": s.parents,
        "children": s.children,
        "bytes_from_edge": s.bytes_from_edge,
        "bytes_from_peers": s.bytes_from_peers,
        "bytes_up": s.bytes_up,
        "stalls": s.play.stalls,
        "stalled_ms": s.play.stalled_ms,
        "played_ms": s.play.played_ms,
        "catchups": s.play.catchups,
        "skipped_chunks": s.play.skipped_chunks,
        "timeline_ms": {
            "login_reply": s.timeline.login_reply.map(|d| d.as_millis() as u64),
            "first_data": s.timeline.first_data.map(|d| d.as_millis() as u64),
            "playback": s.timeline.playback.map(|d| d.as_millis() as u64),
            "buffer_full": s.timeline.buffer_full.map(|d| d.as_millis() as u64),
        },
        "repaired_chunks": s.repair.repaired,
        "verifying_signatures": s.verifying,
        "bad_chunks": s.bad_chunks,
    }))
}

/// One-line live status: buffer, glass-to-glass latency, P2P share, rates, parents, stalls.
pub fn status_line(now: &PeerStats, before: &PeerStats, over: Duration) -> String {
    let secs = over.as_secs_f64().max(0.001);
    let down =
        (now.bytes_from_edge + now.bytes_from_peers).saturating_sub(before.bytes_from_edge + before.bytes_from_peers);
    let up = now.bytes_up.saturating_sub(before.bytes_up);
    let share = 100.0 * proto::quality::p2p_share(now.bytes_from_peers as f64, now.bytes_from_edge as f64);
    format!(
        "buffer {:>5.1} s | latency {} | P2P {share:>5.1} % | down {:>5.0} kbit/s | up {:>5.0} kbit/s | parents {} | children {} | stalls {}",
        now.buffered_ms as f64 / 1000.0,
        now.latency_ms.map_or_else(|| "  –  ".to_string(), |ms| format!("{:>4.1} s", ms as f64 / 1000.0)),
        down as f64 * 8.0 / 1000.0 / secs,
        up as f64 * 8.0 / 1000.0 / secs,
        now.parents,
        now.children,
        now.play.stalls
    )
}
