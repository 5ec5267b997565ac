//! The edge's client service for one channel (sans-IO): tracker, seed and admission controller
//! behind the client protocol. It admits joining LiveSky clients through [`Admission`], turns the
//! tracker's feed changes into [`FromEdge::Feed`] messages (with the parent's address), tells the
//! driver which substreams the edge itself must push to each client (push peers: all; refocused
//! peers: the orphaned ones), re-parents on trouble reports, relays WebRTC signalling between its
//! clients, limits joins per source address, and ages out clients that went silent.
//!
//! Like every core of the project it has four doors, called in this order by whoever drives it
//! (the edge's tokio task, the simulator, the tests): [`Service::handle`] for each input as it
//! happens (client messages and what the edge learns: drains, new admission parameters, full
//! siblings, the channel's key and source state); [`Service::handle_timeout`] when
//! [`Service::poll_timeout`] says; after either, [`Service::poll_output`] until it is empty.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use proto::nat::NatClass;
use proto::peer::{CLIENT_PROTOCOL_VERSION, FeedTo, FromEdge, Join, PeerId, ToEdge, Trouble, Welcome};
use proto::{ChannelId, DetMap, SourceStatus, TokenBucket};

use crate::admission::{Admission, AdmissionConfig, Admit, Snapshot};
use crate::tree::{Feed, Reach};

/// One LiveSky client connection to the edge, numbered by the driver (never reused while the
/// edge runs). Not a peer id: a client gets its [`PeerId`] when it is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn{}", self.0)
    }
}

impl From<u64> for ConnId {
    fn from(n: u64) -> Self {
        ConnId(n)
    }
}

impl From<u32> for ConnId {
    fn from(n: u32) -> Self {
        ConnId(u64::from(n))
    }
}

impl From<usize> for ConnId {
    fn from(n: usize) -> Self {
        ConnId(n as u64)
    }
}

#[derive(Debug, Clone)]
pub enum Input {
    /// A client connection whose first message was this Join.
    Joined {
        conn: ConnId,
        from: SocketAddr,
        join: Join,
    },
    /// A client that joined from a web page (over the edge's WebSocket): a leaf until it proves
    /// steady upload ([`BrowserProof`]).
    BrowserJoined {
        conn: ConnId,
        from: SocketAddr,
        join: Join,
    },
    Message {
        conn: ConnId,
        msg: ToEdge,
    },
    Disconnected {
        conn: ConnId,
    },
    /// An operator drained the edge (every client goes to a sibling), or ended the drain.
    Drain(bool),
    /// New admission parameters and the channel's latency target (the MC pushed them). Clients
    /// joining from now on get the new target; playing ones keep theirs until they rejoin.
    Reconfigure {
        admission: AdmissionConfig,
        target_latency_ms: Option<u32>,
    },
    /// What the control plane last said of a sibling: a full one gets no redirects.
    SiblingFull {
        sibling: String,
        full: bool,
    },
    /// The channel's key as the edge now holds it (Tier 0 re-keyed).
    ChannelKey(Option<[u8; 32]>),
    /// The channel's source as the edge's hub sees it, and the last seq it had.
    Source {
        status: SourceStatus,
        last_seq: Option<u64>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Send {
        conn: ConnId,
        msg: FromEdge,
    },
    Close {
        conn: ConnId,
    },
    /// The edge pushes the substreams in `order.mask` to `conn` from now on (the feeder's
    /// [`Order`](crate::feeder::Order) says what goes first).
    Serve {
        conn: ConnId,
        order: crate::feeder::Order,
    },
    /// The period's summary (every `report_every`), for the log and the MC's report.
    Report(Box<PeriodReport>),
    /// No client for `linger`: the driver may stop the service.
    Idle,
}

/// What [`Output::Report`] carries.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodReport {
    pub snapshot: Snapshot,
    pub stats: ServiceStats,
    /// Substreams the edge fed to rescue clients during the period.
    pub refocus: u64,
}

