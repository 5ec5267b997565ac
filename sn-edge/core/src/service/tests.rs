//! The edge service driven together with real peer cores through an in-memory network on fake
//! time (quinn's `tests/util.rs` pattern): what the edge decides is what the peers experience.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use livesky_peer_core::core::{Event, Input as PeerInput, LinkId, Output as PeerOutput, PeerConfig, PeerCore};
use proto::peer::{FromEdge, ToEdge};
use proto::{ChannelId, Chunk, ChunkFlags, ChunkHeader};

use super::*;
use crate::feeder::{ChunkMeta, Feeder, FeederConfig, RecentChunks};
use crate::model::{ModelParams, Stage};

const CHUNK_BYTES: usize = 10 * 188; // 376 kbit/s at 25 chunks/s, under the declared 400
const K: u16 = 4;

fn channel() -> ChannelId {
    ChannelId::new("live").unwrap()
}

/// The channel's key in these tests: every chunk is signed as Tier 0 would.
fn signer() -> proto::ChannelSigner {
    proto::ChannelSigner::from_seed([7; 32])
}

fn chunk(seq: u64) -> Chunk {
    let mut p = vec![0xffu8; CHUNK_BYTES];
    for pkt in p.chunks_mut(188) {
        pkt[0] = 0x47;
    }
    let mut c = Chunk {
        header: ChunkHeader {
            channel: channel(),
            seq,
            ingest_ms: seq * 40,
            media_ts: seq * 3600,
            flags: if seq.is_multiple_of(50) { ChunkFlags::KEYFRAME } else { ChunkFlags::empty() },
        },
        payload: Bytes::from(p),
        signature: None,
    };
    signer().sign(&mut c);
    c
}

/// Everything the service has to say now.
fn drain(s: &mut Service) -> Vec<Output> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

/// The source's chunks so far, as the edge's ring (it holds them all).
struct Source<'a>(&'a [Chunk]);

impl RecentChunks for Source<'_> {
    fn first_seq(&self) -> Option<u64> {
        (!self.0.is_empty()).then_some(0)
    }
    fn last_seq(&self) -> Option<u64> {
        (self.0.len() as u64).checked_sub(1)
    }
    fn meta(&self, seq: u64) -> Option<ChunkMeta> {
        let c = self.0.get(usize::try_from(seq).ok()?)?;
        Some(ChunkMeta { media_ts: c.header.media_ts, keyframe: c.header.is_keyframe(), len: c.payload.len() })
    }
}

struct Slot {
    core: PeerCore,
    alive: bool,
    played: Vec<u64>,
    events: Vec<Event>,
    upload_bps: f64,
    joined: Instant,
}

/// Ordered maps throughout: which connection's burst takes the edge's budget first decides
/// startup times, so the order must be the same on every run (a HashMap's once had CI see one).
struct Net {
    t0: Instant,
    now: Instant,
    service: Service,
    peers: Vec<Slot>,
    source: Vec<Chunk>,
    /// What the edge sends each client itself: the product's feeder.
    feeder: Feeder,
    capacity_bps: f64,
    edge_bytes: u64,
    links: BTreeMap<(usize, LinkId), (usize, LinkId)>,
    next_accept: u64,
    stages: Vec<Stage>,
    /// Fraction of chunks lost on peer links, and the RNG that decides.
    loss: f64,
    rng: u64,
    repair: bool,
}

fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16))
}

impl Net {
    fn new(n1c: u32, nc_star: u32, cap_factor: f64) -> Net {
        let admission = AdmissionConfig {
            n1c,
            nc_star,
            model: ModelParams { alpha: 1.5, k_prime: 2, lambda: 0.0, mu: 0.0 },
            upload_cap_factor: cap_factor,
            substreams: K,
            media_kbps: 400,
            ..AdmissionConfig::paper()
        };
        let capacity_bps = f64::from(nc_star) * (CHUNK_BYTES * 25) as f64;
        let t0 = Instant::now();
        let mut cfg = ServiceConfig::new(channel(), admission);
        cfg.channel_key = Some(signer().verifier().to_bytes());
        cfg.joins_per_ip_per_sec = 1000.0;
        cfg.join_burst_per_ip = 1000.0;
        Net {
            t0,
            now: t0,
            service: Service::new(cfg),
            peers: Vec::new(),
            source: Vec::new(),
            feeder: Feeder::new(FeederConfig::new(K, capacity_bps)),
            capacity_bps,
            edge_bytes: 0,
            links: BTreeMap::new(),
            next_accept: 1,
            stages: Vec::new(),
            loss: 0.0,
            rng: 0x1234_5678,
            repair: true,
        }
    }

    fn add_peer(&mut self, upload_kbps: u32) -> usize {
        self.add_peer_with(upload_kbps, false)
    }

    fn add_peer_with(&mut self, upload_kbps: u32, tamper: bool) -> usize {
        self.add_peer_cfg(upload_kbps, |c| c.faults.tamper = tamper)
    }

