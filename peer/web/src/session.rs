//! One browser viewer's session around the [`PeerCore`], with no JS in it (so it is tested
//! natively): edge messages are WebSocket binary messages holding one control-message body each,
//! peer links are data channels carrying [`pieces`](livesky_peer_core::pieces), signalling
//! payloads are `TOKEN\nSDP` as the native peers' (`livesky_peer::rtc`). The page's driver owns the
//! clock, the socket and the `RTCPeerConnection`s and does what [`WebOut`] says.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use livesky_peer_core::core::{Event, Input, LinkId, Output, PeerConfig, PeerCore, PeerStats};
use livesky_peer_core::pieces::{Reassembly, pieces};
use proto::peer::{FromEdge, PeerId, PeerLink, SignalKind, ToEdge};
use proto::{ChannelId, WireMessage};
use web_time::Instant;

/// What the page's driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebOut {
    /// Send one binary WebSocket message to the edge.
    Edge(Bytes),
    /// Open data-channel link `link` to `peer`: create an offer and give it to [`Session::offer_made`].
    Connect {
        link: u32,
        peer: u64,
    },
    /// Peer `from` offers a link: answer `sdp` on link `link`, then [`Session::answer_made`].
    Answer {
        link: u32,
        from: u64,
        token: u64,
        sdp: String,
    },
    /// The answer to our offer on link `link`.
    Answered {
        link: u32,
        sdp: String,
    },
    /// Send these data-channel messages on `link`, in order.
    Send {
        link: u32,
        pieces: Vec<BytesMut>,
    },
    Close {
        link: u32,
    },
    /// The next chunk of the stream, in order and verified: hand it to the media pipeline.
    Play {
        seq: u64,
        media_ts: u64,
        keyframe: bool,
        discontinuity: bool,
        data: Bytes,
    },
    /// The edge's STUN server (`host:port`), for the peer connections' ICE.
    Stun(String),
    /// Something the page shows or logs: a name and a detail.
    Event(&'static str, String),
}

/// A JS handle for a link: outgoing ones odd, accepted ones even.
pub fn link_key(link: LinkId) -> u32 {
    match link {
        LinkId::Out(n) => (n as u32) << 1 | 1,
        LinkId::In(n) => (n as u32) << 1,
    }
}

pub fn link_of(key: u32) -> LinkId {
    let n = u64::from(key >> 1);
    if key & 1 == 1 { LinkId::Out(n) } else { LinkId::In(n) }
}

/// The browser's settings for a session (from the page's options).
#[derive(Debug, Clone)]
pub struct WebConfig {
    pub channel: String,
    pub token: String,
    /// 0: this page shares nothing (`upload=false`): no links are accepted and the edge gets no
    /// address for it.
    pub upload_kbps: u32,
    /// The playback buffer asked for; the channel's target latency caps it.
    pub buffer_ms: u32,
    pub low_latency: bool,
}

/// Offers answered at once, at most: a flood of offers must not make the page build connections
/// without end.
const MAX_ANSWERING: usize = 16;

pub struct Session {
    core: PeerCore,
    base: Instant,
    base_ms: f64,
    last_ms: f64,
    upload: bool,
    /// Links the core knows (it asked for them, or they were accepted and opened).
    known: HashSet<u32>,
    reasm: HashMap<u32, Reassembly>,
    next_in: u64,
    /// Accepted links by who offered them, until they open (their identity) or fail.
    offered_by: HashMap<u32, PeerId>,
    out: VecDeque<WebOut>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SessionError {
    BadChannel(String),
    BadEdgeMessage(String),
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::BadChannel(e) => write!(f, "bad channel name: {e}"),
            SessionError::BadEdgeMessage(e) => write!(f, "the edge sent something this player cannot read: {e}"),
        }
    }
}

