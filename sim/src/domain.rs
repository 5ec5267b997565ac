//! One edge and its clients (LiveSky §4.2: "each edge SN operates in isolation"): the edge's real
//! client service (admission, tracker, trees, signalling) and one real peer core per client,
//! joined by a network model with per-ISP latency, link loss, NAT reachability and abrupt leaves.
//! The edge pushes chunks to the substreams it feeds and sends start bursts within its capacity;
//! peers do everything else themselves.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};

use bytes::Bytes;
use livesky_peer::buffer::BufferConfig;
use livesky_peer::core::{Input as PeerInput, LinkId, Output as PeerOutput, PeerConfig, PeerCore, PeerStats};
use proto::peer::{FromEdge, PeerId, PeerLink, ToEdge};
use proto::{ChannelId, Chunk, ChunkFlags, ChunkHeader, DetMap, SubstreamId, TokenBucket};
use sn_edge::admission::AdmissionConfig;
use sn_edge::model::ModelParams;
use sn_edge::service::{ConnId, Input as EdgeInput, Output as EdgeOutput, Service, ServiceConfig};

use crate::engine::{Clock, Micros, Queue, Rng, SECOND};
use crate::scenario::{Mode, Scenario};

/// Where an edge sits and how much of the audience it draws.
#[derive(Debug, Clone)]
pub struct EdgeSpec {
    pub index: usize,
    pub district: u16,
    pub isp: u8,
    /// Share of all arrivals.
    pub weight: f64,
}

/// One edge-minute (the per-minute report an edge sends, §4.2).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MinuteRow {
    pub edge: usize,
    pub minute: u32,
    pub stage: u8,
    pub p0: u32,
    pub nc: u32,
    pub joins: u32,
    pub leaves: u32,
    /// Clients present at some point of the minute, and those that stalled in it (Q2 = 1 − NB/NT).
    pub active: u32,
    pub stalled_clients: u32,
    pub played_ms: u64,
    pub stalled_ms: u64,
    pub cdn_bytes: u64,
    pub p2p_bytes: u64,
    pub refocus: u64,
    /// Upload of NAT-ed clients, and of all clients.
    pub natted_up_bytes: u64,
    pub up_bytes: u64,
}

impl MinuteRow {
    /// Adds another edge's counts for the same minute (system-wide totals).
    pub fn add(&mut self, r: &MinuteRow) {
        self.p0 += r.p0;
        self.nc += r.nc;
        self.joins += r.joins;
        self.leaves += r.leaves;
        self.active += r.active;
        self.stalled_clients += r.stalled_clients;
        self.played_ms += r.played_ms;
        self.stalled_ms += r.stalled_ms;
        self.cdn_bytes += r.cdn_bytes;
        self.p2p_bytes += r.p2p_bytes;
        self.refocus += r.refocus;
        self.natted_up_bytes += r.natted_up_bytes;
        self.up_bytes += r.up_bytes;
    }
}

/// One viewing session, when it ended (or the run did).
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub edge: usize,
    pub joined_s: f64,
    pub watched_s: f64,
    pub startup_ms: Option<u64>,
    pub played_ms: u64,
    pub stalled_ms: u64,
    pub stalls: u64,
    pub push: bool,
    pub natted: bool,
    pub reachable: bool,
    pub up_bytes: u64,
    pub from_edge: u64,
    pub from_peers: u64,
}

#[derive(Debug, Default)]
pub struct DomainResult {
    pub minutes: Vec<MinuteRow>,
    pub sessions: Vec<Session>,
}

enum Ev {
    /// A client arrives (`true`), or it is time to look at the arrival rate again (`false`).
    Arrive(bool),
    Depart(u32),
    ToEdge(u32, ToEdgeEv),
    /// Boxed: chunks are big, and the queue moves its events around.
    ToPeer(u32, Box<PeerInput>),
    Timer(u32),
    Source,
    Tick,
    Minute,
}

enum ToEdgeEv {
    Join(proto::peer::Join),
    Msg(ToEdge),
    Gone,
}

struct Slot {
    core: Option<PeerCore>,
    isp: u8,
    natted: bool,
    reachable: bool,
    abrupt: bool,
    joined: Micros,
    timer: Option<Micros>,
    links: Vec<LinkId>,
    down_kbps: u32,
    /// When its downlink has taken in everything sent so far.
    down_free: Micros,
    last: PeerStats,
}