    fn add_peer_cfg(&mut self, upload_kbps: u32, fault: impl FnOnce(&mut PeerConfig)) -> usize {
        let i = self.peers.len();
        let mut cfg = PeerConfig::new(channel());
        fault(&mut cfg);
        if !self.repair {
            cfg.repair.window_ms = 0;
        }
        cfg.upload_kbps = upload_kbps;
        cfg.listen = Some(addr_of(i));
        cfg.report_interval = Duration::from_secs(5);
        let core = PeerCore::new(cfg, self.now);
        let upload_bps = f64::from(upload_kbps) * 125.0;
        self.peers.push(Slot {
            core,
            alive: true,
            played: Vec::new(),
            events: Vec::new(),
            upload_bps,
            joined: self.now,
        });
        self.pump();
        let st = self.service.snapshot().stage;
        if self.stages.last() != Some(&st) {
            self.stages.push(st);
        }
        i
    }

    /// A peer vanishes without a word: its links and its edge connection just drop.
    fn kill(&mut self, i: usize) {
        self.peers[i].alive = false;
        let ends: Vec<((usize, LinkId), (usize, LinkId))> =
            self.links.iter().filter(|(a, b)| a.0 == i || b.0 == i).map(|(a, b)| (*a, *b)).collect();
        for (a, b) in ends {
            self.links.remove(&a);
            if b.0 != i && self.peers[b.0].alive {
                self.peers[b.0].core.handle(self.now, PeerInput::LinkClosed(b.1));
            }
        }
        self.service.handle(self.now, Input::Disconnected { conn: i as ConnId });
        self.pump();
    }

    /// Carries out the feeder's sends.
    fn feed(&mut self) {
        while let Some(send) = self.feeder.poll_output() {
            let c = self.source[send.seq as usize].clone();
            self.edge_send(send.conn, c);
        }
    }

    fn edge_send(&mut self, conn: ConnId, c: Chunk) {
        let i = conn as usize;
        if !self.peers[i].alive {
            return;
        }
        self.edge_bytes += c.payload.len() as u64;
        self.peers[i].core.handle(self.now, PeerInput::FromEdge(FromEdge::Chunk(c)));
    }

    /// Delivers messages until nothing moves.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for out in drain(&mut self.service) {
                moved = true;
                match out {
                    Output::Send { conn, msg } => {
                        let i = conn as usize;
                        if self.peers[i].alive {
                            self.peers[i].core.handle(self.now, PeerInput::FromEdge(msg));
                        }
                    }
                    Output::Close { conn } => self.feeder.forget(conn),
                    Output::Serve { conn, mask, burst_ms, backfill } => {
                        let ring = Source(&self.source);
                        self.feeder.serve(self.now, conn, mask, burst_ms, backfill, &ring);
                        self.feed();
                    }
                    Output::Report(_) | Output::Idle => {}
                }
            }
            for i in 0..self.peers.len() {
                while let Some(out) = self.peers[i].core.poll_output() {
                    moved = true;
                    self.peer_output(i, out);
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn peer_output(&mut self, i: usize, out: PeerOutput) {
        if !self.peers[i].alive {
            return;
        }
        let now = self.now;
        match out {
            PeerOutput::ToEdge(ToEdge::Join(join)) => {
                self.service.handle(now, Input::Joined { conn: i as ConnId, from: addr_of(i), join })
            }
            PeerOutput::ToEdge(msg) => self.service.handle(now, Input::Message { conn: i as ConnId, msg }),
            PeerOutput::Connect { link, addr, .. } => {
                let j = usize::from(addr.port() - 10_000);
                if j >= self.peers.len() || !self.peers[j].alive {
                    self.peers[i].core.handle(now, PeerInput::LinkFailed(link));
                    return;
                }
                let acc = LinkId::In(self.next_accept);
                self.next_accept += 1;
                self.links.insert((i, link), (j, acc));
                self.links.insert((j, acc), (i, link));
                self.peers[j].core.handle(now, PeerInput::LinkAccepted { link: acc, peer: None });
                self.peers[i].core.handle(now, PeerInput::LinkUp(link));
            }
            PeerOutput::Send { link, msg } => {
                if let Some(&(j, l2)) = self.links.get(&(i, link)) {
                    if matches!(msg, proto::peer::PeerLink::Chunk(_)) && self.lose() {
                        return;
                    }
                    self.peers[j].core.handle(now, PeerInput::FromPeer(l2, msg));
                }
            }
            PeerOutput::Close { link } => {
                if let Some((j, l2)) = self.links.remove(&(i, link)) {
                    self.links.remove(&(j, l2));
                    self.peers[j].core.handle(now, PeerInput::LinkClosed(l2));
                }
            }
            PeerOutput::Play(c) => {
                assert!(signer().verifier().verify(&c).is_ok(), "peer {i} played a corrupted chunk {}", c.seq());
                self.peers[i].played.push(c.seq())
            }
            PeerOutput::Event(e) => self.peers[i].events.push(e),
        }
    }

    /// Advances fake time in 10 ms steps: the source emits 25 chunks/s, the edge pushes them to
    /// the substreams it feeds (always) and sends start bursts as its egress budget allows.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        let mut next_tick = self.now;
        while self.now < end {
            self.now += Duration::from_millis(10);
            let due = (self.now - self.t0).as_millis() as u64 / 40;
            while (self.source.len() as u64) <= due {
                let seq = self.source.len() as u64;
                self.source.push(chunk(seq));
                self.feeder.new_chunk(self.now, seq, &Source(&self.source));
            }
            self.feeder.handle_timeout(self.now, &Source(&self.source));
            self.feed();
            if self.now >= next_tick {
                next_tick = self.now + Duration::from_secs(1);
                self.service.handle_timeout(self.now);
            }
            for i in 0..self.peers.len() {
                if self.peers[i].alive && self.peers[i].core.poll_timeout().is_some_and(|t| t <= self.now) {
                    self.peers[i].core.handle_timeout(self.now);
                }
            }
            self.pump();
        }
    }

    /// Whether this peer-link chunk is lost (seeded xorshift).
    fn lose(&mut self) -> bool {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % 10_000) as f64 / 10_000.0 < self.loss
    }

    fn elapsed(&self) -> f64 {
        (self.now - self.t0).as_secs_f64()
    }
}

