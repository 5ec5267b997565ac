//! A running service node: its channels, listeners and background tasks. The node opens a channel
//! on demand (subscribing upstream through [`crate::upstream`]) when a child SN or a viewer asks,
//! and drops it again when nobody has used it for `linger_seconds`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use proto::{ChannelId, ChannelSigner, Hello, NodeId, StartAt};
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{ChannelConfig, NodeConfig, Role, SourceConfig, Topology};
use crate::hub::{ChannelHub, HubState, Lease};
use crate::looper::Looper;
use crate::metrics::Metrics;
use crate::ring::RingConfig;
use crate::upstream::{Upstream, UpstreamConfig};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen for {what} on {addr}: {source} (is another process using the port?)")]
    Bind { what: String, addr: SocketAddr, source: std::io::Error },
    #[error("channel {channel}: {message}")]
    Source { channel: ChannelId, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("channel not found on any parent")]
    NotFound,
    #[error("channel did not become available in time; retry shortly")]
    Timeout,
    #[error("node is shutting down")]
    ShuttingDown,
}

/// Who asks for a channel; decides which upstream candidates may be used.
#[derive(Debug, Clone)]
pub enum Origin {
    Viewer,
    /// A child SN; `path` is the subscription path including the child.
    Child {
        same_tier: bool,
        path: Vec<NodeId>,
    },
}

/// Where nodes listen for SN links. Filled from the topology file today; the management center
/// will feed it later.
#[derive(Debug, Default)]
pub struct AddressBook {
    map: RwLock<HashMap<NodeId, SocketAddr>>,
}

impl AddressBook {
    pub fn from_topology(t: &Topology) -> Arc<AddressBook> {
        let book = AddressBook::default();
        for n in &t.nodes {
            if let Some(a) = n.sn_listen {
                book.set(n.id.clone(), a);
            }
        }
        Arc::new(book)
    }
    pub fn set(&self, id: NodeId, addr: SocketAddr) {
        self.map.write().unwrap_or_else(|e| e.into_inner()).insert(id, addr);
    }
    pub fn remove(&self, id: &NodeId) {
        self.map.write().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
    pub fn get(&self, id: &NodeId) -> Option<SocketAddr> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).get(id).copied()
    }
}

/// A node's sockets, bound before it starts so that port 0 can be resolved first.
pub struct NodeListeners {
    pub http: TcpListener,
    pub sn: Option<TcpListener>,
    pub tcp_ingest: Vec<(ChannelId, TcpListener)>,
}

async fn bind(what: String, addr: SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr).await.map_err(|source| NodeError::Bind { what, addr, source })
}

impl NodeListeners {
    pub async fn bind(cfg: &NodeConfig, sources: &[ChannelConfig]) -> Result<NodeListeners, NodeError> {
        let http = bind(format!("HTTP of node {}", cfg.id), cfg.http_listen).await?;
        let sn = match cfg.sn_listen {
            Some(a) => Some(bind(format!("SN links of node {}", cfg.id), a).await?),
            None => None,
        };
        let mut tcp_ingest = Vec::new();
        for c in sources {
            if let SourceConfig::Tcp { listen } = c.source {
                tcp_ingest.push((c.id.clone(), bind(format!("TCP ingest of channel {}", c.id), listen).await?));
            }
        }
        Ok(NodeListeners { http, sn, tcp_ingest })
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.local_addr().ok()
    }
    pub fn sn_addr(&self) -> Option<SocketAddr> {
        self.sn.as_ref().and_then(|l| l.local_addr().ok())
    }
}

pub struct NodeSpec {
    pub config: NodeConfig,
    /// Channels whose source runs on this node.
    pub sources: Vec<ChannelConfig>,
    pub book: Arc<AddressBook>,
    /// Clips for `builtin:NAME` loop sources.
    pub clips: Arc<HashMap<String, Bytes>>,
}

pub struct SourceChannel {
    pub cfg: ChannelConfig,
    pub signer: Arc<ChannelSigner>,
    pub hub: Arc<ChannelHub>,
}

struct Entry {
    hub: Arc<ChannelHub>,
    upstream: Option<CancellationToken>,
}

pub struct Inner {
    cfg: NodeConfig,
    metrics: Metrics,
    book: Arc<AddressBook>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    sources: HashMap<ChannelId, SourceChannel>,
    hubs: Mutex<HashMap<ChannelId, Entry>>,
    http: Mutex<Option<TcpListener>>,
    http_addr: Option<SocketAddr>,
    sn_addr: Option<SocketAddr>,
}

#[derive(Clone)]
pub struct Node(Arc<Inner>);

fn ring_config(cfg: &NodeConfig) -> RingConfig {
    RingConfig { keep_ms: u64::from(cfg.ring_seconds) * 1000, ..RingConfig::default() }
}

fn signer_for(c: &ChannelConfig) -> Result<ChannelSigner, NodeError> {
    let err = |message: String| NodeError::Source { channel: c.id.clone(), message };
    match &c.signing_key {
        Some(hex) => ChannelSigner::from_hex_seed(hex).map_err(|e| err(e.to_string())),
        None => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| err(format!("no randomness for a signing key: {e}")))?;
            Ok(ChannelSigner::from_seed(seed))
        }
    }
}

