//! The MC's tokio driver: SN control links (challenge, registration, heartbeats, membership and
//! config pushes, acks), the death sweeper, the topology file watcher and hot reload. The
//! decisions live in [`crate::registry`] and [`crate::store`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use proto::config::Topology;
use proto::mc::{self, Alive, Challenge, McMessage, Members, Refused, SpaceList, Welcome};
use proto::{NodeId, NodeKey, WireMessage};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::metrics::McMetrics;
use crate::registry::{Change, Input as RegistryIn, Output as RegistryOut, Registry};
use crate::reports::{ReportError, ReportStore};
use crate::settings::McSettings;
use crate::store::ConfigStore;

const VERSION_KEY: &str = "config_version";

/// How long a new connection has to register.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
enum Notice {
    Members(Members),
    /// A new config version is out.
    Config,
    /// This SN was declared dead: close its link.
    Dead(NodeId),
    /// An operator drained this edge (true) or ended its drain.
    Drain(NodeId, bool),
}

pub(crate) struct State {
    pub registry: Registry,
    pub noc: crate::noc::Noc,
    /// Edges an operator drained (for as long as this MC runs).
    pub drained: std::collections::BTreeSet<NodeId>,
    /// Channels an operator took offline: left out of every SN's config until put back.
    pub offline: std::collections::BTreeSet<String>,
    /// The file as it was last accepted; the store holds it minus the offline channels.
    raw: Arc<Topology>,
    pub store: ConfigStore,
    pub last_reload_error: Option<String>,
    stamp: Option<u64>,
}

pub(crate) struct Shared {
    pub settings: McSettings,
    pub reports: Arc<ReportStore>,
    key: NodeKey,
    /// The key's public half: the issuer of viewer tokens.
    public_hex: String,
    state: Mutex<State>,
    notices: broadcast::Sender<Notice>,
    /// The NOC overview, renewed every 2 s (dashboards' live updates).
    pub overview: tokio::sync::watch::Sender<crate::noc::Overview>,
    pub metrics: McMetrics,
    sessions: AtomicU64,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// When a refusal was last logged, and the refusals since: a flood of strangers must not
    /// flood the log.
    refusals: Mutex<(Option<Instant>, u64)>,
}

impl Shared {
    /// Counts a refused SN link and logs it, at most once per 10 s with the count since.
    fn refusal_log(&self, from: SocketAddr, label: &'static str, reason: String) {
        self.metrics.refused.with_label_values(&[label]).inc();
        let mut r = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        r.1 += 1;
        let now = Instant::now();
        if r.0.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
            warn!(%from, %reason, refused = r.1, "SN refused (count since the last such line)");
            *r = (Some(now), 0);
        }
    }

    pub fn public_hex(&self) -> &str {
        &self.public_hex
    }

    pub fn issue_token(
        &self,
        channel: &proto::ChannelId,
        client: &str,
        expires: u64,
    ) -> Result<String, proto::token::TokenError> {
        proto::token::issue(&self.key, channel, client, expires)
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Carries out what the registry decided after an input: membership changes go to every SN
    /// link, deaths are logged and counted. Returns the connections found stale (they close).
    fn carry_out(&self, state: &mut State) -> Vec<(NodeId, u64)> {
        let mut stale = Vec::new();
        while let Some(out) = state.registry.poll_output() {
            match out {
                RegistryOut::Changed { change, version } => {
                    if let Change::Left(id) = &change {
                        state.noc.forget(id);
                    }
                    let _ = self.notices.send(Notice::Members(change.message(version)));
                    self.metrics.membership(state, &change);
                }
                RegistryOut::Silent(id) => {
                    warn!(node = %id, "SN silent for three heartbeats: marked dead");
                    self.metrics.deaths.inc();
                    let _ = self.notices.send(Notice::Dead(id));
                }
                RegistryOut::Stale { id, session } => stale.push((id, session)),
                RegistryOut::Restamped => {
                    let _ = self.notices.send(Notice::Members(state.registry.full()));
                }
            }
        }
        stale
    }
}

