//! The edge's client port (LiveSky clients, TCP): one task per connection reads the client's
//! messages into its channel's task ([`crate::channel_task`]) and writes what that task queues for
//! it (control messages and chunks) to the socket; a connection whose queue overflows is closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use proto::peer::{EdgeControlCodec, FromEdge, ToEdge};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::Edge;
use crate::EdgeError;
use crate::channel_task::{CONN_QUEUE, ConnCmd, ConnOut, ServiceIn, service_for};
use crate::service::{ConnId, Input};

const MAX_CLIENT_FRAME: usize = 64 * 1024;
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn start(edge: Arc<Edge>, listener: TcpListener) {
    let node = edge.node.clone();
    let limits = &node.config().limits;
    let max = edge.settings().admission.max_clients.saturating_add(64);
    let slots = livesky_net::limits::ConnLimiter::new("clients", max, limits.clients_max_per_ip)
        .with_metrics(node.metrics().conns.clone());
    node.spawn(async move {
        let cancel = edge.node.cancel_token();
        while let Some((stream, from, permit)) = livesky_net::limits::accept_capped(&listener, &slots, &cancel).await {
            let Ok(permit) = permit else { continue };
            let _ = stream.set_nodelay(true);
            let edge2 = edge.clone();
            edge.node.spawn(async move {
                let _permit = permit;
                serve_client(edge2, stream, from).await;
            });
        }
    });
}

type ClientFramed = Framed<TcpStream, EdgeControlCodec>;

async fn serve_client(edge: Arc<Edge>, stream: TcpStream, from: SocketAddr) {
    let mut framed = Framed::new(stream, EdgeControlCodec::with_decode_limit(MAX_CLIENT_FRAME));
    let mut join = match timeout(JOIN_TIMEOUT, framed.next()).await {
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
        let _ = framed.send(FromEdge::Refused { reason: format!("no channel {channel} on this CDN") }).await;
        return;
    }
    match edge.admit_viewer(&channel, &join.token) {
        Ok(Some(_)) => {}
        // An open channel checks no token: one the client made up must not become the identity
        // its bans hold (it would dodge a ban on its address).
        Ok(None) => join.token.clear(),
        Err(e) => {
            debug!(%from, %channel, error = %e, "LiveSky client refused");
            let _ = framed.send(FromEdge::Refused { reason: e.to_string() }).await;
            return;
        }
    }
    let svc = match service_for(&edge, &channel).await {
        Ok(s) => s,
        Err(e) => {
            let _ = framed.send(FromEdge::Refused { reason: e.to_string() }).await;
            return;
        }
    };
    let conn = ConnId(edge.clients.next_conn.fetch_add(1, Ordering::Relaxed));
    let (tx, mut rx) = mpsc::channel(CONN_QUEUE);
    let kill = CancellationToken::new();
    let out = ConnOut { tx, kill: kill.clone() };
    if svc.inbox.send(ServiceIn::Joined { conn, from, join, out }).await.is_err() {
        return;
    }
    let end = loop {
        tokio::select! {
            _ = edge.node.cancelled() => break "shutdown",
            _ = kill.cancelled() => break "closed by edge (queue full)",
            msg = framed.next() => match msg {
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
            cmd = rx.recv() => match cmd {
                Some(ConnCmd::Send(m)) => {
                    if let Err(e) = write(&mut framed, [m]).await {
                        debug!(%from, %conn, error = %e, "client write failed");
                        break "write failed";
                    }
                }
                Some(ConnCmd::Chunks(chunks)) => {
                    if let Err(e) = write(&mut framed, chunks.into_iter().map(FromEdge::Chunk)).await {
                        debug!(%from, %conn, error = %e, "client write failed");
                        break "write failed";
                    }
                }
                Some(ConnCmd::Close) | None => {
                    let _ = SinkExt::<FromEdge>::flush(&mut framed).await;
                    break "closed by edge";
                }
            },
        }
    };
    debug!(%from, %conn, reason = end, "client connection ended");
    let _ = svc.inbox.send(ServiceIn::Input(Input::Disconnected { conn })).await;
}

/// Writes `msgs` and flushes them, within [`WRITE_TIMEOUT`].
async fn write(framed: &mut ClientFramed, msgs: impl IntoIterator<Item = FromEdge>) -> Result<(), EdgeError> {
    let send = async {
        for m in msgs {
            framed.feed(m).await?;
        }
        SinkExt::<FromEdge>::flush(framed).await
    };
    match timeout(WRITE_TIMEOUT, send).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(EdgeError::Write(e.to_string())),
        Err(_) => Err(EdgeError::WriteTimeout(WRITE_TIMEOUT)),
    }
}
