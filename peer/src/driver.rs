//! The peer's IO driver: a TCP control link to the edge, and links to other peers over WebRTC
//! data channels (ICE through the edge's STUN, offers and answers relayed by the edge) or, for
//! hosts without UDP, plain TCP. Everything feeds one [`PeerCore`]. Played chunks go to an optional
//! channel (the local HTTP output, or a test); stats are published on a watch channel.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use proto::Chunk;
use proto::peer::{FromEdge, NatClass, PeerControlCodec, ToEdge};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::core::{Event, Input, LinkId, Output, PeerConfig, PeerCore, PeerStats};
use crate::links::{Ev, LinkHandle, WebRtc, connect_tcp, spawn_acceptor};
use crate::rtc::LinkEvent;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot reach the edge at {addr}: {source}")]
    Edge { addr: SocketAddr, source: std::io::Error },
    #[error("cannot listen for peers on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// How peers reach each other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transport {
    /// WebRTC data channels: what crosses NATs (LiveSky §3.2).
    #[default]
    WebRtc,
    /// Direct TCP to the address a peer reported: only for hosts that accept connections.
    Tcp,
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "webrtc" => Ok(Transport::WebRtc),
            "tcp" => Ok(Transport::Tcp),
            _ => Err(format!("unknown peer transport `{s}`: use webrtc or tcp")),
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::WebRtc => "WebRTC",
            Transport::Tcp => "TCP",
        })
    }
}

/// Where the peer connects and listens.
#[derive(Debug, Clone, Copy)]
pub struct Net {
    /// The edge's LiveSky client port.
    pub edge: SocketAddr,
    /// TCP: where children connect (port 0 for any). WebRTC: the address ICE binds to (its
    /// port is unused; an unspecified address means the one we reach the edge from).
    pub listen: SocketAddr,
    pub transport: Transport,
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
    /// The broadcast ended (its publisher did not come back) and what was left of it was played.
    BroadcastEnded,
}

/// Runs one peer until it is cancelled, redirected, refused, or loses its edge.
///
/// `play`: receives the stream in order.
pub async fn run(
    cfg: PeerConfig,
    net: Net,
    play: Option<mpsc::Sender<Chunk>>,
    stats: watch::Sender<PeerStats>,
    cancel: CancellationToken,
) -> Result<Ended, PeerError> {
    run_with(&mut None, cfg, net, play, stats, cancel).await
}

