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
use std::time::Duration;

// std's `Instant` on native targets; `performance.now()` in a browser, where std's panics.
use web_time::Instant;

use proto::peer::{
    CLIENT_PROTOCOL_VERSION, FeedTo, FromEdge, Join, NatClass, PeerId, PeerLink, PeerReport, ToEdge, Trouble,
};
use proto::{ChannelVerifier, Chunk, DetMap, SubstreamId, TokenBucket};

use crate::buffer::{PlayBuffer, PlayStats};
use crate::burst::BurstWatch;
use crate::repair::{Repair, RepairStats, buffer_map};

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
    /// The wall clock at `now`, Unix ms: glass-to-glass latency is wall clock at playback minus
    /// the chunk's ingest time. The driver sends it at start and now and then (the newest counts).
    Clock {
        unix_ms: u64,
    },
    /// What the NAT tests against the edge's STUN server found (the driver runs them after the
    /// welcome names the server): the edge hears it now, and every later join carries it.
    Nat {
        class: NatClass,
        mapped: Option<SocketAddr>,
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
    /// Playback ran dry waiting for chunk `seq`; `feed`: who was feeding its substream then
    /// (for the log: a stall under an edge feed and one under a parent have different causes).
    Stalled {
        seq: Option<u64>,
        feed: Option<FeedTo>,
    },
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

/// One substream as this peer receives it.
#[derive(Debug, Clone)]
struct Substream {
    feed: FeedTo,
    /// Since when `feed` has fed it.
    since: Instant,
    /// When the current parent was last reported late: again after [`LATE_AGAIN`] while it
    /// stays late (a report the edge found stale, or one lost with a connection, must not leave
    /// the substream with a parent that sends nothing for good).
    late_reported: Option<Instant>,
    /// Whether the current parent has sent anything on it.
    parent_sent: bool,
    /// Media time of the newest chunk received on it.
    last_rx_ts: u64,
}

impl Substream {
    fn new(feed: FeedTo, now: Instant) -> Self {
        Self { feed, since: now, late_reported: None, parent_sent: false, last_rx_ts: 0 }
    }
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

/// How long (media time, 90 kHz) live chunks to children may wait behind a child's catch-up.
const LIVE_SLACK_90K: u64 = 300 * 90;

/// A parent still late this long after it was reported is reported again.
const LATE_AGAIN: Duration = Duration::from_secs(4);

pub struct PeerCore {
    cfg: PeerConfig,
    phase: Phase,
    buffer: PlayBuffer,
    /// Per substream: who feeds it and how that is going.
    substreams: Vec<Substream>,
    newest_ts: u64,
    /// When `newest_ts` last advanced: how far live has moved on since, when nothing arrives.
    newest_at: Instant,
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
    /// The wall clock at an instant ([`Input::Clock`]).
    wall: Option<(Instant, u64)>,
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
            substreams: Vec::new(),
            newest_ts: 0,
            newest_at: now,
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
            wall: None,
            burst: BurstWatch::new(now),
            repair: Repair::new(cfg.repair.clone()),
            mesh: DetMap::default(),
            repair_budget: DetMap::default(),
            next_map: now,
            map_wanted: DetMap::default(),
            maps_asked: None,
            stats: PeerStats { nat: cfg.nat, ..Default::default() },
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

    /// After [`Event::BroadcastEnded`]: everything up to the broadcast's last chunk was played
    /// (or skipped), so the player can go without cutting the end off.
    pub fn broadcast_played_out(&self) -> bool {
        match self.broadcast_end {
            None => false,
            Some(None) => true,
            Some(Some(last)) => self.buffer.next_seq().is_some_and(|n| n > last),
        }
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
        self.substreams.clear();
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
            nat: self.stats.nat,
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
            Input::Clock { unix_ms } => {
                self.wall = Some((now, unix_ms));
                return;
            }
            Input::Nat { class, mapped } => {
                self.stats.nat = class;
                self.stats.stun_addr = mapped;
                if matches!(self.phase, Phase::Joined { .. }) {
                    self.out.push_back(Output::ToEdge(ToEdge::Nat { class, mapped }));
                }
                return;
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
            Input::Leave | Input::Detach | Input::Rejoin { .. } | Input::Clock { .. } | Input::Nat { .. } => {}
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
        if let Some(sub) = self.substreams.get_mut(s) {
            sub.last_rx_ts = sub.last_rx_ts.max(ts);
        }
        if ts > self.newest_ts {
            self.newest_ts = ts;
            self.newest_at = self.last_now;
        }
        let seq = c.seq();
        self.repair.got(seq);
        let ingest_ms = c.header.ingest_ms;
        if !self.buffer.insert(c.clone()) {
            return;
        }
        // Every substream counts, the slowest too; the start burst (old by design) does not.
        if self.stats.startup.is_some()
            && let Some(wall) = self.wall_at(self.last_now)
        {
            self.stats.feed_delay.record(wall.saturating_sub(ingest_ms));
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

    /// The wall clock (Unix ms) at `now`, once the driver gave it.
    fn wall_at(&self, now: Instant) -> Option<u64> {
        self.wall.map(|(at, ms)| ms + now.saturating_duration_since(at).as_millis() as u64)
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
        let wall_now = self.wall_at(now);
        for c in due {
            if let Some(wall) = wall_now {
                let latency = wall.saturating_sub(c.header.ingest_ms);
                self.stats.latency.record(latency);
                self.stats.latency_ms = Some(latency);
            }
            self.out.push_back(Output::Play(c));
        }
        if self.buffer.stats().stalls > stalls_before {
            let seq = self.buffer.next_seq();
            let feed =
                seq.and_then(|s| self.substreams.get(usize::from(SubstreamId::of(s, self.k()).0))).map(|s| s.feed);
            self.out.push_back(Output::Event(Event::Stalled { seq, feed }));
        }
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
mod tests;

mod config;
mod link_id;
mod links;
mod verify;

#[cfg(feature = "faults")]
pub use config::Faults;
pub use config::PeerConfig;
pub use link_id::LinkId;
pub use report::{PeerStats, Timeline};

mod edge;
mod feeds;
mod mesh;
mod report;
mod uplink;
