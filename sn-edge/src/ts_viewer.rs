//! Legacy HTTP-TS viewers: `GET /live/{channel}.ts` is one endless MPEG-TS body starting at a
//! keyframe. Each viewer has a cursor into the shared ring and a small queue of shared `Bytes` in
//! front of its socket: a slow viewer skips ahead to the newest keyframe, a stuck one is dropped,
//! and neither can make the edge hold more than that queue for it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use livesky_net::http::text_error;
use proto::{ChannelId, Chunk, SourceStatus, StartAt};
use sn_core::hub::{Cursor, CursorEnd, CursorEvent};
use sn_core::{OpenError, Origin};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::Edge;

/// Chunks queued per viewer in front of its socket (about a second of video).
const VIEWER_QUEUE: usize = 32;
const BATCH: usize = 64;
const OPEN_WAIT: Duration = Duration::from_secs(8);

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

pub async fn serve(edge: Arc<Edge>, channel: ChannelId) -> Response {
    let m = &edge.metrics;
    let ch = channel.as_str();
    let outcome = |o: &str| m.viewer_sessions.with_label_values(&[ch, "ts", o]).inc();
    if m.viewers.with_label_values(&[ch, "ts"]).get() as usize >= edge.settings().max_viewers {
        outcome("full");
        return text_error(StatusCode::SERVICE_UNAVAILABLE, "edge is at its viewer limit; try another edge");
    }
    let lease = match edge.node.open(&channel, StartAt::Live, &Origin::Viewer, OPEN_WAIT).await {
        Ok(l) => l,
        Err(e) => {
            outcome("unavailable");
            return open_error(&channel, e);
        }
    };
    let hub = lease.hub().clone();
    if hub.status().source == SourceStatus::Ended {
        outcome("ended");
        return ended(&channel);
    }
    // A live source: start at the newest keyframe already held (instant start). Otherwise wait
    // for fresh content rather than replaying whatever the ring still holds.
    let mut cursor =
        if hub.status().source.is_live() { hub.cursor(StartAt::Live) } else { hub.cursor_at_next_keyframe() };
    let mut batch = Vec::with_capacity(BATCH);
    match first_chunks(&mut cursor, &mut batch, Edge::secs(edge.settings().wait_for_live_seconds)).await {
        Ok(()) => {}
        Err(Some(CursorEnd::NotFound)) => {
            outcome("not_found");
            return open_error(&channel, OpenError::NotFound);
        }
        Err(_) => {
            outcome("not_live");
            return text_error(StatusCode::SERVICE_UNAVAILABLE, format!("channel {channel} is not live right now"));
        }
    }
    outcome("ok");
    let (tx, rx) = mpsc::channel::<Bytes>(VIEWER_QUEUE);
    let task_edge = edge.clone();
    edge.node.spawn(async move {
        let _lease = lease;
        pump(task_edge, channel, cursor, batch, tx).await;
    });
    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx)) });
    (
        [
            (header::CONTENT_TYPE, "video/mp2t"),
            (header::CACHE_CONTROL, "no-cache, no-store"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// Keeps the viewer's gauge right however its task ends.
struct ViewerGauge<'a>(&'a prometheus::IntGauge);
impl Drop for ViewerGauge<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn pump(edge: Arc<Edge>, channel: ChannelId, mut cursor: Cursor, mut batch: Vec<Chunk>, tx: mpsc::Sender<Bytes>) {
    let m = &edge.metrics;
    let ch = channel.as_str();
    let gauge = m.viewers.with_label_values(&[ch, "ts"]);
    gauge.inc();
    let _gauge = ViewerGauge(&gauge);
    let bytes_ctr = m.viewer_bytes.with_label_values(&[ch, "ts"]);
    let stuck = Edge::secs(edge.settings().stuck_viewer_seconds);
    let max_lag_ms = (edge.settings().max_viewer_lag_seconds * 1000.0) as u64;
    let mut flush = edge.flush_clock.clone();
    // `batch[sent..]` is fetched but not yet queued for the socket.
    let mut sent = 0;
    let mut last_progress = Instant::now();
    let mut recheck = tokio::time::interval(Duration::from_millis(250));
    let drop_reason = loop {
        while sent < batch.len() {
            match tx.try_send(batch[sent].payload.clone()) {
                Ok(()) => {
                    bytes_ctr.inc_by(batch[sent].payload.len() as u64);
                    sent += 1;
                    last_progress = Instant::now();
                }
                Err(TrySendError::Full(_)) => break,
                Err(TrySendError::Closed(_)) => return,
            }
        }
        if sent == batch.len() {
            batch.clear();
            sent = 0;
        } else if last_progress.elapsed() >= stuck {
            // Chunks are waiting and the viewer has taken nothing for too long; skipping ahead
            // would not help a viewer that does not read at all.
            info!(%channel, "viewer took nothing for a while; dropping it");
            break "stuck";
        }
        // Too far behind live (measured at the oldest chunk not yet handed over): skip ahead.
        let behind = match batch.get(sent) {
            Some(c) => cursor.behind_newest_ms(c.header.media_ts),
            None => cursor.lag_ms(),
        };
        if behind > max_lag_ms {
            debug!(%channel, behind_ms = behind, "viewer too far behind; skipping ahead");
            m.viewer_skips.with_label_values(&[ch]).inc();
            batch.clear();
            sent = 0;
            cursor.skip_to_latest_keyframe();
        }
        if sent < batch.len() {
            // The viewer's queue is full: wait for it to take something, but not forever.
            tokio::select! {
                _ = edge.node.cancelled() => break "shutdown",
                permit = tx.reserve() => match permit {
                    Ok(p) => {
                        bytes_ctr.inc_by(batch[sent].payload.len() as u64);
                        p.send(batch[sent].payload.clone());
                        sent += 1;
                        last_progress = Instant::now();
                    }
                    Err(_) => return,
                },
                _ = tokio::time::sleep_until(last_progress + stuck) => {}
                _ = recheck.tick() => {}
            }
            continue;
        }
        // Caught up: let a few chunks gather so the next wake-up writes them together.
        if let Some(clock) = flush.as_mut() {
            tokio::select! {
                _ = edge.node.cancelled() => break "shutdown",
                _ = tx.closed() => return,
                r = clock.changed() => if r.is_err() { break "shutdown" },
            }
        }
        let ev = tokio::select! {
            _ = edge.node.cancelled() => break "shutdown",
            _ = tx.closed() => return,
            ev = cursor.next(&mut batch, BATCH) => ev,
        };
        match ev {
            Ok(CursorEvent::Source(SourceStatus::Ended)) => break "broadcast_ended",
            Ok(_) => {}
            Err(CursorEnd::Lagged { .. }) => {
                m.viewer_skips.with_label_values(&[ch]).inc();
                cursor.skip_to_latest_keyframe();
            }
            Err(CursorEnd::Closed) => break "channel_closed",
            Err(CursorEnd::NotFound) => break "not_found",
        }
    };
    m.viewer_drops.with_label_values(&[ch, drop_reason]).inc();
}
