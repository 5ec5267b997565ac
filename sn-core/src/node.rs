//! A running service node: its channels, listeners and background tasks. The node opens a channel
//! on demand (subscribing upstream through [`crate::upstream`]) when a child SN or a viewer asks,
//! and drops it again when nobody has used it for `linger_seconds`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use proto::{ChannelId, ChannelSigner, NodeId, StartAt};
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::hub::{ChannelHub, HubState, Lease};
use crate::ingest::looper::Looper;
use crate::metrics::Metrics;
use crate::ring::RingConfig;
use crate::upstream::{Upstream, UpstreamConfig};
use proto::config::{ChannelConfig, NodeConfig, Role, SourceConfig};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen for {what} on {addr}: {source} (is another process using the port?)")]
    Bind { what: String, addr: SocketAddr, source: std::io::Error },
    #[error("channel {channel}: {message}")]
    Source { channel: ChannelId, message: String },
    #[error("SRT ingest of node {node}: {source}")]
    Srt { node: NodeId, source: crate::ingest::srt::SrtIngestError },
    #[error("identity of node {node}: {message}")]
    Identity { node: NodeId, message: String },
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

pub use crate::book::AddressBook;

/// A node's sockets, bound before it starts so that port 0 can be resolved first.
pub struct NodeListeners {
    pub http: TcpListener,
    pub sn: Option<TcpListener>,
    pub tcp_ingest: Vec<(ChannelId, TcpListener)>,
    /// RTMP ingest (`[node.ingest] rtmp_listen`).
    pub rtmp: Option<TcpListener>,
    /// SRT ingest, listener mode (`[node.ingest] srt_listen`).
    pub srt: Option<crate::ingest::srt::BoundSrt>,
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
        let rtmp = match cfg.ingest.rtmp_listen {
            Some(a) => Some(bind(format!("RTMP ingest of node {}", cfg.id), a).await?),
            None => None,
        };
        let srt = match cfg.ingest.srt_listen {
            Some(a) => Some(
                crate::ingest::srt::bind_srt(a, cfg.ingest.srt_passphrase.clone())
                    .await
                    .map_err(|source| NodeError::Srt { node: cfg.id.clone(), source })?,
            ),
            None => None,
        };
        Ok(NodeListeners { http, sn, tcp_ingest, rtmp, srt })
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.local_addr().ok()
    }
    pub fn sn_addr(&self) -> Option<SocketAddr> {
        self.sn.as_ref().and_then(|l| l.local_addr().ok())
    }
    pub fn rtmp_addr(&self) -> Option<SocketAddr> {
        self.rtmp.as_ref().and_then(|l| l.local_addr().ok())
    }
    pub fn srt_addr(&self) -> Option<SocketAddr> {
        self.srt.as_ref().map(crate::ingest::srt::BoundSrt::local_addr)
    }
}

pub struct NodeSpec {
    pub config: NodeConfig,
    /// Channels whose source runs on this node.
    pub sources: Vec<ChannelConfig>,
    /// Every channel of the CDN: the only names the node opens anything for.
    pub catalog: Vec<ChannelId>,
    /// The node's identity key: it proves who the node is on SN links and checks the other
    /// side's proof. None only in insecure development mode (links unauthenticated).
    pub identity: Option<Arc<proto::NodeKey>>,
    pub book: Arc<AddressBook>,
    /// Clips for `builtin:NAME` loop sources.
    pub clips: Arc<HashMap<String, Bytes>>,
}

pub struct SourceChannel {
    pub cfg: ChannelConfig,
    pub signer: Arc<ChannelSigner>,
    pub hub: Arc<ChannelHub>,
    /// Stops this source's tasks (the channel was removed or its source changed).
    pub(crate) stop: CancellationToken,
}

struct Entry {
    hub: Arc<ChannelHub>,
    upstream: Option<CancellationToken>,
}