fn load_clip(c: &ChannelConfig, path: &str, clips: &HashMap<String, Bytes>) -> Result<Looper, NodeError> {
    let err = |message: String| NodeError::Source { channel: c.id.clone(), message };
    let data = match path.strip_prefix("builtin:") {
        Some(name) => clips.get(name).cloned().ok_or_else(|| err(format!("no built-in clip named `{name}`")))?,
        None => Bytes::from(std::fs::read(path).map_err(|e| err(format!("cannot read loop clip {path}: {e}")))?),
    };
    Looper::new(&data).map_err(|e| err(format!("loop clip {path}: {e}")))
}

impl Node {
    pub async fn start(spec: NodeSpec, listeners: NodeListeners) -> Result<Node, NodeError> {
        let cfg = spec.config;
        let role = match cfg.role {
            Role::Core => "core",
            Role::Edge => "edge",
        };
        let metrics = Metrics::new(cfg.id.as_str(), cfg.tier, role);
        let mut sources = HashMap::new();
        let mut loops = Vec::new();
        for c in spec.sources {
            let signer = Arc::new(signer_for(&c)?);
            info!(node = %cfg.id, channel = %c.id, public_key = %signer.verifier().to_hex(), "channel signing key");
            if let SourceConfig::Loop { path, speed } = &c.source {
                loops.push((c.id.clone(), load_clip(&c, path, &spec.clips)?, *speed));
            }
            let hub = ChannelHub::new(c.id.clone(), ring_config(&cfg), HubState::Ready);
            hub.set_verify_key(Some(signer.verifier().to_bytes()));
            sources.insert(c.id.clone(), SourceChannel { cfg: c, signer, hub });
        }
        let hubs = sources.iter().map(|(id, s)| (id.clone(), Entry { hub: s.hub.clone(), upstream: None })).collect();
        let http_addr = listeners.http_addr();
        let sn_addr = listeners.sn_addr();
        let node = Node(Arc::new(Inner {
            cfg,
            metrics,
            book: spec.book,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            sources,
            hubs: Mutex::new(hubs),
            http: Mutex::new(Some(listeners.http)),
            http_addr,
            sn_addr,
        }));
        if let Some(l) = listeners.sn {
            node.spawn(crate::link::serve_children(node.clone(), l));
        }
        for (channel, looper, speed) in loops {
            node.spawn(crate::source::run_loop(node.clone(), channel, looper, speed));
        }
        for (channel, l) in listeners.tcp_ingest {
            node.spawn(crate::source::run_tcp_ingest(node.clone(), channel, l));
        }
        for s in node.0.sources.values() {
            if let SourceConfig::Pull { url } = &s.cfg.source {
                node.spawn(crate::source::run_pull(node.clone(), s.cfg.id.clone(), url.clone()));
            }
        }
        node.spawn(janitor(node.clone()));
        info!(node = %node.0.cfg.id, tier = node.0.cfg.tier, role, http = ?http_addr, sn = ?sn_addr, "node started");
        Ok(node)
    }

