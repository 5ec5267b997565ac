//! The edge's client port (LiveSky clients): TCP for native players, and the same messages over a
//! WebSocket (`GET /livesky/ws` on the HTTP port, one binary message per control-message body)
//! for web pages. One task per connection reads the client's messages into its channel's task
//! ([`crate::channel_task`]) and writes what that task queues for it (control messages and
//! chunks); a connection whose queue overflows is closed. Both transports share one set of caps.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use bytes::BytesMut;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use proto::WireMessage;
use proto::peer::{EdgeControlCodec, FromEdge, ToEdge};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::Edge;
use crate::EdgeError;
use crate::channel_task::{CONN_QUEUE, ConnCmd, ConnOut, ServiceIn, service_for};
use crate::service::{ConnId, Input};

/// Largest message a client may send (a report, an SDP offer): on either transport.
pub(crate) const MAX_CLIENT_FRAME: usize = 64 * 1024;
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn start(edge: Arc<Edge>, listener: TcpListener) {
    let node = edge.node.clone();
    let limits = &node.config().limits;
    let max = edge.settings().admission.max_clients.saturating_add(64);
    let slots = livesky_net::limits::ConnLimiter::new("clients", max, limits.clients_max_per_ip)
        .with_metrics(node.metrics().conns.clone());
    *edge.clients.slots.lock().unwrap_or_else(|e| e.into_inner()) = Some(slots.clone());
    watch_siblings(edge.clone());
    node.spawn(async move {
        let cancel = edge.node.cancel_token();
        while let Some((stream, from, permit)) = livesky_net::limits::accept_capped(&listener, &slots, &cancel).await {
            let Ok(permit) = permit else { continue };
            let _ = stream.set_nodelay(true);
            let edge2 = edge.clone();
            edge.node.spawn(async move {
                let _permit = permit;
                let (sink, stream) = Framed::new(stream, EdgeControlCodec::with_decode_limit(MAX_CLIENT_FRAME)).split();
                serve_client(edge2, stream.map(|m| m.map_err(|e| e.to_string())), sink, from, false).await;
            });
        }
    });
}

/// Follows the MC's membership: a sibling edge whose client port no live member has is dead, and
/// the services redirect nobody to it (a static sibling list would send clients to a dead edge,
/// as the testbed's killed-edge run showed). Without an MC nothing is known, and nothing changes.
fn watch_siblings(edge: Arc<Edge>) {
    let node = edge.node.clone();
    node.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = edge.node.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(members) = edge.node.mc_members() else { continue };
            let alive: std::collections::HashSet<SocketAddr> = members.values().filter_map(|m| m.clients).collect();
            let dead = edge
                .settings()
                .siblings
                .iter()
                .filter(|s| s.parse::<SocketAddr>().is_ok_and(|a| !alive.contains(&a)))
                .cloned()
                .collect();
            edge.clients.set_dead_siblings(dead);
        }
    });
}

/// A web page's connection, upgraded from `GET /livesky/ws`; `permit`: its place under the client
/// port's caps.
pub(crate) async fn serve_websocket(
    edge: Arc<Edge>,
    socket: WebSocket,
    from: SocketAddr,
    permit: livesky_net::limits::ConnPermit,
) {
    let _permit = permit;
    let (sink, stream) = socket.split();
    let stream = stream.take_while(|m| std::future::ready(!matches!(m, Ok(Message::Close(_))))).filter_map(|m| {
        std::future::ready(match m {
            Ok(Message::Binary(b)) => Some(ToEdge::decode_body(b).map_err(|e| e.to_string())),
            Ok(Message::Text(_)) => Some(Err("a text message: the client protocol is binary".to_string())),
            Ok(_) => None,
            Err(e) => Some(Err(e.to_string())),
        })
    });
    let sink = sink.with(|m: FromEdge| {
        let mut b = BytesMut::new();
        m.encode_body(&mut b);
        std::future::ready(Ok::<_, axum::Error>(Message::Binary(b.freeze())))
    });
    serve_client(edge, stream, sink, from, true).await;
}