/// A join at 600 kbit/s with a 15 s buffer, after `redirects` redirects.
fn join_msg(listen: Option<SocketAddr>, redirects: u8) -> proto::peer::Join {
    proto::peer::Join {
        version: proto::peer::CLIENT_PROTOCOL_VERSION,
        channel: channel(),
        token: String::new(),
        upload_kbps: 600,
        listen,
        buffer_ms: 15_000,
        redirects,
    }
}

fn continuous(played: &[u64]) -> bool {
    played.windows(2).all(|w| w[1] == w[0] + 1)
}

#[test]
fn forty_peers_take_the_edge_through_all_four_stages_and_all_play() {
    // N1c = 5, N*c = 12 (paper model α = 1.5, K' = 2 → bounds 12.5 and 30); peers offer 2.5 ×
    // the stream so the trees can hold everyone past stage 4 without a sibling edge.
    let mut net = Net::new(5, 12, 2.5);
    for _ in 0..40 {
        net.add_peer(1_000);
        net.run(Duration::from_millis(500));
    }
    net.run(Duration::from_secs(30));
    assert_eq!(net.stages, [Stage::One, Stage::Two, Stage::Three, Stage::Four]);
    let snap = net.service.snapshot();
    assert_eq!((snap.p0, snap.nc), (40, 12), "{snap:?}");
    assert_eq!(snap.tree.unfed, 0);

    let mut push = 0;
    for (i, p) in net.peers.iter().enumerate() {
        let st = p.core.stats();
        assert!(st.startup.is_some(), "peer {i} never started: {st:?}");
        assert_eq!(st.play.stalls, 0, "peer {i} stalled: {st:?}");
        assert!(continuous(&p.played), "peer {i} skipped chunks");
        // Without a burst (edge at capacity) a peer waits for a keyframe and 2 s after it.
        let startup = st.startup.unwrap();
        assert!(startup < Duration::from_secs(5), "peer {i} took {startup:?} to start");
        // From then on it played in real time.
        let expect = ((net.now - p.joined - startup).as_secs_f64() - 1.0) * 25.0;
        assert!(p.played.len() as f64 >= expect, "peer {i} played {} chunks, expected {expect}", p.played.len());
        let secs = net.elapsed();
        assert!(st.bytes_up as f64 <= p.upload_bps * secs + 64.0 * 1024.0, "peer {i} uploaded over its cap");
        if st.push {
            push += 1;
        } else {
            assert!(st.bytes_from_peers > st.bytes_from_edge, "P2P peer {i} is fed by peers: {st:?}");
        }
    }
    assert_eq!(push, 12);
    // The edge never sent more than its capacity (plus the one second its budget may hold).
    let limit = net.capacity_bps * (net.elapsed() + 1.0);
    assert!((net.edge_bytes as f64) <= limit, "edge sent {} bytes, capacity {limit}", net.edge_bytes);
}

#[test]
fn orphans_of_a_vanished_parent_keep_playing() {
    let mut net = Net::new(3, 6, 2.5);
    for _ in 0..14 {
        net.add_peer(1_000);
        net.run(Duration::from_millis(300));
    }
    net.run(Duration::from_secs(10));
    // The push peer with the most children vanishes.
    let victim = (0..net.peers.len())
        .filter(|&i| net.peers[i].core.stats().push)
        .max_by_key(|&i| net.peers[i].core.stats().children)
        .unwrap();
    assert!(net.peers[victim].core.stats().children > 0);
    let before: Vec<usize> = net.peers.iter().map(|p| p.played.len()).collect();
    net.kill(victim);
    net.run(Duration::from_secs(20));
    for (i, p) in net.peers.iter().enumerate().filter(|(i, _)| *i != victim) {
        let st = p.core.stats();
        assert_eq!(st.play.stalls, 0, "peer {i} stalled after the parent left: {st:?}");
        assert!(p.played.len() >= before[i] + 19 * 25, "peer {i} kept playing");
        assert!(continuous(&p.played));
    }
    assert!(net.service.stats().parent_troubles > 0, "orphans asked the edge");
    assert_eq!(net.service.snapshot().p0, 13);
}

