//! The peer core (sans-IO): one LiveSky client of one channel. It joins through its edge, plays
//! from the edge's start burst, takes each substream from the feed the edge assigns (the edge
//! itself, or a parent peer it subscribes to), forwards substreams to its own children within its
//! upload cap, and tells the edge when a parent is lost or late so the edge can re-parent it or
//! serve the substream itself (refocus).
//!
//! Doors (str0m style): [`PeerCore::handle`] and [`PeerCore::handle_timeout`] take inputs with the
//! time; drain [`PeerCore::poll_output`] after each; [`PeerCore::poll_timeout`] says when to call back.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proto::peer::{CLIENT_PROTOCOL_VERSION, FeedTo, FromEdge, Join, PeerId, PeerLink, PeerReport, ToEdge, Trouble};
use proto::{ChannelId, ChannelVerifier, Chunk, DetMap, SubstreamId, TokenBucket};

use crate::buffer::{BufferConfig, PlayBuffer, PlayStats};
use crate::burst::BurstWatch;
use crate::repair::{Repair, RepairConfig, RepairStats, buffer_map};

/// A peer link as the core knows it: one it opened (`Out`, numbered by the core) or one a peer
/// opened to it (`In`, numbered by whoever accepts connections: the driver, the simulator).
/// Ids are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinkId {
    Out(u64),
    In(u64),
}

impl LinkId {
    pub fn is_outgoing(self) -> bool {
        matches!(self, LinkId::Out(_))
    }
    /// The number within its kind (signalling tokens, logs).
    pub fn number(self) -> u64 {
        match self {
            LinkId::Out(n) | LinkId::In(n) => n,
        }
    }
}

impl std::fmt::Display for LinkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkId::Out(n) => write!(f, "out-{n}"),
            LinkId::In(n) => write!(f, "in-{n}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub channel: ChannelId,
    pub token: String,
    /// Upload offered (the edge caps it); also the rate of the local upload limiter.
    pub upload_kbps: u32,
    /// Where this peer accepts links from children.
    pub listen: Option<SocketAddr>,
    pub buffer: BufferConfig,
    pub heartbeat: Duration,
    pub report_interval: Duration,
    /// A fed substream this far behind the newest chunk counts as a late parent.
    pub late_ms: u32,
    /// Backlog a parent sends a new child, at most: a whole buffer, so a child the edge had no
    /// room to burst to still starts with a full buffer (paced by the upload cap).
    pub catchup_ms: u32,
    /// Mesh pull repair (window 0 disables it).
    pub repair: RepairConfig,
    /// Mesh neighbours (from the edge's list) this peer links to for repair.
    pub mesh_links: usize,
    /// How often buffer maps go to neighbours.
    pub map_interval: Duration,
    /// Longest sleep between housekeeping wake-ups (lateness checks, heartbeats).
    pub tick: Duration,
    /// Pure mesh pull (the simulator's CoolStreaming-like baseline): no parents; every chunk a
    /// neighbour's buffer map shows is pulled, playback starting from what was pulled.
    pub pull_only: bool,
    /// Redirects followed to reach this edge (sent in the join).
    pub redirects: u8,
    /// Fault injection for tests: flip a byte in every chunk forwarded to children.
    #[doc(hidden)]
    pub tamper: bool,
    /// Fault injection for tests: accept children but never forward them anything.
    #[doc(hidden)]
    pub deny: bool,
}

