//! The driver's peer links: WebRTC data channels made by signalling through the edge ([`WebRtc`],
//! over [`crate::rtc`]), or plain TCP where hosts accept connections. Each link is a queue the
//! driver writes to and a token that closes it; what happens on it comes back as an [`Ev`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use proto::peer::{FromEdge, PeerId, PeerLink, PeerLinkCodec, SignalKind, ToEdge};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::timeout;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::core::LinkId;
use crate::rtc::{LinkEvent, Rtc};

/// Most peer-link frames accepted (a chunk plus its header).
const MAX_LINK_FRAME: usize = proto::DEFAULT_MAX_FRAME;
const LINK_QUEUE: usize = 512;
/// Offers answered at once: a flood of offers must not make us build connections without end.
const MAX_ANSWERING: usize = 16;
/// TCP links children may hold open to this peer at once (its children are far fewer).
const MAX_TCP_CHILDREN: usize = 64;

/// The writer queue of a link, and the token that closes it (and so its socket).
pub(crate) struct LinkHandle {
    pub(crate) tx: mpsc::Sender<PeerLink>,
    pub(crate) close: CancellationToken,
}

pub(crate) enum Ev {
    Edge(FromEdge),
    EdgeClosed,
    LinkUp(LinkId, LinkHandle),
    LinkFailed(LinkId),
    Accepted(LinkId, LinkHandle),
    FromPeer(LinkId, PeerLink),
    LinkClosed(LinkId),
    /// A signalling message for the edge to relay.
    Signal(ToEdge),
    /// The NAT tests are done.
    Nat(proto::nat::NatProbe),
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
pub(crate) struct WebRtc {
    bind_ip: IpAddr,
    rtc: Option<Arc<Rtc>>,
    events: mpsc::Sender<LinkEvent>,
    answering: Arc<Semaphore>,
    next_accepted: u64,
    /// Who each accepted link's offer came from, as the edge relayed it: the link's identity.
    offered_by: HashMap<LinkId, PeerId>,
}

impl WebRtc {
    pub(crate) fn new(bind_ip: IpAddr, events: mpsc::Sender<LinkEvent>) -> WebRtc {
        WebRtc {
            bind_ip,
            rtc: None,
            events,
            answering: Arc::new(Semaphore::new(MAX_ANSWERING)),
            next_accepted: 1,
            offered_by: HashMap::new(),
        }
    }

    /// Who offered accepted link `link` (once: the identity is taken when the link opens).
    pub(crate) fn offered_by(&mut self, link: LinkId) -> Option<PeerId> {
        self.offered_by.remove(&link)
    }

    /// The edge's welcome names its STUN server: links can be made from now on.
    /// The address ICE binds its sockets to.
    pub(crate) fn bind_ip(&self) -> IpAddr {
        self.bind_ip
    }

    pub(crate) fn welcome(&mut self, stun: Option<SocketAddr>) {
        match Rtc::new(stun, self.bind_ip) {
            Ok(rtc) => self.rtc = Some(Arc::new(rtc)),
            Err(e) => warn!(error = %e, "WebRTC unavailable: this peer takes everything from its edge"),
        }
    }

    /// Offers a link to `peer`; the link fails if no answer opens it in time.
    pub(crate) fn connect(&self, link: LinkId, peer: PeerId, ev_tx: &mpsc::Sender<Ev>, cancel: &CancellationToken) {
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

    pub(crate) fn signal(
        &mut self,
        from: PeerId,
        kind: SignalKind,
        payload: String,
        ev_tx: &mpsc::Sender<Ev>,
        cancel: &CancellationToken,
    ) {
        let Some(rtc) = self.rtc.clone() else { return };
        match kind {
            SignalKind::Offer => {
                let Ok(permit) = self.answering.clone().try_acquire_owned() else {
                    warn!(%from, "too many offers at once; ignoring one");
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
                        Err(e) => debug!(error = %e, %from, "cannot answer an offer"),
                    }
                });
            }
            SignalKind::Answer => {
                tokio::spawn(async move {
                    if let Err(e) = rtc.answered(&payload).await {
                        debug!(error = %e, %from, "unusable answer");
                    }
                });
            }
            // Gathering completes before an offer or answer is sent: candidates travel inside.
            SignalKind::Candidate => {}
        }
    }

    pub(crate) fn link_gone(&self, link: LinkId) {
        if let Some(rtc) = self.rtc.clone() {
            tokio::spawn(async move { rtc.abandon(link).await });
        }
    }
}

/// Children connect here over TCP: at most [`MAX_TCP_CHILDREN`] links at once. No cap per
/// address: many players share one (a campus NAT, a test on loopback), and the core refuses
/// links the edge did not introduce anyway.
pub(crate) fn spawn_acceptor(listener: TcpListener, ev_tx: mpsc::Sender<Ev>, local: CancellationToken) {
    let slots = livesky_net::limits::ConnLimiter::new("peer_links", MAX_TCP_CHILDREN, MAX_TCP_CHILDREN);
    tokio::spawn(async move {
        let mut next: u64 = 1;
        while let Some((s, _, permit)) = livesky_net::limits::accept_capped(&listener, &slots, &local).await {
            let Ok(permit) = permit else { continue };
            let link = LinkId::In(next);
            next += 1;
            let tx = spawn_link(link, s, ev_tx.clone(), local.clone(), Some(permit));
            if ev_tx.send(Ev::Accepted(link, tx)).await.is_err() {
                return;
            }
        }
    });
}

pub(crate) fn connect_tcp(link: LinkId, addr: SocketAddr, ev_tx: mpsc::Sender<Ev>, local: CancellationToken) {
    tokio::spawn(async move {
        match timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let tx = spawn_link(link, s, ev_tx.clone(), local, None);
                let _ = ev_tx.send(Ev::LinkUp(link, tx)).await;
            }
            _ => {
                let _ = ev_tx.send(Ev::LinkFailed(link)).await;
            }
        }
    });
}

/// Reader and writer tasks of one peer link; `permit` (an accepted link's place) is held until
/// the link ends.
pub(crate) fn spawn_link(
    link: LinkId,
    stream: TcpStream,
    ev_tx: mpsc::Sender<Ev>,
    parent: CancellationToken,
    permit: Option<livesky_net::limits::ConnPermit>,
) -> LinkHandle {
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
        let _permit = permit;
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
