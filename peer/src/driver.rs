//! The peer's IO driver: a TCP control link to the edge, and links to other peers over WebRTC
//! data channels (ICE through the edge's STUN, offers and answers relayed by the edge) or, for
//! hosts without UDP, plain TCP. Everything feeds one [`PeerCore`]. Played chunks go to an optional
//! channel (the local HTTP output, or a test); stats are published on a watch channel.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use proto::Chunk;
use proto::peer::{FromEdge, PeerControlCodec, PeerLink, PeerLinkCodec, SignalKind, ToEdge};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::{Instant, timeout};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::core::{Event, Input, LinkId, Output, PeerConfig, PeerCore, PeerStats};
use crate::rtc::{LinkEvent, Rtc};

/// Most peer-link frames accepted (a chunk plus its header).
const MAX_LINK_FRAME: usize = proto::DEFAULT_MAX_FRAME;
const LINK_QUEUE: usize = 512;
/// Offers answered at once: a flood of offers must not make us build connections without end.
const MAX_ANSWERING: usize = 16;

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

/// The writer queue of a link, and the token that closes it (and so its socket).
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
    /// A signalling message for the edge to relay.
    Signal(ToEdge),
}

impl From<LinkEvent> for Ev {
    fn from(e: LinkEvent) -> Ev {
        match e {
            LinkEvent::Open { link, tx, close } if link.is_outgoing() => Ev::LinkUp(link, LinkHandle { tx, close }),
            LinkEvent::Open { link, tx, close } => Ev::Accepted(link, LinkHandle { tx, close }),
            LinkEvent::Message { link, msg } => Ev::FromPeer(link, msg),
            LinkEvent::Closed { link } => Ev::LinkClosed(link),
            LinkEvent::Failed { link } => Ev::LinkFailed(link),
        }
    }
}

/// The WebRTC side of the driver: links are made by signalling through the edge.
struct WebRtc {
    bind_ip: IpAddr,
    rtc: Option<Arc<Rtc>>,
    events: mpsc::Sender<LinkEvent>,
    answering: Arc<Semaphore>,
    next_accepted: u64,
    /// Who each accepted link's offer came from, as the edge relayed it: the link's identity.
    offered_by: HashMap<LinkId, u64>,
}

impl WebRtc {
    /// The edge's welcome names its STUN server: links can be made from now on.
    fn welcome(&mut self, stun: Option<SocketAddr>) {
        match Rtc::new(stun, self.bind_ip) {
            Ok(rtc) => self.rtc = Some(Arc::new(rtc)),
            Err(e) => warn!(error = %e, "WebRTC unavailable: this peer takes everything from its edge"),
        }
    }

    /// Offers a link to `peer`; the link fails if no answer opens it in time.
    fn connect(&self, link: LinkId, peer: u64, ev_tx: &mpsc::Sender<Ev>, cancel: &CancellationToken) {
        let (ev_tx, cancel, events, rtc) = (ev_tx.clone(), cancel.clone(), self.events.clone(), self.rtc.clone());
        tokio::spawn(async move {
            let Some(rtc) = rtc else {
                let _ = ev_tx.send(Ev::LinkFailed(link)).await;
                return;
            };
            match rtc.offer(link, events, cancel).await {
                Ok(payload) => {
                    let _ = ev_tx.send(Ev::Signal(ToEdge::Signal { to: peer, kind: SignalKind::Offer, payload })).await;
                }
                Err(e) => {
                    debug!(error = %e, %link, "cannot offer a link");
                    rtc.abandon(link).await;
                    let _ = ev_tx.send(Ev::LinkFailed(link)).await;
                }
            }
        });
    }

    fn signal(
        &mut self,
        from: u64,
        kind: SignalKind,
        payload: String,
        ev_tx: &mpsc::Sender<Ev>,
        cancel: &CancellationToken,
    ) {
        let Some(rtc) = self.rtc.clone() else { return };
        match kind {
            SignalKind::Offer => {
                let Ok(permit) = self.answering.clone().try_acquire_owned() else {
                    warn!(from, "too many offers at once; ignoring one");
                    return;
                };
                let link = LinkId::In(self.next_accepted);
                self.next_accepted += 1;
                self.offered_by.retain(|l, _| l.number() + 1024 > link.number());
                self.offered_by.insert(link, from);
                let (ev_tx, cancel, events) = (ev_tx.clone(), cancel.clone(), self.events.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match rtc.answer(&payload, link, events, cancel).await {
                        Ok(payload) => {
                            let answer = ToEdge::Signal { to: from, kind: SignalKind::Answer, payload };
                            let _ = ev_tx.send(Ev::Signal(answer)).await;
                        }
                        Err(e) => debug!(error = %e, from, "cannot answer an offer"),
                    }
                });
            }
            SignalKind::Answer => {
                tokio::spawn(async move {
                    if let Err(e) = rtc.answered(&payload).await {
                        debug!(error = %e, from, "unusable answer");
                    }
                });
            }
            // Gathering completes before an offer or answer is sent: candidates travel inside.
            SignalKind::Candidate => {}
        }
    }

    fn link_gone(&self, link: LinkId) {
        if let Some(rtc) = self.rtc.clone() {
            tokio::spawn(async move { rtc.abandon(link).await });
        }
    }
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
        webrtc = Some(WebRtc {
            bind_ip,
            rtc: None,
            events: rtc_tx,
            answering: Arc::new(Semaphore::new(MAX_ANSWERING)),
            next_accepted: 1,
            offered_by: HashMap::new(),
        });
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
                if let (FromEdge::Welcome(w), Some(rtc)) = (&m, &mut webrtc) {
                    rtc.welcome(w.stun);
                }
                core.handle(now(), Input::FromEdge(m));
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
                let peer = webrtc.as_mut().and_then(|w| w.offered_by.remove(&link));
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

/// Children connect here over TCP.
fn spawn_acceptor(listener: TcpListener, ev_tx: mpsc::Sender<Ev>, local: CancellationToken) {
    tokio::spawn(async move {
        let mut next: u64 = 1;
        loop {
            let (s, _) = tokio::select! {
                _ = local.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(_) => continue,
                },
            };
            let link = LinkId::In(next);
            next += 1;
            let tx = spawn_link(link, s, ev_tx.clone(), local.clone());
            if ev_tx.send(Ev::Accepted(link, tx)).await.is_err() {
                return;
            }
        }
    });
}

fn connect_tcp(link: LinkId, addr: SocketAddr, ev_tx: mpsc::Sender<Ev>, local: CancellationToken) {
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
