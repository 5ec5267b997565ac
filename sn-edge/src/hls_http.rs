//! HLS serving: one segmenter task per channel, started by the first playlist request and stopped
//! once no HLS request has come for the node's linger time. Playlists, segments and LL-HLS parts
//! are answered from its state, each from one shared `Bytes`; blocking playlist reloads and
//! preload-hinted parts wait on its version.

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
use crate::hls::{PartAt, Ready, Segment, Segmenter, SegmenterConfig};
use crate::ts_viewer::{ended, open_error};

const OPEN_WAIT: Duration = Duration::from_secs(8);
/// Segments and parts never change once made: a cache in front may keep them as long as the edge
/// lists them and more.
const IMMUTABLE: &str = "public, max-age=60, immutable";

pub struct HlsChannel {
    segmenter: Mutex<Segmenter>,
    /// The segmenter's version: changes whenever a part or segment is published.
    changes: watch::Sender<u64>,
    last_access: Mutex<Instant>,
    /// How long a blocking request (playlist or part) is held at most: three target durations.
    hold: Duration,
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
    /// Waits (at most `limit`) until `done` holds of the segmenter; false on timeout.
    async fn wait(&self, limit: Duration, done: impl Fn(&Segmenter) -> bool) -> bool {
        let mut rx = self.changes.subscribe();
        matches!(tokio::time::timeout(limit, rx.wait_for(|_| self.with(&done))).await, Ok(Ok(_)))
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
        part_90k: (s.hls_part_seconds * 90_000.0) as u64,
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
        changes: watch::channel(0).0,
        last_access: Mutex::new(Instant::now()),
        hold: Duration::from_secs_f64(3.0 * s.hls_segment_seconds),
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
                let v = seg.version();
                drop(seg);
                state.changes.send_if_modified(|old| std::mem::replace(old, v) != v);
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

/// Segment `N.ts`, to send whole with [`segment_head`] (counted as served).
pub fn segment_out(edge: &Edge, channel: &ChannelId, name: &str) -> Option<Arc<Segment>> {
    let msn = name.strip_suffix(".ts")?.parse::<u64>().ok()?;
    let state = lookup(edge, channel)?;
    state.touch();
    let seg = state.with(|g| g.segment(msn))?;
    count(edge, channel, "segment", StatusCode::OK);
    edge.metrics.viewer_bytes.with_label_values(&[channel.as_str(), "hls"]).inc_by(seg.body.len() as u64);
    Some(seg)
}

/// A segment's `200` response head: the status line and every header but `Date` (added per
/// answer), without the blank line. Made on first use and kept with the segment.
pub fn segment_head(seg: &Segment) -> &Bytes {
    seg.http_head.get_or_init(|| {
        Bytes::from(format!(
            "HTTP/1.1 200 OK\r\ncontent-type: video/mp2t\r\ncache-control: {IMMUTABLE}\r\n\
             access-control-allow-origin: *\r\naccept-ranges: bytes\r\netag: {}\r\ncontent-length: {}\r\n",
            String::from_utf8_lossy(&seg.etag),
            seg.body.len()
        ))
    })
}

fn count(edge: &Edge, channel: &ChannelId, kind: &str, code: StatusCode) {
    edge.metrics.hls_requests.with_label_values(&[channel.as_str(), kind, code.as_str()]).inc();
}

/// What a playlist request asks for: at once, or (LL-HLS blocking reload, `_HLS_msn` and
/// optionally `_HLS_part`) once the playlist holds that segment or part.
#[derive(Debug, Default, Clone, Copy)]
pub struct Blocking {
    pub msn: Option<u64>,
    pub part: Option<usize>,
}

pub async fn playlist(edge: Arc<Edge>, channel_id: ChannelId, token: Option<&str>, block: Blocking) -> Response {
    let state = match channel(&edge, &channel_id).await {
        Ok(s) => s,
        Err(r) => {
            count(&edge, &channel_id, "playlist", r.status());
            return r;
        }
    };
    let fail = |status: StatusCode, why: String| {
        count(&edge, &channel_id, "playlist", status);
        let mut r = text_error(status, why);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    };
    let ready = match block.msn {
        None => {
            // A brand-new channel's first playlist waits until a player can start on it; after
            // `wait_for_live_seconds` it goes out with what there is.
            let wait = Edge::secs(edge.settings().wait_for_live_seconds);
            state.wait(wait, Segmenter::startable).await || state.with(|s| s.playlist().is_some())
        }
        Some(msn) => {
            let ask = |s: &Segmenter| s.ready(msn, block.part);
            if state.with(ask) == Ready::TooFar {
                return fail(
                    StatusCode::BAD_REQUEST,
                    format!("_HLS_msn={msn} is more than two segments past channel {channel_id}'s playlist"),
                );
            }
            state.wait(state.hold, |s| ask(s) != Ready::Later).await
        }
    };
    let text = state.with(Segmenter::playlist);
    let (true, Some(text)) = (ready, text) else {
        return fail(StatusCode::SERVICE_UNAVAILABLE, format!("channel {channel_id} has no such segment yet; retry"));
    };
    count(&edge, &channel_id, "playlist", StatusCode::OK);
    let body = match token {
        Some(t) => Bytes::from(with_token(&String::from_utf8_lossy(&text), t)),
        None => text,
    };
    // A blocking request names what it waited for: any answer to it stays right, so caches may
    // keep it a little; a plain request's answer changes with every part.
    let cache = if block.msn.is_some() { "public, max-age=6" } else { "no-cache" };
    (
        [
            (header::CONTENT_TYPE, "application/vnd.apple.mpegurl"),
            (header::CACHE_CONTROL, cache),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        body,
    )
        .into_response()
}

/// A segment (`N.ts`) or LL-HLS part (`N.P.ts`) by name.
pub async fn media(edge: Arc<Edge>, channel_id: ChannelId, name: &str, req: &HeaderMap) -> Response {
    let numbers = name.strip_suffix(".ts").map(|n| match n.split_once('.') {
        Some((msn, part)) => (msn.parse::<u64>().ok(), part.parse::<usize>().ok().map(Some)),
        None => (n.parse::<u64>().ok(), Some(None)),
    });
    let Some((Some(msn), Some(part))) = numbers else {
        return text_error(StatusCode::NOT_FOUND, format!("no segment {name:?}; segments are N.ts, parts N.P.ts"));
    };
    let state = lookup(&edge, &channel_id);
    if let Some(s) = &state {
        s.touch();
    }
    let found = match (part, &state) {
        (None, Some(s)) => s.with(|g| g.segment(msn)).map(|g| (g.body.clone(), g.etag.clone())),
        (Some(index), Some(s)) => {
            let at = |g: &Segmenter| g.part(msn, index);
            // The preload hint's part: held until it is made, as RFC 8216bis asks.
            if matches!(s.with(at), PartAt::Soon) {
                s.wait(s.hold, |g| !matches!(at(g), PartAt::Soon)).await;
            }
            match s.with(at) {
                PartAt::Here(p) => Some((p.body.clone(), p.etag.clone())),
                PartAt::Soon | PartAt::Never => None,
            }
        }
        (_, None) => None,
    };
    let kind = if part.is_some() { "part" } else { "segment" };
    let Some((body, etag)) = found else {
        count(&edge, &channel_id, kind, StatusCode::NOT_FOUND);
        return text_error(
            StatusCode::NOT_FOUND,
            format!("{kind} {name} of channel {channel_id} is not available (expired or not yet made)"),
        );
    };
    immutable(&edge, &channel_id, kind, body, &etag, req)
}

/// An immutable media file: whole, a byte range of it (`Range`), or "not modified"
/// (`If-None-Match`); HEAD gets the same head without the body (axum's GET routes answer HEAD).
fn immutable(edge: &Edge, channel_id: &ChannelId, kind: &str, body: Bytes, etag: &Bytes, req: &HeaderMap) -> Response {
    let mut headers = HeaderMap::with_capacity(6);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp2t"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(e) = HeaderValue::from_maybe_shared(etag.clone()) {
        headers.insert(header::ETAG, e);
    }
    let unchanged = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',').any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/").as_bytes() == &etag[..])
    });
    let total = body.len();
    let (status, body) = if unchanged {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else {
        match byte_range(req.get(header::RANGE).and_then(|v| v.to_str().ok()), total) {
            ByteRange::Whole => (StatusCode::OK, body),
            ByteRange::Part(first, last) => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{total}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
                (StatusCode::PARTIAL_CONTENT, body.slice(first..=last))
            }
            ByteRange::Unsatisfiable => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{total}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
                (StatusCode::RANGE_NOT_SATISFIABLE, Bytes::new())
            }
        }
    };
    count(edge, channel_id, kind, status);
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

