//! The edges of one district and ISP and their clients. Edges decide alone (LiveSky §4.2: "each
//! edge SN operates in isolation"), but a full one redirects new clients to a sibling of its
//! group that is not full, so a group is simulated together. Each edge is the real client
//! service ([`crate::edge`]); each client a real peer core; between them a network model with
//! per-ISP latency, link loss, NAT reachability, downlink capacity and abrupt leaves.

use std::net::{Ipv4Addr, SocketAddr};

use livesky_peer::buffer::BufferConfig;
use livesky_peer::core::{Event, Input as PeerInput, LinkId, Output as PeerOutput, PeerConfig, PeerCore, PeerStats};
use proto::DetMap;
use proto::peer::{FromEdge, PeerId, PeerLink, ToEdge};
use sn_edge::service::{ConnId, Input as EdgeInput};

use crate::edge::{SimEdge, Stream, channel};
use crate::engine::{Clock, Micros, Queue, Rng, SECOND};
use crate::scenario::{Mode, Scenario};

/// A client follows at most this many redirects (as `livesky peer play` does).
const MAX_REDIRECTS: u8 = 5;

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
    /// Redirects followed before it was admitted.
    pub redirects: u8,
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

pub(crate) enum Ev {
    /// A client arrives (`true`), or it is time to look at the arrival rate again (`false`).
    Arrive(bool),
    Depart(u32),
    /// To edge `.0` from client `.1`; boxed, like chunks, so the queue moves small events.
    ToEdge(u16, u32, Box<ToEdgeEv>),
    ToPeer(u32, Box<PeerInput>),
    /// Client `.0` joins edge `.1` after a redirect.
    Rejoin(u32, u16),
    Timer(u32),
    Source,
    Tick,
    Minute,
}

pub(crate) enum ToEdgeEv {
    Join(proto::peer::Join),
    Msg(ToEdge),
    Gone,
}

pub(crate) struct Slot {
    core: Option<PeerCore>,
    /// The edge (in the group) it is with.
    edge: u16,
    isp: u8,
    natted: bool,
    reachable: bool,
    abrupt: bool,
    upload_kbps: u32,
    joined: Micros,
    /// When the current core started (after the last redirect).
    core_since: Micros,
    redirects: u8,
    timer: Option<Micros>,
    links: Vec<LinkId>,
    down_kbps: u32,
    /// When its downlink has taken in everything sent so far.
    down_free: Micros,
    last: PeerStats,
}

/// What edges and clients share: time, the event queue, the RNG and the clients.
pub(crate) struct Net<'a> {
    pub sc: &'a Scenario,
    pub clock: Clock,
    pub q: Queue<Ev>,
    pub rng: Rng,
    slots: Vec<Slot>,
    /// The group's ISP.
    isp: u8,
}

impl Net<'_> {
    pub fn alive(&self, i: u32) -> bool {
        self.slots.get(i as usize).is_some_and(|s| s.core.is_some())
    }

    /// One-way delay between an edge (all of a group's are on its ISP) and client `i`.
    pub fn edge_delay(&self, i: u32) -> Micros {
        let l = &self.sc.latency;
        let same = self.slots.get(i as usize).is_none_or(|s| s.isp == self.isp);
        u64::from(if same { l.edge_same_isp_ms } else { l.edge_other_isp_ms }) * 1000
    }

    fn peer_delay(&self, i: u32, j: u32) -> Micros {
        let l = &self.sc.latency;
        let same = self.slots[i as usize].isp == self.slots[j as usize].isp;
        u64::from(if same { l.peer_same_isp_ms } else { l.peer_other_isp_ms }) * 1000
    }

    /// When `bytes` sent to client `i` that would reach it at `at` are in: after what its
    /// downlink is still taking in.
    pub fn arrival(&mut self, at: Micros, i: u32, bytes: usize) -> Micros {
        let Some(s) = self.slots.get_mut(i as usize) else { return at };
        let start = at.max(s.down_free);
        s.down_free = start + bytes as u64 * 8_000 / u64::from(s.down_kbps.max(1));
        s.down_free
    }
}