#[derive(Debug, thiserror::Error)]
pub enum McError {
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Topology(#[from] proto::config::ConfigError),
    #[error("MC key: {0}")]
    Key(#[from] proto::SignatureError),
    #[error(transparent)]
    Reports(#[from] ReportError),
}

/// A running management center.
#[derive(Clone)]
pub struct McServer {
    pub(crate) shared: Arc<Shared>,
    pub control_addr: SocketAddr,
    pub http_addr: SocketAddr,
}

impl McServer {
    /// Loads the topology, binds both listeners and starts serving.
    pub async fn start(settings: McSettings) -> Result<McServer, McError> {
        let key = NodeKey::from_hex_seed(&settings.key)?;
        let mut topology = Topology::load(&settings.topology)?;
        crate::tokens::stamp_token_keys(&mut topology, &key.public_hex());
        let bind = |what, addr| async move {
            TcpListener::bind(addr).await.map_err(|source| McError::Bind { what, addr, source })
        };
        let control = bind("SN control links", settings.control_listen).await?;
        let http = bind("the MC's HTTP API", settings.http_listen).await?;
        let control_addr = control.local_addr().unwrap_or(settings.control_listen);
        let http_addr = http.local_addr().unwrap_or(settings.http_listen);
        let stamp = file_stamp(&settings.topology);
        let reports = Arc::new(ReportStore::open(&settings.db)?);
        // Versions never go back across restarts: SNs compare them with what they hold.
        let first = reports.meta(VERSION_KEY)?.map_or(1, |v| v + 1);
        reports.set_meta(VERSION_KEY, first)?;
        let state = State {
            registry: Registry::new(settings.heartbeat()),
            noc: crate::noc::Noc::default(),
            drained: Default::default(),
            offline: Default::default(),
            raw: Arc::new(topology.clone()),
            store: ConfigStore::starting_at(first, topology),
            last_reload_error: None,
            stamp,
        };
        let metrics = McMetrics::new();
        metrics.refresh(&state);
        let shared = Arc::new(Shared {
            settings,
            reports,
            public_hex: key.public_hex(),
            key,
            state: Mutex::new(state),
            notices: broadcast::channel(1024).0,
            overview: tokio::sync::watch::channel(crate::noc::Overview::default()).0,
            metrics,
            sessions: AtomicU64::new(0),
            refusals: Mutex::new((None, 0)),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let mc = McServer { shared: shared.clone(), control_addr, http_addr };
        shared.tasks.spawn(accept(shared.clone(), control));
        shared.tasks.spawn(sweeper(shared.clone()));
        shared.tasks.spawn(watcher(shared.clone()));
        shared.tasks.spawn(noc_recorder(shared.clone()));
        shared.tasks.spawn(crate::http::serve(mc.clone(), http));
        info!(control = %control_addr, http = %http_addr, public_key = %shared.key.public_hex(), "management center running");
        Ok(mc)
    }

    pub fn public_key(&self) -> String {
        self.shared.key.public_hex()
    }

    pub fn config_version(&self) -> u64 {
        self.shared.state().store.version()
    }

    /// Re-reads the topology file. A bad file is refused with the reason, and the running
    /// config stays; an unchanged one keeps its version.
    pub fn reload(&self) -> Result<u64, String> {
        reload(&self.shared)
    }

    /// Drains edge `id` (the GSLB stops sending it clients, it sends its clients to siblings)
    /// or ends the drain.
    pub fn set_drained(&self, id: &str, on: bool) -> Result<(), String> {
        let mut st = self.shared.state();
        let node = st
            .raw
            .nodes
            .iter()
            .find(|n| n.id.as_str() == id && n.role == proto::config::Role::Edge)
            .map(|n| n.id.clone());
        let Some(node) = node else { return Err(format!("no edge `{id}` in the topology")) };
        let changed = if on { st.drained.insert(node.clone()) } else { st.drained.remove(&node) };
        if changed {
            info!(edge = %node, on, "drain set by an operator");
            let _ = self.shared.notices.send(Notice::Drain(node, on));
        }
        Ok(())
    }

    /// Takes channel `id` offline (left out of every SN's config: Tier 0 stops its source,
    /// edges stop serving it) or back online. Returns the config version now running.
    pub fn set_offline(&self, id: &str, offline: bool) -> Result<u64, String> {
        let mut st = self.shared.state();
        if !st.raw.channels.iter().any(|c| c.id.as_str() == id) {
            return Err(format!("no channel `{id}` in the topology"));
        }
        if offline {
            st.offline.insert(id.to_string());
        } else {
            st.offline.remove(id);
        }
        info!(channel = id, offline, "channel state set by an operator");
        Ok(apply(&self.shared, &mut st))
    }

    /// SNs registered now, by id.
    pub fn members(&self) -> Vec<NodeId> {
        self.shared.state().registry.members().map(|m| m.id.clone()).collect()
    }

    /// Config version each registered SN has acknowledged.
    pub fn acked(&self) -> Vec<(NodeId, Option<u64>)> {
        let st = self.shared.state();
        st.registry.members().map(|m| (m.id.clone(), st.store.acked(&m.id))).collect()
    }

    pub(crate) fn shared_cancel(&self) -> CancellationToken {
        self.shared.cancel.clone()
    }

    pub fn shutdown(&self) {
        self.shared.cancel.cancel();
        self.shared.tasks.close();
    }

    pub async fn stopped(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.shared.tasks.wait()).await.is_ok()
    }
}

/// What the watcher compares: a hash of the contents. Modification times are too coarse (two
/// saves within one kernel tick share one) and an edit may keep the length.
fn file_stamp(path: &std::path::Path) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let bytes = std::fs::read(path).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

fn reload(shared: &Shared) -> Result<u64, String> {
    let path = &shared.settings.topology;
    let parsed = Topology::load(path);
    let mut st = shared.state();
    st.stamp = file_stamp(path);
    match parsed {
        Err(e) => {
            let msg = e.to_string();
            warn!(error = %msg, version = st.store.version(), "config rejected; the running config stays");
            shared.metrics.reloads.with_label_values(&["rejected"]).inc();
            st.last_reload_error = Some(msg.clone());
            Err(msg)
        }
        Ok(mut t) => {
            crate::tokens::stamp_token_keys(&mut t, &shared.public_hex);
            st.last_reload_error = None;
            st.raw = Arc::new(t);
            let before = st.store.version();
            let v = apply(shared, &mut st);
            if v != before {
                shared.metrics.reloads.with_label_values(&["applied"]).inc();
            }
            Ok(v)
        }
    }
}

/// Makes the accepted file minus the offline channels the running config, pushing it if it
/// changed; returns the running version.
fn apply(shared: &Shared, st: &mut State) -> u64 {
    let mut t = (*st.raw).clone();
    t.channels.retain(|c| !st.offline.contains(c.id.as_str()));
    if *st.store.topology() == t {
        return st.store.version();
    }
    let v = st.store.replace(t);
    if let Err(e) = shared.reports.set_meta(VERSION_KEY, v) {
        warn!(error = %e, "cannot record the config version; after a restart SNs get snapshots");
    }
    shared.metrics.refresh(st);
    info!(version = v, "config changed; pushing to the SNs");
    let _ = shared.notices.send(Notice::Config);
    let topo = st.store.topology();
    let upstreams = st.registry.members().map(|m| (m.id.clone(), upstream_of(&topo, &m.id))).collect();
    st.registry.handle(Instant::now(), RegistryIn::Upstreams(upstreams));
    shared.carry_out(st);
    v
}

/// The nodes `id` may subscribe to (parents and same-tier peers), as a member's `upstream`.
fn upstream_of(topo: &Topology, id: &proto::NodeId) -> SpaceList<NodeId> {
    topo.node(id).map(|n| n.parents.iter().chain(&n.peers).cloned().collect()).unwrap_or_default()
}

async fn watcher(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(shared.settings.watch_ms.max(10)));
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tick.tick() => {
                let now = file_stamp(&shared.settings.topology);
                if now.is_some() && now != shared.state().stamp {
                    let _ = reload(&shared);
                }
            }
        }
    }
}

/// Every 2 s: a point of the NOC's history, and news for open dashboards.
async fn noc_recorder(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(crate::noc::EVERY);
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tick.tick() => {
                let at_ms = unix_now_ms();
                let o = shared.state().noc.record(Instant::now(), at_ms);
                shared.overview.send_replace(o);
            }
        }
    }
}

