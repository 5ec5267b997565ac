//! The MC's tokio driver: shared state, the death sweeper, the topology file watcher, hot reload
//! and operator actions; the SN control links are in [`crate::sn_links`]. The decisions live in
//! [`crate::registry`] and [`crate::store`].

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use proto::config::Topology;
use proto::mc::{Members, SpaceList};
use proto::{NodeId, NodeKey};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::metrics::McMetrics;
use crate::registry::{Change, Input as RegistryIn, Output as RegistryOut, Registry};
use crate::reports::{ReportError, ReportStore};
use crate::settings::McSettings;
use crate::store::ConfigStore;

const VERSION_KEY: &str = "config_version";

/// How long a new connection has to register.
pub(crate) const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub(crate) enum Notice {
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
    pub(crate) key: NodeKey,
    /// The key's public half: the issuer of viewer tokens.
    public_hex: String,
    state: Mutex<State>,
    pub(crate) notices: broadcast::Sender<Notice>,
    /// The NOC overview, renewed every 2 s (dashboards' live updates).
    pub overview: tokio::sync::watch::Sender<crate::noc::Overview>,
    pub metrics: McMetrics,
    pub(crate) sessions: AtomicU64,
    pub(crate) cancel: CancellationToken,
    pub(crate) tasks: TaskTracker,
    /// When a refusal was last logged, and the refusals since: a flood of strangers must not
    /// flood the log.
    refusals: Mutex<(Option<Instant>, u64)>,
}

impl Shared {
    /// Counts a refused SN link and logs it, at most once per 10 s with the count since.
    pub(crate) fn refusal_log(&self, from: SocketAddr, label: &'static str, reason: String) {
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
    pub(crate) fn carry_out(&self, state: &mut State) -> Vec<(NodeId, u64)> {
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
        shared.tasks.spawn(crate::sn_links::accept(shared.clone(), control));
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
pub(crate) fn upstream_of(topo: &Topology, id: &proto::NodeId) -> SpaceList<NodeId> {
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

pub(crate) use livesky_net::clock::{unix_ms as unix_now_ms, unix_s as unix_now_s};