    pub fn config(&self) -> &NodeConfig {
        &self.0.cfg
    }
    pub fn id(&self) -> &NodeId {
        &self.0.cfg.id
    }
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }
    pub fn book(&self) -> &AddressBook {
        &self.0.book
    }
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.0.http_addr
    }
    pub fn sn_addr(&self) -> Option<SocketAddr> {
        self.0.sn_addr
    }
    pub fn hello(&self) -> Hello {
        crate::link::hello_for(&self.0.cfg.id, self.0.cfg.tier)
    }
    pub fn source(&self, channel: &ChannelId) -> Option<&SourceChannel> {
        self.0.sources.get(channel)
    }
    pub fn sources(&self) -> impl Iterator<Item = &SourceChannel> {
        self.0.sources.values()
    }

    /// Spawns a task that the node waits for on shutdown.
    pub fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.0.tasks.spawn(fut);
    }

    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.0.cancel.cancelled()
    }
    pub fn cancel_token(&self) -> CancellationToken {
        self.0.cancel.clone()
    }
    pub fn is_stopping(&self) -> bool {
        self.0.cancel.is_cancelled()
    }

    /// Stops every task of the node: sockets close, children and viewers see the node go away.
    pub fn shutdown(&self) {
        self.0.cancel.cancel();
        self.0.tasks.close();
    }

    /// Waits (bounded) for the node's tasks to finish after [`Node::shutdown`].
    pub async fn stopped(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.0.tasks.wait()).await.is_ok()
    }

    /// Serves `router` on the node's HTTP listener until the node stops.
    pub fn serve_http(&self, router: axum::Router) {
        let listener = self.0.http.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(listener) = listener else {
            warn!(node = %self.id(), "HTTP is already being served");
            return;
        };
        let token = self.0.cancel.clone();
        let sndbuf = match self.0.cfg.role {
            Role::Edge => self.0.cfg.edge.viewer_send_buffer_kb * 1024,
            Role::Core => 0,
        };
        let listener = axum::serve::ListenerExt::tap_io(listener, move |tcp: &mut tokio::net::TcpStream| {
            let _ = tcp.set_nodelay(true);
            if sndbuf > 0 {
                let _ = socket2::SockRef::from(&*tcp).set_send_buffer_size(sndbuf);
            }
        });
        self.spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(token.cancelled_owned());
            if let Err(e) = serve.await {
                warn!(error = %e, "HTTP server stopped with an error");
            }
        });
    }

    pub fn hubs(&self) -> Vec<Arc<ChannelHub>> {
        let hubs = self.0.hubs.lock().unwrap_or_else(|e| e.into_inner());
        hubs.values().map(|e| e.hub.clone()).collect()
    }

    /// Opens a channel (subscribing upstream if this node does not carry it yet) and waits until it
    /// is available. The lease keeps it open.
    pub async fn open(
        &self,
        channel: &ChannelId,
        start: StartAt,
        origin: &Origin,
        wait: Duration,
    ) -> Result<Lease, OpenError> {
        if self.is_stopping() {
            return Err(OpenError::ShuttingDown);
        }
        let hub = self.hub_for(channel, start, origin)?;
        let lease = hub.lease();
        match hub.wait_ready(wait).await {
            Some(true) => Ok(lease),
            Some(false) => Err(OpenError::NotFound),
            None => Err(OpenError::Timeout),
        }
    }

    fn hub_for(&self, channel: &ChannelId, start: StartAt, origin: &Origin) -> Result<Arc<ChannelHub>, OpenError> {
        let mut hubs = self.0.hubs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = hubs.get(channel)
            && !matches!(e.hub.status().state, HubState::NotFound | HubState::Closed)
        {
            return Ok(e.hub.clone());
        }
        let cfg = &self.0.cfg;
        let (same_tier, mut path) = match origin {
            Origin::Viewer => (false, Vec::new()),
            Origin::Child { same_tier, path } => (*same_tier, path.clone()),
        };
        // A request from a same-tier peer may only climb to parents: that, and the path check,
        // make subscription loops among peers impossible.
        let mut candidates = cfg.parents.clone();
        if !same_tier {
            candidates.extend(cfg.peers.iter().cloned());
        }
        if candidates.is_empty() {
            return Err(OpenError::NotFound);
        }
        path.push(cfg.id.clone());
        let initial_start = match origin {
            Origin::Viewer => StartAt::Backlog { ms: cfg.start_backlog_ms },
            Origin::Child { .. } => start,
        };
        let hub = ChannelHub::new(channel.clone(), ring_config(cfg), HubState::Pending);
        let upstream = Upstream::new(UpstreamConfig { initial_start, ..UpstreamConfig::default() }, candidates);
        let token = self.0.cancel.child_token();
        self.spawn(crate::link::run_upstream(self.clone(), hub.clone(), upstream, path, token.clone()));
        hubs.insert(channel.clone(), Entry { hub: hub.clone(), upstream: Some(token) });
        info!(node = %cfg.id, %channel, "opening channel upstream");
        Ok(hub)
    }

    /// Drops a channel whose upstream reported it unknown.
    pub(crate) fn forget(&self, hub: &Arc<ChannelHub>) {
        let mut hubs = self.0.hubs.lock().unwrap_or_else(|e| e.into_inner());
        if hubs.get(&hub.id).is_some_and(|e| Arc::ptr_eq(&e.hub, hub)) {
            hubs.remove(&hub.id);
            self.0.metrics.forget_channel(hub.id.as_str());
        }
    }

    /// Closes idle relayed channels and refreshes per-channel gauges.
    fn sweep(&self) {
        let linger = Duration::from_secs(u64::from(self.0.cfg.linger_seconds));
        let now = std::time::Instant::now();
        let mut hubs = self.0.hubs.lock().unwrap_or_else(|e| e.into_inner());
        hubs.retain(|id, e| {
            let Some(token) = &e.upstream else { return true };
            if e.hub.idle_for(now).is_some_and(|d| d >= linger) {
                info!(node = %self.0.cfg.id, channel = %id, "closing idle channel");
                token.cancel();
                e.hub.set_state(HubState::Closed);
                self.0.metrics.forget_channel(id.as_str());
                return false;
            }
            true
        });
        let m = &self.0.metrics;
        for (id, e) in hubs.iter() {
            let label = [id.as_str()];
            let (stats, span_ms) = e.hub.ring_stats();
            m.ring_chunks.with_label_values(&label).set(stats.chunks as i64);
            m.ring_bytes.with_label_values(&label).set(stats.bytes as i64);
            m.ring_span.with_label_values(&label).set(span_ms as f64 / 1000.0);
            m.channel_users.with_label_values(&label).set(e.hub.users() as i64);
            m.source_live.with_label_values(&label).set(i64::from(e.hub.status().source_live));
        }
    }
}

async fn janitor(node: Node) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = node.cancelled() => {
                let hubs = node.hubs();
                for h in hubs {
                    h.set_state(HubState::Closed);
                }
                return;
            }
            _ = tick.tick() => node.sweep(),
        }
    }
}