pub struct Domain<'a> {
    sc: &'a Scenario,
    spec: EdgeSpec,
    clock: Clock,
    q: Queue<Ev>,
    rng: Rng,
    service: Service,
    slots: Vec<Slot>,
    ids: DetMap<PeerId, u32>,
    links: DetMap<(u32, LinkId), (u32, LinkId)>,
    next_accept: LinkId,
    masks: BTreeMap<u32, u64>,
    bursts: BTreeMap<u32, VecDeque<u64>>,
    ring: VecDeque<Chunk>,
    next_seq: u64,
    payload: Bytes,
    budget: TokenBucket,
    row: MinuteRow,
    out: DomainResult,
    end: Micros,
}

fn channel() -> ChannelId {
    ChannelId::new("cpc").unwrap_or_else(|_| unreachable!("a valid literal channel name"))
}

fn addr(i: u32, private: bool) -> SocketAddr {
    let b = i.to_be_bytes();
    let ip = if private { Ipv4Addr::new(192, 168, b[2], b[3]) } else { Ipv4Addr::new(10, b[1], b[2], b[3]) };
    SocketAddr::from((ip, 4000))
}

impl<'a> Domain<'a> {
    pub fn new(sc: &'a Scenario, spec: EdgeSpec, clock: Clock) -> Self {
        let e = &sc.edges;
        let nc_star = sc.nc_star();
        // The baselines are the same edge with other limits: the CDN serves everyone it has
        // room for and refuses the rest; the mesh's edge only seeds a few and builds no trees.
        let seeds = (nc_star / 50).max(2).min(nc_star);
        let (n1c, nc_star, k_prime, max_clients) = match sc.mode {
            Mode::Hybrid => (e.n1c, nc_star, e.k_prime, usize::MAX),
            Mode::Cdn => (nc_star, nc_star, 1, nc_star as usize),
            Mode::Mesh => (seeds, seeds, 1, usize::MAX),
        };
        let admission = AdmissionConfig {
            n1c,
            nc_star,
            model: ModelParams { alpha: e.alpha, k_prime, lambda: e.lambda, mu: e.mu },
            substreams: sc.stream.substreams,
            media_kbps: sc.stream.kbps,
            upload_cap_factor: e.upload_cap_factor,
            max_clients,
            seed: sc.seed ^ (spec.index as u64).wrapping_mul(0x9e37_79b9),
            ..AdmissionConfig::paper()
        };
        let mut cfg = ServiceConfig::new(channel(), admission);
        cfg.joins_per_ip_per_sec = 1e9;
        cfg.join_burst_per_ip = 1e9;
        cfg.max_burst_ms = sc.clients.buffer_s * 1000;
        let capacity = f64::from(e.capacity_mbps) * 125_000.0;
        let chunk_bytes = (u64::from(sc.stream.kbps) * u64::from(sc.stream.chunk_ms) / 8) as usize;
        let mut d = Domain {
            sc,
            clock,
            q: Queue::default(),
            rng: Rng::new(sc.seed.wrapping_add(spec.index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)),
            service: Service::new(cfg),
            slots: Vec::new(),
            ids: DetMap::default(),
            links: DetMap::default(),
            next_accept: 1,
            masks: BTreeMap::new(),
            bursts: BTreeMap::new(),
            ring: VecDeque::new(),
            next_seq: 0,
            payload: Bytes::from(vec![0u8; chunk_bytes]),
            budget: TokenBucket::new(capacity, capacity),
            row: MinuteRow { edge: spec.index, ..Default::default() },
            out: DomainResult::default(),
            end: u64::from(sc.minutes) * 60 * SECOND,
            spec,
        };
        d.q.push(0, Ev::Source);
        d.q.push(0, Ev::Tick);
        d.q.push(60 * SECOND, Ev::Minute);
        d.schedule_arrival(0);
        d
    }

    /// Runs the whole event; `progress` is called after every simulated minute.
    pub fn run(mut self, mut progress: impl FnMut()) -> DomainResult {
        while let Some((t, ev)) = self.q.pop_until(self.end) {
            let minute = matches!(ev, Ev::Minute);
            self.step(t, ev);
            if minute {
                progress();
            }
        }
        let ids: Vec<u32> = (0..self.slots.len() as u32).filter(|&i| self.slots[i as usize].core.is_some()).collect();
        for i in ids {
            self.finish(i, self.end);
        }
        self.out
    }

