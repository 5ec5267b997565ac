//! The peer's IO driver: a TCP control link to the edge, a TCP listener for children, and TCP
//! links to parents (the honest stand-in until the WebRTC transport of the peer-player issue),
//! all feeding one [`PeerCore`]. Played chunks go to an optional channel (the local HTTP output,
//! or a test); stats are published on a watch channel.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use proto::Chunk;
use proto::peer::{FromEdge, PeerControlCodec, PeerLink, PeerLinkCodec, ToEdge};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::core::{Event, Input, LinkId, Output, PeerConfig, PeerCore, PeerStats};

/// Most peer-link frames accepted (a chunk plus its header).
const MAX_LINK_FRAME: usize = proto::DEFAULT_MAX_FRAME;
const LINK_QUEUE: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot reach the edge at {addr}: {source}")]
    Edge { addr: SocketAddr, source: std::io::Error },
    #[error("cannot listen for peers on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// How a peer's session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Left (cancelled) cleanly.
    Left,
    /// The edge sent it elsewhere.
    Redirected(String),
    Refused(String),
    EdgeLost,
}

/// The writer queue of a link, and the token that closes it (both tasks, hence the socket).
struct LinkHandle {
    tx: mpsc::Sender<PeerLink>,
    close: CancellationToken,
}

enum Ev {
    Edge(FromEdge),
    EdgeClosed,
    LinkUp(LinkId, LinkHandle),
    LinkFailed(LinkId),
    Accepted(LinkId, LinkHandle),
    FromPeer(LinkId, PeerLink),
    LinkClosed(LinkId),
}