pub struct Domain<'a> {
    net: Net<'a>,
    edges: Vec<SimEdge>,
    /// Share of all arrivals, per edge.
    weights: Vec<f64>,
    stream: Stream,
    ids: DetMap<(u16, PeerId), u32>,
    links: DetMap<(u32, LinkId), (u32, LinkId)>,
    next_accept: LinkId,
    out: DomainResult,
    end: Micros,
}

fn addr(i: u32, private: bool) -> SocketAddr {
    let b = i.to_be_bytes();
    let ip = if private { Ipv4Addr::new(192, 168, b[2], b[3]) } else { Ipv4Addr::new(10, b[1], b[2], b[3]) };
    SocketAddr::from((ip, 4000))
}

impl<'a> Domain<'a> {
    /// The edges of one district and ISP (`specs`, not empty), simulated together.
    pub fn new(sc: &'a Scenario, specs: Vec<EdgeSpec>, clock: Clock) -> Self {
        let first = specs.first().map_or(0, |s| s.index);
        let names: Vec<String> = specs.iter().map(|s| format!("edge-{}", s.index)).collect();
        let isp = specs.first().map_or(0, |s| s.isp);
        let weights = specs.iter().map(|s| s.weight).collect();
        let edges = specs.into_iter().enumerate().map(|(j, spec)| SimEdge::new(sc, spec, j, &names)).collect();
        let mut d = Domain {
            net: Net {
                sc,
                clock,
                q: Queue::default(),
                rng: Rng::new(sc.seed.wrapping_add(first as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)),
                slots: Vec::new(),
                isp,
            },
            edges,
            weights,
            stream: Stream::new(sc),
            ids: DetMap::default(),
            links: DetMap::default(),
            next_accept: 1,
            out: DomainResult::default(),
            end: u64::from(sc.minutes) * 60 * SECOND,
        };
        d.net.q.push(0, Ev::Source);
        d.net.q.push(0, Ev::Tick);
        d.net.q.push(60 * SECOND, Ev::Minute);
        d.schedule_arrival(0);
        d
    }