#[test]
fn joins_are_rate_limited_per_address_and_garbage_before_join_closes() {
    let mut s = Service::new(ServiceConfig::new(channel(), AdmissionConfig::paper()));
    let t0 = Instant::now();
    let from: SocketAddr = "192.0.2.9:5000".parse().unwrap();
    let join = |ch: &str| proto::peer::Join {
        version: proto::peer::CLIENT_PROTOCOL_VERSION,
        channel: ChannelId::new(ch).unwrap(),
        token: String::new(),
        upload_kbps: 600,
        listen: None,
        buffer_ms: 15_000,
        redirects: 0,
    };
    for conn in 0..25 {
        s.handle(t0, Input::Joined { conn, from, join: join("live") });
    }
    let out = drain(&mut s);
    let refused = out.iter().filter(|o| matches!(o, Output::Send { msg: FromEdge::Refused { .. }, .. })).count();
    assert_eq!(refused, 5, "burst of 20 joins per address");
    assert_eq!(s.snapshot().p0, 20);
    s.handle(t0, Input::Joined { conn: 99, from: "192.0.2.10:1".parse().unwrap(), join: join("other") });
    assert!(
        drain(&mut s)
            .iter()
            .any(|o| matches!(o, Output::Send { msg: FromEdge::Refused { reason }, .. } if reason.contains("other")))
    );
    s.handle(t0, Input::Message { conn: 500, msg: ToEdge::Heartbeat });
    assert_eq!(drain(&mut s), [Output::Close { conn: 500 }]);
}

#[test]
fn past_stage_four_clients_are_redirected_to_a_sibling_and_nat_is_recorded() {
    let admission = AdmissionConfig {
        n1c: 1,
        nc_star: 2,
        model: ModelParams { alpha: 1.0, k_prime: 2, lambda: 0.0, mu: 0.0 },
        ..AdmissionConfig::paper()
    };
    let mut cfg = ServiceConfig::new(channel(), admission);
    cfg.siblings = vec!["198.51.100.1:7600".into(), "198.51.100.2:7600".into()];
    let mut s = Service::new(cfg);
    let t0 = Instant::now();
    let public: SocketAddr = "203.0.113.5:40000".parse().unwrap();
    for conn in 0..7 {
        // Half the clients report a private address behind a NAT.
        let listen = if conn % 2 == 0 { Some(SocketAddr::from(([10, 0, 0, conn as u8], 9000))) } else { Some(public) };
        s.handle(t0, Input::Joined { conn, from: public, join: join_msg(listen, 0) });
    }
    let redirects: Vec<String> = drain(&mut s)
        .into_iter()
        .filter_map(|o| match o {
            Output::Send { msg: FromEdge::Redirect { to, .. }, .. } => Some(to),
            _ => None,
        })
        .collect();
    // S = 0.5: stage 4 above N*c/S = 4 clients; clients 5, 6 and 7 go elsewhere, round robin.
    assert_eq!(redirects, ["198.51.100.1:7600", "198.51.100.2:7600", "198.51.100.1:7600"]);
    assert_eq!(s.snapshot().p0, 4);
    assert_eq!(s.stats().natted_clients, 2, "clients 0 and 2 report private addresses");
    s.handle(
        t0,
        Input::Message {
            conn: 0,
            msg: ToEdge::Report(proto::peer::PeerReport { bytes_up: 1000, ..Default::default() }),
        },
    );
    s.handle(
        t0,
        Input::Message { conn: 1, msg: ToEdge::Report(proto::peer::PeerReport { bytes_up: 5, ..Default::default() }) },
    );
    assert_eq!(s.stats().natted_bytes_up, 1000);
    // Clients repeat their startup delay in every report; the edge counts it once per client.
    for (conn, ms) in [(1, 700), (1, 700), (2, 1500)] {
        let r = proto::peer::PeerReport { startup_ms: Some(ms), ..Default::default() };
        s.handle(t0, Input::Message { conn, msg: ToEdge::Report(r) });
    }
    assert_eq!(s.take_startups(), [700, 1500]);
    assert!(s.take_startups().is_empty());
    s.handle(t0, Input::Disconnected { conn: 0 });
    assert_eq!(s.stats().natted_clients, 1);

    // A sibling reported full gets no more clients; with every sibling full, the edge keeps the
    // client (in its trees) rather than bounce it around.
    let join_next = |s: &mut Service, conn, redirects| {
        s.handle(t0, Input::Joined { conn, from: public, join: join_msg(Some(public), redirects) });
        drain(s).into_iter().find_map(|o| match o {
            Output::Send { msg: FromEdge::Redirect { to, .. }, .. } => Some(to),
            Output::Send { msg: FromEdge::Welcome(_), .. } => Some("welcome".into()),
            _ => None,
        })
    };
    assert_eq!(join_next(&mut s, 9, 0).as_deref(), Some("welcome"), "client 0 left: room for one");
    s.handle(t0, Input::SiblingFull { sibling: "198.51.100.2:7600".into(), full: true });
    assert_eq!(join_next(&mut s, 10, 0).as_deref(), Some("198.51.100.1:7600"));
    assert_eq!(join_next(&mut s, 11, 0).as_deref(), Some("198.51.100.1:7600"));
    s.handle(t0, Input::SiblingFull { sibling: "198.51.100.1:7600".into(), full: true });
    assert_eq!(join_next(&mut s, 12, 0).as_deref(), Some("welcome"));
    s.handle(t0, Input::SiblingFull { sibling: "198.51.100.2:7600".into(), full: false });
    assert_eq!(join_next(&mut s, 13, 0).as_deref(), Some("198.51.100.2:7600"));
    // A client another edge already sent here is kept, though a sibling has room: no ping-pong.
    assert_eq!(join_next(&mut s, 14, 1).as_deref(), Some("welcome"));
}