/// Wakes when the registry's most silent member would die (and at least once a heartbeat
/// interval, for members registered meanwhile) and lets the registry sweep.
async fn sweeper(shared: Arc<Shared>) {
    loop {
        let at_latest = Instant::now() + shared.settings.heartbeat();
        let wake = shared.state().registry.poll_timeout().map_or(at_latest, |t| t.min(at_latest));
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep_until(wake.into()) => {
                let mut st = shared.state();
                st.registry.handle_timeout(Instant::now());
                shared.carry_out(&mut st);
            }
        }
    }
}

async fn accept(shared: Arc<Shared>, listener: TcpListener) {
    let tls = match livesky_net::mc_tls::acceptor(&shared.key) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot set up TLS for SN control links; none will be served");
            return;
        }
    };
    let limits = &shared.settings.limits;
    let slots = livesky_net::limits::ConnLimiter::new("control", limits.http_max_connections, limits.http_max_per_ip)
        .with_metrics(shared.metrics.conns.clone());
    while let Some((stream, from, permit)) = livesky_net::limits::accept_capped(&listener, &slots, &shared.cancel).await
    {
        let Ok(permit) = permit else { continue };
        let _ = stream.set_nodelay(true);
        livesky_net::limits::keepalive(&stream);
        let (shared2, tls) = (shared.clone(), tls.clone());
        shared.tasks.spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(REGISTER_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(stream)) => serve_sn(shared2, Box::new(stream), from).await,
                Ok(Err(e)) => shared2.refusal_log(from, "tls", format!("TLS handshake failed: {e}")),
                Err(_) => shared2.refusal_log(from, "tls", "no TLS handshake in time".into()),
            }
        });
    }
}