    fn step(&mut self, t: Micros, ev: Ev) {
        match ev {
            Ev::Arrive(spawn) => {
                if spawn {
                    self.spawn(t);
                }
                self.schedule_arrival(t);
            }
            Ev::Depart(i) => self.depart(t, i),
            Ev::ToEdge(i, m) => {
                let conn = ConnId::from(i);
                let input = match m {
                    ToEdgeEv::Join(join) => EdgeInput::Joined { conn, from: addr(i, false), join },
                    ToEdgeEv::Msg(msg) => EdgeInput::Message { conn, msg },
                    ToEdgeEv::Gone => EdgeInput::Disconnected { conn },
                };
                self.service.handle(self.clock.at(t), input);
                self.edge_outputs(t);
            }
            Ev::ToPeer(i, input) => {
                if let (PeerInput::FromEdge(FromEdge::Welcome(w)), true) = (&*input, self.alive(i)) {
                    self.ids.insert(w.peer, i);
                }
                self.with_peer(t, i, |core, now| core.handle(now, *input));
            }
            Ev::Timer(i) => {
                if self.slots.get(i as usize).is_some_and(|s| s.timer == Some(t)) {
                    self.slots[i as usize].timer = None;
                    self.with_peer(t, i, |core, now| core.handle_timeout(now));
                }
            }
            Ev::Source => self.source(t),
            Ev::Tick => {
                self.service.tick(self.clock.at(t));
                self.edge_outputs(t);
                self.q.push(t + SECOND, Ev::Tick);
            }
            Ev::Minute => self.minute(t),
        }
    }

    fn alive(&self, i: u32) -> bool {
        self.slots.get(i as usize).is_some_and(|s| s.core.is_some())
    }

    /// One-way delay between the edge and client `i`, and between clients `i` and `j`.
    fn edge_delay(&self, i: u32) -> Micros {
        let l = &self.sc.latency;
        let same = self.slots.get(i as usize).is_none_or(|s| s.isp == self.spec.isp);
        u64::from(if same { l.edge_same_isp_ms } else { l.edge_other_isp_ms }) * 1000
    }

    fn peer_delay(&self, i: u32, j: u32) -> Micros {
        let l = &self.sc.latency;
        let same = self.slots[i as usize].isp == self.slots[j as usize].isp;
        u64::from(if same { l.peer_same_isp_ms } else { l.peer_other_isp_ms }) * 1000
    }

    fn schedule_arrival(&mut self, t: Micros) {
        // Piecewise-constant rate per second: exact enough for minute-scale curves.
        let per_min = self.sc.arrival_rate(t as f64 / 60e6) * self.spec.weight;
        if per_min <= 1e-9 {
            self.q.push(t + 10 * SECOND, Ev::Arrive(false));
            return;
        }
        let gap = self.rng.exp(60.0 / per_min);
        if gap > 10.0 {
            // The rate may change before then: look again in 10 s (memoryless, so no bias).
            self.q.push(t + 10 * SECOND, Ev::Arrive(false));
        } else {
            self.q.push(t + (gap * 1e6) as Micros, Ev::Arrive(true));
        }
    }

    fn spawn(&mut self, t: Micros) {
        let sc = self.sc;
        let c = &sc.clients;
        let i = self.slots.len() as u32;
        let isp = if self.rng.chance(sc.edges.same_isp_share) {
            self.spec.isp
        } else {
            (self.spec.isp + 1 + (self.rng.next_u64() % u64::from(sc.edges.isps.max(2) - 1)) as u8)
                % sc.edges.isps.max(1)
        };
        let natted = self.rng.chance(c.nat_share);
        let reachable = !self.rng.chance(c.unreachable_share);
        let weights: Vec<f64> = c.upload.iter().map(|u| u.share).collect();
        let upload = c.upload[self.rng.pick(&weights)].kbps;
        let weights: Vec<f64> = c.download.iter().map(|u| u.share).collect();
        let down_kbps = c.download[self.rng.pick(&weights)].kbps;
        let cap = (f64::from(sc.stream.kbps) * sc.edges.upload_cap_factor) as u32;
        let mut cfg = PeerConfig::new(channel());
        cfg.upload_kbps = upload.min(cap).max(1);
        cfg.listen = reachable.then(|| addr(i, natted));
        let k = u32::from(sc.stream.substreams);
        let chunk = sc.stream.chunk_ms;
        cfg.buffer = BufferConfig {
            buffer_ms: c.buffer_s * 1000,
            start_ms: (2_000u32).max(2 * chunk),
            max_stall_ms: (3_000u32).max(3 * chunk),
            ..BufferConfig::default()
        };
        // A substream carries one chunk in K: silence shorter than K chunks is not lateness.
        cfg.late_ms = (2_000u32).max((k + 2) * chunk);
        cfg.map_interval = std::time::Duration::from_millis(u64::from((1_000u32).max(k * chunk)));
        cfg.report_interval = std::time::Duration::from_secs(60);
        cfg.tick = std::time::Duration::from_millis(u64::from((200u32).max(chunk)));
        cfg.pull_only = sc.mode == Mode::Mesh;
        let watch = self.rng.exp(c.session_mean_min * 60.0);
        let abrupt = self.rng.chance(c.abrupt_share);
        let core = PeerCore::new(cfg, self.clock.at(t));
        self.slots.push(Slot {
            core: Some(core),
            isp,
            natted,
            reachable,
            abrupt,
            joined: t,
            timer: None,
            links: Vec::new(),
            down_kbps,
            down_free: t,
            last: PeerStats::default(),
        });
        self.row.joins += 1;
        self.q.push(t + (watch * 1e6) as Micros + SECOND, Ev::Depart(i));
        self.drain_peer(t, i);
    }