#[test]
fn webrtc_signalling_is_relayed_between_clients_of_the_edge_only() {
    let mut s = Service::new(ServiceConfig::new(channel(), AdmissionConfig::paper()));
    let t0 = Instant::now();
    for conn in 0..2u64 {
        let from = SocketAddr::from(([192, 0, 2, conn as u8 + 1], 5000));
        let join = proto::peer::Join {
            version: proto::peer::CLIENT_PROTOCOL_VERSION,
            channel: channel(),
            token: String::new(),
            upload_kbps: 600,
            listen: Some(from),
            buffer_ms: 15_000,
            redirects: 0,
        };
        s.handle(t0, Input::Joined { conn, from, join });
    }
    drain(&mut s);
    let offer = ToEdge::Signal { to: 2, kind: proto::peer::SignalKind::Offer, payload: "v=0".into() };
    s.handle(t0, Input::Message { conn: 0, msg: offer });
    let relayed = drain(&mut s);
    assert_eq!(
        relayed,
        [Output::Send {
            conn: 1,
            msg: FromEdge::Signal { from: 1, kind: proto::peer::SignalKind::Offer, payload: "v=0".into() }
        }]
    );
    // To a peer id this edge does not know: dropped, nothing sent anywhere.
    s.handle(
        t0,
        Input::Message {
            conn: 0,
            msg: ToEdge::Signal { to: 99, kind: proto::peer::SignalKind::Answer, payload: String::new() },
        },
    );
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.stats().signals_relayed, 1);
}

/// Issue 20, finding 11: signals went to any peer id without limit; flooding a victim's queue
/// got it dropped from the trees. Now a client signals only peers it was introduced to, nothing
/// oversized, and no faster than the rate allows.
#[test]
fn signals_go_only_to_introduced_peers_small_and_rate_limited() {
    let mut s = Service::new(ServiceConfig::new(channel(), AdmissionConfig::paper()));
    let t0 = Instant::now();
    // A stranger first (no listen address: nobody is sent to it), then two neighbours.
    s.handle(t0, Input::Joined { conn: 7, from: ip(77), join: join_msg(None, 0) });
    drain(&mut s);
    let ids = clients_at(&mut s, t0, &[ip(1), ip(2)]);
    let [a, b] = [ids[0], ids[1]];
    let signal =
        |to: u64, len: usize| ToEdge::Signal { to, kind: proto::peer::SignalKind::Candidate, payload: "c".repeat(len) };
    // conn 0 is the first of `clients_at`, whose conn numbers restart at 0.
    s.handle(t0, Input::Message { conn: 7, msg: signal(a, 10) });
    s.handle(t0, Input::Message { conn: 0, msg: signal(b, MAX_SIGNAL_BYTES + 1) });
    assert!(drain(&mut s).is_empty(), "a stranger's and an oversized signal are dropped");
    for _ in 0..300 {
        s.handle(t0, Input::Message { conn: 0, msg: signal(b, 100) });
    }
    let relayed = drain(&mut s).len();
    assert_eq!(relayed, SIGNAL_BURST as usize, "a burst, then nothing until the bucket refills");
    assert_eq!(s.stats().signals_refused, 2 + 300 - relayed as u64);
    s.handle(t0 + Duration::from_secs(1), Input::Message { conn: 0, msg: signal(b, 100) });
    assert_eq!(drain(&mut s).len(), 1, "refilled");
}

#[test]
fn a_tampering_peer_is_detected_dropped_and_no_player_sees_its_chunks() {
    let mut net = Net::new(3, 6, 2.5);
    // The second push peer flips a byte in everything it forwards.
    let tamperer = 1;
    for i in 0..12 {
        net.add_peer_with(1_000, i == tamperer);
        net.run(Duration::from_millis(300));
    }
    net.run(Duration::from_secs(20));
    assert!(net.peers[tamperer].core.stats().push, "the tamperer got to be a parent");
    let reports = net.service.stats().bad_chunk_reports;
    assert!(reports >= 1, "children reported the bad chunks");
    assert_eq!(net.peers[tamperer].core.stats().children, 0, "nobody takes chunks from it any more");
    let bad: u64 = net.peers.iter().map(|p| p.core.stats().bad_chunks).sum();
    assert!(bad >= 1);
    for (i, p) in net.peers.iter().enumerate() {
        let st = p.core.stats();
        assert_eq!(st.play.stalls, 0, "peer {i}: {st:?}");
        assert!(continuous(&p.played), "peer {i} skipped chunks");
    }
    // (Every played chunk was checked against the channel key in `peer_output`.)
}

/// Plays `n` peers for 30 s over peer links that lose `loss` of their chunks.
fn lossy_run(repair: bool, loss: f64) -> Net {
    let mut net = Net::new(3, 6, 2.5);
    net.repair = repair;
    net.loss = loss;
    for _ in 0..16 {
        net.add_peer(1_000);
        net.run(Duration::from_millis(300));
    }
    net.run(Duration::from_secs(30));
    net
}