pub struct Inner {
    cfg: NodeConfig,
    metrics: Metrics,
    book: Arc<AddressBook>,
    identity: Option<Arc<proto::NodeKey>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// The runtime the node started on: its tasks run there, wherever they are spawned from (a
    /// request on a connection thread opens a channel, and the channel outlives the request).
    runtime: tokio::runtime::Handle,
    sources: RwLock<HashMap<ChannelId, Arc<SourceChannel>>>,
    clips: Arc<HashMap<String, Bytes>>,
    /// Parent and same-tier peer candidates: from the file, then as the MC pushes them.
    candidates: RwLock<(Vec<NodeId>, Vec<NodeId>)>,
    hubs: Mutex<HashMap<ChannelId, Entry>>,
    /// The channels of the topology (then of the MC's pushes). A name not in it opens nothing
    /// upstream and labels no metric: random names would otherwise grow both without bound.
    catalog: RwLock<std::collections::HashSet<ChannelId>>,
    mc: Mutex<Option<crate::mc_client::McClient>>,
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
            Role::Relay => "relay",
            Role::Edge => "edge",
        };
        let metrics = Metrics::new(cfg.id.as_str(), cfg.tier, role);
        let http_addr = listeners.http_addr();
        let sn_addr = listeners.sn_addr();
        let candidates = RwLock::new((cfg.parents.clone(), cfg.peers.clone()));
        let node = Node(Arc::new(Inner {
            cfg,
            metrics,
            book: spec.book,
            identity: spec.identity,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            runtime: tokio::runtime::Handle::current(),
            sources: RwLock::new(HashMap::new()),
            clips: spec.clips,
            candidates,
            hubs: Mutex::new(HashMap::new()),
            catalog: RwLock::new(spec.catalog.into_iter().collect()),
            mc: Mutex::new(None),
            http: Mutex::new(Some(listeners.http)),
            http_addr,
            sn_addr,
        }));
        if let Some(l) = listeners.sn {
            node.spawn(crate::link::serve_children(node.clone(), l));
        }
        if let Some(l) = listeners.rtmp {
            node.spawn(crate::ingest::rtmp::run_rtmp_listener(node.clone(), l));
        }
        if let Some(bound) = listeners.srt {
            node.spawn(crate::ingest::srt::serve_srt(node.clone(), bound, node.cancel_token()));
        }
        let mut tcp: HashMap<ChannelId, TcpListener> = listeners.tcp_ingest.into_iter().collect();
        for c in spec.sources {
            let listener = tcp.remove(&c.id);
            node.add_source(c, listener)?;
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
    pub fn book_handle(&self) -> Arc<AddressBook> {
        self.0.book.clone()
    }

    /// The SNs the management center says are alive (`None`: this node follows no MC).
    pub fn mc_members(&self) -> Option<std::sync::Arc<std::collections::BTreeMap<proto::NodeId, proto::mc::Member>>> {
        self.0.mc.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|c| c.members.borrow().clone())
    }

    /// Follows a management center: SN addresses it does not know yet are looked up there.
    pub fn set_mc(&self, client: crate::mc_client::McClient) {
        *self.0.mc.lock().unwrap_or_else(|e| e.into_inner()) = Some(client);
    }

    /// Where SN `id` listens for SN links: the address book (fed by the MC's membership), else
    /// a lookup at the MC.
    pub async fn resolve(&self, id: &NodeId) -> Option<SocketAddr> {
        if let Some(a) = self.0.book.get(id) {
            return Some(a);
        }
        let mc = self.0.mc.lock().unwrap_or_else(|e| e.into_inner()).clone();
        mc?.lookup(id, Duration::from_secs(2)).await.and_then(|m| m.sn)
    }
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.0.http_addr
    }
    pub fn sn_addr(&self) -> Option<SocketAddr> {
        self.0.sn_addr
    }
    /// The node's identity key (None: insecure development mode).
    pub fn identity(&self) -> Option<&proto::NodeKey> {
        self.0.identity.as_deref()
    }
    /// Whether `channel` is one of the CDN's channels (topology, then the MC's config).
    pub fn knows(&self, channel: &ChannelId) -> bool {
        self.0.catalog.read().unwrap_or_else(|e| e.into_inner()).contains(channel)
    }

    /// Replaces the channel catalog (the MC pushed a config).
    pub(crate) fn set_catalog(&self, channels: impl Iterator<Item = ChannelId>) {
        *self.0.catalog.write().unwrap_or_else(|e| e.into_inner()) = channels.collect();
    }

    /// Counts a request for a channel not in the catalog (`via`: http, clients, sn).
    pub fn count_unknown_channel(&self, via: &str) {
        self.0.metrics.unknown_channels.with_label_values(&[via]).inc();
    }

    pub fn source(&self, channel: &ChannelId) -> Option<Arc<SourceChannel>> {
        self.0.sources.read().unwrap_or_else(|e| e.into_inner()).get(channel).cloned()
    }
    pub fn sources(&self) -> Vec<Arc<SourceChannel>> {
        self.0.sources.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// Starts feeding channel `c` on this node (Tier 0). A raw-TCP source uses `tcp` when the
    /// listener was bound beforehand (so port 0 could be resolved), else binds here.
    pub(crate) fn add_source(&self, c: ChannelConfig, tcp: Option<TcpListener>) -> Result<(), NodeError> {
        let cfg = &self.0.cfg;
        let signer = Arc::new(signer_for(&c)?);
        info!(node = %cfg.id, channel = %c.id, public_key = %signer.verifier().to_hex(), "channel signing key");
        let stop = self.0.cancel.child_token();
        let looper = match &c.source {
            SourceConfig::Loop { path, speed } => Some((load_clip(&c, path, &self.0.clips)?, *speed)),
            _ => None,
        };
        let tcp = match (&c.source, tcp) {
            (SourceConfig::Tcp { .. }, Some(l)) => Some(l),
            (SourceConfig::Tcp { listen }, None) => {
                let std = std::net::TcpListener::bind(listen).and_then(|l| {
                    l.set_nonblocking(true)?;
                    TcpListener::from_std(l)
                });
                Some(std.map_err(|source| NodeError::Bind {
                    what: format!("TCP ingest of channel {}", c.id),
                    addr: *listen,
                    source,
                })?)
            }
            _ => None,
        };
        let hub = ChannelHub::new(c.id.clone(), ring_config(cfg), HubState::Ready);
        hub.set_verify_key(Some(signer.verifier().to_bytes()));
        let id = c.id.clone();
        let url = match &c.source {
            SourceConfig::Pull { url } => Some(url.clone()),
            _ => None,
        };
        let srt_call = match &c.source {
            SourceConfig::SrtCall { addr, stream_id, passphrase } => {
                Some((*addr, stream_id.clone(), passphrase.clone()))
            }
            _ => None,
        };
        let src = Arc::new(SourceChannel { cfg: c, signer, hub: hub.clone(), stop: stop.clone() });
        self.0.sources.write().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), src);
        {
            let mut hubs = self.0.hubs.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(old) = hubs.insert(id.clone(), Entry { hub, upstream: None })
                && let Some(t) = old.upstream
            {
                t.cancel();
            }
        }
        if let Some((looper, speed)) = looper {
            self.spawn(crate::ingest::source::run_loop(self.clone(), id.clone(), looper, speed, stop.clone()));
        }
        if let Some(l) = tcp {
            self.spawn(crate::ingest::source::run_tcp_ingest(self.clone(), id.clone(), l, stop.clone()));
        }
        if let Some((addr, stream_id, passphrase)) = srt_call {
            let call =
                crate::ingest::srt::run_srt_caller(self.clone(), id.clone(), addr, stream_id, passphrase, stop.clone());
            self.spawn(call);
        }
        if let Some(url) = url {
            self.spawn(crate::ingest::source::run_pull(self.clone(), id, url, stop));
        }
        Ok(())
    }

    /// Stops feeding channel `id`: its tasks end, its readers see it close.
    pub(crate) fn remove_source(&self, id: &ChannelId) {
        let removed = self.0.sources.write().unwrap_or_else(|e| e.into_inner()).remove(id);
        if let Some(src) = removed {
            src.stop.cancel();
            src.hub.set_state(HubState::Closed);
            let mut hubs = self.0.hubs.lock().unwrap_or_else(|e| e.into_inner());
            if hubs.get(id).is_some_and(|e| Arc::ptr_eq(&e.hub, &src.hub)) {
                hubs.remove(id);
            }
            self.0.metrics.forget_channel(id.as_str());
            info!(node = %self.id(), channel = %id, "channel source stopped");
        }
    }

    pub(crate) fn replace_source(&self, src: Arc<SourceChannel>) {
        self.0.sources.write().unwrap_or_else(|e| e.into_inner()).insert(src.cfg.id.clone(), src);
    }

    /// Replaces the parent and same-tier peer candidates for channels opened from now on.
    pub(crate) fn set_candidates(&self, parents: Vec<NodeId>, peers: Vec<NodeId>) {
        *self.0.candidates.write().unwrap_or_else(|e| e.into_inner()) = (parents, peers);
    }

    /// Spawns a task that the node waits for on shutdown.
    pub fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.0.tasks.spawn_on(fut, &self.0.runtime);
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

    /// Serves `router` on the node's HTTP listener until the node stops; connections whose first
    /// request `takeover` wants are handed to it (an edge's HTTP-TS viewers).
    pub fn serve_http(&self, router: axum::Router, takeover: Option<Arc<dyn livesky_net::takeover::Takeover>>) {
        let listener = self.0.http.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(listener) = listener else {
            warn!(node = %self.id(), "HTTP is already being served");
            return;
        };
        let token = self.0.cancel.clone();
        let sndbuf = match self.0.cfg.role {
            Role::Edge => self.0.cfg.edge.viewer_send_buffer_kb * 1024,
            Role::Relay => 0,
        };
        let tune = move |tcp: &tokio::net::TcpStream| {
            let _ = tcp.set_nodelay(true);
            // Broadcasters' pushes and viewers' streams are long-lived: notice dead peers.
            livesky_net::limits::keepalive(tcp);
            if sndbuf > 0 {
                let _ = socket2::SockRef::from(tcp).set_send_buffer_size(sndbuf);
            }
        };
        let limits = &self.0.cfg.limits;
        let limiter = livesky_net::httpd::http_limiter(limits, self.0.metrics.conns.clone());
        let header_timeout = limits.http_header_timeout();
        let threads = match self.0.cfg.http_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        // The demo runs several nodes in one process: the node's id tells their threads apart.
        let thread_name = format!("{}-http", self.id());
        let opts = livesky_net::httpd::ServeOptions { header_timeout, tune, takeover, threads, thread_name };
        self.spawn(livesky_net::httpd::serve(listener, router, limiter, token, opts));
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
        if !self.knows(channel) {
            return Err(OpenError::NotFound);
        }
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
        let (mut candidates, peers) = self.0.candidates.read().unwrap_or_else(|e| e.into_inner()).clone();
        if !same_tier {
            candidates.extend(peers);
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
            m.source_live.with_label_values(&label).set(i64::from(e.hub.status().source.is_live()));
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
