//! Legacy HTTP-TS viewers: `GET /live/{channel}.ts` is one endless MPEG-TS body starting at a
//! keyframe `viewer_start_lead_ms` or more behind live. The request is checked and the channel
//! opened here, on the raw socket the HTTP server hands over ([`livesky_net::takeover`]); the
//! viewer then joins the channel's fan-out ([`crate::ts_fanout`]), which writes every viewer's
//! chunks straight from the shared ring.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Query;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use livesky_net::http::text_error;
use livesky_net::limits::ConnPermit;
use livesky_net::takeover::{RawConn, RawRequest, Served, Takeover, answer};
use proto::{ChannelId, Chunk, SourceStatus, StartAt};
use sn_core::hub::{Cursor, CursorEnd, CursorEvent, Lease};
use sn_core::{OpenError, Origin};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::{Edge, ViewerQuery};

const BATCH: usize = 64;
const OPEN_WAIT: Duration = Duration::from_secs(8);
/// How long writing the response head may take.
const HEAD_WAIT: Duration = Duration::from_secs(5);

/// The answer for a channel whose broadcaster left for good (see `reconnect_grace_seconds`).
pub(crate) fn ended(channel: &ChannelId) -> Response {
    text_error(StatusCode::NOT_FOUND, format!("the broadcast on channel {channel} has ended; it is not live"))
}

pub(crate) fn open_error(channel: &ChannelId, e: OpenError) -> Response {
    match e {
        OpenError::NotFound => text_error(StatusCode::NOT_FOUND, format!("channel {channel} does not exist")),
        OpenError::Timeout => {
            text_error(StatusCode::SERVICE_UNAVAILABLE, format!("channel {channel} is not reachable right now; retry"))
        }
        OpenError::ShuttingDown => text_error(StatusCode::SERVICE_UNAVAILABLE, "edge is shutting down"),
    }
}

/// Waits (bounded) for the first chunks a new viewer gets.
pub(crate) async fn first_chunks(
    cursor: &mut Cursor,
    out: &mut Vec<Chunk>,
    wait: Duration,
) -> Result<(), Option<CursorEnd>> {
    let res = tokio::time::timeout(wait, async {
        loop {
            match cursor.next(out, BATCH).await {
                Ok(CursorEvent::Chunks) => return Ok(()),
                Ok(CursorEvent::Source(SourceStatus::Ended)) => return Err(None),
                Ok(CursorEvent::Source(_)) => continue,
                Err(CursorEnd::Lagged { .. }) => {
                    cursor.skip_to_latest_keyframe();
                }
                Err(e) => return Err(Some(e)),
            }
        }
    })
    .await;
    res.unwrap_or(Err(None))
}

/// The legacy viewer connections the edge serves off hyper: a new HTTP-TS viewer's socket (the
/// checks and the start are answered here, then the viewer joins its channel's fan-out,
/// [`crate::ts_fanout`]) and HLS players' kept-alive connections ([`crate::hls_raw`]).
pub fn takeover(edge: Arc<Edge>) -> Arc<dyn Takeover> {
    Arc::new(EdgeTakeover(edge))
}

struct EdgeTakeover(Arc<Edge>);

impl Takeover for EdgeTakeover {
    fn wants(&self, method: &str, path: &str) -> bool {
        method == "GET" && (ts_channel_name(path).is_some() || crate::hls_raw::is_hls(path))
    }

    fn serve(self: Arc<Self>, conn: RawConn) -> Served {
        let edge = self.0.clone();
        Box::pin(async move {
            if ts_channel_name(conn.req.uri.path()).is_some() {
                start(edge, conn.req, conn.stream, conn.permit).await
            } else {
                crate::hls_raw::serve(edge, conn).await
            }
        })
    }
}

/// `name` of `/live/{name}.ts` (HLS segments, `/live/{channel}/{n}.ts`, are not).
fn ts_channel_name(path: &str) -> Option<&str> {
    path.strip_prefix("/live/")?.strip_suffix(".ts").filter(|n| !n.contains('/'))
}