#[test]
fn mesh_repair_fills_chunks_lost_on_peer_links() {
    let net = lossy_run(true, 0.03);
    let mut repaired = 0;
    for (i, p) in net.peers.iter().enumerate() {
        let st = p.core.stats();
        assert_eq!((st.play.stalls, st.play.skipped_chunks), (0, 0), "peer {i}: {st:?}");
        assert!(continuous(&p.played), "peer {i}");
        repaired += st.repair.repaired;
    }
    assert!(repaired > 100, "repaired {repaired} chunks");
    // The same losses without repair leave holes.
    let bare = lossy_run(false, 0.03);
    let holes: u64 = bare.peers.iter().map(|p| p.core.stats().play.skipped_chunks + p.core.stats().play.stalls).sum();
    assert!(holes > 10, "without repair the losses show: {holes}");
}

#[test]
fn ten_percent_abrupt_leaves_every_ten_seconds_keep_q1_above_099() {
    // The peer-player issue's scenario: N1c = 4, N*c = 10, 30 peers; then every 10 s a tenth of
    // them vanish without a word while as many new ones join.
    let mut net = Net::new(4, 10, 2.5);
    for _ in 0..30 {
        net.add_peer(1_000);
        net.run(Duration::from_millis(300));
    }
    net.run(Duration::from_secs(10));
    let mut rng = 99u64;
    for _round in 0..6 {
        let alive: Vec<usize> = (0..net.peers.len()).filter(|&i| net.peers[i].alive).collect();
        for _ in 0..3 {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let victim = alive[(rng >> 33) as usize % alive.len()];
            if net.peers[victim].alive {
                net.kill(victim);
            }
            net.add_peer(1_000);
        }
        net.run(Duration::from_secs(10));
    }
    let (mut played, mut stalled) = (0u64, 0u64);
    for p in net.peers.iter().filter(|p| p.alive) {
        let st = p.core.stats();
        played += st.play.played_ms;
        stalled += st.play.stalled_ms;
    }
    let q1 = played as f64 / (played + stalled) as f64;
    eprintln!("churn run: Q1 = {q1:.5}, played {played} ms, stalled {stalled} ms");
    for (i, p) in net.peers.iter().enumerate().filter(|(_, p)| p.alive) {
        let st = p.core.stats();
        // Links come and go with churn; what is known of closed ones must go with them.
        assert!(st.repair.maps_held <= st.links, "peer {i} keeps maps of closed links: {st:?}");
    }
    assert!(q1 >= 0.99, "Q1 = {q1:.4}");
    let snap = net.service.snapshot();
    // The edge sees an abrupt leave as the dropped connection and re-feeds the orphans at once:
    // from another parent, or from itself (refocus) until a parent has room.
    assert!(snap.tree.refocus_total > 0, "orphans refocused on the edge: {snap:?}");
    // Orphans came back into trees: the edge feeds only its push peers again, nobody waits.
    assert_eq!(snap.tree.unfed, 0, "{snap:?}");
    assert_eq!(snap.tree.edge_substreams, snap.nc as usize * 4, "refocused substreams returned to trees: {snap:?}");
}

#[test]
fn a_drained_edge_sends_every_client_present_and_arriving_to_a_sibling() {
    let mut cfg = ServiceConfig::new(channel(), AdmissionConfig::paper());
    cfg.siblings = vec!["198.51.100.2:7600".into()];
    let mut s = Service::new(cfg);
    let t0 = Instant::now();
    let from = |i: u8| SocketAddr::from(([203, 0, 113, i], 4000));
    for conn in 0..3u64 {
        s.handle(t0, Input::Joined { conn, from: from(conn as u8), join: join_msg(Some(from(conn as u8)), 0) });
    }
    let welcomed = drain(&mut s).iter().filter(|o| matches!(o, Output::Send { msg: FromEdge::Welcome(_), .. })).count();
    assert_eq!(welcomed, 3);
    let redirected = |out: Vec<Output>| {
        let mut conns: Vec<u64> = out
            .iter()
            .filter_map(|o| match o {
                Output::Send { conn, msg: FromEdge::Redirect { to, .. } } if to == "198.51.100.2:7600" => Some(*conn),
                _ => None,
            })
            .collect();
        conns.sort_unstable();
        conns
    };
    s.handle(t0, Input::Drain(true));
    assert_eq!(redirected(drain(&mut s)), [0, 1, 2], "every client present is moved");
    s.handle(t0, Input::Joined { conn: 7, from: from(7), join: join_msg(Some(from(7)), 0) });
    assert_eq!(redirected(drain(&mut s)), [7], "and every one arriving");
    s.handle(t0, Input::Drain(false));
    s.handle(t0, Input::Joined { conn: 8, from: from(8), join: join_msg(Some(from(8)), 0) });
    assert!(drain(&mut s).iter().any(|o| matches!(o, Output::Send { conn: 8, msg: FromEdge::Welcome(_) })));
    // Without a sibling a drained edge refuses, with the reason.
    let mut lone = Service::new(ServiceConfig::new(channel(), AdmissionConfig::paper()));
    lone.handle(t0, Input::Drain(true));
    lone.handle(t0, Input::Joined { conn: 1, from: from(1), join: join_msg(Some(from(1)), 0) });
    assert!(
        drain(&mut lone).iter().any(
            |o| matches!(o, Output::Send { msg: FromEdge::Refused { reason }, .. } if reason.contains("draining"))
        )
    );
}