/// As [`run`], with the core kept in `slot`: after a lost edge or a redirect the core is left
/// there detached, buffer and all, and the next call re-joins with it (`cfg` then gives only the
/// redirect count) — playback carries on across the move instead of starting over.
pub async fn run_with(
    slot: &mut Option<PeerCore>,
    mut cfg: PeerConfig,
    net: Net,
    play: Option<mpsc::Sender<Chunk>>,
    stats: watch::Sender<PeerStats>,
    cancel: CancellationToken,
) -> Result<Ended, PeerError> {
    let edge = net.edge;
    let listener = match net.transport {
        Transport::Tcp => {
            let l =
                TcpListener::bind(net.listen).await.map_err(|source| PeerError::Listen { addr: net.listen, source })?;
            cfg.listen = l.local_addr().ok();
            Some(l)
        }
        Transport::WebRtc => None,
    };
    let stream = TcpStream::connect(edge).await.map_err(|source| PeerError::Edge { addr: edge, source })?;
    let _ = stream.set_nodelay(true);
    let (ev_tx, mut ev) = mpsc::channel::<Ev>(4096);
    let (rtc_tx, mut rtc_ev) = mpsc::channel::<LinkEvent>(4096);
    let mut webrtc = None;
    if net.transport == Transport::WebRtc {
        // Our private address is the one we reach the edge from; WebRTC needs no fixed port.
        let bind_ip = match net.listen.ip() {
            ip if ip.is_unspecified() => stream.local_addr().map_or(ip, |a| a.ip()),
            ip => ip,
        };
        cfg.listen = Some(SocketAddr::new(bind_ip, 0));
        webrtc = Some(WebRtc::new(bind_ip, rtc_tx));
    }
    let (edge_sink, mut edge_rx) = Framed::new(stream, PeerControlCodec::default()).split();
    let local = cancel.child_token();
    // An aborted driver (a crashed player) still closes its links and the edge connection.
    let _close_all = local.clone().drop_guard();
    // Messages for the edge go through a queue to a writer task: a slow edge must not stall
    // the loop that plays (it is told the edge is lost when the queue overflows).
    let (edge_q, edge_writer) = spawn_edge_writer(edge_sink, ev_tx.clone());

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
    if let Some(listener) = listener {
        spawn_acceptor(listener, ev_tx.clone(), local.clone());
    }

    let core = match slot {
        Some(core) if !core.is_done() => {
            core.handle(Instant::now().into_std(), Input::Rejoin { redirects: cfg.redirects, listen: cfg.listen });
            core
        }
        _ => slot.insert(PeerCore::new(cfg, Instant::now().into_std())),
    };
    core.handle(Instant::now().into_std(), Input::Clock { unix_ms: livesky_net::clock::unix_ms() });
    let mut links: HashMap<LinkId, LinkHandle> = HashMap::new();
    let mut ended: Option<Ended> = None;
    let mut last_stats = Instant::now();
    let now = || Instant::now().into_std();
    loop {
        let mut edge_stuck = false;
        while let Some(out) = core.poll_output() {
            match out {
                Output::ToEdge(m) => edge_stuck |= edge_q.try_send(m).is_err(),
                Output::Connect { link, peer, addr } => match &webrtc {
                    Some(w) => w.connect(link, peer, &ev_tx, &local),
                    None => connect_tcp(link, addr, ev_tx.clone(), local.clone()),
                },
                Output::Send { link, msg } => {
                    if let Some(h) = links.get(&link) {
                        // A link that cannot keep up loses chunks; the child asks its edge for help.
                        let _ = h.tx.try_send(msg);
                    }
                }
                Output::Close { link } => {
                    if let Some(h) = links.remove(&link) {
                        h.close.cancel();
                    } else if let Some(w) = &webrtc {
                        w.link_gone(link);
                    }
                }
                Output::Play(c) => forward(&play, c),
                Output::Event(e) => {
                    debug!(event = ?e, "peer event");
                    match e {
                        Event::Redirected(to) => ended = Some(Ended::Redirected(to)),
                        Event::Refused(r) => ended = Some(Ended::Refused(r)),
                        Event::EdgeLost => ended = Some(Ended::EdgeLost),
                        Event::BroadcastEnded => info!("the broadcast ended; playing what is left of it"),
                        Event::PlayedOut => ended = Some(Ended::BroadcastEnded),
                        Event::Started { startup } => debug!(?startup, "playback started"),
                        Event::Welcomed { peer, push } => debug!(%peer, push, "joined"),
                        Event::Stalled { seq, feed } => info!(?seq, ?feed, "playback stalled"),
                    }
                }
            }
        }
        if last_stats.elapsed() >= Duration::from_millis(200) {
            last_stats = Instant::now();
            stats.send_replace(core.stats());
        }
        if edge_stuck {
            warn!("the edge is not taking our messages; treating it as lost");
            core.handle(now(), Input::EdgeClosed);
            continue;
        }
        // The core has detached (edge lost, redirected) or left (refused, played out, cancelled):
        // what it still says goes to the edge, then the links and the edge connection close.
        if let Some(e) = ended.take() {
            play_only(core, &play);
            drop(edge_q);
            let _ = timeout(Duration::from_secs(2), edge_writer).await;
            local.cancel();
            stats.send_replace(core.stats());
            return Ok(e);
        }
        let wake =
            core.poll_timeout().map(Instant::from_std).unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        let e = tokio::select! {
            _ = cancel.cancelled() => {
                core.handle(now(), Input::Leave);
                ended = Some(Ended::Left);
                continue;
            }
            e = ev.recv() => e,
            Some(e) = rtc_ev.recv() => Some(Ev::from(e)),
            _ = tokio::time::sleep_until(wake) => {
                core.handle_timeout(now());
                continue;
            }
        };
        match e {
            Some(Ev::Edge(FromEdge::Signal { from, kind, payload })) => {
                if let Some(w) = &mut webrtc {
                    w.signal(from, kind, payload, &ev_tx, &local);
                }
            }
            Some(Ev::Edge(m)) => {
                let welcomed = matches!(m, FromEdge::Welcome(_));
                if let (FromEdge::Welcome(w), Some(rtc)) = (&m, &mut webrtc) {
                    rtc.welcome(w.stun);
                    if let Some(server) = w.stun {
                        spawn_nat_probe(server, rtc.bind_ip(), ev_tx.clone(), &local);
                    }
                }
                core.handle(now(), Input::FromEdge(m));
                if welcomed && webrtc.is_none() {
                    // Direct TCP is for hosts that accept connections: nothing stands in the way.
                    core.handle(now(), Input::Nat { class: NatClass::Open, mapped: None });
                }
            }
            Some(Ev::Nat(p)) => {
                let class = proto::nat::classify(&p);
                info!(%class, mapped = ?p.mapped, "NAT tested against the edge's STUN server");
                core.handle(now(), Input::Nat { class, mapped: p.mapped });
            }
            Some(Ev::EdgeClosed) | None => core.handle(now(), Input::EdgeClosed),
            Some(Ev::Signal(m)) => {
                if edge_q.try_send(m).is_err() {
                    warn!("the edge is not taking our messages; treating it as lost");
                    core.handle(now(), Input::EdgeClosed);
                }
            }
            Some(Ev::LinkUp(link, tx)) => {
                links.insert(link, tx);
                core.handle(now(), Input::LinkUp(link));
            }
            Some(Ev::LinkFailed(link)) => {
                if let Some(w) = &webrtc {
                    w.link_gone(link);
                }
                if link.is_outgoing() {
                    core.handle(now(), Input::LinkFailed(link));
                }
            }
            Some(Ev::Accepted(link, tx)) => {
                links.insert(link, tx);
                let peer = webrtc.as_mut().and_then(|w| w.offered_by(link));
                core.handle(now(), Input::LinkAccepted { link, peer });
            }
            Some(Ev::FromPeer(link, m)) => core.handle(now(), Input::FromPeer(link, m)),
            Some(Ev::LinkClosed(link)) => {
                if links.remove(&link).is_some() {
                    core.handle(now(), Input::LinkClosed(link));
                }
            }
        }
    }
}