/// Runs one peer until it is cancelled, redirected, refused, or loses its edge.
///
/// `listen`: where to accept children (port 0 for any); `play`: receives the stream in order.
pub async fn run(
    mut cfg: PeerConfig,
    edge: SocketAddr,
    listen: SocketAddr,
    play: Option<mpsc::Sender<Chunk>>,
    stats: watch::Sender<PeerStats>,
    cancel: CancellationToken,
) -> Result<Ended, PeerError> {
    let listener = TcpListener::bind(listen).await.map_err(|source| PeerError::Listen { addr: listen, source })?;
    cfg.listen = listener.local_addr().ok();
    let stream = TcpStream::connect(edge).await.map_err(|source| PeerError::Edge { addr: edge, source })?;
    let _ = stream.set_nodelay(true);
    let (mut edge_tx, mut edge_rx) = Framed::new(stream, PeerControlCodec::default()).split();
    let (ev_tx, mut ev) = mpsc::channel::<Ev>(4096);
    let local = cancel.child_token();

    // Edge → events.
    {
        let ev_tx = ev_tx.clone();
        let local = local.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = local.cancelled() => return,
                    m = edge_rx.next() => m,
                };
                match msg {
                    Some(Ok(m)) => {
                        if ev_tx.send(Ev::Edge(m)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        warn!(error = %e, "bad data from the edge");
                        let _ = ev_tx.send(Ev::EdgeClosed).await;
                        return;
                    }
                    None => {
                        let _ = ev_tx.send(Ev::EdgeClosed).await;
                        return;
                    }
                }
            }
        });
    }
    // Children connect here; accepted links are numbered below 2^32 (the core's are above).
    {
        let ev_tx = ev_tx.clone();
        let local = local.clone();
        tokio::spawn(async move {
            let mut next: LinkId = 1;
            loop {
                let (s, _) = tokio::select! {
                    _ = local.cancelled() => return,
                    r = listener.accept() => match r {
                        Ok(x) => x,
                        Err(_) => continue,
                    },
                };
                let link = next;
                next += 1;
                let tx = spawn_link(link, s, ev_tx.clone(), local.clone());
                if ev_tx.send(Ev::Accepted(link, tx)).await.is_err() {
                    return;
                }
            }
        });
    }

    let mut core = PeerCore::new(cfg, Instant::now().into_std());
    let mut links: HashMap<LinkId, LinkHandle> = HashMap::new();
    let mut ended: Option<Ended> = None;
    let mut last_stats = Instant::now();
    loop {
        while let Some(out) = core.poll_output() {
            match out {
                Output::ToEdge(m) => {
                    if timeout(Duration::from_secs(10), edge_tx.send(m)).await.map_or(true, |r| r.is_err()) {
                        ended.get_or_insert(Ended::EdgeLost);
                    }
                }
                Output::Connect { link, addr } => {
                    let ev_tx = ev_tx.clone();
                    let local = local.clone();
                    tokio::spawn(async move {
                        match timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
                            Ok(Ok(s)) => {
                                let tx = spawn_link(link, s, ev_tx.clone(), local);
                                let _ = ev_tx.send(Ev::LinkUp(link, tx)).await;
                            }
                            _ => {
                                let _ = ev_tx.send(Ev::LinkFailed(link)).await;
                            }
                        }
                    });
                }
                Output::Send { link, msg } => {
                    if let Some(h) = links.get(&link) {
                        // A link that cannot keep up loses chunks; the child asks its edge for help.
                        let _ = h.tx.try_send(msg);
                    }
                }
                Output::Close { link } => {
                    if let Some(h) = links.remove(&link) {
                        h.close.cancel();
                    }
                }
                Output::Play(c) => {
                    if let Some(p) = &play {
                        let _ = p.try_send(c);
                    }
                }
                Output::Event(e) => {
                    debug!(event = ?e, "peer event");
                    match e {
                        Event::Redirected(to) => ended = Some(Ended::Redirected(to)),
                        Event::Refused(r) => ended = Some(Ended::Refused(r)),
                        Event::EdgeLost => ended = Some(Ended::EdgeLost),
                        Event::Started { startup } => debug!(?startup, "playback started"),
                        Event::Welcomed { peer, push } => debug!(peer, push, "joined"),
                        Event::Stalled => debug!("stall"),
                    }
                }
            }
        }
        if last_stats.elapsed() >= Duration::from_millis(200) {
            last_stats = Instant::now();
            stats.send_replace(core.stats());
        }
        if let Some(e) = ended.take() {
            if e != Ended::Left {
                core.leave();
                while core.poll_output().is_some() {}
            }
            let _ = SinkExt::<ToEdge>::flush(&mut edge_tx).await;
            local.cancel();
            stats.send_replace(core.stats());
            return Ok(e);
        }
        let wake = core
            .poll_timeout(Instant::now().into_std())
            .map(Instant::from_std)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        let now = || Instant::now().into_std();
        tokio::select! {
            _ = cancel.cancelled() => {
                core.leave();
                ended = Some(Ended::Left);
                continue;
            }
            e = ev.recv() => match e {
                Some(Ev::Edge(m)) => core.handle(now(), Input::FromEdge(m)),
                Some(Ev::EdgeClosed) | None => core.handle(now(), Input::EdgeClosed),
                Some(Ev::LinkUp(link, tx)) => {
                    links.insert(link, tx);
                    core.handle(now(), Input::LinkUp(link));
                }
                Some(Ev::LinkFailed(link)) => core.handle(now(), Input::LinkFailed(link)),
                Some(Ev::Accepted(link, tx)) => {
                    links.insert(link, tx);
                    core.handle(now(), Input::LinkAccepted(link));
                }
                Some(Ev::FromPeer(link, m)) => core.handle(now(), Input::FromPeer(link, m)),
                Some(Ev::LinkClosed(link)) => {
                    if links.remove(&link).is_some() {
                        core.handle(now(), Input::LinkClosed(link));
                    }
                }
            },
            _ = tokio::time::sleep_until(wake) => core.handle_timeout(now()),
        }
    }
}

/// Reader and writer tasks of one peer link.
fn spawn_link(link: LinkId, stream: TcpStream, ev_tx: mpsc::Sender<Ev>, parent: CancellationToken) -> LinkHandle {
    let cancel = parent.child_token();
    let close = cancel.clone();
    let _ = stream.set_nodelay(true);
    let (mut sink, mut src) = Framed::new(stream, PeerLinkCodec::new(MAX_LINK_FRAME)).split();
    let (tx, mut rx) = mpsc::channel::<PeerLink>(LINK_QUEUE);
    let writer_cancel = cancel.clone();
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                _ = writer_cancel.cancelled() => return,
                m = rx.recv() => m,
            };
            let Some(msg) = msg else { return };
            if timeout(Duration::from_secs(10), sink.send(msg)).await.map_or(true, |r| r.is_err()) {
                return;
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                _ = cancel.cancelled() => return,
                m = src.next() => m,
            };
            match msg {
                Some(Ok(m)) => {
                    if ev_tx.send(Ev::FromPeer(link, m)).await.is_err() {
                        return;
                    }
                }
                _ => {
                    let _ = ev_tx.send(Ev::LinkClosed(link)).await;
                    return;
                }
            }
        }
    });
    LinkHandle { tx, close }
}