/// Clients joined from `addrs` (each listening where it connects from, so the edge makes them
/// mesh neighbours of each other); their peer ids.
fn clients_at(s: &mut Service, t0: Instant, addrs: &[SocketAddr]) -> Vec<u64> {
    let mut peer_of = Vec::new();
    for (conn, &from) in addrs.iter().enumerate() {
        s.handle(t0, Input::Joined { conn: conn as u64, from, join: join_msg(Some(from), 0) });
        let welcome = drain(s).into_iter().find_map(|o| match o {
            Output::Send { msg: FromEdge::Welcome(w), .. } => Some(w.peer),
            _ => None,
        });
        peer_of.push(welcome.unwrap_or_else(|| panic!("client {conn} welcomed")));
    }
    peer_of
}

fn ip(i: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, i], 5000))
}

#[test]
fn a_sender_reported_by_two_clients_is_banned_and_one_liar_bans_nobody() {
    let mut s = Service::new(ServiceConfig::new(channel(), AdmissionConfig::paper()));
    let t0 = Instant::now();
    let peer_of = clients_at(&mut s, t0, &[ip(1), ip(2), ip(3), ip(4)]);
    let report = |s: &mut Service, reporter: u64, sender: usize| {
        s.handle(t0, Input::Message { conn: reporter, msg: ToEdge::BadChunk { from: peer_of[sender], seq: 7 } });
        drain(s)
    };
    let closed = |out: &[Output], conn: u64| out.iter().any(|o| *o == Output::Close { conn });
    // Client 3 lies about client 1 (twice): client 1 stops feeding others but stays.
    assert!(!closed(&report(&mut s, 3, 1), 1));
    assert!(!closed(&report(&mut s, 3, 1), 1), "one reporter, however often, is one report");
    // Clients 1 and 2 both report client 0: banned, told why, disconnected.
    assert!(!closed(&report(&mut s, 1, 0), 0));
    let out = report(&mut s, 2, 0);
    assert!(closed(&out, 0), "{out:?}");
    assert!(out.iter().any(
        |o| matches!(o, Output::Send { conn: 0, msg: FromEdge::Refused { reason } } if reason.contains("banned"))
    ));
    assert_eq!((s.stats().bans, s.snapshot().p0), (1, 3));
    // Rejoining from its address is refused until the ban runs out; others join.
    let t1 = t0 + Duration::from_secs(60);
    s.handle(t1, Input::Joined { conn: 10, from: ip(1), join: join_msg(None, 0) });
    assert!(drain(&mut s).iter().any(
        |o| matches!(o, Output::Send { msg: FromEdge::Refused { reason }, .. } if reason.contains("banned for 540 s"))
    ));
    s.handle(t1, Input::Joined { conn: 11, from: ip(9), join: join_msg(None, 0) });
    assert!(drain(&mut s).iter().any(|o| matches!(o, Output::Send { msg: FromEdge::Welcome(_), .. })));
    let t2 = t0 + Duration::from_secs(601);
    s.handle(t2, Input::Joined { conn: 12, from: ip(1), join: join_msg(None, 0) });
    assert!(
        drain(&mut s).iter().any(|o| matches!(o, Output::Send { msg: FromEdge::Welcome(_), .. })),
        "the ban ran out"
    );
    assert_eq!(s.stats().refused_banned, 1);
}

/// Issue 20, finding 3: an attacker with two connections got an honest peer banned. A report
/// counts only from a peer introduced to the accused, and reporters count by identity.
#[test]
fn strangers_and_one_identity_on_many_connections_ban_nobody() {
    let mut s = Service::new(ServiceConfig::new(channel(), AdmissionConfig::paper()));
    let t0 = Instant::now();
    // Two strangers without a listen address (nobody is ever sent to them), then the victim,
    // then two attacker connections from one address, introduced to it as mesh neighbours.
    for conn in [3u64, 4] {
        s.handle(t0, Input::Joined { conn, from: ip(conn as u8 + 10), join: join_msg(None, 0) });
    }
    drain(&mut s);
    let victim = clients_at(&mut s, t0, &[ip(1)])[0];
    for conn in [1u64, 2] {
        let from = SocketAddr::from(([198, 51, 100, 7], 6000 + conn as u16));
        s.handle(t0, Input::Joined { conn, from, join: join_msg(Some(from), 0) });
    }
    drain(&mut s);
    for conn in 1..=4 {
        s.handle(t0, Input::Message { conn, msg: ToEdge::BadChunk { from: victim, seq: 7 } });
    }
    let out = drain(&mut s);
    assert!(!out.iter().any(|o| *o == Output::Close { conn: 0 }), "the victim stays: {out:?}");
    let st = s.stats();
    assert_eq!((st.bans, st.bad_chunk_reports, st.bad_chunk_refused), (0, 2, 2), "{st:?}");
}