    fn depart(&mut self, t: Micros, i: u32) {
        if !self.alive(i) {
            return;
        }
        let dead = u64::from(self.sc.latency.dead_link_ms) * 1000;
        if self.slots[i as usize].abrupt {
            // Gone without a word: neighbours notice when the link goes quiet, the edge when
            // the control connection times out.
            for link in std::mem::take(&mut self.slots[i as usize].links) {
                if let Some((j, l2)) = self.links.remove(&(i, link)) {
                    self.links.remove(&(j, l2));
                    self.q.push(t + dead, Ev::ToPeer(j, Box::new(PeerInput::LinkClosed(l2))));
                }
            }
            self.q.push(t + dead, Ev::ToEdge(i, ToEdgeEv::Gone));
        } else {
            self.with_peer(t, i, |core, _| core.leave());
            let d = self.edge_delay(i);
            self.q.push(t + d + 1, Ev::ToEdge(i, ToEdgeEv::Gone));
        }
        self.finish(i, t);
        self.row.leaves += 1;
    }

    /// Closes the books on client `i`.
    fn finish(&mut self, i: u32, t: Micros) {
        let slot = &mut self.slots[i as usize];
        let Some(core) = slot.core.take() else { return };
        let st = core.stats();
        fold(&mut self.row, &slot.last, &st, slot.natted);
        slot.last = st;
        self.masks.remove(&i);
        self.bursts.remove(&i);
        self.out.sessions.push(Session {
            edge: self.spec.index,
            joined_s: slot.joined as f64 / 1e6,
            watched_s: t.saturating_sub(slot.joined) as f64 / 1e6,
            startup_ms: st.startup.map(|d| d.as_millis() as u64),
            played_ms: st.play.played_ms,
            stalled_ms: st.play.stalled_ms,
            stalls: st.play.stalls,
            push: st.push,
            natted: slot.natted,
            reachable: slot.reachable,
            up_bytes: st.bytes_up,
            from_edge: st.bytes_from_edge,
            from_peers: st.bytes_from_peers,
        });
    }

    fn with_peer(&mut self, t: Micros, i: u32, f: impl FnOnce(&mut PeerCore, std::time::Instant)) {
        let now = self.clock.at(t);
        let Some(core) = self.slots.get_mut(i as usize).and_then(|s| s.core.as_mut()) else { return };
        f(core, now);
        self.drain_peer(t, i);
    }

    fn drain_peer(&mut self, t: Micros, i: u32) {
        loop {
            let Some(out) = self.slots[i as usize].core.as_mut().and_then(|c| c.poll_output()) else { break };
            self.peer_output(t, i, out);
        }
        let slot = &mut self.slots[i as usize];
        let Some(core) = slot.core.as_ref() else { return };
        // At least 1 ms ahead: a core asking to be woken "now" again cannot stall virtual time.
        if let Some(at) = core.poll_timeout(self.clock.at(t)).map(|x| self.clock.micros_of(x).max(t + 1_000))
            && slot.timer.is_none_or(|s| at < s)
        {
            slot.timer = Some(at);
            self.q.push(at, Ev::Timer(i));
        }
    }

