//! HLS serving: one segmenter task per channel, started by the first playlist request and stopped
//! once no HLS request has come for the node's linger time. Playlists and segments are answered
//! from its state; segments are streamed from the chunks' shared `Bytes`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use livesky_net::http::text_error;
use proto::{ChannelId, SourceStatus, StartAt};
use sn_core::Origin;
use sn_core::hub::{Cursor, CursorEnd, CursorEvent};
use tokio::sync::watch;
use tracing::info;

use crate::Edge;
use crate::hls::{Segmenter, SegmenterConfig};
use crate::ts_viewer::{ended, open_error};

const OPEN_WAIT: Duration = Duration::from_secs(8);

pub struct HlsChannel {
    segmenter: Mutex<Segmenter>,
    /// Bumped whenever a segment completes.
    segments: watch::Sender<usize>,
    last_access: Mutex<Instant>,
}

impl HlsChannel {
    fn touch(&self) {
        *self.last_access.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }
    fn idle_for(&self) -> Duration {
        self.last_access.lock().unwrap_or_else(|e| e.into_inner()).elapsed()
    }
    fn with<R>(&self, f: impl FnOnce(&Segmenter) -> R) -> R {
        f(&self.segmenter.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn lookup(edge: &Edge, channel: &ChannelId) -> Option<Arc<HlsChannel>> {
    edge.hls.lock().unwrap_or_else(|e| e.into_inner()).get(channel).cloned()
}

/// The channel's HLS state, starting its segmenter if needed.
async fn channel(edge: &Arc<Edge>, channel: &ChannelId) -> Result<Arc<HlsChannel>, Response> {
    if let Some(c) = lookup(edge, channel) {
        c.touch();
        return Ok(c);
    }
    let lease =
        edge.node.open(channel, StartAt::Live, &Origin::Viewer, OPEN_WAIT).await.map_err(|e| open_error(channel, e))?;
    let s = edge.settings();
    let cfg = SegmenterConfig {
        target_90k: (s.hls_segment_seconds * 90_000.0) as u64,
        window: s.hls_window,
        ..SegmenterConfig::default()
    };
    // Start far enough back to list a full window at once.
    let backlog_ms = (s.hls_segment_seconds * 1000.0) as u32 * (s.hls_window as u32 + 1);
    let hub = lease.hub().clone();
    if hub.status().source == SourceStatus::Ended {
        return Err(ended(channel));
    }
    let mut map = edge.hls.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = map.get(channel) {
        c.touch();
        return Ok(c.clone());
    }
    let state = Arc::new(HlsChannel {
        segmenter: Mutex::new(Segmenter::new(cfg)),
        segments: watch::channel(0).0,
        last_access: Mutex::new(Instant::now()),
    });
    map.insert(channel.clone(), state.clone());
    drop(map);
    let cursor = hub.cursor(StartAt::Backlog { ms: backlog_ms });
    let (task_edge, task_state, task_channel) = (edge.clone(), state.clone(), channel.clone());
    edge.node.spawn(async move {
        let _lease = lease;
        segment_loop(&task_edge, &task_channel, &task_state, cursor).await;
        let mut map = task_edge.hls.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&task_channel).is_some_and(|c| Arc::ptr_eq(c, &task_state)) {
            map.remove(&task_channel);
        }
    });
    Ok(state)
}

async fn segment_loop(edge: &Edge, channel: &ChannelId, state: &HlsChannel, mut cursor: Cursor) {
    let gauge = edge.metrics.viewers.with_label_values(&[channel.as_str(), "hls"]);
    gauge.inc();
    let linger = Duration::from_secs(u64::from(edge.node.config().linger_seconds));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut batch = Vec::with_capacity(64);
    info!(%channel, "HLS segmenter started");
    loop {
        let ev = tokio::select! {
            _ = edge.node.cancelled() => break,
            _ = tick.tick() => {
                if state.idle_for() > linger {
                    break;
                }
                continue;
            }
            ev = cursor.next(&mut batch, 64) => ev,
        };
        match ev {
            Ok(ev) => {
                let mut seg = state.segmenter.lock().unwrap_or_else(|e| e.into_inner());
                for c in batch.drain(..) {
                    seg.push(&c);
                }
                if ev == CursorEvent::Source(SourceStatus::Ended) {
                    info!(%channel, "broadcast ended: HLS playlist closed");
                    seg.end();
                }
                let n = seg.segments();
                drop(seg);
                state.segments.send_if_modified(|v| std::mem::replace(v, n) != n);
            }
            Err(CursorEnd::Lagged { .. }) => {
                cursor.skip_to_latest_keyframe();
            }
            Err(CursorEnd::Closed | CursorEnd::NotFound) => break,
        }
    }
    gauge.dec();
    info!(%channel, "HLS segmenter stopped");
}

fn count(edge: &Edge, channel: &ChannelId, kind: &str, code: StatusCode) {
    edge.metrics.hls_requests.with_label_values(&[channel.as_str(), kind, code.as_str()]).inc();
}

pub async fn playlist(edge: Arc<Edge>, channel_id: ChannelId, token: Option<&str>) -> Response {
    let state = match channel(&edge, &channel_id).await {
        Ok(s) => s,
        Err(r) => {
            count(&edge, &channel_id, "playlist", r.status());
            return r;
        }
    };
    let wait = Edge::secs(edge.settings().wait_for_live_seconds);
    let mut rx = state.segments.subscribe();
    let ready = tokio::time::timeout(wait, rx.wait_for(|n| *n > 0)).await;
    let text = state.with(Segmenter::playlist);
    let (Ok(Ok(_)), Some(text)) = (ready, text) else {
        count(&edge, &channel_id, "playlist", StatusCode::SERVICE_UNAVAILABLE);
        let mut r =
            text_error(StatusCode::SERVICE_UNAVAILABLE, format!("channel {channel_id} has no segments yet; retry"));
        r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
        return r;
    };
    count(&edge, &channel_id, "playlist", StatusCode::OK);
    let text = match token {
        Some(t) => with_token(&text, t),
        None => text,
    };
    (
        [
            (header::CONTENT_TYPE, "application/vnd.apple.mpegurl"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        text,
    )
        .into_response()
}

/// A segment: whole, a byte range of it (`Range`), or "not modified" (`If-None-Match`); HEAD
/// gets the same head without the body (axum's GET routes answer HEAD).
pub fn segment(edge: Arc<Edge>, channel_id: ChannelId, msn: u64, req: &HeaderMap) -> Response {
    let seg = lookup(&edge, &channel_id).and_then(|s| {
        s.touch();
        s.with(|seg| seg.segment(msn))
    });
    let Some(seg) = seg else {
        count(&edge, &channel_id, "segment", StatusCode::NOT_FOUND);
        return text_error(
            StatusCode::NOT_FOUND,
            format!("segment {msn} of channel {channel_id} is not available (expired or not yet made)"),
        );
    };
    let etag = HeaderValue::from_maybe_shared(seg.etag.clone()).ok();
    let mut headers = HeaderMap::with_capacity(6);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp2t"));
    // Immutable once made: a cache in front may keep it as long as the edge lists it and more.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60, immutable"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(e) = &etag {
        headers.insert(header::ETAG, e.clone());
    }
    let unchanged = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',').any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/").as_bytes() == &seg.etag[..])
    });
    let total = seg.body.len();
    let (status, body) = if unchanged {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else {
        match byte_range(req.get(header::RANGE).and_then(|v| v.to_str().ok()), total) {
            ByteRange::Whole => (StatusCode::OK, seg.body.clone()),
            ByteRange::Part(first, last) => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{total}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
                (StatusCode::PARTIAL_CONTENT, seg.body.slice(first..=last))
            }
            ByteRange::Unsatisfiable => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{total}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
                (StatusCode::RANGE_NOT_SATISFIABLE, Bytes::new())
            }
        }
    };
    count(&edge, &channel_id, "segment", status);
    edge.metrics.viewer_bytes.with_label_values(&[channel_id.as_str(), "hls"]).inc_by(body.len() as u64);
    (status, headers, Body::from(body)).into_response()
}