/// How often the service's chores (ageing out, healing trees) run.
const TICK: Duration = Duration::from_secs(1);
/// A client with a substream nobody feeds for this long is sent to a sibling edge: waiting on
/// here it stalls for good (seen in `livesky demo --peers 40`: one peer, minutes). Shorter than
/// a full edge's start burst (a keyframe run and 2 s), so the move happens while it still plays:
/// with 5 s the last joiner of that demo stalled 2.1 s before it moved.
const UNFED_GRACE: Duration = Duration::from_secs(1);
/// A client that edges already passed on this many times stays and waits: two full edges would
/// otherwise bounce it back and forth until its player gives up, and in a district where every
/// edge is short of parents a move only costs (the full-scale `modern` simulation with 3 moves:
/// 16 % of sessions moved three times, a fifth of all starting later than 15 s).
const UNFED_MAX_REDIRECTS: u8 = 2;

struct Client {
    conn: ConnId,
    listen: Option<SocketAddr>,
    mask: u64,
    /// Behind a NAT: the address it reports is not the one the edge sees (§4.6).
    natted: bool,
    /// Its startup delay is counted (clients repeat it in every report).
    startup_counted: bool,
    /// Its latency target when tight ([`Service::tight_target`]): feeds later than 3/4 of it
    /// make the edge feed it.
    target_ms: Option<u32>,
    /// What a ban holds on to (see [`bans::identity`]), and its key for counting reporters.
    identity: String,
    identity_key: u64,
    /// The client's last report (or its join), on the edge's clock: bounds the next one.
    last_report: Instant,
    /// It reported before: only the first report may hold the start burst.
    reported: bool,
    /// The client-minute its reports are filling for Q2: reported ms so far, and a stall in it.
    minute_ms: u32,
    minute_stalled: bool,
    /// Bytes per second it received from peers over its latest report.
    p2p_rate: u64,
    /// The first chunk it misses of a substream whose parent failed (its `ParentTrouble`).
    backfill_from: Option<u64>,
    /// Since when some substream of it has had no feed (no parent and no edge room).
    unfed_since: Option<Instant>,
    /// How many edges sent it on before it joined here.
    redirects: u8,
    /// Signalling the client may send (offers and answers, with their ICE candidates inside).
    signals: TokenBucket,
    /// A web page's standing as a possible parent (`None`: a native player).
    browser: Option<BrowserProof>,
    /// It joined from a web page.
    page: bool,
    /// Where its connection comes from, its NAT's class, and its address as STUN saw it.
    from: SocketAddr,
    nat: NatClass,
    stun_addr: Option<SocketAddr>,
}

/// A page in a background tab, on a phone or a metered link must not be a parent a tree depends
/// on: a browser joins as a leaf (no upload slots; it still serves repairs to its mesh), and gets
/// the slots its upload offers only after [`BROWSER_PROOF_REPORTS`] reports in a row that came on
/// time (a throttled tab's timers make them late), without a stall, and with any upload it
/// claimed confirmed by the peers it served (accounting did not flag it); one report that is not
/// makes it a leaf again. A leaf is rarely asked
/// to upload, so steadiness is the proof: requiring uploaded bytes would keep most pages leaves.
#[derive(Debug, Clone, Copy)]
struct BrowserProof {
    offered_kbps: u32,
    steady: u8,
    /// It has the slots its upload offers (until a report is not steady).
    promoted: bool,
}

/// Steady reports in a row that make a page a possible parent (a minute at the default interval).
const BROWSER_PROOF_REPORTS: u8 = 6;

/// Largest signalling payload relayed (an SDP offer with candidates is a few kB).
pub const MAX_SIGNAL_BYTES: usize = 8 * 1024;
/// Signals a client may send per second, and in a burst.
const SIGNALS_PER_SEC: f64 = 50.0;
const SIGNAL_BURST: f64 = 200.0;

/// Bad-chunk reports are set aside this long after a key rotation.
const KEY_GRACE: Duration = Duration::from_secs(15);

/// Startup samples kept between two reports at most (a flash crowd beyond this is sampled).
const MAX_STARTUPS: usize = 10_000;

