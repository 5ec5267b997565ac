//! HLS players' kept-alive connections served off hyper. A player alternates playlist and
//! segment requests on one connection; here a segment goes out as one vectored write of its
//! response head (made once per segment) and its shared bytes, with no header map, body frame or
//! allocation for the answer. Playlists, parts and every other answer are the same responses the
//! router gives ([`crate::hls_http`]), written here.
//!
//! (`sendfile` from a memfd, nginx's way, was measured here twice and cost more CPU per request
//! than the copy on this 2-core loopback bench: a page-cache lookup and reference counts for each
//! 4 kB page, on pages both worker threads send at once. From an ext4 file in large folios, as
//! the HTTP-TS spool sends, it was no clear gain either: 1.17, 0.97 and 1.11× nginx against
//! 1.13, 1.09 and 0.88× for the copy at 5,000 connections. BENCHMARKS.md.)
//!
//! Only plain requests are served here: a request with a range, a condition, a body, an upgrade,
//! HTTP/1.0, a HEAD, or anything this loop does not read goes to hyper, with the connection for
//! the rest of its life, so every rule of the router still holds.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, Method, header};
use livesky_net::takeover::{
    Head, RawConn, RawRequest, Written, date_end, join, read_head, write_all_vectored, write_response,
};
use tokio::net::TcpStream;
use tracing::debug;

use crate::Edge;
use crate::hls_http::{self, Blocking};
use crate::metrics::ServeCost;
use crate::ts_viewer::{path_name, query};

/// How long one answer may take to write (a segment to a slow player).
const SEND_LIMIT: Duration = Duration::from_secs(30);

/// `/live/{channel}/{file}`: an HLS playlist, segment or part.
pub(crate) fn is_hls(path: &str) -> bool {
    hls_parts(path).is_some()
}

fn hls_parts(path: &str) -> Option<(&str, &str)> {
    let (channel, file) = path.strip_prefix("/live/")?.split_once('/')?;
    (!file.contains('/') && (file == "index.m3u8" || file.ends_with(".ts"))).then_some((channel, file))
}

enum Step {
    /// Answered; the connection stays open for the next request.
    Next,
    Close,
    /// Not served here: hyper gets this request and the connection.
    Hyper,
}

pub(crate) async fn serve(edge: Arc<Edge>, conn: RawConn) {
    let RawConn { mut req, mut stream, permit, mut rest, back, header_timeout, limiter } = conn;
    let cost = edge.metrics.serve_cost("hls");
    // One wait on shutdown for the connection's life, not one per request.
    let shutdown = edge.node.cancelled();
    tokio::pin!(shutdown);
    loop {
        let step = tokio::select! {
            biased;
            _ = &mut shutdown => return,
            s = answer(&edge, &req, &mut stream, &cost) => s,
        };
        match step {
            Step::Next => {}
            Step::Close => return,
            Step::Hyper => return back.serve(join(&req.head, &rest), stream, permit).await,
        }
        let head = tokio::select! {
            biased;
            _ = &mut shutdown => return,
            h = read_head(&mut stream, &mut rest, req.peer, header_timeout) => h,
        };
        req = match head {
            Head::Request(r) => r,
            Head::Unreadable => return back.serve(rest.freeze(), stream, permit).await,
            Head::Gone { timed_out } => {
                if timed_out {
                    limiter.count("timeout");
                }
                return;
            }
        };
    }
}

/// Whether hyper must answer this request: anything but a plain HTTP/1.1 GET without a body.
fn for_hyper(req: &RawRequest) -> bool {
    let h = &req.headers;
    let body = h.get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0");
    req.method != Method::GET
        || req.minor != 1
        || body
        || [
            header::RANGE,
            header::IF_NONE_MATCH,
            header::IF_RANGE,
            header::TRANSFER_ENCODING,
            header::EXPECT,
            header::UPGRADE,
        ]
        .iter()
        .any(|n| h.contains_key(n))
}

fn keep_alive(headers: &HeaderMap) -> bool {
    !headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
}

async fn answer(edge: &Arc<Edge>, req: &RawRequest, stream: &mut TcpStream, cost: &ServeCost) -> Step {
    let path = req.uri.path();
    let (Some((raw, file)), false) = (hls_parts(path), for_hyper(req)) else { return Step::Hyper };
    let (Some(name), Some(q)) = (path_name(raw), query(req)) else { return Step::Hyper };
    let keep = keep_alive(&req.headers);
    let wrote = match crate::legacy_channel(edge, &name, true, q.token(&req.headers)) {
        Err(resp) => write(stream, req, resp, keep).await,
        Ok(channel) if file == "index.m3u8" => {
            let block = Blocking { msn: q.hls_msn, part: q.hls_part };
            // Boxed, as the other answers but a segment's: a connection's future, held for its
            // whole life and mostly waiting, then stays small (3.2 kB was 2.3 kB).
            let resp = Box::pin(hls_http::playlist(edge.clone(), channel, q.token.as_deref(), block)).await;
            write(stream, req, resp, keep).await
        }
        Ok(channel) => match hls_http::segment_out(edge, &channel, file) {
            Some(seg) => {
                let connection: &[u8] = if keep { b"" } else { b"connection: close\r\n" };
                let end = date_end();
                let head = hls_http::segment_head(&seg);
                let mut bufs = [
                    IoSlice::new(head),
                    IoSlice::new(connection),
                    IoSlice::new(end.as_bytes()),
                    IoSlice::new(&seg.body),
                ];
                timed(write_all_vectored(stream, &mut bufs)).await
            }
            None => {
                let resp = Box::pin(hls_http::media(edge.clone(), channel, file, &req.headers)).await;
                write(stream, req, resp, keep).await
            }
        },
    };
    if let Ok(w) = &wrote {
        cost.record(w.bytes as u64, w.busy);
    }
    match wrote {
        Ok(_) if keep => Step::Next,
        Ok(_) => Step::Close,
        Err(e) => {
            debug!(peer = %req.peer, error = %e, "HLS connection ended");
            Step::Close
        }
    }
}

async fn write(
    stream: &mut TcpStream,
    req: &RawRequest,
    resp: axum::response::Response,
    keep: bool,
) -> io::Result<Written> {
    timed(Box::pin(write_response(stream, req, resp, keep))).await
}

async fn timed(write: impl Future<Output = io::Result<Written>>) -> io::Result<Written> {
    tokio::time::timeout(SEND_LIMIT, write).await.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}