/// Tests our NAT against the edge's STUN server while playback starts (the edge feeds the first
/// second or so whatever the result).
fn spawn_nat_probe(server: SocketAddr, bind_ip: std::net::IpAddr, ev_tx: mpsc::Sender<Ev>, local: &CancellationToken) {
    let local = local.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = local.cancelled() => {}
            p = crate::nat::probe(server, bind_ip) => {
                let _ = ev_tx.send(Ev::Nat(p)).await;
            }
        }
    });
}

/// Messages queued for the edge, at most (a join, reports, signalling: small).
const EDGE_QUEUE: usize = 1024;

/// Writes what the driver queues to the edge; a write that fails or takes 10 s ends the
/// connection (the driver hears `EdgeClosed`). Ends, after flushing, when the queue is dropped.
fn spawn_edge_writer(
    mut sink: futures_util::stream::SplitSink<Framed<TcpStream, PeerControlCodec>, ToEdge>,
    ev_tx: mpsc::Sender<Ev>,
) -> (mpsc::Sender<ToEdge>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<ToEdge>(EDGE_QUEUE);
    let task = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let write = async {
                sink.feed(m).await?;
                while let Ok(more) = rx.try_recv() {
                    sink.feed(more).await?;
                }
                SinkExt::<ToEdge>::flush(&mut sink).await
            };
            if timeout(Duration::from_secs(10), write).await.map_or(true, |r| r.is_err()) {
                let _ = ev_tx.send(Ev::EdgeClosed).await;
                return;
            }
        }
    });
    (tx, task)
}

fn forward(play: &Option<mpsc::Sender<Chunk>>, c: Chunk) {
    if let Some(p) = play {
        let _ = p.try_send(c);
    }
}

/// Drains a core with no edge and no links: only what it plays still goes anywhere.
fn play_only(core: &mut PeerCore, play: &Option<mpsc::Sender<Chunk>>) {
    while let Some(out) = core.poll_output() {
        if let Output::Play(c) = out {
            forward(play, c);
        }
    }
}

/// Plays from the buffer of a core that has no edge (see [`run_with`]) until `work` — finding the
/// next edge — is done.
pub async fn coast<F: std::future::Future>(
    slot: &mut Option<PeerCore>,
    play: &Option<mpsc::Sender<Chunk>>,
    stats: &watch::Sender<PeerStats>,
    work: F,
) -> F::Output {
    tokio::pin!(work);
    let Some(core) = slot.as_mut() else { return work.await };
    loop {
        let wake =
            core.poll_timeout().map(Instant::from_std).unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            r = &mut work => return r,
            _ = tokio::time::sleep_until(wake) => {
                core.handle_timeout(Instant::now().into_std());
                play_only(core, play);
                stats.send_replace(core.stats());
            }
        }
    }
}