/// Why `alive` is refused, if it is.
fn check(shared: &Shared, alive: &Alive, challenge: &str) -> Result<(), (&'static str, String)> {
    let id = &alive.member.id;
    let Some(public) = shared.settings.sn_keys.get(id) else {
        return Err(("unknown_node", format!("no key is configured for SN `{id}` (mc.sn_keys)")));
    };
    if proto::verify_node_signature(public, &mc::alive_proof(id, challenge), &alive.signature).is_err() {
        return Err(("bad_signature", format!("SN `{id}` did not prove it holds its key")));
    }
    if shared.state().store.topology().node(id).is_none() {
        return Err(("unknown_node", format!("SN `{id}` is not in the topology")));
    }
    Ok(())
}

type Link = livesky_net::mclink::McLink;

async fn send(link: &mut Link, msg: McMessage) -> bool {
    match livesky_net::mclink::send(link, msg).await {
        Ok(()) => true,
        Err(e) => {
            debug!(error = %e, "closing an SN control link");
            false
        }
    }
}

async fn serve_sn(shared: Arc<Shared>, stream: Box<dyn livesky_net::mclink::LinkIo>, from: SocketAddr) {
    // Small frames until the SN has proved who it is.
    let mut link = Framed::new(stream, mc::McCodec::with_decode_limit(mc::MC_UNREGISTERED_FRAME));
    let Some(challenge) = mc::nonce() else {
        warn!(%from, "no randomness for a challenge; closing the link");
        return;
    };
    if !send(&mut link, McMessage::Challenge(Challenge { nonce: challenge.clone() })).await {
        return;
    }
    let alive = match tokio::time::timeout(REGISTER_TIMEOUT, link.next()).await {
        Ok(Some(Ok(McMessage::Alive(a)))) => a,
        Ok(Some(Ok(other))) => {
            return refuse(&shared, &mut link, from, "protocol", format!("expected alive, got {}", other.kind())).await;
        }
        Ok(Some(Err(e))) => return refuse(&shared, &mut link, from, "protocol", e.to_string()).await,
        Ok(None) | Err(_) => return,
    };
    if let Err((label, reason)) = check(&shared, &alive, &challenge) {
        return refuse(&shared, &mut link, from, label, reason).await;
    }
    let id = alive.member.id.clone();
    let session = shared.sessions.fetch_add(1, Ordering::Relaxed) + 1;
    // Subscribed before registering: no change after our snapshot is missed.
    let mut notices = shared.notices.subscribe();
    let (members, first_doc) = {
        let mut st = shared.state();
        // What the other SNs learn of it comes from the MC's own books, not from what it said.
        let mut member = alive.member.clone();
        member.key = shared.settings.sn_keys.get(&id).cloned();
        member.upstream = upstream_of(&st.store.topology(), &id);
        st.registry.handle(Instant::now(), RegistryIn::Alive { member, session });
        shared.carry_out(&mut st);
        (st.registry.full(), st.store.doc_for(&id, alive.have_version))
    };
    shared.metrics.registrations.inc();
    link.codec_mut().set_decode_limit(mc::MC_MAX_FRAME);
    info!(node = %id, %from, have = alive.have_version, "SN registered");
    let welcome = Welcome {
        heartbeat_ms: shared.settings.heartbeat_ms,
        signature: shared.key.sign_hex(&mc::welcome_proof(&id, &alive.nonce)),
    };
    let mut sent = alive.have_version;
    let drained = shared.state().drained.contains(&id);
    let mut ok =
        send(&mut link, McMessage::Welcome(welcome)).await && send(&mut link, McMessage::Members(members)).await;
    if drained {
        ok = ok && send(&mut link, McMessage::Drain(mc::Drain { on: true })).await;
    }
    if let Some(doc) = first_doc {
        sent = doc.version;
        ok = ok && push(&shared, &mut link, doc).await;
    }
    let silence = shared.settings.heartbeat() * crate::registry::MISSED_HEARTBEATS;
    while ok {
        ok = tokio::select! {
            _ = shared.cancel.cancelled() => false,
            msg = tokio::time::timeout(silence, link.next()) => match msg {
                Ok(Some(Ok(m))) => on_message(&shared, &mut link, &id, session, &mut sent, m).await,
                Ok(Some(Err(e))) => {
                    warn!(node = %id, error = %e, "bad frame on an SN control link; closing it");
                    false
                }
                Ok(None) => false,
                Err(_) => {
                    warn!(node = %id, "SN control link silent for three heartbeats; closing it");
                    false
                }
            },
            n = notices.recv() => match n {
                Ok(Notice::Members(m)) => send(&mut link, McMessage::Members(m)).await,
                Ok(Notice::Config) => resend(&shared, &mut link, &id, &mut sent).await,
                Ok(Notice::Dead(dead)) => dead != id,
                Ok(Notice::Drain(edge, on)) if edge == id => send(&mut link, McMessage::Drain(mc::Drain { on })).await,
                Ok(Notice::Drain(..)) => true,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let full = shared.state().registry.full();
                    send(&mut link, McMessage::Members(full)).await && resend(&shared, &mut link, &id, &mut sent).await
                }
                Err(broadcast::error::RecvError::Closed) => false,
            },
        };
    }
    let mut st = shared.state();
    let before = st.registry.version();
    st.registry.handle(Instant::now(), RegistryIn::Disconnected { id: id.clone(), session });
    if st.registry.version() != before {
        info!(node = %id, "SN left");
    }
    shared.carry_out(&mut st);
}