    fn peer_output(&mut self, t: Micros, i: u32, out: PeerOutput) {
        match out {
            PeerOutput::ToEdge(m) => {
                let d = self.edge_delay(i);
                let ev = match m {
                    ToEdge::Join(j) => ToEdgeEv::Join(j),
                    other => ToEdgeEv::Msg(other),
                };
                self.q.push(t + d, Ev::ToEdge(i, ev));
            }
            PeerOutput::Connect { link, peer, .. } => {
                let target = self.ids.get(&peer).copied().filter(|&j| self.alive(j));
                match target {
                    Some(j) if self.slots[j as usize].reachable => {
                        // Offer, answer and ICE checks through the edge: about three one-way trips.
                        let d = 3 * self.peer_delay(i, j) + 2 * self.edge_delay(i);
                        let acc = self.next_accept;
                        self.next_accept += 1;
                        self.links.insert((i, link), (j, acc));
                        self.links.insert((j, acc), (i, link));
                        self.slots[i as usize].links.push(link);
                        self.slots[j as usize].links.push(acc);
                        self.q.push(t + d, Ev::ToPeer(j, Box::new(PeerInput::LinkAccepted(acc))));
                        self.q.push(t + d, Ev::ToPeer(i, Box::new(PeerInput::LinkUp(link))));
                    }
                    // NAT traversal fails after ICE gives up.
                    _ => self.q.push(t + 3 * SECOND, Ev::ToPeer(i, Box::new(PeerInput::LinkFailed(link)))),
                }
            }
            PeerOutput::Send { link, msg } => {
                if let Some(&(j, l2)) = self.links.get(&(i, link)) {
                    if matches!(msg, PeerLink::Chunk(_)) && self.rng.chance(self.sc.latency.loss) {
                        return;
                    }
                    let mut at = t + self.peer_delay(i, j);
                    if let PeerLink::Chunk(c) = &msg {
                        at = self.arrival(at, j, c.payload.len());
                    }
                    self.q.push(at, Ev::ToPeer(j, Box::new(PeerInput::FromPeer(l2, msg))));
                }
            }
            PeerOutput::Close { link } => {
                if let Some((j, l2)) = self.links.remove(&(i, link)) {
                    self.links.remove(&(j, l2));
                    self.slots[i as usize].links.retain(|&l| l != link);
                    self.slots[j as usize].links.retain(|&l| l != l2);
                    let d = self.peer_delay(i, j);
                    self.q.push(t + d, Ev::ToPeer(j, Box::new(PeerInput::LinkClosed(l2))));
                }
            }
            PeerOutput::Play(_) | PeerOutput::Event(_) => {}
        }
    }

    fn edge_outputs(&mut self, t: Micros) {
        for out in self.service.drain() {
            match out {
                EdgeOutput::Send { conn, msg } => {
                    let i = conn as u32;
                    if self.alive(i) {
                        let d = self.edge_delay(i);
                        self.q.push(t + d, Ev::ToPeer(i, Box::new(PeerInput::FromEdge(msg))));
                    }
                }
                EdgeOutput::Close { conn } => {
                    self.masks.remove(&(conn as u32));
                    self.bursts.remove(&(conn as u32));
                }
                EdgeOutput::Serve { conn, mask, burst_ms, backfill } => {
                    let i = conn as u32;
                    if !self.alive(i) {
                        continue;
                    }
                    self.masks.insert(i, mask);
                    let k = self.sc.stream.substreams;
                    // A pure mesh has no start burst: only its seeds hear from the edge.
                    let burst_ms = burst_ms.filter(|_| self.sc.mode != Mode::Mesh || mask != 0);
                    if let Some(ms) = burst_ms {
                        let back = u64::from(ms / self.sc.stream.chunk_ms);
                        let first = self.next_seq.saturating_sub(back);
                        let kf = u64::from(self.sc.stream.keyframe_every);
                        let start = first.div_ceil(kf) * kf;
                        self.bursts.insert(i, (start..self.next_seq).collect());
                    }
                    if backfill != 0 {
                        // What the client may have missed of substreams it now takes from the edge.
                        let back = u64::from(self.sc.stream.substreams) * 2;
                        let from = self.next_seq.saturating_sub(back);
                        let missed: Vec<Chunk> = self
                            .ring
                            .iter()
                            .filter(|c| c.seq() >= from && backfill & (1 << SubstreamId::of(c.seq(), k).0) != 0)
                            .cloned()
                            .collect();
                        for c in missed {
                            self.edge_send(t, i, c, true);
                        }
                    }
                }
            }
        }
    }