pub struct Service {
    cfg: ServiceConfig,
    admission: Admission,
    clients: DetMap<PeerId, Client>,
    conns: DetMap<ConnId, Option<PeerId>>,
    join_limits: HashMap<IpAddr, TokenBucket>,
    unreachable: reporters::Reporters,
    silent: reporters::Reporters,
    /// Connected clients per identity (token client id, else address).
    identities: HashMap<String, u32>,
    next_sibling: usize,
    /// Siblings last reported full (stage 4 or at their client limit): no redirects to them.
    full_siblings: std::collections::HashSet<String>,
    out: std::collections::VecDeque<Output>,
    /// When the chores, the period's report and the idle check are next due.
    next_tick: Option<Instant>,
    next_report: Option<Instant>,
    refocus_at_report: u64,
    idle_since: Option<Instant>,
    stats: ServiceStats,
    /// Startup delays (ms) reported since [`Service::take_startups`].
    startups: Vec<u32>,
    last_prune: Option<Instant>,
    /// An operator drains this edge: every client goes to a sibling.
    draining: bool,
    bans: bans::Bans,
    accounting: accounting::Accounting,
    links: links::Links,
    /// When the channel key last changed: bad-chunk reports right after are the rotation's
    /// chunks in flight, not forgeries.
    key_changed: Option<Instant>,
    /// The broadcast ended after this seq (inner None: it never had a chunk); clients are told.
    ended: Option<Option<u64>>,
    /// The newest chunk the edge has of the channel (its driver says, with the source's status).
    source_last_seq: Option<u64>,
}

impl Service {
    pub fn new(cfg: ServiceConfig) -> Self {
        Self {
            bans: bans::Bans::new(cfg.ban_reports, cfg.ban_for),
            accounting: Default::default(),
            links: Default::default(),
            key_changed: None,
            ended: None,
            source_last_seq: None,
            admission: Admission::new(cfg.admission.clone()),
            cfg,
            clients: DetMap::default(),
            conns: DetMap::default(),
            join_limits: HashMap::new(),
            unreachable: Default::default(),
            silent: Default::default(),
            identities: HashMap::new(),
            next_sibling: 0,
            full_siblings: Default::default(),
            out: Default::default(),
            next_tick: None,
            next_report: None,
            refocus_at_report: 0,
            idle_since: None,
            startups: Vec::new(),
            stats: ServiceStats::default(),
            last_prune: None,
            draining: false,
        }
    }

    pub fn channel(&self) -> &ChannelId {
        &self.cfg.channel
    }

    pub fn snapshot(&self) -> Snapshot {
        self.admission.snapshot()
    }

    pub fn stats(&self) -> ServiceStats {
        self.stats
    }

