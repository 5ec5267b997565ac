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
/// A keyframe every 50 chunks of 40 ms.
const GOP_SECS: f64 = 2.0;

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
    rng: proto::rng::SplitMix64,
    repair: bool,
}

/// What the test peers report: 2.5 × the 400 kbit/s stream once the edge gives out only
/// [`crate::admission::UPLOAD_SHARE`] of it, the trees' room for every test swarm.
const PEER_KBPS: u32 = 1_250;

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
            rng: proto::rng::SplitMix64::new(0x1234_5678),
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
        // No NAT between these peers: each would measure its class as open.
        cfg.nat = proto::nat::NatClass::Open;
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
        self.service.handle(self.now, Input::Disconnected { conn: i.into() });
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
        let i = conn.0 as usize;
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
                        let i = conn.0 as usize;
                        if self.peers[i].alive {
                            self.peers[i].core.handle(self.now, PeerInput::FromEdge(msg));
                        }
                    }
                    Output::Close { conn } => self.feeder.forget(conn),
                    Output::Serve { conn, order } => {
                        let ring = Source(&self.source);
                        self.feeder.serve(self.now, conn, order, &ring);
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
                self.service.handle(now, Input::Joined { conn: i.into(), from: addr_of(i), join })
            }
            PeerOutput::ToEdge(msg) => self.service.handle(now, Input::Message { conn: i.into(), msg }),
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

    /// Whether this peer-link chunk is lost.
    fn lose(&mut self) -> bool {
        self.rng.chance(self.loss)
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
        nat: proto::nat::NatClass::Open,
    }
}

fn continuous(played: &[u64]) -> bool {
    played.windows(2).all(|w| w[1] == w[0] + 1)
}

mod clients;
mod swarm;