    /// Runs the whole event; `progress(edges)` is called after every simulated minute.
    pub fn run(mut self, mut progress: impl FnMut(usize)) -> DomainResult {
        while let Some((t, ev)) = self.net.q.pop_until(self.end) {
            let minute = matches!(ev, Ev::Minute);
            self.step(t, ev);
            if minute {
                progress(self.edges.len());
            }
        }
        for i in 0..self.net.slots.len() as u32 {
            if self.net.alive(i) {
                self.finish(i, self.end);
            }
        }
        self.out.minutes.sort_by_key(|r| (r.edge, r.minute));
        self.out.sessions.sort_by_key(|s| s.edge);
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
            Ev::ToEdge(e, i, m) => {
                let conn = ConnId::from(i);
                let input = match *m {
                    ToEdgeEv::Join(join) => EdgeInput::Joined { conn, from: addr(i, false), join },
                    ToEdgeEv::Msg(msg) => EdgeInput::Message { conn, msg },
                    ToEdgeEv::Gone => EdgeInput::Disconnected { conn },
                };
                let edge = &mut self.edges[usize::from(e)];
                edge.service.handle(self.net.clock.at(t), input);
                edge.outputs(t, &mut self.net, &self.stream);
            }
            Ev::ToPeer(i, input) => {
                if let (PeerInput::FromEdge(FromEdge::Welcome(w)), true) = (&*input, self.net.alive(i)) {
                    let e = self.net.slots[i as usize].edge;
                    self.ids.insert((e, w.peer), i);
                    self.edges[usize::from(e)].row.joins += 1;
                }
                self.with_peer(t, i, |core, now| core.handle(now, *input));
            }
            Ev::Rejoin(i, e) => self.rejoin(t, i, e),
            Ev::Timer(i) => {
                if self.net.slots.get(i as usize).is_some_and(|s| s.timer == Some(t)) {
                    self.net.slots[i as usize].timer = None;
                    self.with_peer(t, i, |core, now| core.handle_timeout(now));
                }
            }
            Ev::Source => {
                let c = self.stream.produce(self.net.sc, t);
                for edge in &mut self.edges {
                    edge.fan_out(t, &mut self.net, &self.stream, &c);
                }
                self.net.q.push(t + u64::from(self.net.sc.stream.chunk_ms) * 1000, Ev::Source);
            }
            Ev::Tick => self.tick(t),
            Ev::Minute => self.minute(t),
        }
    }

    /// Once a second: every edge ages out and heals, then learns which siblings are full (what
    /// the management center would tell it).
    fn tick(&mut self, t: Micros) {
        let now = self.net.clock.at(t);
        for edge in &mut self.edges {
            edge.service.tick(now);
            edge.outputs(t, &mut self.net, &self.stream);
        }
        let full: Vec<(String, bool)> = self.edges.iter().map(|e| (e.name.clone(), e.full())).collect();
        for edge in &mut self.edges {
            for (name, f) in &full {
                edge.service.set_sibling_full(name, *f);
            }
        }
        self.net.q.push(t + SECOND, Ev::Tick);
    }

    fn schedule_arrival(&mut self, t: Micros) {
        // Piecewise-constant rate per second: exact enough for minute-scale curves.
        let weight: f64 = self.weights.iter().sum();
        let per_min = self.net.sc.arrival_rate(t as f64 / 60e6) * weight;
        if per_min <= 1e-9 {
            self.net.q.push(t + 10 * SECOND, Ev::Arrive(false));
            return;
        }
        let gap = self.net.rng.exp(60.0 / per_min);
        if gap > 10.0 {
            // The rate may change before then: look again in 10 s (memoryless, so no bias).
            self.net.q.push(t + 10 * SECOND, Ev::Arrive(false));
        } else {
            self.net.q.push(t + (gap * 1e6) as Micros, Ev::Arrive(true));
        }
    }

    /// The peer core client `i` runs, joining now.
    fn new_core(&self, t: Micros, i: u32) -> PeerCore {
        let sc = self.net.sc;
        let c = &sc.clients;
        let slot = &self.net.slots[i as usize];
        let mut cfg = PeerConfig::new(channel());
        cfg.upload_kbps = slot.upload_kbps;
        cfg.listen = slot.reachable.then(|| addr(i, slot.natted));
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
        PeerCore::new(cfg, self.net.clock.at(t))
    }

    fn spawn(&mut self, t: Micros) {
        let sc = self.net.sc;
        let c = &sc.clients;
        let rng = &mut self.net.rng;
        let i = self.net.slots.len() as u32;
        // The GSLB's pick: edges by their share of the audience, clients mostly of the edge's ISP.
        let edge = rng.pick(&self.weights) as u16;
        let isps = sc.edges.isps.max(1);
        let isp = if rng.chance(sc.edges.same_isp_share) || isps < 2 {
            self.net.isp
        } else {
            (self.net.isp + 1 + (rng.next_u64() % u64::from(isps - 1)) as u8) % isps
        };
        let natted = rng.chance(c.nat_share);
        let reachable = !rng.chance(c.unreachable_share);
        let weights: Vec<f64> = c.upload.iter().map(|u| u.share).collect();
        let upload = c.upload[rng.pick(&weights)].kbps;
        let weights: Vec<f64> = c.download.iter().map(|u| u.share).collect();
        let down_kbps = c.download[rng.pick(&weights)].kbps;
        let cap = (f64::from(sc.stream.kbps) * sc.edges.upload_cap_factor) as u32;
        let watch = rng.exp(c.session_mean_min * 60.0);
        let abrupt = rng.chance(c.abrupt_share);
        self.net.slots.push(Slot {
            core: None,
            edge,
            isp,
            natted,
            reachable,
            abrupt,
            upload_kbps: upload.min(cap).max(1),
            joined: t,
            core_since: t,
            redirects: 0,
            timer: None,
            links: Vec::new(),
            down_kbps,
            down_free: t,
            last: PeerStats::default(),
        });
        self.net.slots[i as usize].core = Some(self.new_core(t, i));
        self.net.q.push(t + (watch * 1e6) as Micros + SECOND, Ev::Depart(i));
        self.drain_peer(t, i);
    }

    /// Client `i`, sent away by its edge, joins edge `e` with a fresh player session.
    fn rejoin(&mut self, t: Micros, i: u32, e: u16) {
        if !self.net.alive(i) {
            return;
        }
        let core = self.new_core(t, i);
        let slot = &mut self.net.slots[i as usize];
        slot.core = Some(core);
        slot.edge = e;
        slot.core_since = t;
        slot.timer = None;
        slot.last = PeerStats::default();
        self.drain_peer(t, i);
    }

    fn depart(&mut self, t: Micros, i: u32) {
        if !self.net.alive(i) {
            return;
        }
        let e = self.net.slots[i as usize].edge;
        let dead = u64::from(self.net.sc.latency.dead_link_ms) * 1000;
        if self.net.slots[i as usize].abrupt {
            // Gone without a word: neighbours notice when the link goes quiet, the edge when
            // the control connection times out.
            for link in std::mem::take(&mut self.net.slots[i as usize].links) {
                if let Some((j, l2)) = self.links.remove(&(i, link)) {
                    self.links.remove(&(j, l2));
                    self.net.q.push(t + dead, Ev::ToPeer(j, Box::new(PeerInput::LinkClosed(l2))));
                }
            }
            self.net.q.push(t + dead, Ev::ToEdge(e, i, Box::new(ToEdgeEv::Gone)));
        } else {
            self.with_peer(t, i, |core, _| core.leave());
            let d = self.net.edge_delay(i);
            self.net.q.push(t + d + 1, Ev::ToEdge(e, i, Box::new(ToEdgeEv::Gone)));
        }
        self.finish(i, t);
        self.edges[usize::from(e)].row.leaves += 1;
    }

    /// Closes the books on client `i`.
    fn finish(&mut self, i: u32, t: Micros) {
        let slot = &mut self.net.slots[i as usize];
        let Some(core) = slot.core.take() else { return };
        let edge = &mut self.edges[usize::from(slot.edge)];
        let st = core.stats();
        fold(&mut edge.row, &slot.last, &st, slot.natted);
        slot.last = st;
        edge.forget(i);
        let before_core = slot.core_since.saturating_sub(slot.joined) / 1000;
        self.out.sessions.push(Session {
            edge: edge.spec.index,
            joined_s: slot.joined as f64 / 1e6,
            watched_s: t.saturating_sub(slot.joined) as f64 / 1e6,
            startup_ms: st.startup.map(|d| d.as_millis() as u64 + before_core),
            played_ms: st.play.played_ms,
            stalled_ms: st.play.stalled_ms,
            stalls: st.play.stalls,
            push: st.push,
            redirects: slot.redirects,
            natted: slot.natted,
            reachable: slot.reachable,
            up_bytes: st.bytes_up,
            from_edge: st.bytes_from_edge,
            from_peers: st.bytes_from_peers,
        });
    }

    fn with_peer(&mut self, t: Micros, i: u32, f: impl FnOnce(&mut PeerCore, std::time::Instant)) {
        let now = self.net.clock.at(t);
        let Some(core) = self.net.slots.get_mut(i as usize).and_then(|s| s.core.as_mut()) else { return };
        f(core, now);
        self.drain_peer(t, i);
    }

    fn drain_peer(&mut self, t: Micros, i: u32) {
        loop {
            let Some(out) = self.net.slots[i as usize].core.as_mut().and_then(|c| c.poll_output()) else { break };
            self.peer_output(t, i, out);
        }
        let now = self.net.clock.at(t);
        let slot = &mut self.net.slots[i as usize];
        let Some(core) = slot.core.as_ref() else { return };
        // At least 1 ms ahead: a core asking to be woken "now" again cannot stall virtual time.
        if let Some(at) = core.poll_timeout(now).map(|x| self.net.clock.micros_of(x).max(t + 1_000))
            && slot.timer.is_none_or(|s| at < s)
        {
            slot.timer = Some(at);
            self.net.q.push(at, Ev::Timer(i));
        }
    }

    fn peer_output(&mut self, t: Micros, i: u32, out: PeerOutput) {
        let net = &mut self.net;
        match out {
            PeerOutput::ToEdge(m) => {
                let d = net.edge_delay(i);
                let ev = match m {
                    ToEdge::Join(j) => ToEdgeEv::Join(j),
                    other => ToEdgeEv::Msg(other),
                };
                let e = net.slots[i as usize].edge;
                net.q.push(t + d, Ev::ToEdge(e, i, Box::new(ev)));
            }
            PeerOutput::Connect { link, peer, .. } => {
                let e = net.slots[i as usize].edge;
                let target = self.ids.get(&(e, peer)).copied().filter(|&j| net.alive(j));
                match target {
                    Some(j) if net.slots[j as usize].reachable => {
                        // Offer, answer and ICE checks through the edge: about three one-way trips.
                        let d = 3 * net.peer_delay(i, j) + 2 * net.edge_delay(i);
                        let acc = self.next_accept;
                        self.next_accept += 1;
                        self.links.insert((i, link), (j, acc));
                        self.links.insert((j, acc), (i, link));
                        net.slots[i as usize].links.push(link);
                        net.slots[j as usize].links.push(acc);
                        net.q.push(t + d, Ev::ToPeer(j, Box::new(PeerInput::LinkAccepted(acc))));
                        net.q.push(t + d, Ev::ToPeer(i, Box::new(PeerInput::LinkUp(link))));
                    }
                    // NAT traversal fails after ICE gives up.
                    _ => net.q.push(t + 3 * SECOND, Ev::ToPeer(i, Box::new(PeerInput::LinkFailed(link)))),
                }
            }
            PeerOutput::Send { link, msg } => {
                if let Some(&(j, l2)) = self.links.get(&(i, link)) {
                    if matches!(msg, PeerLink::Chunk(_)) && net.rng.chance(net.sc.latency.loss) {
                        return;
                    }
                    let mut at = t + net.peer_delay(i, j);
                    if let PeerLink::Chunk(c) = &msg {
                        at = net.arrival(at, j, c.payload.len());
                    }
                    net.q.push(at, Ev::ToPeer(j, Box::new(PeerInput::FromPeer(l2, msg))));
                }
            }
            PeerOutput::Close { link } => {
                if let Some((j, l2)) = self.links.remove(&(i, link)) {
                    self.links.remove(&(j, l2));
                    net.slots[i as usize].links.retain(|&l| l != link);
                    net.slots[j as usize].links.retain(|&l| l != l2);
                    let d = net.peer_delay(i, j);
                    net.q.push(t + d, Ev::ToPeer(j, Box::new(PeerInput::LinkClosed(l2))));
                }
            }
            PeerOutput::Event(Event::Redirected(to)) => {
                let slot = &mut net.slots[i as usize];
                let target = self.edges.iter().position(|e| e.name == to);
                if let (Some(e), true) = (target, slot.redirects < MAX_REDIRECTS) {
                    slot.redirects += 1;
                    // A new connection to the sibling: a round trip to set it up.
                    let d = 2 * net.edge_delay(i);
                    net.q.push(t + d, Ev::Rejoin(i, e as u16));
                }
            }
            PeerOutput::Play(_) | PeerOutput::Event(_) => {}
        }
    }

    fn minute(&mut self, t: Micros) {
        for slot in &mut self.net.slots {
            let Some(core) = slot.core.as_ref() else { continue };
            let st = core.stats();
            fold(&mut self.edges[usize::from(slot.edge)].row, &slot.last, &st, slot.natted);
            slot.last = st;
        }
        let minute = (t / (60 * SECOND)) as u32;
        for edge in &mut self.edges {
            self.out.minutes.push(edge.close_minute(minute));
        }
        self.net.q.push(t + 60 * SECOND, Ev::Minute);
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