#[test]
fn an_inflated_upload_claim_is_flagged_and_left_out_of_the_figures() {
    let mut s = Service::new(ServiceConfig::new(channel(), AdmissionConfig::paper()));
    let t0 = Instant::now();
    let ids = clients_at(&mut s, t0, &[ip(1), ip(2)]);
    let report = |up: u64, from: Vec<(u64, u64)>| proto::peer::PeerReport {
        interval_ms: 60_000,
        bytes_up: up,
        from_peers: from,
        ..Default::default()
    };
    // Client 0 feeds client 1 about 1 MB a minute and claims 8 (a minute at twice its upload
    // cap, about 10 MB, is the most a report may claim at all); client 1 confirms what it got.
    for minute in 1..=3 {
        let t = t0 + Duration::from_secs(60 * minute);
        s.handle(t, Input::Message { conn: 0, msg: ToEdge::Report(report(8 << 20, vec![])) });
        s.handle(t, Input::Message { conn: 1, msg: ToEdge::Report(report(0, vec![(ids[0], 1 << 20)])) });
    }
    let st = s.stats();
    assert_eq!(st.inflated_clients, 1);
    assert_eq!(st.reported.bytes_up, 0, "none of its claims count");
    assert_eq!(st.excluded_bytes_up, 24 << 20);
}

/// Issue 20, finding 10: confirmations came from anyone about anyone, so a sybil vouched for
/// 60 GiB. Now only a receiver introduced to the sender confirms, and only what a report
/// interval can hold.
#[test]
fn only_introduced_receivers_confirm_and_only_what_an_interval_holds() {
    let mut s = Service::new(ServiceConfig::new(channel(), AdmissionConfig::paper()));
    let t0 = Instant::now();
    // A sybil with no listen address, before client 0: never introduced to it.
    s.handle(t0, Input::Joined { conn: 5, from: ip(50), join: join_msg(None, 0) });
    drain(&mut s);
    let ids = clients_at(&mut s, t0, &[ip(1)]);
    let claim = |up: u64| proto::peer::PeerReport { interval_ms: 60_000, bytes_up: up, ..Default::default() };
    let vouch =
        proto::peer::PeerReport { interval_ms: 60_000, from_peers: vec![(ids[0], 60 << 30)], ..Default::default() };
    for minute in 1..=3 {
        let t = t0 + Duration::from_secs(60 * minute);
        s.handle(t, Input::Message { conn: 0, msg: ToEdge::Report(claim(5 << 20)) });
        s.handle(t, Input::Message { conn: 5, msg: ToEdge::Report(vouch.clone()) });
    }
    let st = s.stats();
    assert_eq!(st.confirmations_refused, 3);
    assert_eq!(st.inflated_clients, 1, "the sybil's word is worth nothing: {st:?}");
    // Wrapped counters are cut to what a minute holds.
    s.handle(
        t0 + Duration::from_secs(240),
        Input::Message {
            conn: 5,
            msg: ToEdge::Report(proto::peer::PeerReport {
                interval_ms: u32::MAX,
                played_ms: 60_000,
                stalls: u32::MAX,
                bytes_from_edge: u64::MAX - 5,
                ..Default::default()
            }),
        },
    );
    let st = s.stats();
    assert_eq!(st.reports_clamped, 4, "the three 60 GiB vouches and this one");
    assert!(st.reported.stalls <= 62_000 / 1000 + 1 && st.reported.bytes_from_edge < 1 << 30, "{:?}", st.reported);
}

#[test]
fn a_second_client_with_a_connected_identity_is_noticed() {
    let mut s = Service::new(ServiceConfig::new(channel(), AdmissionConfig::paper()));
    let t0 = Instant::now();
    let with_token = |token: &str| proto::peer::Join { token: token.into(), ..join_msg(None, 0) };
    s.handle(t0, Input::Joined { conn: 1, from: "192.0.2.1:1".parse().unwrap(), join: with_token("9.alice.ff") });
    s.handle(t0, Input::Joined { conn: 2, from: "198.51.100.1:1".parse().unwrap(), join: with_token("9.bob.ff") });
    assert_eq!(s.stats().duplicate_identities, 0);
    s.handle(t0, Input::Joined { conn: 3, from: "203.0.113.1:1".parse().unwrap(), join: with_token("9.alice.ee") });
    assert_eq!(s.stats().duplicate_identities, 1, "alice on a second machine");
}

#[test]
fn a_parent_that_takes_children_but_forwards_nothing_is_made_a_leaf() {
    let mut net = Net::new(3, 6, 2.5);
    // The second push peer accepts children and sends them nothing.
    let denier = 1;
    for i in 0..14 {
        net.add_peer_cfg(1_000, |c| c.faults.deny = i == denier);
        net.run(Duration::from_millis(300));
    }
    net.run(Duration::from_secs(30));
    assert!(net.peers[denier].core.stats().push, "the denier got to be a parent");
    assert_eq!(net.peers[denier].core.stats().children, 0, "nobody is left waiting on it");
    assert!(net.service.stats().demoted >= 1, "{:?}", net.service.stats());
    let stalled: Vec<usize> =
        (0..net.peers.len()).filter(|&i| i != denier && net.peers[i].core.stats().play.stalls > 0).collect();
    assert!(stalled.is_empty(), "mesh repair covers the gap until the move: {stalled:?}");
}