async fn start(edge: Arc<Edge>, req: RawRequest, mut stream: TcpStream, permit: ConnPermit) {
    let Some(raw) = ts_channel_name(req.uri.path()) else { return };
    let Some(name) = path_name(raw) else {
        let resp = text_error(StatusCode::BAD_REQUEST, "the channel name in the path is not UTF-8");
        return answer(stream, &req, resp).await;
    };
    let query = query(&req);
    let token =
        query.as_ref().map_or_else(|| livesky_net::http::bearer(&req.headers).unwrap_or(""), |q| q.token(&req.headers));
    let channel = match crate::legacy_channel(&edge, &name, false, token) {
        Ok(c) => c,
        Err(resp) => return answer(stream, &req, resp).await,
    };
    let paced = match query.as_ref().and_then(|q| q.latency.as_deref()) {
        None => true,
        Some("low") => false,
        Some(other) => {
            let resp = text_error(
                StatusCode::BAD_REQUEST,
                format!("latency={other} is not known: use latency=low, or leave it out"),
            );
            return answer(stream, &req, resp).await;
        }
    };
    let (lease, cursor, first) = match open(&edge, &channel, paced).await {
        Ok(started) => started,
        Err(resp) => return answer(stream, &req, resp).await,
    };
    // The body runs until the edge closes it: no length, no chunked framing to pay per write.
    let head = format!(
        "{} 200 OK\r\ncontent-type: video/mp2t\r\ncache-control: no-cache, no-store\r\naccess-control-allow-origin: *\r\nconnection: close\r\n\r\n",
        req.version()
    );
    let wrote = tokio::time::timeout(HEAD_WAIT, stream.write_all(head.as_bytes())).await;
    if !matches!(wrote, Ok(Ok(()))) {
        return;
    }
    // Leaves the reactor, still non-blocking.
    let Ok(stream) = stream.into_std() else { return };
    let viewer = crate::ts_fanout::Viewer::new(stream, cursor, first, lease, permit, paced);
    edge.ts_groups.add(&edge, &channel, viewer);
}

/// A channel name from a path, as axum's `Path` would have it: `/live/d%65mo.ts` is `demo`.
pub(crate) fn path_name(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    percent_encoding::percent_decode_str(raw).decode_utf8().ok()
}

/// The request's query, as axum's `Query` reads it; `None` if it does not parse.
pub(crate) fn query(req: &RawRequest) -> Option<ViewerQuery> {
    Query::<ViewerQuery>::try_from_uri(&req.uri).ok().map(|q| q.0)
}

/// Opens the channel for a new viewer and waits (bounded) for its first chunks, from a keyframe
/// held (instant start): the start lead behind live for a `paced` viewer, the newest otherwise.
async fn open(edge: &Arc<Edge>, channel: &ChannelId, paced: bool) -> Result<(Lease, Cursor, Vec<Chunk>), Response> {
    let m = &edge.metrics;
    let ch = channel.as_str();
    let outcome = |o: &str| m.viewer_sessions.with_label_values(&[ch, "ts", o]).inc();
    if m.viewers.with_label_values(&[ch, "ts"]).get() as usize >= edge.settings().max_viewers {
        outcome("full");
        return Err(text_error(StatusCode::SERVICE_UNAVAILABLE, "edge is at its viewer limit; try another edge"));
    }
    let lease = match edge.node.open(channel, StartAt::Live, &Origin::Viewer, OPEN_WAIT).await {
        Ok(l) => l,
        Err(e) => {
            outcome("unavailable");
            return Err(open_error(channel, e));
        }
    };
    let hub = lease.hub().clone();
    if hub.status().source == SourceStatus::Ended {
        outcome("ended");
        return Err(ended(channel));
    }
    // A live source: start at a keyframe already held (instant start), at least the start lead
    // behind live where the ring reaches that far. Otherwise wait for fresh content rather than
    // replaying whatever the ring still holds.
    let lead = if paced { u32::try_from(edge.settings().viewer_start_lead_ms).unwrap_or(u32::MAX) } else { 0 };
    let start = if lead == 0 { StartAt::Live } else { StartAt::Backlog { ms: lead } };
    let mut cursor = if hub.status().source.is_live() { hub.cursor(start) } else { hub.cursor_at_next_keyframe() };
    let mut first = Vec::with_capacity(BATCH);
    match first_chunks(&mut cursor, &mut first, Edge::secs(edge.settings().wait_for_live_seconds)).await {
        Ok(()) => {}
        Err(Some(CursorEnd::NotFound)) => {
            outcome("not_found");
            return Err(open_error(channel, OpenError::NotFound));
        }
        Err(_) => {
            outcome("not_live");
            return Err(text_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("channel {channel} is not live right now"),
            ));
        }
    }
    outcome("ok");
    Ok((lease, cursor, first))
}

/// `/live/{channel}.ts` asked on a connection hyper already serves (a keep-alive connection's
/// later request): the fan-out takes only a connection's first request, so the client is sent
/// to the same URL on a new connection.
pub fn again_on_new_connection(uri: &axum::http::Uri) -> Response {
    let location = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, location), (header::CONNECTION, "close".to_string())],
        "the stream starts on a new connection\n",
    )
        .into_response()
}