    /// The edge sends a chunk to client `i`: live pushes always (the admission keeps them within
    /// capacity), bursts only with budget left.
    fn edge_send(&mut self, t: Micros, i: u32, c: Chunk, force: bool) -> bool {
        let len = c.payload.len() as f64;
        let now = self.clock.at(t);
        if force {
            self.budget.force_take(now, len);
        } else if !self.budget.try_take(now, len) {
            return false;
        }
        self.row.cdn_bytes += c.payload.len() as u64;
        let at = self.arrival(t + self.edge_delay(i), i, c.payload.len());
        self.q.push(at, Ev::ToPeer(i, Box::new(PeerInput::FromEdge(FromEdge::Chunk(c)))));
        true
    }

    /// When `bytes` sent to client `i` that would reach it at `at` are in: after what its
    /// downlink is still taking in.
    fn arrival(&mut self, at: Micros, i: u32, bytes: usize) -> Micros {
        let Some(s) = self.slots.get_mut(i as usize) else { return at };
        let start = at.max(s.down_free);
        s.down_free = start + bytes as u64 * 8_000 / u64::from(s.down_kbps.max(1));
        s.down_free
    }

    fn source(&mut self, t: Micros) {
        let s = &self.sc.stream;
        let seq = self.next_seq;
        self.next_seq += 1;
        let c = Chunk {
            header: ChunkHeader {
                channel: channel(),
                seq,
                ingest_ms: t / 1000,
                media_ts: seq * u64::from(s.chunk_ms) * 90,
                flags: if seq.is_multiple_of(u64::from(s.keyframe_every)) {
                    ChunkFlags::KEYFRAME
                } else {
                    ChunkFlags::empty()
                },
            },
            payload: self.payload.clone(),
            signature: None,
        };
        self.ring.push_back(c.clone());
        let keep = (30_000 / s.chunk_ms).max(8) as usize;
        while self.ring.len() > keep {
            self.ring.pop_front();
        }
        let bit = 1u64 << SubstreamId::of(seq, s.substreams).0;
        let targets: Vec<u32> = self.masks.iter().filter(|(_, m)| *m & bit != 0).map(|(&i, _)| i).collect();
        for i in targets {
            self.edge_send(t, i, c.clone(), true);
        }
        let waiting: Vec<u32> = self.bursts.keys().copied().collect();
        'clients: for i in waiting {
            while let Some(&seq) = self.bursts.get(&i).and_then(|q| q.front()) {
                let first = self.ring.front().map_or(0, |c| c.seq());
                let Some(c) = seq.checked_sub(first).and_then(|o| self.ring.get(o as usize)).cloned() else {
                    self.bursts.get_mut(&i).map(|q| q.pop_front());
                    continue;
                };
                if !self.edge_send(t, i, c, false) {
                    break 'clients;
                }
                self.bursts.get_mut(&i).map(|q| q.pop_front());
            }
            self.bursts.remove(&i);
        }
        self.q.push(t + u64::from(s.chunk_ms) * 1000, Ev::Source);
    }

    fn minute(&mut self, t: Micros) {
        let snap = self.service.snapshot();
        for slot in &mut self.slots {
            let Some(core) = slot.core.as_ref() else { continue };
            let st = core.stats();
            fold(&mut self.row, &slot.last, &st, slot.natted);
            slot.last = st;
        }
        let mut row = std::mem::take(&mut self.row);
        row.edge = self.spec.index;
        row.minute = (t / (60 * SECOND)) as u32;
        row.stage = snap.stage as u8;
        row.p0 = snap.p0;
        row.nc = snap.nc;
        row.refocus = snap.tree.refocus_total;
        self.out.minutes.push(row);
        self.row.edge = self.spec.index;
        self.q.push(t + 60 * SECOND, Ev::Minute);
    }
}

/// Adds what a client did since `before` to the minute's row.
fn fold(row: &mut MinuteRow, before: &PeerStats, now: &PeerStats, natted: bool) {
    let up = now.bytes_up.saturating_sub(before.bytes_up);
    row.active += 1;
    row.played_ms += now.play.played_ms.saturating_sub(before.play.played_ms);
    row.stalled_ms += now.play.stalled_ms.saturating_sub(before.play.stalled_ms);
    row.stalled_clients += u32::from(now.play.stalls > before.play.stalls);
    row.p2p_bytes += now.bytes_from_peers.saturating_sub(before.bytes_from_peers);
    row.up_bytes += up;
    if natted {
        row.natted_up_bytes += up;
    }
}