async fn serve_client<R, W>(edge: Arc<Edge>, mut rx_msgs: R, mut tx: W, from: SocketAddr, browser: bool)
where
    R: Stream<Item = Result<ToEdge, String>> + Unpin,
    W: Sink<FromEdge> + Unpin,
    W::Error: std::fmt::Display,
{
    let mut join = match timeout(JOIN_TIMEOUT, rx_msgs.next()).await {
        Ok(Some(Ok(ToEdge::Join(j)))) => j,
        Ok(Some(Ok(other))) => {
            debug!(%from, got = proto::WireMessage::kind(&other), "client did not start with a join");
            return;
        }
        Ok(Some(Err(e))) => {
            debug!(%from, error = %e, "bad data from client");
            return;
        }
        _ => return,
    };
    let channel = join.channel.clone();
    if !edge.node.knows(&channel) {
        edge.node.count_unknown_channel("clients");
        let _ = write(&mut tx, [FromEdge::Refused { reason: format!("no channel {channel} on this CDN") }]).await;
        return;
    }
    match edge.admit_viewer(&channel, &join.token) {
        Ok(Some(_)) => {}
        // An open channel checks no token: one the client made up must not become the identity
        // its bans hold (it would dodge a ban on its address).
        Ok(None) => join.token.clear(),
        Err(e) => {
            debug!(%from, %channel, error = %e, "LiveSky client refused");
            let _ = write(&mut tx, [FromEdge::Refused { reason: e.to_string() }]).await;
            return;
        }
    }
    let svc = match service_for(&edge, &channel).await {
        Ok(s) => s,
        Err(e) => {
            let _ = write(&mut tx, [FromEdge::Refused { reason: e.to_string() }]).await;
            return;
        }
    };
    let conn = ConnId(edge.clients.next_conn.fetch_add(1, Ordering::Relaxed));
    let (out_tx, mut out_rx) = mpsc::channel(CONN_QUEUE);
    let kill = CancellationToken::new();
    let out = ConnOut { tx: out_tx, kill: kill.clone() };
    if svc.inbox.send(ServiceIn::Joined { conn, from, join, out, browser }).await.is_err() {
        return;
    }
    let end = loop {
        tokio::select! {
            _ = edge.node.cancelled() => break "shutdown",
            _ = kill.cancelled() => break "closed by edge (queue full)",
            msg = rx_msgs.next() => match msg {
                Some(Ok(m)) => {
                    if svc.inbox.send(ServiceIn::Input(Input::Message { conn, msg: m })).await.is_err() {
                        break "service gone";
                    }
                }
                Some(Err(e)) => {
                    debug!(%from, error = %e, "bad data from client; closing");
                    break "bad data";
                }
                None => break "closed",
            },
            cmd = out_rx.recv() => match cmd {
                Some(ConnCmd::Send(m)) => {
                    if let Err(e) = write(&mut tx, [m]).await {
                        debug!(%from, %conn, error = %e, "client write failed");
                        break "write failed";
                    }
                }
                Some(ConnCmd::Chunks(chunks)) => {
                    if let Err(e) = write(&mut tx, chunks.into_iter().map(FromEdge::Chunk)).await {
                        debug!(%from, %conn, error = %e, "client write failed");
                        break "write failed";
                    }
                }
                Some(ConnCmd::Close) | None => {
                    let _ = timeout(WRITE_TIMEOUT, tx.close()).await;
                    break "closed by edge";
                }
            },
        }
    };
    debug!(%from, %conn, browser, reason = end, "client connection ended");
    let _ = svc.inbox.send(ServiceIn::Input(Input::Disconnected { conn })).await;
}

/// Writes `msgs` and flushes them, within [`WRITE_TIMEOUT`].
async fn write<W>(tx: &mut W, msgs: impl IntoIterator<Item = FromEdge>) -> Result<(), EdgeError>
where
    W: Sink<FromEdge> + Unpin,
    W::Error: std::fmt::Display,
{
    let send = async {
        for m in msgs {
            tx.feed(m).await?;
        }
        tx.flush().await
    };
    match timeout(WRITE_TIMEOUT, send).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(EdgeError::Write(e.to_string())),
        Err(_) => Err(EdgeError::WriteTimeout(WRITE_TIMEOUT)),
    }
}