/// What a `Range` header asks of a body of `total` bytes.
#[derive(Debug, PartialEq, Eq)]
enum ByteRange {
    /// No range, one this server does not do (several at once), or one it cannot read: the
    /// whole body, as RFC 9110 allows.
    Whole,
    /// Bytes `first..=last`.
    Part(usize, usize),
    Unsatisfiable,
}

fn byte_range(header: Option<&str>, total: usize) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else { return ByteRange::Whole };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return ByteRange::Whole };
    let (a, b) = (a.trim(), b.trim());
    match (a.parse::<usize>().ok(), b.parse::<usize>().ok()) {
        // The last `n` bytes.
        (None, Some(n)) if a.is_empty() => match n.min(total) {
            0 => ByteRange::Unsatisfiable,
            n => ByteRange::Part(total - n, total - 1),
        },
        (Some(first), None) if b.is_empty() => {
            if first < total {
                ByteRange::Part(first, total - 1)
            } else {
                ByteRange::Unsatisfiable
            }
        }
        (Some(first), Some(last)) if first <= last => {
            if first < total {
                ByteRange::Part(first, last.min(total - 1))
            } else {
                ByteRange::Unsatisfiable
            }
        }
        _ => ByteRange::Whole,
    }
}

/// The playlist with `?token=` on every segment URI. Tokens are `[0-9A-Za-z.:@_-]` only, so
/// they go into a query as they are.
fn with_token(playlist: &str, token: &str) -> String {
    let mut out = String::with_capacity(playlist.len() + 64);
    for line in playlist.lines() {
        out.push_str(line);
        if !line.is_empty() && !line.starts_with('#') {
            out.push_str("?token=");
            out.extend(token.chars().filter(|c| c.is_ascii_alphanumeric() || ".:@_-".contains(*c)));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges_as_rfc_9110_reads_them() {
        use ByteRange::*;
        let r = |h: &str| byte_range(Some(h), 1000);
        assert_eq!(byte_range(None, 1000), Whole);
        assert_eq!(r("bytes=0-99"), Part(0, 99));
        assert_eq!(r("bytes=900-"), Part(900, 999));
        assert_eq!(r("bytes=-100"), Part(900, 999));
        assert_eq!(r("bytes=-5000"), Part(0, 999), "a suffix longer than the body is all of it");
        assert_eq!(r("bytes=500-5000"), Part(500, 999), "the end is clamped");
        assert_eq!(r("bytes=1000-"), Unsatisfiable);
        assert_eq!(r("bytes=-0"), Unsatisfiable);
        assert_eq!(r("bytes=0-1,5-6"), Whole, "several ranges: the whole body");
        for bad in ["bytes=9-1", "bytes=x-y", "items=0-1", "bytes=", "bytes=-"] {
            assert_eq!(r(bad), Whole, "{bad}");
        }
        assert_eq!(byte_range(Some("bytes=0-"), 0), Unsatisfiable);
    }
}