impl PeerConfig {
    pub fn new(channel: ChannelId) -> Self {
        Self {
            channel,
            token: String::new(),
            upload_kbps: 600,
            listen: None,
            buffer: BufferConfig::default(),
            heartbeat: Duration::from_secs(5),
            report_interval: Duration::from_secs(60),
            late_ms: 2_000,
            catchup_ms: 15_000,
            repair: RepairConfig::default(),
            mesh_links: 4,
            map_interval: Duration::from_secs(1),
            tick: Duration::from_millis(200),
            pull_only: false,
            redirects: 0,
            tamper: false,
            deny: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    FromEdge(FromEdge),
    /// The control connection to the edge is gone.
    EdgeClosed,
    /// An outgoing link (to a parent) is connected.
    LinkUp(LinkId),
    /// An outgoing link could not be made.
    LinkFailed(LinkId),
    /// A peer connected to us (a would-be child). `peer`: who it is, when the transport knows
    /// (WebRTC: the edge relayed its offer, naming the sender); its `Hello` must agree.
    LinkAccepted {
        link: LinkId,
        peer: Option<PeerId>,
    },
    FromPeer(LinkId, PeerLink),
    LinkClosed(LinkId),
    /// The viewer leaves: the edge and every linked peer are told.
    Leave,
    /// The edge is lost (or sent us elsewhere): let go of it and every peer link, keeping the
    /// buffer, the playout clock, the channel key and the counts not yet reported, so playback
    /// goes on while the player finds another edge.
    Detach,
    /// Join an(other) edge after a detach; `listen` is where this peer now accepts children.
    Rejoin {
        redirects: u8,
        listen: Option<SocketAddr>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Welcomed {
        peer: PeerId,
        push: bool,
    },
    Started {
        startup: Duration,
    },
    Stalled,
    Redirected(String),
    Refused(String),
    EdgeLost,
    /// The edge said the broadcast is over: the core plays what is left of it, then leaves.
    BroadcastEnded,
    /// After [`Event::BroadcastEnded`]: everything up to the broadcast's last chunk was played
    /// (or the buffer ran out), and the core has left.
    PlayedOut,
}

/// After the broadcast ended, how long past the buffered media the core waits for its last chunks.
const OUTRO_SLACK: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    ToEdge(ToEdge),
    /// Open link `link` to peer `peer` (at `addr` for direct transports; by signalling for WebRTC).
    Connect {
        link: LinkId,
        peer: PeerId,
        addr: SocketAddr,
    },
    Send {
        link: LinkId,
        msg: PeerLink,
    },
    Close {
        link: LinkId,
    },
    /// The next chunk of the reassembled stream, in order.
    Play(Chunk),
    Event(Event),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PeerStats {
    pub play: PlayStats,
    pub bytes_from_edge: u64,
    pub bytes_from_peers: u64,
    pub bytes_up: u64,
    pub up_dropped: u64,
    /// Links closed because the peer's Hello named another peer than the edge's signalling did.
    pub impostors: u64,
    pub startup: Option<Duration>,
    pub parents: usize,
    pub children: usize,
    pub push: bool,
    pub buffered_ms: u64,
    pub late_reports: u64,
    pub lost_reports: u64,
    /// Chunks dropped because they failed their signature check.
    pub bad_chunks: u64,
    /// Links from peers the edge never introduced, cut off.
    pub strangers: u64,
    /// The edge gave the channel key: every chunk is checked.
    pub verifying: bool,
    pub repair: RepairStats,
    pub mesh: usize,
    /// Open peer links of any kind (parents, children, mesh).
    pub links: usize,
    /// The startup timeline of LiveSky §4.2, from the join request.
    pub timeline: Timeline,
}

/// When each startup step happened, measured from the join request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    /// The edge's first reply (Welcome).
    pub login_reply: Option<Duration>,
    pub first_data: Option<Duration>,
    /// Playback started (the start threshold was buffered).
    pub playback: Option<Duration>,
    /// 90 % of the configured buffer was held.
    pub buffer_full: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Joining,
    Joined {
        id: PeerId,
        k: u16,
    },
    /// The edge is gone (or sent us elsewhere): no links, but the buffer plays on until
    /// [`PeerCore::rejoin`] joins another edge.
    Detached,
    Done,
}

struct Parent {
    link: LinkId,
    mask: u64,
    up: bool,
    /// The subscription still to be sent (held back while the edge's start burst flows).
    pending: bool,
}

struct Child {
    mask: u64,
    from_seq: u64,
    /// Who it said it is, once it did.
    peer: Option<PeerId>,
    /// Its edge introduced it: only then is it fed or answered.
    trusted: bool,
    accepted_at: Instant,
    /// A subscription that came before the introduction, applied once it does.
    pending: Option<(u64, u64)>,
}

/// Chunks queued behind the upload limiter, at most (live and repairs; and catch-up, apart).
const UP_QUEUE: usize = 1024;
const CATCHUP_QUEUE: usize = 4096;
/// Repair requests answered per link and second, and in a burst.
const REPAIRS_PER_SEC: f64 = 50.0;
const REPAIR_BURST: f64 = 100.0;
/// How long chunks signed with the previous channel key still pass after a rotation.
const KEY_GRACE: Duration = Duration::from_secs(30);
/// How long a peer that asked for our buffer maps gets them; it asks again (after half of this)
/// while it still has chunks to repair.
const MAP_LEASE: Duration = Duration::from_secs(30);

pub struct PeerCore {
    cfg: PeerConfig,
    phase: Phase,
    buffer: PlayBuffer,
    feeds: Vec<FeedTo>,
    feed_since: Vec<Instant>,
    late_reported: Vec<bool>,
    /// Whether the current parent of each substream has sent anything on it.
    parent_sent: Vec<bool>,
    last_rx_ts: Vec<u64>,
    newest_ts: u64,
    parents: DetMap<PeerId, Parent>,
    link_parent: DetMap<LinkId, PeerId>,
    children: DetMap<LinkId, Child>,
    introduced: crate::introduce::Introductions,
    /// Bytes taken from each peer since the last report.
    received_from: DetMap<PeerId, u64>,
    upload: TokenBucket,
    /// Live chunks for children, sent first.
    up_queue: VecDeque<(LinkId, Chunk)>,
    /// Backlog for newly subscribed children, sent only with upload left over from live traffic,
    /// so a new child never makes the others late.
    catchup_queue: VecDeque<(LinkId, Chunk)>,
    /// When the upload cap lets the head of the queues go (set while they wait on it).
    up_ready: Option<Instant>,
    out: VecDeque<Output>,
    /// The number of the next link this core opens.
    next_link: u64,
    joined_at: Instant,
    push: bool,
    verifier: Option<ChannelVerifier>,
    /// The key before the last rotation and until when chunks signed with it still pass (some
    /// are in flight or buffered upstream when the key changes).
    old_verifier: Option<(ChannelVerifier, Instant)>,
    /// Time of the input being handled (for timestamps deep in the call tree).
    last_now: Instant,
    burst: BurstWatch,
    repair: Repair,
    /// Outgoing mesh links, by link.
    mesh: DetMap<LinkId, PeerId>,
    /// Repair requests each link may still make.
    repair_budget: DetMap<LinkId, TokenBucket>,
    next_map: Instant,
    /// Links that asked for our buffer maps ([`PeerLink::WantMaps`]), and until when.
    map_wanted: DetMap<LinkId, Instant>,
    /// When we last asked our links for their maps (we had chunks to repair).
    maps_asked: Option<Instant>,
    stats: PeerStats,
    reported: PeerStats,
    next_heartbeat: Instant,
    next_report: Instant,
    last_report_at: Instant,
    /// The edge said the broadcast is over, after this seq (inner None: it never had a chunk).
    broadcast_end: Option<Option<u64>>,
    /// When, after the broadcast ended, to stop waiting for its last chunks.
    outro_until: Option<Instant>,
}

impl PeerCore {
    /// Starts joining: the first output is the Join for the edge.
    pub fn new(cfg: PeerConfig, now: Instant) -> Self {
        let bytes_per_sec = f64::from(cfg.upload_kbps) * 1000.0 / 8.0;
        let mut core = Self {
            upload: TokenBucket::new(bytes_per_sec, bytes_per_sec.max(64.0 * 1024.0)),
            buffer: PlayBuffer::new(cfg.buffer.clone()),
            phase: Phase::Joining,
            feeds: Vec::new(),
            feed_since: Vec::new(),
            late_reported: Vec::new(),
            parent_sent: Vec::new(),
            last_rx_ts: Vec::new(),
            newest_ts: 0,
            parents: DetMap::default(),
            link_parent: DetMap::default(),
            children: DetMap::default(),
            introduced: Default::default(),
            received_from: DetMap::default(),
            up_queue: VecDeque::new(),
            catchup_queue: VecDeque::new(),
            up_ready: None,
            out: VecDeque::new(),
            next_link: 0,
            joined_at: now,
            push: false,
            verifier: None,
            old_verifier: None,
            last_now: now,
            burst: BurstWatch::new(now),
            repair: Repair::new(cfg.repair.clone()),
            mesh: DetMap::default(),
            repair_budget: DetMap::default(),
            next_map: now,
            map_wanted: DetMap::default(),
            maps_asked: None,
            stats: PeerStats::default(),
            reported: PeerStats::default(),
            next_heartbeat: now + cfg.heartbeat,
            next_report: now + cfg.report_interval,
            last_report_at: now,
            broadcast_end: None,
            outro_until: None,
            cfg,
        };
        core.out.push_back(Output::ToEdge(ToEdge::Join(core.join_msg())));
        core
    }

    pub fn peer_id(&self) -> Option<PeerId> {
        match self.phase {
            Phase::Joined { id, .. } => Some(id),
            _ => None,
        }
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    pub fn stats(&self) -> PeerStats {
        PeerStats {
            play: self.buffer.stats(),
            parents: self.parents.len(),
            // Linked peers that subscribed to something (mesh neighbours only ask for repairs).
            children: self.children.values().filter(|c| c.mask != 0).count(),
            push: self.push,
            buffered_ms: self.buffer.buffered_ms(),
            verifying: self.verifier.is_some(),
            repair: self.repair.stats(),
            mesh: self.mesh.len(),
            links: self.link_parent.len() + self.children.len() + self.mesh.len(),
            timeline: Timeline { playback: self.stats.startup, ..self.stats.timeline },
            ..self.stats
        }
    }

    /// After [`Event::BroadcastEnded`]: everything up to the broadcast's last chunk was played
    /// (or skipped), so the player can go without cutting the end off.
    pub fn broadcast_played_out(&self) -> bool {
        match self.broadcast_end {
            None => false,
            Some(None) => true,
            Some(Some(last)) => self.buffer.next_seq().is_some_and(|n| n > last),
        }
    }

    pub fn feeds(&self) -> &[FeedTo] {
        &self.feeds
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`PeerCore::handle_timeout`] is next due (as of the last input or timeout).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Done {
            return None;
        }
        let now = self.last_now;
        let mut t = self.next_heartbeat.min(self.next_report).min(self.next_map).min(now + self.cfg.tick);
        if let Some(d) = self.buffer.next_deadline(now) {
            t = t.min(d);
        }
        if let Some(r) = self.up_ready {
            t = t.min(r);
        }
        if let Some(o) = self.outro_until {
            t = t.min(o);
        }
        Some(t)
    }

    /// After the broadcast ended: once its last chunk is played (or the wait is over), leave.
    fn check_outro(&mut self, now: Instant) {
        if self.outro_until.is_some_and(|t| self.broadcast_played_out() || now >= t) {
            self.outro_until = None;
            self.leave();
            self.out.push_back(Output::Event(Event::PlayedOut));
        }
    }

    /// Leaves cleanly: the edge and every linked peer are told.
    fn leave(&mut self) {
        if self.phase == Phase::Done {
            return;
        }
        if self.phase != Phase::Detached {
            // What was played since the last report is reported, not dropped with the session.
            self.report(self.last_now);
            self.out.push_back(Output::ToEdge(ToEdge::Leave));
        }
        self.unlink_all();
        self.phase = Phase::Done;
    }

    /// Lets go of the edge and every peer link, keeping the buffer, the playout clock, the
    /// channel key and the counts not yet reported: playback goes on from the buffer while the
    /// player finds another edge, and [`PeerCore::rejoin`] picks up from there.
    fn detach(&mut self) {
        if matches!(self.phase, Phase::Done | Phase::Detached) {
            return;
        }
        self.unlink_all();
        self.feeds.clear();
        self.push = false;
        self.introduced = Default::default();
        // Peer ids are the lost edge's; the next edge knows nobody by them.
        self.received_from.clear();
        self.phase = Phase::Detached;
    }

    /// Joins an(other) edge after [`PeerCore::detach`]: the first output is the Join. The buffer
    /// keeps playing, and chunks the new edge bursts that are already held count as duplicates.
    /// `listen` is where this peer now accepts children.
    fn rejoin(&mut self, now: Instant, redirects: u8, listen: Option<SocketAddr>) {
        if self.phase == Phase::Done {
            return;
        }
        self.detach();
        self.cfg.redirects = redirects;
        self.cfg.listen = listen;
        self.phase = Phase::Joining;
        self.joined_at = now;
        self.burst.welcomed(now);
        self.out.push_back(Output::ToEdge(ToEdge::Join(self.join_msg())));
    }

    fn join_msg(&self) -> Join {
        Join {
            version: CLIENT_PROTOCOL_VERSION,
            channel: self.cfg.channel.clone(),
            token: self.cfg.token.clone(),
            upload_kbps: self.cfg.upload_kbps,
            listen: self.cfg.listen,
            buffer_ms: self.cfg.buffer.buffer_ms,
            redirects: self.cfg.redirects,
        }
    }

    /// Says goodbye on every peer link and forgets them, and whatever was queued for children.
    fn unlink_all(&mut self) {
        let links: Vec<LinkId> =
            self.link_parent.keys().chain(self.children.keys()).chain(self.mesh.keys()).copied().collect();
        for link in links {
            self.out.push_back(Output::Send { link, msg: PeerLink::Bye });
            self.close(link);
        }
        self.parents.clear();
        self.link_parent.clear();
        self.children.clear();
        self.mesh.clear();
        self.up_queue.clear();
        self.catchup_queue.clear();
        self.up_ready = None;
        self.map_wanted.clear();
        self.maps_asked = None;
    }

    pub fn handle(&mut self, now: Instant, input: Input) {
        // The player's own decisions come whatever the phase.
        match input {
            Input::Leave => return self.leave(),
            Input::Detach => return self.detach(),
            Input::Rejoin { redirects, listen } => {
                self.last_now = now;
                return self.rejoin(now, redirects, listen);
            }
            _ => {}
        }
        // Detached, whatever still trickles in belongs to the edge and links let go.
        if matches!(self.phase, Phase::Done | Phase::Detached) {
            return;
        }
        self.last_now = now;
        // Only a chunk can make something playable (or fill the buffer) before the next timeout;
        // a buffer map or a link event need not walk the buffer.
        let chunk = matches!(input, Input::FromEdge(FromEdge::Chunk(_)) | Input::FromPeer(_, PeerLink::Chunk(_)));
        match input {
            Input::FromEdge(m) => self.on_edge(now, m),
            Input::EdgeClosed => {
                if self.phase != Phase::Detached {
                    self.out.push_back(Output::Event(Event::EdgeLost));
                    self.detach();
                }
            }
            Input::LinkUp(link) => {
                let Phase::Joined { id, .. } = self.phase else { return };
                // Every link we open starts with who we are: the other end takes it only from
                // peers its edge introduced.
                if self.link_parent.contains_key(&link) || self.mesh.contains_key(&link) {
                    let hello = PeerLink::Hello {
                        version: CLIENT_PROTOCOL_VERSION,
                        peer: id,
                        channel: self.cfg.channel.clone(),
                    };
                    self.out.push_back(Output::Send { link, msg: hello });
                    // A new link is where repairs will come from while the trees settle.
                    self.out.push_back(Output::Send { link, msg: PeerLink::WantMaps });
                }
                let Some(&pid) = self.link_parent.get(&link) else { return };
                if let Some(p) = self.parents.get_mut(&pid) {
                    p.up = true;
                }
                self.subscribe(pid);
            }
            Input::LinkFailed(link) => {
                self.repair.link_gone(link);
                if self.mesh.remove(&link).is_none() {
                    self.parent_gone(link, Trouble::Unreachable);
                }
            }
            Input::LinkClosed(link) => {
                self.repair.link_gone(link);
                if self.children.remove(&link).is_none() && self.mesh.remove(&link).is_none() {
                    self.parent_gone(link, Trouble::Lost);
                }
            }
            Input::LinkAccepted { link, peer } => {
                let child = Child { mask: 0, from_seq: 0, peer, trusted: false, accepted_at: now, pending: None };
                self.children.insert(link, child);
            }
            Input::FromPeer(link, msg) => self.on_peer(now, link, msg),
            Input::Leave | Input::Detach | Input::Rejoin { .. } => {}
        }
        if chunk {
            self.play(now);
            self.check_outro(now);
        }
        self.flush_pending_subscriptions();
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Done {
            return;
        }
        self.last_now = now;
        self.flush_pending_subscriptions();
        self.drain_up(now);
        self.play(now);
        self.check_outro(now);
        if self.phase == Phase::Done {
            return;
        }
        self.buffer.evict();
        let slack = self.cfg.tick;
        if due(&mut self.next_heartbeat, now, self.cfg.heartbeat, slack) && matches!(self.phase, Phase::Joined { .. }) {
            self.out.push_back(Output::ToEdge(ToEdge::Heartbeat));
        }
        if due(&mut self.next_report, now, self.cfg.report_interval, slack) {
            self.report(now);
        }
        self.check_late(now);
        self.drop_strangers(now);
        if due(&mut self.next_map, now, self.cfg.map_interval, slack) {
            self.send_maps(now);
        }
        self.plan_repair(now);
    }

    /// Links to up to `mesh_links` of the neighbours the edge named.
    fn link_mesh(&mut self, list: Vec<(PeerId, SocketAddr)>) {
        let me = self.peer_id();
        for (id, addr) in list {
            if self.mesh.len() >= self.cfg.mesh_links {
                break;
            }
            if Some(id) == me || self.mesh.values().any(|&p| p == id) {
                continue;
            }
            let link = LinkId::Out(self.next_link);
            self.next_link += 1;
            self.mesh.insert(link, id);
            self.out.push_back(Output::Connect { link, peer: id, addr });
        }
    }

    /// An open link to a peer we may deal with: one we made, or an introduced child.
    fn is_open(&self, link: LinkId) -> bool {
        self.children.get(&link).is_some_and(|c| c.trusted)
            || self.mesh.contains_key(&link)
            || self.link_parent.contains_key(&link)
    }

    /// Every link [`PeerCore::is_open`] accepts: parents, mesh neighbours, introduced children.
    fn open_links(&self) -> Vec<LinkId> {
        let children = self.children.iter().filter(|(_, c)| c.trusted).map(|(l, _)| l);
        self.link_parent.keys().chain(self.mesh.keys()).chain(children).copied().collect()
    }

    fn drop_link(&mut self, link: LinkId) {
        self.mesh.remove(&link);
        self.children.remove(&link);
        self.close(link);
    }

    /// Closes `link`, forgetting its buffer map and requests (else they pile up for good: links
    /// are never reused).
    fn close(&mut self, link: LinkId) {
        self.repair.link_gone(link);
        self.repair_budget.remove(&link);
        self.out.push_back(Output::Close { link });
    }

    /// Buffer maps go to the links that asked for them lately; in a pure mesh, which pulls
    /// everything by maps, to every neighbour.
    fn send_maps(&mut self, now: Instant) {
        self.map_wanted.retain(|_, until| *until > now);
        // A pure mesh has no parents: its open links are its neighbours.
        let targets: Vec<LinkId> = if self.cfg.pull_only {
            self.open_links()
        } else {
            self.map_wanted.keys().copied().filter(|&l| self.is_open(l)).collect()
        };
        if targets.is_empty() {
            return;
        }
        if let Some(map) = self.buffer_map_msg() {
            for link in targets {
                self.out.push_back(Output::Send { link, msg: map.clone() });
            }
        }
    }

    /// Asks every linked peer for its buffer map (we have chunks to repair), at most once per
    /// half lease.
    fn want_maps(&mut self, now: Instant) {
        if self.maps_asked.is_some_and(|at| now.saturating_duration_since(at) < MAP_LEASE / 2) {
            return;
        }
        self.maps_asked = Some(now);
        for link in self.open_links() {
            self.out.push_back(Output::Send { link, msg: PeerLink::WantMaps });
        }
    }

    /// Our buffer map: which of the last 256 chunks we hold.
    fn buffer_map_msg(&self) -> Option<PeerLink> {
        let newest = self.buffer.newest_seq()?;
        const SPAN: usize = 256;
        let first = newest.saturating_sub(SPAN as u64 - 1);
        let bits = buffer_map(first, SPAN, self.buffer.seqs_from(first));
        Some(PeerLink::BufferMap { first_seq: first, bits })
    }

    /// Asks neighbours for chunks missing close to their playback deadline.
    fn plan_repair(&mut self, now: Instant) {
        if self.cfg.pull_only {
            return self.plan_pull(now);
        }
        let (Some(next), Some(newest)) = (self.buffer.next_seq(), self.buffer.newest_seq()) else { return };
        if self.repair.config().window_ms == 0 {
            return;
        }
        // A chunk is missing once every substream has delivered something later (2 rounds).
        let settled = newest.saturating_sub(2 * u64::from(self.k()));
        let window = u64::from(self.repair.config().window_ms) * 90 / self.buffer.frame_90k().max(1);
        let end = settled.min(next + window);
        let missing: Vec<u64> = (next..end).filter(|&s| !self.buffer.contains(s)).collect();
        if missing.is_empty() {
            return;
        }
        self.want_maps(now);
        self.ask(now, &missing);
    }

    /// Requests `missing` chunks from the neighbours most likely to have them.
    fn ask(&mut self, now: Instant, missing: &[u64]) {
        let mut reqs = Vec::new();
        self.repair.plan(now, missing, &mut reqs);
        for (link, seq) in reqs {
            self.out.push_back(Output::Send { link, msg: PeerLink::Request { seq } });
        }
    }

    /// Pure mesh: pull everything neighbours hold from where playback is (or, before it starts,
    /// from the start threshold's worth behind the newest chunk any neighbour holds).
    fn plan_pull(&mut self, now: Instant) {
        let Some(known) = self.repair.newest_known().max(self.buffer.newest_seq()) else { return };
        // Two chunks first, to learn how much media a chunk holds.
        let Some(frame) = self.buffer.frame_estimate() else {
            let missing: Vec<u64> =
                [known.saturating_sub(1), known].into_iter().filter(|&s| !self.buffer.contains(s)).collect();
            return self.ask(now, &missing);
        };
        let start_back = u64::from(self.cfg.buffer.start_ms) * 90 / frame + 2;
        let next = self.buffer.next_seq().unwrap_or_else(|| known.saturating_sub(start_back));
        let window = u64::from(self.cfg.buffer.buffer_ms) * 90 / frame;
        let missing: Vec<u64> = (next..=known.min(next + window)).filter(|&s| !self.buffer.contains(s)).collect();
        if missing.is_empty() {
            return;
        }
        self.ask(now, &missing);
    }

    fn on_edge(&mut self, now: Instant, m: FromEdge) {
        match m {
            FromEdge::Welcome(w) => {
                if self.phase != Phase::Joining || w.channel != self.cfg.channel {
                    return;
                }
                // The timeline is the first join's; a re-join does not restart it.
                let login = now.saturating_duration_since(self.joined_at);
                self.stats.timeline.login_reply.get_or_insert(login);
                self.burst.welcomed(now);
                let k = w.substreams.clamp(1, 64);
                self.phase = Phase::Joined { id: w.peer, k };
                self.push = w.push;
                self.verifier = w.channel_key.and_then(|k| ChannelVerifier::from_bytes(&k).ok());
                self.feeds = vec![if w.push { FeedTo::Edge } else { FeedTo::Nobody }; usize::from(k)];
                self.feed_since = vec![now; usize::from(k)];
                self.late_reported = vec![false; usize::from(k)];
                self.parent_sent = vec![false; usize::from(k)];
                self.last_rx_ts = vec![0; usize::from(k)];
                self.out.push_back(Output::Event(Event::Welcomed { peer: w.peer, push: w.push }));
            }
            FromEdge::Redirect { to, .. } => {
                self.out.push_back(Output::Event(Event::Redirected(to)));
                self.detach();
            }
            FromEdge::Refused { reason } => {
                self.out.push_back(Output::Event(Event::Refused(reason)));
                self.phase = Phase::Done;
            }
            FromEdge::Ended { last_seq } => {
                self.broadcast_end = Some(last_seq);
                let buffered = Duration::from_millis(self.stats().buffered_ms);
                self.outro_until = Some(now + buffered + OUTRO_SLACK);
                self.out.push_back(Output::Event(Event::BroadcastEnded));
            }
            FromEdge::Feed { substream, feed } => self.on_feed(now, substream, feed),
            FromEdge::Chunk(c) => {
                if self.authentic(&c) {
                    self.burst.chunk(now, c.header.media_ts);
                    self.stats.bytes_from_edge += c.payload.len() as u64;
                    self.on_chunk(c);
                }
            }
            FromEdge::Neighbours(list) => self.link_mesh(list),
            FromEdge::Introduce { peer } => {
                self.introduced.add(peer, now);
                let waiting: Vec<LinkId> =
                    self.children.iter().filter(|(_, c)| !c.trusted && c.peer == Some(peer)).map(|(l, _)| *l).collect();
                for link in waiting {
                    self.trust_child(now, link);
                }
            }
            FromEdge::ChannelKey { key } => {
                if let Ok(v) = ChannelVerifier::from_bytes(&key)
                    && self.verifier.as_ref().is_none_or(|cur| cur.to_bytes() != key)
                {
                    self.old_verifier = self.verifier.replace(v).map(|old| (old, now + KEY_GRACE));
                }
            }
            FromEdge::Signal { .. } => {}
        }
    }

    fn on_feed(&mut self, now: Instant, s: u16, feed: FeedTo) {
        let Phase::Joined { .. } = self.phase else { return };
        let si = usize::from(s);
        if si >= self.feeds.len() {
            return;
        }
        let old = std::mem::replace(&mut self.feeds[si], feed);
        self.feed_since[si] = now;
        self.late_reported[si] = false;
        self.parent_sent[si] = false;
        if let FeedTo::Peer { id, .. } = old
            && !matches!(feed, FeedTo::Peer { id: n, .. } if n == id)
        {
            if let Some(p) = self.parents.get_mut(&id) {
                p.mask &= !(1u64 << s);
            }
            self.subscribe(id);
        }
        if let FeedTo::Peer { id, addr } = feed {
            let next_link = &mut self.next_link;
            let out = &mut self.out;
            let link_parent = &mut self.link_parent;
            let p = self.parents.entry(id).or_insert_with(|| {
                let link = LinkId::Out(*next_link);
                *next_link += 1;
                link_parent.insert(link, id);
                out.push_back(Output::Connect { link, peer: id, addr });
                Parent { link, mask: 0, up: false, pending: false }
            });
            p.mask |= 1u64 << s;
            self.subscribe(id);
        }
    }

    /// Tells parent `id` which substreams we want from it now, or lets it go.
    fn subscribe(&mut self, id: PeerId) {
        let Some(p) = self.parents.get(&id) else { return };
        let (link, mask, up) = (p.link, p.mask, p.up);
        if mask == 0 {
            self.out.push_back(Output::Send { link, msg: PeerLink::Bye });
            self.close(link);
            self.parents.remove(&id);
            self.link_parent.remove(&link);
            return;
        }
        if !up || !self.may_subscribe() {
            if let Some(p) = self.parents.get_mut(&id) {
                p.pending = true;
            }
            return;
        }
        let from_seq = self.buffer.next_seq().or(self.buffer.newest_seq().map(|n| n + 1)).unwrap_or(0);
        self.out.push_back(Output::Send { link, msg: PeerLink::Subscribe { substreams: mask, from_seq } });
        if let Some(p) = self.parents.get_mut(&id) {
            p.pending = false;
        }
    }

    /// Parents are asked for chunks once playback runs, or once the edge's start burst is over,
    /// never came, or trickles too slowly to be worth waiting for (see [`BurstWatch`]).
    fn may_subscribe(&mut self) -> bool {
        self.buffer.started_at().is_some() || self.burst.over(self.last_now)
    }

    /// Sends subscriptions held back while the burst was flowing.
    fn flush_pending_subscriptions(&mut self) {
        if !self.may_subscribe() {
            return;
        }
        let pending: Vec<PeerId> = self.parents.iter().filter(|(_, p)| p.pending && p.up).map(|(&id, _)| id).collect();
        for id in pending {
            self.subscribe(id);
        }
    }

    fn parent_gone(&mut self, link: LinkId, trouble: Trouble) {
        let Some(pid) = self.link_parent.remove(&link) else { return };
        let Some(p) = self.parents.remove(&pid) else { return };
        for s in 0..64u16 {
            if p.mask & (1u64 << s) != 0 {
                self.stats.lost_reports += 1;
                self.out.push_back(Output::ToEdge(ToEdge::ParentTrouble { substream: s, parent: pid, trouble }));
            }
        }
    }

    fn on_peer(&mut self, now: Instant, link: LinkId, msg: PeerLink) {
        // Mesh messages are welcome on any open link. A map still in flight when its link closed
        // must not be kept: links are never reused, so it would stay for good.
        match msg {
            PeerLink::BufferMap { first_seq, bits } => {
                if self.is_open(link) {
                    self.repair.on_map(link, first_seq, bits);
                    // An answer to our WantMaps: what we are missing may be asked for now,
                    // not at the next tick.
                    if !self.cfg.pull_only && self.maps_asked.is_some() {
                        self.plan_repair(now);
                    }
                }
                return;
            }
            PeerLink::Request { seq } => {
                if !self.is_open(link) {
                    return;
                }
                // Repairs are a favour with a budget per link: a neighbour asking faster is told
                // NotHave and asks elsewhere.
                let budget = self
                    .repair_budget
                    .entry(link)
                    .or_insert_with(|| TokenBucket::new(REPAIRS_PER_SEC, REPAIR_BURST))
                    .try_take(now, 1.0);
                match self.buffer.get(seq).filter(|_| budget).cloned() {
                    Some(c) => {
                        self.repair.count_served();
                        self.up_queue.push_back((link, c));
                        self.trim_up_queue();
                        self.drain_up(now);
                    }
                    None => self.out.push_back(Output::Send { link, msg: PeerLink::NotHave { seq } }),
                }
                return;
            }
            PeerLink::NotHave { seq } => {
                self.repair.on_not_have(link, seq);
                return;
            }
            PeerLink::WantMaps => {
                if self.is_open(link) {
                    let first = self.map_wanted.insert(link, now + MAP_LEASE).is_none();
                    // The first map goes at once: the asker is repairing now.
                    if first && let Some(map) = self.buffer_map_msg() {
                        self.out.push_back(Output::Send { link, msg: map });
                    }
                }
                return;
            }
            _ => {}
        }
        if let Some(&pid) = self.link_parent.get(&link) {
            match msg {
                PeerLink::Chunk(c) => {
                    if !self.authentic(&c) {
                        // Never played, never forwarded; the sender is reported and dropped, and
                        // the edge gives us another parent.
                        self.out.push_back(Output::ToEdge(ToEdge::BadChunk { from: pid, seq: c.seq() }));
                        self.close(link);
                        self.parent_gone(link, Trouble::Lost);
                        return;
                    }
                    let s = self.substream_of(&c);
                    let pushed = self.parents.get(&pid).is_some_and(|p| p.mask & (1u64 << s) != 0);
                    if pushed && let Some(sent) = self.parent_sent.get_mut(usize::from(s)) {
                        *sent = true;
                    }
                    self.received_from(Some(pid), c.payload.len());
                    let wanted = pushed || self.repair.on_chunk(link, c.seq());
                    if wanted {
                        self.stats.bytes_from_peers += c.payload.len() as u64;
                        self.on_chunk(c);
                    }
                }
                PeerLink::Bye => {
                    self.close(link);
                    self.parent_gone(link, Trouble::Lost);
                }
                _ => {}
            }
            return;
        }
        let msg = match msg {
            PeerLink::Chunk(c) => {
                // From a neighbour or child: taken only as the answer to our own request.
                let from = self
                    .mesh
                    .get(&link)
                    .copied()
                    .or_else(|| self.children.get(&link).filter(|c| c.trusted).and_then(|c| c.peer));
                self.received_from(from, c.payload.len());
                if self.repair.on_chunk(link, c.seq()) {
                    if self.authentic(&c) {
                        self.stats.bytes_from_peers += c.payload.len() as u64;
                        self.on_chunk(c);
                    } else {
                        if let Some(&from) = self.mesh.get(&link) {
                            self.out.push_back(Output::ToEdge(ToEdge::BadChunk { from, seq: c.seq() }));
                        }
                        self.drop_link(link);
                    }
                }
                return;
            }
            other => other,
        };
        if self.mesh.contains_key(&link) {
            if msg == PeerLink::Bye {
                self.drop_link(link);
            }
            return;
        }
        let Some(child) = self.children.get_mut(&link) else { return };
        match msg {
            PeerLink::Hello { version, channel, .. }
                if (version != CLIENT_PROTOCOL_VERSION || channel != self.cfg.channel) =>
            {
                self.children.remove(&link);
                self.close(link);
            }
            // A peer is who the edge says it is: a Hello naming another (to borrow its
            // introduction) ends the link.
            PeerLink::Hello { peer, .. } if child.peer.is_some_and(|p| p != peer) => {
                self.stats.impostors += 1;
                self.children.remove(&link);
                self.close(link);
            }
            PeerLink::Hello { peer, .. } if !child.trusted => {
                child.peer = Some(peer);
                if self.introduced.knows(peer, now) {
                    self.trust_child(now, link);
                }
            }
            PeerLink::Subscribe { substreams, from_seq } if !child.trusted => {
                child.pending = Some((substreams, from_seq));
            }
            PeerLink::Subscribe { substreams, from_seq } => self.subscribe_child(now, link, substreams, from_seq),
            PeerLink::Bye => {
                self.children.remove(&link);
                self.close(link);
            }
            // Chunks from a child are not ours to take; requests are answered by the mesh (later).
            _ => {}
        }
    }

    /// The edge introduced the peer on `link`: feed it what it asked for meanwhile.
    fn trust_child(&mut self, now: Instant, link: LinkId) {
        let Some(child) = self.children.get_mut(&link) else { return };
        child.trusted = true;
        if let Some((substreams, from_seq)) = child.pending.take() {
            self.subscribe_child(now, link, substreams, from_seq);
        }
    }

    /// Cuts links from peers that said hello (or nothing) but were never introduced.
    fn drop_strangers(&mut self, now: Instant) {
        let late: Vec<LinkId> = self
            .children
            .iter()
            .filter(|(_, c)| !c.trusted && now.saturating_duration_since(c.accepted_at) >= crate::introduce::WAIT)
            .map(|(l, _)| *l)
            .collect();
        for link in late {
            self.stats.strangers += 1;
            self.children.remove(&link);
            self.close(link);
        }
    }

    fn subscribe_child(&mut self, now: Instant, link: LinkId, substreams: u64, from_seq: u64) {
        // Send what we hold for it, but no more than the catch-up window.
        let floor = self
            .buffer
            .newest_seq()
            .and_then(|n| self.buffer.get(n))
            .map(|c| c.header.media_ts.saturating_sub(u64::from(self.cfg.catchup_ms) * 90))
            .unwrap_or(0);
        let Some(child) = self.children.get_mut(&link) else { return };
        child.mask = substreams;
        child.from_seq = from_seq;
        let k = self.k();
        let backlog: Vec<Chunk> = self
            .buffer
            .from(from_seq)
            .filter(|c| c.header.media_ts >= floor && substreams & (1u64 << SubstreamId::of(c.seq(), k).0) != 0)
            .cloned()
            .collect();
        self.catchup_queue.retain(|(l, _)| *l != link);
        self.catchup_queue.extend(backlog.into_iter().map(|c| (link, c)));
        while self.catchup_queue.len() > CATCHUP_QUEUE {
            self.catchup_queue.pop_front();
            self.stats.up_dropped += 1;
        }
        self.drain_up(now);
    }

    /// Whether a chunk passes the channel key (always, when the edge gave none).
    fn authentic(&mut self, c: &Chunk) -> bool {
        let old_ok =
            || self.old_verifier.as_ref().is_some_and(|(v, until)| self.last_now < *until && v.verify(c).is_ok());
        match &self.verifier {
            Some(v) if v.verify(c).is_err() && !old_ok() => {
                self.stats.bad_chunks += 1;
                false
            }
            _ => true,
        }
    }

    fn k(&self) -> u16 {
        match self.phase {
            Phase::Joined { k, .. } => k,
            _ => 1,
        }
    }

    fn substream_of(&self, c: &Chunk) -> u16 {
        SubstreamId::of(c.seq(), self.k()).0
    }

    fn on_chunk(&mut self, c: Chunk) {
        if self.stats.timeline.first_data.is_none() {
            self.stats.timeline.first_data = Some(self.last_now.saturating_duration_since(self.joined_at));
        }
        let s = usize::from(self.substream_of(&c));
        let ts = c.header.media_ts;
        if let Some(last) = self.last_rx_ts.get_mut(s) {
            *last = (*last).max(ts);
        }
        self.newest_ts = self.newest_ts.max(ts);
        let seq = c.seq();
        self.repair.got(seq);
        if !self.buffer.insert(c.clone()) {
            return;
        }
        let bit = 1u64 << s;
        let targets: Vec<LinkId> =
            self.children.iter().filter(|(_, ch)| ch.mask & bit != 0 && seq >= ch.from_seq).map(|(&l, _)| l).collect();
        // Queued here, sent by `drain_up` under the upload cap.
        for link in targets {
            self.up_queue.push_back((link, c.clone()));
        }
        self.trim_up_queue();
    }

    fn trim_up_queue(&mut self) {
        while self.up_queue.len() > UP_QUEUE {
            self.up_queue.pop_front();
            self.stats.up_dropped += 1;
        }
    }

    /// Sends queued chunks to children as the upload cap allows: live first, then catch-up.
    fn drain_up(&mut self, now: Instant) {
        self.up_ready = None;
        for catchup in [false, true] {
            loop {
                let queue = if catchup { &self.catchup_queue } else { &self.up_queue };
                let Some((link, len)) = queue.front().map(|(l, c)| (*l, c.payload.len() as f64)) else { break };
                let open = self.is_open(link);
                let queue = if catchup { &mut self.catchup_queue } else { &mut self.up_queue };
                if !open {
                    queue.pop_front();
                    continue;
                }
                if !self.upload.try_take(now, len) {
                    // Wake exactly when the cap lets it go (at least 1 ms on: no busy loop).
                    self.up_ready = Some(self.upload.ready_at(now, len).max(now + Duration::from_millis(1)));
                    return;
                }
                let Some((link, mut c)) = queue.pop_front() else { break };
                if self.cfg.deny {
                    continue;
                }
                self.stats.bytes_up += c.payload.len() as u64;
                if self.cfg.tamper {
                    let mut bytes = c.payload.to_vec();
                    if let Some(b) = bytes.get_mut(100) {
                        *b ^= 0x55;
                    }
                    c.payload = bytes::Bytes::from(bytes);
                }
                self.out.push_back(Output::Send { link, msg: PeerLink::Chunk(c) });
            }
        }
    }

    fn play(&mut self, now: Instant) {
        if self.stats.timeline.buffer_full.is_none()
            && self.buffer.buffered_ms() * 10 >= u64::from(self.cfg.buffer.buffer_ms) * 9
        {
            self.stats.timeline.buffer_full = Some(now.saturating_duration_since(self.joined_at));
        }
        // Forward what arrived since the last call first, then play what is due.
        self.drain_up(now);
        let stalls_before = self.buffer.stats().stalls;
        let mut due = Vec::new();
        self.buffer.poll_play(now, &mut due);
        if self.stats.startup.is_none()
            && let Some(at) = self.buffer.started_at()
        {
            let startup = at.saturating_duration_since(self.joined_at);
            self.stats.startup = Some(startup);
            self.out.push_back(Output::Event(Event::Started { startup }));
        }
        for c in due {
            self.out.push_back(Output::Play(c));
        }
        if self.buffer.stats().stalls > stalls_before {
            self.out.push_back(Output::Event(Event::Stalled));
        }
    }

    /// Reports a parent whose substream falls behind the others.
    fn check_late(&mut self, now: Instant) {
        let late_90k = u64::from(self.cfg.late_ms) * 90;
        for s in 0..self.feeds.len() {
            let FeedTo::Peer { id, .. } = self.feeds[s] else { continue };
            let settled =
                now.saturating_duration_since(self.feed_since[s]) > Duration::from_millis(u64::from(self.cfg.late_ms));
            if settled && !self.late_reported[s] && self.newest_ts.saturating_sub(self.last_rx_ts[s]) > late_90k {
                self.late_reported[s] = true;
                self.stats.late_reports += 1;
                // Late after sending something is a slow parent; nothing at all is one that
                // denies service (the edge makes it a leaf when several children say so).
                let trouble =
                    if self.parent_sent.get(s).copied().unwrap_or(false) { Trouble::Late } else { Trouble::Silent };
                self.out.push_back(Output::ToEdge(ToEdge::ParentTrouble { substream: s as u16, parent: id, trouble }));
            }
        }
    }

    /// Counts media that came from peer `from`, taken or not: the edge checks senders' upload
    /// claims against it, and a sender did spend its upload on a chunk we had already, or on
    /// the answer to a request that timed out meanwhile.
    fn received_from(&mut self, from: Option<PeerId>, bytes: usize) {
        if let Some(p) = from {
            *self.received_from.entry(p).or_default() += bytes as u64;
        }
    }

    fn report(&mut self, now: Instant) {
        // Between edges the counts wait for the next one: no report is dropped on a move.
        if !matches!(self.phase, Phase::Joined { .. }) {
            return;
        }
        let cur = self.stats();
        let prev = self.reported;
        let r = PeerReport {
            interval_ms: now.saturating_duration_since(self.last_report_at).as_millis() as u32,
            played_ms: (cur.play.played_ms - prev.play.played_ms) as u32,
            stalled_ms: (cur.play.stalled_ms - prev.play.stalled_ms) as u32,
            stalls: (cur.play.stalls - prev.play.stalls) as u32,
            bytes_from_edge: cur.bytes_from_edge - prev.bytes_from_edge,
            bytes_from_peers: cur.bytes_from_peers - prev.bytes_from_peers,
            bytes_up: cur.bytes_up - prev.bytes_up,
            startup_ms: cur.startup.map(|d| d.as_millis() as u32),
            from_peers: {
                let mut v: Vec<(PeerId, u64)> = std::mem::take(&mut self.received_from).into_iter().collect();
                v.sort_by_key(|&(p, b)| (std::cmp::Reverse(b), p));
                v.truncate(proto::peer::MAX_REPORTED_SENDERS);
                v
            },
        };
        self.reported = cur;
        self.last_report_at = now;
        self.out.push_back(Output::ToEdge(ToEdge::Report(r)));
    }
}

/// Whether a chore due at `*next` runs at this wake-up; if so `*next` moves on by `every`. A chore
/// due within `slack` (one tick) runs early with whatever woke the peer (mostly playback), so
/// chores rarely need wake-ups of their own, and the cadence stays `every` on average.
fn due(next: &mut Instant, now: Instant, every: Duration, slack: Duration) -> bool {
    if now + slack < *next {
        return false;
    }
    *next += every;
    if *next <= now {
        *next = now + every;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> PeerLink {
        PeerLink::BufferMap { first_seq: 0, bits: bytes::Bytes::from_static(&[0xff]) }
    }

    #[test]
    fn chores_due_within_a_tick_run_early_and_keep_their_cadence() {
        let t0 = Instant::now();
        let (every, slack) = (Duration::from_secs(5), Duration::from_secs(1));
        let mut next = t0 + every;
        assert!(!due(&mut next, t0 + Duration::from_millis(3_900), every, slack));
        assert!(due(&mut next, t0 + Duration::from_millis(4_200), every, slack));
        assert_eq!(next, t0 + Duration::from_secs(10), "the next one is not pushed back by running early");
        // Woken long after it was due (a suspended laptop): once, then a full period on.
        let late = t0 + Duration::from_secs(60);
        assert!(due(&mut next, late, every, slack));
        assert_eq!(next, late + every);
    }

    #[test]
    fn a_buffer_map_in_flight_when_its_link_closed_is_not_kept() {
        let now = Instant::now();
        let channel = ChannelId::new("live").unwrap_or_else(|e| panic!("{e}"));
        let mut p = PeerCore::new(PeerConfig::new(channel), now);
        p.handle(now, Input::LinkAccepted { link: LinkId::In(7), peer: None });
        p.handle(now, Input::FromEdge(FromEdge::Introduce { peer: 3 }));
        p.handle(now, Input::FromPeer(LinkId::In(7), hello(3)));
        p.handle(now, Input::FromPeer(LinkId::In(7), map()));
        assert_eq!(p.stats().repair.maps_held, 1);
        p.handle(now, Input::LinkClosed(LinkId::In(7)));
        assert_eq!(p.stats().repair.maps_held, 0);
        // Sent before the neighbour saw the close: links are never reused, so it would stay.
        p.handle(now, Input::FromPeer(LinkId::In(7), map()));
        p.handle(now, Input::FromPeer(LinkId::In(8), map()));
        assert_eq!(p.stats().repair.maps_held, 0);
    }

    fn hello(peer: PeerId) -> PeerLink {
        PeerLink::Hello {
            version: CLIENT_PROTOCOL_VERSION,
            peer,
            channel: ChannelId::new("live").unwrap_or_else(|e| panic!("{e}")),
        }
    }

    fn sent_on(p: &mut PeerCore, link: LinkId) -> Vec<Output> {
        std::iter::from_fn(|| p.poll_output())
            .filter(|o| matches!(o, Output::Send { link: l, .. } | Output::Close { link: l } if *l == link))
            .collect()
    }

    /// Issue 20, finding 13: a peer's id was its own Hello's word, so a stranger could borrow
    /// another's introduction; and repair requests queued without bound.
    #[test]
    fn a_hello_must_name_the_signalled_peer_and_repairs_have_a_budget() {
        let t0 = Instant::now();
        let channel = ChannelId::new("live").unwrap_or_else(|e| panic!("{e}"));
        let mut p = PeerCore::new(PeerConfig::new(channel), t0);
        p.handle(t0, Input::FromEdge(FromEdge::Introduce { peer: 44 }));
        // The edge relayed this link's offer from peer 66; its Hello claims 44.
        p.handle(t0, Input::LinkAccepted { link: LinkId::In(7), peer: Some(66) });
        p.handle(t0, Input::FromPeer(LinkId::In(7), hello(44)));
        assert_eq!(sent_on(&mut p, LinkId::In(7)), [Output::Close { link: LinkId::In(7) }]);
        assert_eq!(p.stats().impostors, 1);
        // 44 itself, asking 300 times for chunks we hold: a burst is served, the rest get NotHave.
        p.handle(t0, Input::FromEdge(welcome(1)));
        for seq in 0..10 {
            p.handle(t0, Input::FromEdge(FromEdge::Chunk(chunk(seq))));
        }
        p.handle(t0, Input::LinkAccepted { link: LinkId::In(8), peer: Some(44) });
        p.handle(t0, Input::FromPeer(LinkId::In(8), hello(44)));
        for i in 0..300 {
            p.handle(t0, Input::FromPeer(LinkId::In(8), PeerLink::Request { seq: i % 10 }));
        }
        let not_have = sent_on(&mut p, LinkId::In(8))
            .iter()
            .filter(|o| matches!(o, Output::Send { msg: PeerLink::NotHave { .. }, .. }))
            .count();
        assert_eq!(not_have, 300 - REPAIR_BURST as usize, "beyond the burst, NotHave");
        assert!(p.up_queue.len() <= UP_QUEUE);
    }

    #[test]
    fn a_peer_the_edge_did_not_introduce_gets_nothing_and_is_cut_off() {
        let t0 = Instant::now();
        let channel = ChannelId::new("live").unwrap_or_else(|e| panic!("{e}"));
        let mut p = PeerCore::new(PeerConfig::new(channel), t0);
        // A stranger connects, says hello, subscribes and asks for a chunk: no answer at all.
        p.handle(t0, Input::LinkAccepted { link: LinkId::In(7), peer: None });
        for m in [hello(66), PeerLink::Subscribe { substreams: 0b1111, from_seq: 0 }, PeerLink::Request { seq: 5 }] {
            p.handle(t0, Input::FromPeer(LinkId::In(7), m));
        }
        p.handle(t0, Input::FromPeer(LinkId::In(7), map()));
        assert_eq!(sent_on(&mut p, LinkId::In(7)), []);
        assert_eq!(p.stats().repair.maps_held, 0, "its map is not taken either");
        // An introduced one (its introduction trailing its hello) is answered.
        p.handle(t0, Input::LinkAccepted { link: LinkId::In(8), peer: None });
        p.handle(t0, Input::FromPeer(LinkId::In(8), hello(44)));
        p.handle(t0, Input::FromEdge(FromEdge::Introduce { peer: 44 }));
        p.handle(t0, Input::FromPeer(LinkId::In(8), PeerLink::Request { seq: 5 }));
        assert_eq!(
            sent_on(&mut p, LinkId::In(8)),
            [Output::Send { link: LinkId::In(8), msg: PeerLink::NotHave { seq: 5 } }]
        );
        // The stranger is cut off once the wait for an introduction is over.
        p.handle_timeout(t0 + crate::introduce::WAIT);
        assert_eq!(sent_on(&mut p, LinkId::In(7)), [Output::Close { link: LinkId::In(7) }]);
        assert!(sent_on(&mut p, LinkId::In(8)).is_empty());
        assert_eq!(p.stats().strangers, 1);
    }
    fn chunk(seq: u64) -> Chunk {
        let header = proto::ChunkHeader {
            channel: ChannelId::new("live").unwrap_or_else(|e| panic!("{e}")),
            seq,
            ingest_ms: 0,
            media_ts: seq * 3_600,
            flags: if seq.is_multiple_of(25) { proto::ChunkFlags::KEYFRAME } else { proto::ChunkFlags::empty() },
        };
        Chunk { header, payload: bytes::Bytes::from_static(&[0x47; 188]), signature: None }
    }

    fn welcome(peer: PeerId) -> FromEdge {
        FromEdge::Welcome(proto::peer::Welcome {
            peer,
            channel: ChannelId::new("live").unwrap_or_else(|e| panic!("{e}")),
            substreams: 4,
            media_kbps: 400,
            push: true,
            public_addr: None,
            stun: None,
            upload_slots: 0,
            channel_key: None,
        })
    }

    /// When a P2P peer whose edge bursts `per_100ms` chunks every 100 ms asks its parent for
    /// chunks (ms after the welcome).
    fn subscribed_after(per_100ms: u64) -> Option<u64> {
        let t0 = Instant::now();
        let mut p = PeerCore::new(PeerConfig::new(ChannelId::new("live").unwrap_or_else(|e| panic!("{e}"))), t0);
        let FromEdge::Welcome(mut w) = welcome(1) else { return None };
        w.push = false;
        p.handle(t0, Input::FromEdge(FromEdge::Welcome(w)));
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        for s in 0..4 {
            p.handle(t0, Input::FromEdge(FromEdge::Feed { substream: s, feed: FeedTo::Peer { id: 2, addr } }));
        }
        let link = std::iter::from_fn(|| p.poll_output()).find_map(|o| match o {
            Output::Connect { link, .. } => Some(link),
            _ => None,
        })?;
        p.handle(t0, Input::LinkUp(link));
        // The burst starts 8 s back from seq 1000 and lasts 3 s.
        for step in 0..60u64 {
            let now = t0 + Duration::from_millis(100 * step);
            if step < 30 {
                for i in 0..per_100ms {
                    p.handle(now, Input::FromEdge(FromEdge::Chunk(chunk(800 + step * per_100ms + i))));
                }
            }
            p.handle_timeout(now);
            if sent_on(&mut p, link).iter().any(|o| matches!(o, Output::Send { msg: PeerLink::Subscribe { .. }, .. })) {
                return Some(step * 100);
            }
        }
        None
    }

    #[test]
    fn parents_wait_for_a_fast_start_burst_but_not_for_a_trickle() {
        // Ten chunks per 100 ms is ten times real time: wait for it until playback starts on it
        // (a keyframe and 2 s after it, at 500 ms), not for the first chunks.
        assert_eq!(subscribed_after(10), Some(500));
        // One per 100 ms brings 40 % of real time: after a second it is not worth waiting for.
        assert_eq!(subscribed_after(1), Some(1_000));
    }

    /// Runs `p` from `from` to `to` in 10 ms steps; the seqs played and the messages for the edge.
    fn run(p: &mut PeerCore, from: Instant, to: Instant) -> (Vec<u64>, Vec<ToEdge>) {
        let (mut played, mut to_edge) = (Vec::new(), Vec::new());
        let mut t = from;
        while t < to {
            p.handle_timeout(t);
            for o in std::iter::from_fn(|| p.poll_output()) {
                match o {
                    Output::Play(c) => played.push(c.seq()),
                    Output::ToEdge(m) => to_edge.push(m),
                    _ => {}
                }
            }
            t += Duration::from_millis(10);
        }
        (played, to_edge)
    }

    #[test]
    fn a_peer_that_loses_its_edge_plays_on_from_its_buffer_and_rejoins_without_losing_a_report() {
        let t0 = Instant::now();
        let mut cfg = PeerConfig::new(ChannelId::new("live").unwrap_or_else(|e| panic!("{e}")));
        cfg.report_interval = Duration::from_secs(2);
        let mut p = PeerCore::new(cfg, t0);
        p.handle(t0, Input::FromEdge(welcome(1)));
        // A 4 s start burst (25 chunks/s), then playback runs for a second.
        for seq in 0..100 {
            p.handle(t0, Input::FromEdge(FromEdge::Chunk(chunk(seq))));
        }
        let t1 = t0 + Duration::from_secs(1);
        let (mut played, _) = run(&mut p, t0, t1);
        assert!(!played.is_empty(), "playing before the loss");
        p.handle(t1, Input::EdgeClosed);
        let lost: Vec<Output> = std::iter::from_fn(|| p.poll_output()).collect();
        assert!(lost.contains(&Output::Event(Event::EdgeLost)));
        assert!(!lost.iter().any(|o| matches!(o, Output::ToEdge(_))), "nothing for a gone edge: {lost:?}");
        // A second and a half with no edge (past a report's due time): playback goes on, and the
        // report waits.
        let t2 = t1 + Duration::from_millis(1_500);
        let (between, to_edge) = run(&mut p, t1, t2);
        assert!(between.len() >= 30, "{} chunks played without an edge", between.len());
        assert!(to_edge.is_empty(), "{to_edge:?}");
        played.extend(between);
        p.handle(t2, Input::Rejoin { redirects: 0, listen: None });
        assert!(matches!(p.poll_output(), Some(Output::ToEdge(ToEdge::Join(_)))));
        p.handle(t2, Input::FromEdge(welcome(9)));
        // The new edge's burst overlaps what is held: duplicates, not a restart.
        for seq in 40..140 {
            p.handle(t2, Input::FromEdge(FromEdge::Chunk(chunk(seq))));
        }
        let (after, to_edge) = run(&mut p, t2, t2 + Duration::from_secs(2));
        played.extend(after);
        assert!(played.windows(2).all(|w| w[1] == w[0] + 1), "played in order, once each: {played:?}");
        assert_eq!(p.stats().play.stalls, 0);
        let reports: Vec<&PeerReport> =
            to_edge.iter().filter_map(|m| if let ToEdge::Report(r) = m { Some(r) } else { None }).collect();
        assert_eq!(reports.len(), 1, "{to_edge:?}");
        assert!(reports[0].played_ms >= 2_400, "the report holds the time played between edges too: {:?}", reports[0]);
        // Leaving, the time played since that report is reported too.
        let (_, _) = run(&mut p, t2 + Duration::from_secs(2), t2 + Duration::from_millis(2_500));
        p.handle(p.last_now, Input::Leave);
        let last: Vec<ToEdge> = std::iter::from_fn(|| p.poll_output())
            .filter_map(|o| if let Output::ToEdge(m) = o { Some(m) } else { None })
            .collect();
        assert!(matches!(&last[..], [ToEdge::Report(r), ToEdge::Leave] if r.played_ms >= 400), "{last:?}");
    }
    #[test]
    fn buffer_maps_go_only_to_neighbours_that_asked_until_their_lease_runs_out() {
        let t0 = Instant::now();
        let mut p = PeerCore::new(PeerConfig::new(ChannelId::new("live").unwrap_or_else(|e| panic!("{e}"))), t0);
        p.handle(t0, Input::FromEdge(welcome(1)));
        for seq in 0..10 {
            p.handle(t0, Input::FromEdge(FromEdge::Chunk(chunk(seq))));
        }
        for (link, peer) in [(LinkId::In(7), 3), (LinkId::In(8), 4)] {
            p.handle(t0, Input::LinkAccepted { link, peer: None });
            p.handle(t0, Input::FromEdge(FromEdge::Introduce { peer }));
            p.handle(t0, Input::FromPeer(link, hello(peer)));
        }
        // A stranger's ask is ignored.
        p.handle(t0, Input::LinkAccepted { link: LinkId::In(9), peer: None });
        p.handle(t0, Input::FromPeer(LinkId::In(9), PeerLink::WantMaps));
        // Maps sent to links 7, 8 and 9 since the last look.
        let maps = |p: &mut PeerCore| {
            let mut n = [0usize; 3];
            for o in std::iter::from_fn(|| p.poll_output()) {
                if let Output::Send { link: LinkId::In(l @ 7..=9), msg: PeerLink::BufferMap { .. } } = o {
                    n[(l - 7) as usize] += 1;
                }
            }
            n
        };
        // Nobody asked: no maps at all, however long.
        p.handle_timeout(t0 + Duration::from_secs(2));
        assert_eq!(maps(&mut p), [0, 0, 0]);
        // Link 7 asks: a map at once, then one per interval while the lease lasts; 8 gets none.
        let t1 = t0 + Duration::from_secs(3);
        p.handle(t1, Input::FromPeer(LinkId::In(7), PeerLink::WantMaps));
        assert_eq!(maps(&mut p), [1, 0, 0], "the first map answers the ask");
        let mut to_7 = 1;
        let mut t = t1;
        while t < t1 + MAP_LEASE + Duration::from_secs(5) {
            t += Duration::from_millis(100);
            p.handle_timeout(t);
            let [seven, eight, nine] = maps(&mut p);
            assert_eq!((eight, nine), (0, 0), "maps to a link that did not ask");
            if t > t1 + MAP_LEASE + Duration::from_secs(1) {
                assert_eq!(seven, 0, "a map after the lease ran out");
            }
            to_7 += seven;
        }
        assert!(to_7 >= 25, "{to_7} maps in a 30 s lease at one per second");
    }
    #[test]
    fn a_peer_missing_a_chunk_asks_for_maps_and_requests_it_as_soon_as_a_map_shows_it() {
        let t0 = Instant::now();
        let mut p = PeerCore::new(PeerConfig::new(ChannelId::new("live").unwrap_or_else(|e| panic!("{e}"))), t0);
        p.handle(t0, Input::FromEdge(welcome(1)));
        p.handle(t0, Input::LinkAccepted { link: LinkId::In(7), peer: None });
        p.handle(t0, Input::FromEdge(FromEdge::Introduce { peer: 3 }));
        p.handle(t0, Input::FromPeer(LinkId::In(7), hello(3)));
        for seq in (0..100).filter(|&s| s != 60) {
            p.handle(t0, Input::FromEdge(FromEdge::Chunk(chunk(seq))));
        }
        // Playback reaches the hole's repair window: the neighbour is asked for its map, once.
        let t1 = t0 + Duration::from_secs(1);
        p.handle_timeout(t1);
        assert_eq!(sent_on(&mut p, LinkId::In(7)), [Output::Send { link: LinkId::In(7), msg: PeerLink::WantMaps }]);
        p.handle_timeout(t1 + Duration::from_millis(200));
        assert_eq!(sent_on(&mut p, LinkId::In(7)), [], "asked again before half a lease");
        // Its map shows the chunk: the request goes at once, not at the next tick.
        let t2 = t1 + Duration::from_millis(250);
        let bits = buffer_map(0, 256, 0..120);
        p.handle(t2, Input::FromPeer(LinkId::In(7), PeerLink::BufferMap { first_seq: 0, bits }));
        assert_eq!(
            sent_on(&mut p, LinkId::In(7)),
            [Output::Send { link: LinkId::In(7), msg: PeerLink::Request { seq: 60 } }]
        );
    }
}