async fn refuse(shared: &Shared, link: &mut Link, from: SocketAddr, label: &'static str, reason: String) {
    shared.refusal_log(from, label, reason.clone());
    let _ = send(link, McMessage::Refused(Refused { reason })).await;
}

async fn push(shared: &Shared, link: &mut Link, doc: mc::ConfigXml) -> bool {
    let kind = if doc.base.is_some() { "update" } else { "snapshot" };
    shared.metrics.pushes.with_label_values(&[kind]).inc();
    let bytes = doc.to_xml().len() as u64;
    shared.metrics.push_bytes.with_label_values(&[kind]).inc_by(bytes);
    send(link, McMessage::Config(Box::new(doc))).await
}

/// Sends what the SN lacks since the version last sent to it (in order on one link, so an
/// update on top of an unacknowledged one is fine; if it fails there, the SN asks to resync).
async fn resend(shared: &Shared, link: &mut Link, id: &NodeId, sent: &mut u64) -> bool {
    let view = shared.state().store.view(*sent);
    match view.doc_for(id, *sent) {
        Some(doc) => {
            *sent = doc.version;
            push(shared, link, doc).await
        }
        None => true,
    }
}

async fn on_message(shared: &Shared, link: &mut Link, id: &NodeId, session: u64, sent: &mut u64, m: McMessage) -> bool {
    match m {
        McMessage::Heartbeat(mut h) => {
            // The running totals go to the NOC only: the registry keeps the rest, and would
            // otherwise copy the rows on every heartbeat (they change every time).
            let live = std::mem::take(&mut h.live);
            let now = Instant::now();
            let mut st = shared.state();
            st.registry.handle(now, RegistryIn::Heartbeat { id: id.clone(), session, load: h });
            let current = shared.carry_out(&mut st).is_empty();
            if current && !live.is_empty() {
                st.noc.sample(now, id, live);
            }
            current
        }
        McMessage::Ack(a) => {
            shared.state().store.ack(id, a.version);
            shared.metrics.sn_config_version.with_label_values(&[id.as_str()]).set(a.version as i64);
            debug!(node = %id, version = a.version, "config acknowledged");
            true
        }
        McMessage::Resync(r) => {
            warn!(node = %id, have = r.have_version, reason = %r.reason, "SN asks for a snapshot");
            let doc = shared.state().store.snapshot_for(id);
            match doc {
                Some(doc) => {
                    *sent = doc.version;
                    push(shared, link, doc).await
                }
                None => false,
            }
        }
        McMessage::Report(r) => {
            if r.node != *id {
                warn!(node = %id, claimed = %r.node, "report for another SN; closing the link");
                return false;
            }
            let (store, node) = (shared.reports.clone(), id.clone());
            let report_id = r.id.clone();
            let delays: Vec<u32> = r.rows.iter().flat_map(|row| row.startup_ms.iter().copied()).collect();
            shared.state().noc.startups(Instant::now(), delays);
            let stored = tokio::task::spawn_blocking(move || store.store(&node, &r)).await;
            match stored {
                Ok(Ok(added)) => {
                    shared.metrics.report_rows.inc_by(added as u64);
                    send(link, McMessage::ReportAck(mc::ReportAck { id: report_id })).await
                }
                // Not acknowledged: the SN keeps it and sends it again on its next link.
                Ok(Err(e)) => {
                    warn!(node = %id, error = %e, "cannot store a report; closing the link so it is resent");
                    false
                }
                Err(e) => {
                    warn!(node = %id, error = %e, "report store task failed");
                    false
                }
            }
        }
        McMessage::Lookup(l) => {
            let reply = {
                let st = shared.state();
                let members = st.registry.get(&l.id).cloned().into_iter().collect();
                Members { version: st.registry.version(), full: false, members, gone: Vec::new() }
            };
            send(link, McMessage::Members(reply)).await
        }
        other => {
            warn!(node = %id, kind = other.kind(), "unexpected message from an SN; closing its link");
            false
        }
    }
}

pub(crate) use livesky_net::clock::{unix_ms as unix_now_ms, unix_s as unix_now_s};
