//! One edge and its clients (LiveSky §4.2: "each edge SN operates in isolation"): the edge's real
//! client service ([`crate::edge`]) and one real peer core per client, joined by a network model
//! with per-ISP latency, link loss, NAT reachability, downlink capacity and abrupt leaves. A client
//! the edge redirects leaves this domain as a [`Transfer`] for a sibling's ([`crate::group`]).

use std::net::{Ipv4Addr, SocketAddr};

use livesky_edge_core::service::{ConnId, Input as EdgeInput};
use livesky_peer_core::buffer::BufferConfig;
use livesky_peer_core::core::{
    Event, Input as PeerInput, LinkId, Output as PeerOutput, PeerConfig, PeerCore, PeerStats,
};
use proto::DetMap;
use proto::peer::{FromEdge, PeerId, PeerLink, ToEdge};

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
    /// Its line: uplink and downlink, kbit/s.
    pub up_kbps: u32,
    pub down_kbps: u32,
    pub up_bytes: u64,
    pub from_edge: u64,
    pub from_peers: u64,
    /// Chunks played by glass-to-glass latency.
    pub latency: proto::quality::LatencyHistogram,
}

#[derive(Debug, Default)]
pub struct DomainResult {
    pub minutes: Vec<MinuteRow>,
    pub sessions: Vec<Session>,
}

pub(crate) enum Ev {
    /// A client arrives (`true`), or it is time to look at the arrival rate again (`false`).
    Arrive(bool),
    /// A client redirected here by a sibling.
    Transferred(Box<Transfer>),
    Depart(u32),
    /// Boxed, like chunks, so the queue moves small events.
    ToEdge(u32, Box<ToEdgeEv>),
    ToPeer(u32, Box<PeerInput>),
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

/// A viewer: what it is and how long it wants to watch, whichever edge it ends up with.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    isp: u8,
    natted: bool,
    reachable: bool,
    abrupt: bool,
    upload_kbps: u32,
    down_kbps: u32,
    joined: Micros,
    leave_at: Micros,
    redirects: u8,
    /// When it began to play, whichever edge it was with then.
    started: Option<Micros>,
}

/// A client the edge sent on to sibling `to`, arriving there at `at`. Its player goes with it,
/// as `livesky peer`'s does: the buffer plays on while it rejoins, and what it has counted so far
/// stays counted.
pub(crate) struct Transfer {
    pub to: String,
    pub at: Micros,
    pub client: Client,
    core: PeerCore,
    /// Its counters when the old edge last folded them into a minute's row.
    last: PeerStats,
}

pub(crate) struct Slot {
    core: Option<PeerCore>,
    client: Client,
    timer: Option<Micros>,
    /// Its open peer links: (its link id, the other peer, the other end's link id). A handful
    /// per peer, searched in place: a group-wide map cost a cache miss on every message.
    links: Vec<(LinkId, u32, LinkId)>,
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
        let same = self.slots.get(i as usize).is_none_or(|s| s.client.isp == self.isp);
        u64::from(if same { l.edge_same_isp_ms } else { l.edge_other_isp_ms }) * 1000
    }

    fn peer_delay(&self, i: u32, j: u32) -> Micros {
        let l = &self.sc.latency;
        let same = self.slots[i as usize].client.isp == self.slots[j as usize].client.isp;
        u64::from(if same { l.peer_same_isp_ms } else { l.peer_other_isp_ms }) * 1000
    }

    /// When `bytes` sent to client `i` that would reach it at `at` are in: after what its
    /// downlink is still taking in.
    pub fn arrival(&mut self, at: Micros, i: u32, bytes: usize) -> Micros {
        let Some(s) = self.slots.get_mut(i as usize) else { return at };
        let start = at.max(s.down_free);
        s.down_free = start + bytes as u64 * 8_000 / u64::from(s.client.down_kbps.max(1));
        s.down_free
    }
}

pub(crate) struct Domain<'a> {
    net: Net<'a>,
    pub(crate) edge: SimEdge,
    stream: Stream,
    ids: DetMap<PeerId, u32>,
    /// The number of the next link a simulated peer accepts.
    next_accept: u64,
    /// Clients redirected to siblings, for the group to hand over.
    moved: Vec<Transfer>,
    /// Where the client whose outputs are being drained was redirected to.
    redirected: Option<String>,
    out: DomainResult,
    end: Micros,
}

fn addr(i: u32, private: bool) -> SocketAddr {
    let b = i.to_be_bytes();
    let ip = if private { Ipv4Addr::new(192, 168, b[2], b[3]) } else { Ipv4Addr::new(10, b[1], b[2], b[3]) };
    SocketAddr::from((ip, 4000))
}