/// The playlist with `?token=` on every segment and part URI (the lines that are URIs, and the
/// `URI="…"` of LL-HLS tags). Tokens are `[0-9A-Za-z.:@_-]` only, so they go into a query as
/// they are.
fn with_token(playlist: &str, token: &str) -> String {
    let query: String =
        "?token=".chars().chain(token.chars().filter(|c| c.is_ascii_alphanumeric() || ".:@_-".contains(*c))).collect();
    let mut out = String::with_capacity(playlist.len() * 2);
    for line in playlist.lines() {
        let uri_end = match line.find("URI=\"") {
            _ if line.is_empty() => None,
            _ if !line.starts_with('#') => Some(line.len()),
            Some(at) => line[at + 5..].find('"').map(|end| at + 5 + end),
            None => None,
        };
        match uri_end {
            Some(end) => {
                out.push_str(&line[..end]);
                out.push_str(&query);
                out.push_str(&line[end..]);
            }
            None => out.push_str(line),
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

    #[test]
    fn tokens_go_on_segment_and_part_uris() {
        let pl = "#EXTM3U\n#EXT-X-PART:DURATION=0.480,URI=\"3.0.ts\",INDEPENDENT=YES\n#EXTINF:2.000,\n3.ts\n\
                  #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"4.0.ts\"\n";
        assert_eq!(
            with_token(pl, "a.b/<c>"),
            "#EXTM3U\n#EXT-X-PART:DURATION=0.480,URI=\"3.0.ts?token=a.bc\",INDEPENDENT=YES\n#EXTINF:2.000,\n\
             3.ts?token=a.bc\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"4.0.ts?token=a.bc\"\n"
        );
    }
}