impl Session {
    /// `now_ms`: the page's monotonic clock (`performance.now()`); `unix_ms`: its wall clock.
    pub fn new(cfg: &WebConfig, now_ms: f64, unix_ms: f64) -> Result<Session, SessionError> {
        let channel = ChannelId::new(&cfg.channel).map_err(|e| SessionError::BadChannel(e.to_string()))?;
        let mut pc = PeerConfig::new(channel);
        if cfg.low_latency {
            // `livesky peer --low-latency`'s default target when the page names none.
            let target = if cfg.buffer_ms == 0 { 3_000 } else { cfg.buffer_ms };
            pc = pc.low_latency(target.clamp(1_000, 10_000));
        } else if cfg.buffer_ms > 0 {
            pc.buffer.buffer_ms = cfg.buffer_ms.clamp(1_000, 60_000);
        }
        pc.token = cfg.token.clone();
        pc.upload_kbps = cfg.upload_kbps;
        let upload = cfg.upload_kbps > 0;
        // The edge puts the address it sees the page at here; WebRTC needs no port.
        pc.listen = upload.then(|| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
        let base = Instant::now();
        let mut s = Session {
            core: PeerCore::new(pc, base),
            base,
            base_ms: now_ms,
            last_ms: now_ms,
            upload,
            known: HashSet::new(),
            reasm: HashMap::new(),
            next_in: 1,
            offered_by: HashMap::new(),
            out: VecDeque::new(),
        };
        s.core.handle(base, Input::Clock { unix_ms: unix_ms.max(0.0) as u64 });
        s.drain();
        Ok(s)
    }

    /// The page's clock as the core's time; never backwards.
    fn at(&mut self, now_ms: f64) -> Instant {
        if now_ms > self.last_ms {
            self.last_ms = now_ms;
        }
        self.base + Duration::from_secs_f64((self.last_ms - self.base_ms).max(0.0) / 1000.0)
    }

    fn input(&mut self, now_ms: f64, input: Input) {
        let now = self.at(now_ms);
        self.core.handle(now, input);
        self.drain();
    }

    pub fn clock(&mut self, now_ms: f64, unix_ms: f64) {
        self.input(now_ms, Input::Clock { unix_ms: unix_ms.max(0.0) as u64 });
    }

    /// One WebSocket message from the edge.
    pub fn from_edge(&mut self, now_ms: f64, data: &[u8]) -> Result<(), SessionError> {
        let msg = FromEdge::decode_body(Bytes::copy_from_slice(data))
            .map_err(|e| SessionError::BadEdgeMessage(e.to_string()))?;
        match msg {
            FromEdge::Signal { from, kind, payload } => self.signal(from, kind, &payload),
            m => {
                if let FromEdge::Welcome(w) = &m
                    && let Some(stun) = w.stun
                {
                    self.out.push_back(WebOut::Stun(stun.to_string()));
                }
                self.input(now_ms, Input::FromEdge(m));
            }
        }
        Ok(())
    }

    fn signal(&mut self, from: PeerId, kind: SignalKind, payload: &str) {
        let Some((token, sdp)) = payload.split_once('\n') else { return };
        let Ok(token) = token.trim().parse::<u64>() else { return };
        match kind {
            SignalKind::Offer => {
                if !self.upload || self.offered_by.len() >= MAX_ANSWERING {
                    return;
                }
                let link = link_key(LinkId::In(self.next_in));
                self.next_in += 1;
                self.offered_by.insert(link, from);
                self.out.push_back(WebOut::Answer { link, from: from.0, token, sdp: sdp.to_string() });
            }
            SignalKind::Answer => {
                self.out.push_back(WebOut::Answered { link: link_key(LinkId::Out(token)), sdp: sdp.to_string() })
            }
            // Gathering completes before an offer or answer is sent: candidates travel inside.
            SignalKind::Candidate => {}
        }
    }

    /// Our offer for outgoing link `link` (to `peer`), ICE gathered.
    pub fn offer_made(&mut self, link: u32, peer: u64, sdp: &str) {
        let token = link_of(link).number();
        self.send_edge(ToEdge::Signal {
            to: PeerId(peer),
            kind: SignalKind::Offer,
            payload: format!("{token}\n{sdp}"),
        });
    }

    /// Our answer to `from`'s offer (its `token`), ICE gathered.
    pub fn answer_made(&mut self, from: u64, token: u64, sdp: &str) {
        self.send_edge(ToEdge::Signal {
            to: PeerId(from),
            kind: SignalKind::Answer,
            payload: format!("{token}\n{sdp}"),
        });
    }

    fn send_edge(&mut self, m: ToEdge) {
        let mut b = BytesMut::new();
        m.encode_body(&mut b);
        self.out.push_back(WebOut::Edge(b.freeze()));
    }

    pub fn edge_closed(&mut self, now_ms: f64) {
        self.input(now_ms, Input::EdgeClosed);
    }

    pub fn link_open(&mut self, now_ms: f64, link: u32) {
        let id = link_of(link);
        if id.is_outgoing() {
            self.input(now_ms, Input::LinkUp(id));
        } else {
            let peer = self.offered_by.remove(&link);
            self.known.insert(link);
            self.input(now_ms, Input::LinkAccepted { link: id, peer });
        }
    }

    /// A link that never opened.
    pub fn link_failed(&mut self, now_ms: f64, link: u32) {
        let id = link_of(link);
        if self.forget(link) && id.is_outgoing() {
            self.input(now_ms, Input::LinkFailed(id));
        }
    }

    pub fn link_closed(&mut self, now_ms: f64, link: u32) {
        if self.forget(link) {
            self.input(now_ms, Input::LinkClosed(link_of(link)));
        }
    }

    /// Drops what is kept for `link`; whether the core knew it.
    fn forget(&mut self, link: u32) -> bool {
        self.offered_by.remove(&link);
        self.reasm.remove(&link);
        self.known.remove(&link)
    }

    /// One data-channel message on `link`; a malformed one closes the link.
    pub fn link_message(&mut self, now_ms: f64, link: u32, data: &[u8]) {
        if !self.known.contains(&link) {
            return;
        }
        let r = self.reasm.entry(link).or_default();
        let msg = match r.push(data) {
            Some(None) => return,
            Some(Some(frame)) => PeerLink::decode_body(frame).ok(),
            None => None,
        };
        match msg {
            Some(m) => self.input(now_ms, Input::FromPeer(link_of(link), m)),
            None => {
                self.out.push_back(WebOut::Close { link });
                self.link_closed(now_ms, link);
            }
        }
    }

    /// Joins the edge again on a new WebSocket after the last one closed (the buffer plays on
    /// meanwhile); `redirects`: edges that sent this page on (an edge keeps one sent on before).
    pub fn rejoin(&mut self, now_ms: f64, redirects: u8) {
        let listen = self.upload.then(|| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
        self.input(now_ms, Input::Rejoin { redirects, listen });
    }

    pub fn leave(&mut self, now_ms: f64) {
        self.input(now_ms, Input::Leave);
    }

    pub fn tick(&mut self, now_ms: f64) {
        let now = self.at(now_ms);
        self.core.handle_timeout(now);
        self.drain();
    }

    /// How long the page may wait before [`Session::tick`], ms.
    pub fn next_wake_ms(&mut self, now_ms: f64) -> f64 {
        let now = self.at(now_ms);
        self.core.poll_timeout().map_or(1000.0, |t| t.saturating_duration_since(now).as_secs_f64() * 1000.0)
    }

    pub fn poll(&mut self) -> Option<WebOut> {
        self.out.pop_front()
    }

    pub fn stats(&self) -> PeerStats {
        self.core.stats()
    }

    pub fn uploading(&self) -> bool {
        self.upload
    }

    fn drain(&mut self) {
        while let Some(o) = self.core.poll_output() {
            let w = match o {
                Output::ToEdge(m) => {
                    self.send_edge(m);
                    continue;
                }
                Output::Connect { link, peer, .. } => {
                    let key = link_key(link);
                    self.known.insert(key);
                    WebOut::Connect { link: key, peer: peer.0 }
                }
                Output::Send { link, msg } => {
                    let mut b = BytesMut::new();
                    msg.encode_body(&mut b);
                    WebOut::Send { link: link_key(link), pieces: pieces(&b) }
                }
                Output::Close { link } => {
                    let key = link_key(link);
                    self.forget(key);
                    WebOut::Close { link: key }
                }
                Output::Play(c) => WebOut::Play {
                    seq: c.seq(),
                    media_ts: c.header.media_ts,
                    keyframe: c.header.is_keyframe(),
                    discontinuity: c.header.flags.contains(proto::ChunkFlags::DISCONTINUITY),
                    data: c.payload,
                },
                Output::Event(e) => event(e),
            };
            self.out.push_back(w);
        }
    }
}

fn event(e: Event) -> WebOut {
    match e {
        Event::Welcomed { peer, push } => WebOut::Event(
            "welcomed",
            format!("peer {peer}, {}", if push { "fed by the edge" } else { "in the P2P trees" }),
        ),
        Event::Started { startup } => WebOut::Event("started", format!("{} ms", startup.as_millis())),
        Event::Stalled { seq, .. } => {
            WebOut::Event("stalled", seq.map_or_else(String::new, |s| format!("waiting for chunk {s}")))
        }
        Event::Redirected(to) => WebOut::Event("redirected", to),
        Event::Refused(r) => WebOut::Event("refused", r),
        Event::EdgeLost => WebOut::Event("edge-lost", String::new()),
        Event::BroadcastEnded => WebOut::Event("broadcast-ended", String::new()),
        Event::PlayedOut => WebOut::Event("played-out", String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(upload_kbps: u32) -> WebConfig {
        WebConfig { channel: "demo".into(), token: "t".into(), upload_kbps, buffer_ms: 0, low_latency: false }
    }

    fn edge_msgs(s: &mut Session) -> Vec<ToEdge> {
        std::iter::from_fn(|| s.poll())
            .filter_map(|o| match o {
                WebOut::Edge(b) => Some(ToEdge::decode_body(b).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn signal(from: u64, kind: SignalKind, payload: &str) -> Bytes {
        let mut b = BytesMut::new();
        FromEdge::Signal { from: PeerId(from), kind, payload: payload.into() }.encode_body(&mut b);
        b.freeze()
    }

    #[test]
    fn link_keys_round_trip() {
        for l in [LinkId::Out(1), LinkId::In(1), LinkId::Out(77), LinkId::In(1000)] {
            assert_eq!(link_of(link_key(l)), l);
        }
    }

    #[test]
    fn a_page_that_shares_nothing_offers_no_address_and_answers_no_offer() {
        let mut s = Session::new(&cfg(0), 0.0, 1e12).unwrap();
        match edge_msgs(&mut s).as_slice() {
            [ToEdge::Join(j)] => assert!(j.upload_kbps == 0 && j.listen.is_none(), "{j:?}"),
            other => panic!("the first message is the join: {other:?}"),
        }
        s.from_edge(10.0, &signal(4, SignalKind::Offer, "1\nv=0")).unwrap();
        assert_eq!(s.poll(), None, "no answer from a page with upload off");

        let mut s = Session::new(&cfg(1500), 0.0, 1e12).unwrap();
        match edge_msgs(&mut s).as_slice() {
            [ToEdge::Join(j)] => assert!(j.upload_kbps == 1500 && j.listen.is_some(), "{j:?}"),
            other => panic!("the first message is the join: {other:?}"),
        }
        s.from_edge(10.0, &signal(4, SignalKind::Offer, "9\nv=0")).unwrap();
        assert_eq!(
            s.poll(),
            Some(WebOut::Answer { link: link_key(LinkId::In(1)), from: 4, token: 9, sdp: "v=0".into() })
        );
        s.answer_made(4, 9, "v=1");
        assert_eq!(
            edge_msgs(&mut s),
            [ToEdge::Signal { to: PeerId(4), kind: SignalKind::Answer, payload: "9\nv=1".into() }],
            "the answer echoes the offer's token, as native peers expect"
        );
    }

    #[test]
    fn garbage_from_the_edge_is_an_error_and_from_a_peer_closes_its_link() {
        let mut s = Session::new(&cfg(1500), 0.0, 1e12).unwrap();
        edge_msgs(&mut s);
        assert!(matches!(s.from_edge(1.0, &[0xff, 1, 2]), Err(SessionError::BadEdgeMessage(_))));
        s.from_edge(2.0, &signal(4, SignalKind::Offer, "3\nv=0")).unwrap();
        let Some(WebOut::Answer { link, .. }) = s.poll() else { panic!("an answer") };
        s.link_open(3.0, link);
        while s.poll().is_some() {}
        s.link_message(4.0, link, &[9, 9, 9]);
        assert!(std::iter::from_fn(|| s.poll()).any(|o| o == WebOut::Close { link }), "a bad piece closes the link");
        s.link_message(5.0, link, &[0]);
        assert!(
            std::iter::from_fn(|| s.poll()).all(|o| !matches!(o, WebOut::Close { .. })),
            "a closed link is ignored"
        );
    }

    #[test]
    fn a_page_that_lost_its_edge_joins_again_on_the_next_socket() {
        let mut s = Session::new(&cfg(1500), 0.0, 1e12).unwrap();
        edge_msgs(&mut s);
        s.edge_closed(100.0);
        assert!(std::iter::from_fn(|| s.poll()).any(|o| o == WebOut::Event("edge-lost", String::new())));
        s.rejoin(2_000.0, 1);
        match edge_msgs(&mut s).as_slice() {
            [ToEdge::Join(j)] => assert!(j.redirects == 1 && j.listen.is_some(), "{j:?}"),
            other => panic!("a join on the new socket: {other:?}"),
        }
    }
}