impl<'a> Domain<'a> {
    /// Edge `local` of a group whose edges are called `names`.
    pub fn new(sc: &'a Scenario, spec: EdgeSpec, local: usize, names: &[String], clock: Clock) -> Self {
        let seed = sc.seed.wrapping_add(spec.index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
        let isp = spec.isp;
        let mut d = Domain {
            net: Net { sc, clock, q: Queue::default(), rng: Rng::new(seed), slots: Vec::new(), isp },
            edge: SimEdge::new(sc, spec, local, names),
            stream: Stream::new(sc),
            ids: DetMap::default(),
            next_accept: 1,
            moved: Vec::new(),
            redirected: None,
            out: DomainResult::default(),
            end: sc.end(),
        };
        d.net.q.push(0, Ev::Source);
        d.net.q.push(0, Ev::Tick);
        d.net.q.push(60 * SECOND, Ev::Minute);
        d.schedule_arrival(0);
        d
    }

    /// Runs every event up to `until` (inclusive); returns the minutes closed on the way and
    /// hands over the clients redirected to siblings.
    pub fn run_until(&mut self, until: Micros, moved: &mut Vec<Transfer>) -> u32 {
        let mut minutes = 0;
        while let Some((t, ev)) = self.net.q.pop_until(until.min(self.end)) {
            minutes += u32::from(matches!(ev, Ev::Minute));
            self.step(t, ev);
        }
        moved.append(&mut self.moved);
        minutes
    }

    /// A client redirected here, arriving at `at` (or later).
    pub fn accept(&mut self, at: Micros, m: Transfer) {
        self.net.q.push(at.max(m.at), Ev::Transferred(Box::new(m)));
    }

    /// Closes the books at the end of the run.
    pub fn finish_all(mut self) -> DomainResult {
        for i in 0..self.net.slots.len() as u32 {
            if self.net.alive(i) {
                self.finish(i, self.end);
            }
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
            Ev::Transferred(m) => self.rejoin(t, *m),
            Ev::Depart(i) => self.depart(t, i),
            Ev::ToEdge(i, m) => {
                let conn = ConnId::from(i);
                let input = match *m {
                    ToEdgeEv::Join(join) => EdgeInput::Joined { conn, from: addr(i, false), join },
                    ToEdgeEv::Msg(msg) => EdgeInput::Message { conn, msg },
                    ToEdgeEv::Gone => EdgeInput::Disconnected { conn },
                };
                self.edge.service.handle(self.net.clock.at(t), input);
                self.edge.outputs(t, &mut self.net, &self.stream);
            }
            Ev::ToPeer(i, input) => {
                if let (PeerInput::FromEdge(FromEdge::Welcome(w)), true) = (&*input, self.net.alive(i)) {
                    self.ids.insert(w.peer, i);
                    self.edge.row.joins += 1;
                }
                self.with_peer(t, i, |core, now| core.handle(now, *input));
            }
            Ev::Timer(i) => {
                if self.net.slots.get(i as usize).is_some_and(|s| s.timer == Some(t)) {
                    self.net.slots[i as usize].timer = None;
                    self.with_peer(t, i, |core, now| core.handle_timeout(now));
                }
            }
            Ev::Source => {
                let c = self.stream.produce(self.net.sc, t);
                self.edge.fan_out(t, &mut self.net, &self.stream, &c);
                self.net.q.push(t + u64::from(self.net.sc.stream.chunk_ms) * 1000, Ev::Source);
            }
            Ev::Tick => {
                self.edge.service.handle_timeout(self.net.clock.at(t));
                self.edge.outputs(t, &mut self.net, &self.stream);
                self.net.q.push(t + SECOND, Ev::Tick);
            }
            Ev::Minute => self.minute(t),
        }
    }

    fn schedule_arrival(&mut self, t: Micros) {
        // Piecewise-constant rate per second: exact enough for minute-scale curves.
        let per_min = self.net.sc.arrival_rate(t as f64 / 60e6) * self.edge.spec.weight;
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

    /// A new viewer sent here by the GSLB: mostly of the edge's own ISP.
    fn spawn(&mut self, t: Micros) {
        let sc = self.net.sc;
        let c = &sc.clients;
        let rng = &mut self.net.rng;
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
        let watch = rng.exp(c.session_mean_min * 60.0);
        let abrupt = rng.chance(c.abrupt_share);
        let client = Client {
            isp,
            natted,
            reachable,
            abrupt,
            // The player sends at its line's rate, as `livesky peer` does; the edge caps only the
            // slots it hands out (`upload_cap_factor`). Capping the line too left every fibre
            // parent no headroom: its queue grew with each catch-up or repair it served, and the
            // hot edges of `modern` stalled 40 % of the time.
            upload_kbps: upload.max(1),
            down_kbps,
            joined: t,
            leave_at: t + (watch * 1e6) as Micros + SECOND,
            redirects: 0,
            started: None,
        };
        let i = self.net.slots.len() as u32;
        let core = self.new_core(t, i, &client);
        self.admit(t, client, core, PeerStats::default());
    }

    /// The player of a client redirected here rejoins through this edge.
    fn rejoin(&mut self, t: Micros, m: Transfer) {
        let Transfer { client, mut core, last, .. } = m;
        let i = self.net.slots.len() as u32;
        let listen = client.reachable.then(|| addr(i, client.natted));
        core.handle(self.net.clock.at(t), PeerInput::Rejoin { redirects: client.redirects, listen });
        self.admit(t, client, core, last);
    }

    /// Slot `i`'s player, new.
    fn new_core(&self, t: Micros, i: u32, client: &Client) -> PeerCore {
        let sc = self.net.sc;
        let mut cfg = PeerConfig::new(channel());
        cfg.upload_kbps = client.upload_kbps;
        cfg.listen = client.reachable.then(|| addr(i, client.natted));
        // What its player's NAT test would find: the model's NAT-ed clients are cone-NAT'd (their
        // reachability is drawn apart, `unreachable_share`).
        cfg.nat = if client.natted { proto::nat::NatClass::Restricted } else { proto::nat::NatClass::Open };
        let k = u32::from(sc.stream.substreams);
        let chunk = sc.stream.chunk_ms;
        let buffer_ms = sc.clients.buffer_s * 1000;
        cfg.buffer = if sc.clients.low_latency {
            // As `livesky peer play --low-latency`, with thresholds no finer than a chunk.
            let ll = BufferConfig::low_latency(buffer_ms);
            cfg.catchup_ms = ll.buffer_ms;
            BufferConfig {
                start_ms: ll.start_ms.max(chunk),
                max_stall_ms: ll.max_stall_ms.max(2 * chunk),
                max_lag_ms: ll.max_lag_ms.max(buffer_ms + 2 * chunk),
                ..ll
            }
        } else {
            BufferConfig {
                buffer_ms,
                start_ms: (2_000u32).max(2 * chunk),
                max_stall_ms: (3_000u32).max(3 * chunk),
                ..BufferConfig::default()
            }
        };
        // A substream carries one chunk in K: silence shorter than K chunks is not lateness.
        cfg.late_ms = (2_000u32).max((k + 2) * chunk);
        cfg.map_interval = std::time::Duration::from_millis(u64::from((1_000u32).max(k * chunk)));
        cfg.report_interval = std::time::Duration::from_secs(60);
        cfg.tick = std::time::Duration::from_millis(u64::from((200u32).max(chunk)));
        cfg.pull_only = sc.mode == Mode::Mesh;
        cfg.redirects = client.redirects;
        let mut core = PeerCore::new(cfg, self.net.clock.at(t));
        // The source stamps chunks with virtual time as their ingest wall clock.
        core.handle(self.net.clock.at(t), PeerInput::Clock { unix_ms: t / 1000 });
        core
    }

    /// Client `client`, with its player `core`, is this edge's from now on.
    fn admit(&mut self, t: Micros, client: Client, core: PeerCore, last: PeerStats) {
        let i = self.net.slots.len() as u32;
        let leave_at = client.leave_at.max(t + 1);
        self.net.slots.push(Slot { core: Some(core), client, timer: None, links: Vec::new(), down_free: t, last });
        self.net.q.push(leave_at, Ev::Depart(i));
        self.drain_peer(t, i);
    }

    fn depart(&mut self, t: Micros, i: u32) {
        if !self.net.alive(i) {
            return;
        }
        let dead = u64::from(self.net.sc.latency.dead_link_ms) * 1000;
        if self.net.slots[i as usize].client.abrupt {
            // Gone without a word: neighbours notice when the link goes quiet, the edge when
            // the control connection times out.
            for (_, j, l2) in std::mem::take(&mut self.net.slots[i as usize].links) {
                self.net.slots[j as usize].links.retain(|l| l.0 != l2);
                self.net.q.push(t + dead, Ev::ToPeer(j, Box::new(PeerInput::LinkClosed(l2))));
            }
            self.net.q.push(t + dead, Ev::ToEdge(i, Box::new(ToEdgeEv::Gone)));
        } else {
            self.with_peer(t, i, |core, now| core.handle(now, PeerInput::Leave));
            let d = self.net.edge_delay(i);
            self.net.q.push(t + d + 1, Ev::ToEdge(i, Box::new(ToEdgeEv::Gone)));
        }
        self.finish(i, t);
        self.edge.row.leaves += 1;
    }

    /// Closes the books on client `i`.
    fn finish(&mut self, i: u32, t: Micros) {
        let slot = &mut self.net.slots[i as usize];
        let Some(core) = slot.core.take() else { return };
        let st = core.stats();
        fold(&mut self.edge.row, &slot.last, &st, slot.client.natted);
        slot.last = st;
        self.edge.forget(i);
        let c = &slot.client;
        self.out.sessions.push(Session {
            edge: self.edge.spec.index,
            joined_s: c.joined as f64 / 1e6,
            watched_s: t.saturating_sub(c.joined) as f64 / 1e6,
            startup_ms: c.started.map(|s| s.saturating_sub(c.joined) / 1000),
            played_ms: st.play.played_ms,
            stalled_ms: st.play.stalled_ms,
            stalls: st.play.stalls,
            push: st.push,
            redirects: c.redirects,
            natted: c.natted,
            reachable: c.reachable,
            up_kbps: c.upload_kbps,
            down_kbps: c.down_kbps,
            up_bytes: st.bytes_up,
            from_edge: st.bytes_from_edge,
            from_peers: st.bytes_from_peers,
            latency: st.latency,
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
        if let Some(to) = self.redirected.take() {
            self.hand_over(t, i, to);
        }
        let slot = &mut self.net.slots[i as usize];
        let Some(core) = slot.core.as_ref() else { return };
        // At least 1 ms ahead: a core asking to be woken "now" again cannot stall virtual time.
        if let Some(at) = core.poll_timeout().map(|x| self.net.clock.micros_of(x).max(t + 1_000))
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
                net.q.push(t + d, Ev::ToEdge(i, Box::new(ev)));
            }
            PeerOutput::Connect { link, peer, .. } => {
                let target = self.ids.get(&peer).copied().filter(|&j| net.alive(j));
                match target {
                    Some(j) if net.slots[j as usize].client.reachable => {
                        // Offer, answer and ICE checks through the edge: about three one-way trips.
                        let d = 3 * net.peer_delay(i, j) + 2 * net.edge_delay(i);
                        let acc = LinkId::In(self.next_accept);
                        self.next_accept += 1;
                        net.slots[i as usize].links.push((link, j, acc));
                        net.slots[j as usize].links.push((acc, i, link));
                        net.q.push(t + d, Ev::ToPeer(j, Box::new(PeerInput::LinkAccepted { link: acc, peer: None })));
                        net.q.push(t + d, Ev::ToPeer(i, Box::new(PeerInput::LinkUp(link))));
                    }
                    // NAT traversal fails after ICE gives up.
                    _ => net.q.push(t + 3 * SECOND, Ev::ToPeer(i, Box::new(PeerInput::LinkFailed(link)))),
                }
            }
            PeerOutput::Send { link, msg } => {
                let far = net.slots[i as usize].links.iter().find(|l| l.0 == link).map(|l| (l.1, l.2));
                if let Some((j, l2)) = far {
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
                let mine = &mut net.slots[i as usize].links;
                if let Some(at) = mine.iter().position(|l| l.0 == link) {
                    let (_, j, l2) = mine.remove(at);
                    net.slots[j as usize].links.retain(|l| l.0 != l2);
                    let d = net.peer_delay(i, j);
                    net.q.push(t + d, Ev::ToPeer(j, Box::new(PeerInput::LinkClosed(l2))));
                }
            }
            // Handed over once the core has said all it says on leaving (closing its links).
            PeerOutput::Event(Event::Redirected(to)) => self.redirected = Some(to),
            PeerOutput::Event(Event::Started { .. }) => {
                net.slots[i as usize].client.started.get_or_insert(t);
            }
            PeerOutput::Play(_) | PeerOutput::Event(_) => {}
        }
    }

    /// Client `i`, redirected to sibling `to`, connects there (a round trip) and is that edge's
    /// from then on; past the limit its player gives up, and the session ends here when it leaves.
    fn hand_over(&mut self, t: Micros, i: u32, to: String) {
        let slot = &mut self.net.slots[i as usize];
        if slot.client.redirects >= MAX_REDIRECTS {
            return;
        }
        let Some(core) = slot.core.take() else { return };
        let mut client = slot.client.clone();
        client.redirects += 1;
        let last = std::mem::take(&mut slot.last);
        slot.timer = None;
        self.edge.forget(i);
        let at = t + 2 * self.net.edge_delay(i);
        self.moved.push(Transfer { to, at, client, core, last });
    }

    fn minute(&mut self, t: Micros) {
        for slot in &mut self.net.slots {
            let Some(core) = slot.core.as_ref() else { continue };
            let st = core.stats();
            fold(&mut self.edge.row, &slot.last, &st, slot.client.natted);
            slot.last = st;
        }
        self.out.minutes.push(self.edge.close_minute((t / (60 * SECOND)) as u32));
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