    /// Startup delays (ms) clients reported since the last call, one per client.
    pub fn take_startups(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.startups)
    }

    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// The next thing to carry out, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Service::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let idle_end = self.idle_since.map(|t| t + self.cfg.linger);
        [self.next_tick, self.next_report, idle_end].into_iter().flatten().min()
    }

    /// The first time the service hears of time, its timers start.
    fn start_clock(&mut self, now: Instant) {
        if self.next_tick.is_none() {
            self.next_tick = Some(now + TICK);
            self.next_report = Some(now + self.cfg.report_every);
            self.idle_since = Some(now);
        }
    }

    pub fn handle(&mut self, now: Instant, input: Input) {
        self.start_clock(now);
        match input {
            Input::Joined { conn, from, join } => self.join(now, conn, from, join, false),
            Input::BrowserJoined { conn, from, join } => self.join(now, conn, from, join, true),
            Input::Message { conn, msg } => {
                let Some(Some(peer)) = self.conns.get(&conn).copied() else {
                    // Anything before a successful join is a protocol error.
                    self.out.push_back(Output::Close { conn });
                    return;
                };
                self.admission.heard(now, peer);
                self.message(now, conn, peer, msg);
            }
            Input::Disconnected { conn } => {
                if let Some(Some(peer)) = self.conns.remove(&conn) {
                    self.vanished(now, peer);
                    self.forget(peer);
                }
            }
            Input::Drain(on) => self.set_draining(on),
            Input::Reconfigure { admission, target_latency_ms } => {
                self.admission.reconfigure(admission);
                self.cfg.target_latency_ms = target_latency_ms;
            }
            Input::SiblingFull { sibling, full } => self.set_sibling_full(&sibling, full),
            Input::ChannelKey(key) => self.set_channel_key(now, key),
            Input::Source { status, last_seq } => self.set_source(status, last_seq),
        }
        self.idle_since = match (self.conns.is_empty(), self.idle_since) {
            (true, None) => Some(now),
            (true, since) => since,
            (false, _) => None,
        };
        self.apply_changes();
    }

    /// Runs what is due: the chores every second, the period's report, the idle check.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.start_clock(now);
        if self.next_tick.is_some_and(|t| t <= now) {
            self.next_tick = Some(now + TICK);
            self.tick(now);
        }
        if let Some(t) = self.next_report.filter(|&t| t <= now) {
            self.next_report = Some(t + self.cfg.report_every);
            let snapshot = self.snapshot();
            let refocus = snapshot.tree.refocus_total - self.refocus_at_report;
            self.refocus_at_report = snapshot.tree.refocus_total;
            self.out.push_back(Output::Report(Box::new(PeriodReport { snapshot, stats: self.stats, refocus })));
        }
        if self.idle_since.is_some_and(|t| t + self.cfg.linger <= now) {
            self.idle_since = None;
            self.out.push_back(Output::Idle);
        }
    }

    /// Once a second or so: age out silent clients, heal trees.
    fn tick(&mut self, now: Instant) {
        for peer in self.admission.overdue(now) {
            let reach = self.clients.get(&peer).map_or_else(Reach::default, |c| Reach::new(c.nat, c.from.ip()));
            self.place_measured(now, peer, reach);
        }
        let gone = self.admission.expiring(now);
        for &peer in &gone {
            // Before they leave the trees: their feeds tell whom to excuse.
            self.vanished(now, peer);
        }
        self.admission.age_out(&gone);
        for peer in gone {
            if let Some(c) = self.drop_client(peer) {
                self.conns.remove(&c.conn);
                self.out.push_back(Output::Close { conn: c.conn });
            }
        }
        if self.last_prune.is_none_or(|t| now.saturating_duration_since(t) > Duration::from_secs(60)) {
            self.last_prune = Some(now);
            let full = self.cfg.join_burst_per_ip;
            self.join_limits.retain(|_, b| b.tokens(now) < full);
            self.bans.prune(now);
        }
        self.apply_changes();
        self.send_on_unfed(now);
    }

    /// Clients some substream of which has had no feed for [`UNFED_GRACE`] go to a sibling, if
    /// there is one; without one they wait for a parent or for room at the edge.
    fn send_on_unfed(&mut self, now: Instant) {
        let mut stuck = Vec::new();
        for (&peer, c) in self.clients.iter_mut() {
            let unfed = self.admission.tracker().feeds(peer).is_some_and(|f| f.contains(&Feed::None));
            c.unfed_since = if unfed { c.unfed_since.or(Some(now)) } else { None };
            if c.redirects < UNFED_MAX_REDIRECTS
                && c.unfed_since.is_some_and(|t| now.saturating_duration_since(t) >= UNFED_GRACE)
            {
                stuck.push((peer, c.conn));
            }
        }
        for (peer, conn) in stuck {
            if !self.send_to_sibling(now, peer, conn) {
                break;
            }
        }
        self.apply_changes();
    }

    /// Sends a joined client to a sibling, as there is no parent for it and no room at this
    /// edge; false when no sibling is left to send it to.
    fn send_to_sibling(&mut self, now: Instant, peer: PeerId, conn: ConnId) -> bool {
        let Some(to) = self.sibling() else { return false };
        self.stats.redirected += 1;
        tracing::info!(channel = %self.cfg.channel, %peer, %to, "no parent and no edge room for a client; sent to a sibling");
        let reason = "no parent and no room at this edge; use a sibling".to_string();
        self.out.push_back(Output::Send { conn, msg: FromEdge::Redirect { to, reason } });
        self.out.push_back(Output::Close { conn });
        self.conns.remove(&conn);
        // Its next report goes to the sibling: what its parents here sent it since its last
        // one is never confirmed to this edge, so they are excused that much.
        self.vanished(now, peer);
        self.forget(peer);
        true
    }

    /// Places a client that was waiting for its NAT test (see [`Admission::measured`]).
    fn place_measured(&mut self, now: Instant, peer: PeerId, reach: Reach) {
        let Some((conn, redirects)) = self.clients.get(&peer).map(|c| (c.conn, c.redirects)) else { return };
        let sibling = redirects == 0 && self.sibling_available();
        match self.admission.measured(peer, reach, sibling) {
            Some(Admit::Redirect) if !self.send_to_sibling(now, peer, conn) => {
                // Not placed here, and no sibling after all: it joins again (its player retries).
                tracing::warn!(channel = %self.cfg.channel, %peer, "no room and no sibling for a measured client; closing");
                self.out.push_back(Output::Close { conn });
                self.conns.remove(&conn);
                self.forget(peer);
            }
            Some(Admit::Push(_) | Admit::P2p(_)) => self.tell_place(peer, conn),
            _ => {}
        }
    }

    /// Tells a client welcomed before it was placed where it went.
    fn tell_place(&mut self, peer: PeerId, conn: ConnId) {
        let tracker = self.admission.tracker();
        let msg =
            FromEdge::Placed { push: tracker.is_push(peer), upload_slots: tracker.slots(peer).map_or(0, |(_, s)| s) };
        self.out.push_back(Output::Send { conn, msg });
    }

    /// Starts or ends a drain. Draining sends every client, present and arriving, to a sibling
    /// (or refuses it when there is none): the edge can then be stopped without a viewer
    /// noticing more than a reconnect.
    fn set_draining(&mut self, on: bool) {
        self.draining = on;
        if !on {
            return;
        }
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.send_away(conn);
        }
    }

    pub fn draining(&self) -> bool {
        self.draining
    }

    fn send_away(&mut self, conn: ConnId) {
        match self.sibling() {
            Some(to) => {
                self.stats.redirected += 1;
                let reason = "edge is draining; use a sibling".to_string();
                self.out.push_back(Output::Send { conn, msg: FromEdge::Redirect { to, reason } });
                self.out.push_back(Output::Close { conn });
            }
            None => self.refuse(conn, "edge is draining and knows no other edge; retry later".into()),
        }
    }

    fn refuse(&mut self, conn: ConnId, reason: String) {
        self.stats.refused_other += 1;
        self.out.push_back(Output::Send { conn, msg: FromEdge::Refused { reason } });
        self.out.push_back(Output::Close { conn });
    }

    /// What the control plane (MC/GSLB, or the simulator standing in for them) last said about a
    /// sibling: a full one gets no redirects until it is reported free again.
    fn set_sibling_full(&mut self, sibling: &str, full: bool) {
        if full {
            // Reported again and again while it stays full: no allocation for a known one.
            if !self.full_siblings.contains(sibling) {
                self.full_siblings.insert(sibling.to_owned());
            }
        } else {
            self.full_siblings.remove(sibling);
        }
    }

    fn sibling_available(&self) -> bool {
        self.cfg.siblings.iter().any(|s| !self.full_siblings.contains(s))
    }

    /// The next sibling not known to be full, round robin.
    fn sibling(&mut self) -> Option<String> {
        let n = self.cfg.siblings.len();
        for _ in 0..n {
            let s = &self.cfg.siblings[self.next_sibling % n];
            self.next_sibling += 1;
            if !self.full_siblings.contains(s) {
                return Some(s.clone());
            }
        }
        None
    }

    /// The channel's key as the edge now holds it (Tier 0 re-keyed by config push): clients
    /// check chunks against it from now on, and new clients get it in their welcome.
    fn set_channel_key(&mut self, now: Instant, key: Option<[u8; 32]>) {
        if key == self.cfg.channel_key {
            return;
        }
        let first = self.cfg.channel_key.is_none();
        self.cfg.channel_key = key;
        let Some(key) = key else { return };
        if !first {
            self.key_changed = Some(now);
            tracing::info!(channel = %self.cfg.channel, "channel key rotated; telling the clients");
        }
        for c in self.clients.values() {
            self.out.push_back(Output::Send { conn: c.conn, msg: FromEdge::ChannelKey { key } });
        }
    }

    /// The channel's source as the edge's hub sees it: when the broadcast ends (its publisher did
    /// not come back), every client is told how far it went, so it plays that much and leaves.
    fn set_source(&mut self, source: SourceStatus, last_seq: Option<u64>) {
        self.source_last_seq = last_seq;
        if source != SourceStatus::Ended {
            self.ended = None;
            return;
        }
        if self.ended.is_some() {
            return;
        }
        self.ended = Some(last_seq);
        tracing::info!(channel = %self.cfg.channel, clients = self.clients.len(), "broadcast ended; telling the clients");
        for c in self.clients.values() {
            self.out.push_back(Output::Send { conn: c.conn, msg: FromEdge::Ended { last_seq } });
        }
    }

    fn ban(&mut self, now: Instant, peer: PeerId) {
        let Some(c) = self.clients.get(&peer) else { return };
        let (conn, identity) = (c.conn, c.identity.clone());
        tracing::warn!(channel = %self.cfg.channel, %peer, %identity, "client banned: its chunks failed the signature check");
        self.bans.ban(identity, now);
        self.stats.bans += 1;
        self.out.push_back(Output::Send {
            conn,
            msg: FromEdge::Refused { reason: "banned: forwarded chunks that failed the signature check".into() },
        });
        self.out.push_back(Output::Close { conn });
        self.conns.remove(&conn);
        self.forget(peer);
    }

    /// Tells `to` that `peer` was sent to it.
    fn introduce(&mut self, peer: PeerId, to: PeerId) {
        if let Some(c) = self.clients.get(&to) {
            self.links.link(peer, to);
            self.out.push_back(Output::Send { conn: c.conn, msg: FromEdge::Introduce { peer } });
        }
    }

    /// A client gone without a last report (its connection dropped, or it fell silent): its
    /// parents are excused what it never confirmed.
    fn vanished(&mut self, now: Instant, peer: PeerId) {
        let mut fed_by: Vec<(PeerId, u64)> = Vec::new();
        for feed in self.admission.tracker().feeds(peer).unwrap_or_default() {
            if let Feed::Peer(p) = *feed {
                match fed_by.iter_mut().find(|(q, _)| *q == p) {
                    Some((_, n)) => *n += 1,
                    None => fed_by.push((p, 1)),
                }
            }
        }
        let sub_rate = u64::from(self.cfg.admission.media_kbps) * 125 / u64::from(self.cfg.admission.substreams.max(1));
        self.accounting.vanished(peer, now, &fed_by, sub_rate);
    }

    fn forget(&mut self, peer: PeerId) {
        self.drop_client(peer);
        self.admission.leave(peer);
    }

    /// Removes a client and every book kept about it (reports against it, its accounts).
    fn drop_client(&mut self, peer: PeerId) -> Option<Client> {
        self.bans.forget(peer);
        self.accounting.forget(peer);
        self.unreachable.forget(peer);
        self.silent.forget(peer);
        self.links.forget(peer);
        let c = self.clients.remove(&peer)?;
        self.stats.natted_clients -= u64::from(c.natted);
        self.stats.nat_classes[nat_index(c.nat)] -= 1;
        self.stats.p2p_bytes_per_sec = self.stats.p2p_bytes_per_sec.saturating_sub(c.p2p_rate);
        if let Some(n) = self.identities.get_mut(&c.identity) {
            *n -= 1;
            if *n == 0 {
                self.identities.remove(&c.identity);
            }
        }
        Some(c)
    }

    /// Tracker changes → Feed messages and new edge masks.
    fn apply_changes(&mut self) {
        let changes = self.admission.drain_changes();
        let mut touched: Vec<PeerId> = Vec::new();
        for ch in changes {
            let Some(conn) = self.clients.get(&ch.client).map(|c| c.conn) else { continue };
            let feed = match ch.feed {
                Feed::None => FeedTo::Nobody,
                Feed::Edge => FeedTo::Edge,
                Feed::Peer(p) => match self.clients.get(&p).and_then(|c| c.listen) {
                    Some(addr) => {
                        self.introduce(ch.client, p);
                        FeedTo::Peer { id: p, addr }
                    }
                    None => FeedTo::Nobody,
                },
            };
            tracing::debug!(channel = %self.cfg.channel, client = %ch.client, substream = ch.substream, ?feed, "feed");
            self.out.push_back(Output::Send { conn, msg: FromEdge::Feed { substream: ch.substream, feed } });
            if !touched.contains(&ch.client) {
                touched.push(ch.client);
            }
        }
        for peer in touched {
            let mask = self.edge_mask(peer);
            let Some(c) = self.clients.get_mut(&peer) else { continue };
            let backfill_from = c.backfill_from.take();
            if c.mask != mask {
                let backfill = mask & !c.mask;
                c.mask = mask;
                let backfill_from = backfill_from.filter(|_| backfill != 0);
                let order = crate::feeder::Order { mask, burst_ms: None, backfill, backfill_from };
                self.out.push_back(Output::Serve { conn: c.conn, order });
            }
        }
    }
}

#[cfg(test)]
mod tests;

mod accounting;
mod bans;
mod config;
mod join;
mod links;
mod messages;
mod reporters;
mod sanitize;
mod stats;
mod views;

pub use config::ServiceConfig;

pub use stats::{ReportTotals, ServiceStats, nat_index};
pub use views::ClientView;
