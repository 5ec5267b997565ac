//! Starting service nodes from a topology: bind every listener first (so port 0 resolves), publish
//! the real SN addresses in the address book, then start nodes from Tier 0 outwards.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proto::mc::{Heartbeat, Member};
use proto::{ChannelId, NodeId, NodeKey};
use sn_core::mc_client::{self, McClient, McClientConfig};
use sn_core::{AddressBook, Node, NodeConfig, NodeError, NodeListeners, NodeSpec, Role, SourceConfig, Topology};
use sn_edge::Edge;

pub use crate::endpoints::{EdgeEndpoint, Endpoints, McEndpoint, NodeEndpoint, PeerEndpoint, write_atomic};

/// How the nodes reach the management center.
#[derive(Clone)]
pub struct McLink {
    pub addr: SocketAddr,
    /// The MC's public key (hex), checked at every registration.
    pub mc_public_key: Option<String>,
    /// Each node's identity key.
    pub keys: HashMap<NodeId, Arc<NodeKey>>,
    /// Reports wait here (one directory per node) until the MC has them.
    pub spool_dir: std::path::PathBuf,
    /// Edges report this often (a minute in production).
    pub report_every: Duration,
}

pub struct RunningNode {
    pub node: Node,
    pub edge: Option<Arc<Edge>>,
    pub http: SocketAddr,
    pub sn: Option<SocketAddr>,
    /// Raw-TCP ingest listeners of channels fed on this node.
    pub tcp_ingest: Vec<(ChannelId, SocketAddr)>,
    /// The LiveSky client port (edges with `client_listen`).
    pub client: Option<SocketAddr>,
    /// RTMP ingest (`[node.ingest] rtmp_listen`).
    pub rtmp: Option<SocketAddr>,
    /// SRT ingest, listener mode (`[node.ingest] srt_listen`).
    pub srt: Option<SocketAddr>,
    /// Its link to the management center, when there is one.
    pub mc: Option<McClient>,
}

impl RunningNode {
    pub fn id(&self) -> &NodeId {
        self.node.id()
    }
    pub fn config(&self) -> &NodeConfig {
        self.node.config()
    }
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }
}

pub struct Cluster {
    pub topology: Topology,
    pub nodes: Vec<RunningNode>,
    pub book: Arc<AddressBook>,
}

/// Built-in clips for `builtin:NAME` loop sources.
pub fn builtin_clips() -> Arc<HashMap<String, Bytes>> {
    Arc::new(HashMap::from([("demo".to_string(), Bytes::from_static(crate::DEMO_CLIP))]))
}

/// A `[[node]]` table on ephemeral loopback ports, for generated topologies (tests, benchmarks).
/// `extra` goes last inside the table: more keys, then optionally a `[node.edge]` sub-table.
pub fn loopback_node(id: &str, tier: u8, role: Role, parents: &[&str], extra: &str) -> String {
    let (role, sn) = match role {
        Role::Edge => ("role = \"edge\"\n", ""),
        Role::Relay => ("", "sn_listen = \"127.0.0.1:0\"\n"),
    };
    let parents = parents.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(", ");
    format!(
        "\n[[node]]\nid = \"{id}\"\ntier = {tier}\n{role}{sn}http_listen = \"127.0.0.1:0\"\nparents = [{parents}]\n{extra}\n"
    )
}

/// Rewrites every listen address to an OS-chosen port (tests, and demos beside other software).
/// Edges on addresses of their own keep sharing one HTTP port and one client port, as the GSLB
/// expects (its answers carry addresses, not ports), and their sibling lists follow.
pub fn ephemeral_ports(topo: &mut Topology) {
    let zero = |a: &mut SocketAddr| a.set_port(0);
    let old_clients: Vec<(String, NodeId)> =
        topo.nodes.iter().filter_map(|n| n.edge.client_listen.map(|a| (a.to_string(), n.id.clone()))).collect();
    let edges: Vec<usize> = (0..topo.nodes.len()).filter(|&i| topo.nodes[i].role == Role::Edge).collect();
    let http_port = shared_port(edges.iter().map(|&i| topo.nodes[i].http_listen.ip()).collect());
    let client_port =
        shared_port(edges.iter().filter_map(|&i| topo.nodes[i].edge.client_listen.map(|a| a.ip())).collect());
    for n in &mut topo.nodes {
        let edge = n.role == Role::Edge;
        n.http_listen.set_port(if edge { http_port } else { 0 });
        if let Some(a) = n.sn_listen.as_mut() {
            zero(a);
        }
        if let Some(a) = n.edge.client_listen.as_mut() {
            a.set_port(client_port);
        }
        for a in [&mut n.edge.stun_listen, &mut n.edge.stun_other_listen].into_iter().flatten() {
            zero(a);
        }
        for a in [&mut n.ingest.rtmp_listen, &mut n.ingest.srt_listen].into_iter().flatten() {
            zero(a);
        }
    }
    let new_clients: HashMap<NodeId, String> = topo
        .nodes
        .iter()
        .filter_map(|n| n.edge.client_listen.filter(|a| a.port() != 0).map(|a| (n.id.clone(), a.to_string())))
        .collect();
    for n in &mut topo.nodes {
        for s in &mut n.edge.siblings {
            let renamed = old_clients.iter().find(|(a, _)| a == s).and_then(|(_, id)| new_clients.get(id));
            if let Some(new) = renamed {
                *s = new.clone();
            }
        }
    }
    for c in &mut topo.channels {
        if let SourceConfig::Tcp { listen } = &mut c.source {
            zero(listen);
        }
    }
}

/// A TCP port free on every one of `ips` (distinct addresses), or 0 (each gets its own) when
/// they share an address or no common port turns up.
fn shared_port(ips: Vec<std::net::IpAddr>) -> u16 {
    let mut distinct = ips.clone();
    distinct.sort();
    distinct.dedup();
    if ips.len() < 2 || distinct.len() != ips.len() {
        return 0;
    }
    // Ports this process handed out already: the probes close before the nodes bind, and the
    // kernel may offer a just-closed port to a second cluster starting alongside (tests).
    static HANDED: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..50 {
        let Some(port) =
            std::net::TcpListener::bind((ips[0], 0)).ok().and_then(|l| l.local_addr().ok()).map(|a| a.port())
        else {
            return 0;
        };
        let mut handed = HANDED.lock().unwrap_or_else(|e| e.into_inner());
        if !handed.contains(&port) && ips[1..].iter().all(|&ip| std::net::TcpListener::bind((ip, port)).is_ok()) {
            handed.push(port);
            return port;
        }
    }
    0
}

/// A management center in this process for `topo` (read from `path`, which it watches), with a
/// fresh identity key for it and for every node; ports 7700 (control) and 7780 (API), or
/// OS-chosen ones. Returns the MC, how the nodes reach it, and its API token.
/// The report database and the nodes' spools go in `state_dir`.
pub async fn start_local_mc(
    topo: &Topology,
    path: std::path::PathBuf,
    state_dir: &Path,
    ephemeral: bool,
) -> anyhow::Result<(livesky_mgmt_center::McServer, McLink, String)> {
    let mut keys = HashMap::new();
    let mut sn_keys = std::collections::BTreeMap::new();
    for n in &topo.nodes {
        let (key, _) = NodeKey::generate()?;
        sn_keys.insert(n.id.clone(), key.public_hex());
        keys.insert(n.id.clone(), Arc::new(key));
    }
    let (_, mc_seed) = NodeKey::generate()?;
    let (_, token) = NodeKey::generate()?;
    let port = |p: u16| SocketAddr::from(([127, 0, 0, 1], if ephemeral { 0 } else { p }));
    let settings = livesky_mgmt_center::McSettings {
        control_listen: port(7700),
        http_listen: port(7780),
        topology: path,
        heartbeat_ms: 1000,
        watch_ms: 250,
        key: mc_seed,
        api_token: Some(token.clone()),
        db: state_dir.join("mc.sqlite"),
        sn_keys,
        limits: Default::default(),
    };
    let mc = livesky_mgmt_center::McServer::start(settings).await?;
    let link = McLink {
        addr: mc.control_addr,
        mc_public_key: Some(mc.public_key()),
        keys,
        spool_dir: state_dir.join("spool"),
        report_every: Duration::from_secs(60),
    };
    Ok((mc, link, token))
}

/// How a cluster's nodes prove who they are on SN links.
pub enum Identities {
    /// A fresh key per node, all known to each other (one process: tests, benchmarks).
    Fresh,
    /// These keys (the others' public keys come from the MC or the topology's `identity_key`).
    Given(HashMap<NodeId, Arc<NodeKey>>),
    /// Development only: links neither prove nor check identities.
    Insecure,
}

impl Identities {
    fn keys(self, topo: &Topology) -> Result<Option<HashMap<NodeId, Arc<NodeKey>>>, NodeError> {
        match self {
            Identities::Insecure => {
                tracing::warn!("--insecure-dev: SN links are not authenticated; never run a deployment like this");
                Ok(None)
            }
            Identities::Given(k) => Ok(Some(k)),
            Identities::Fresh => {
                let mut keys = HashMap::new();
                for n in &topo.nodes {
                    let (key, _) = NodeKey::generate().map_err(|e| key_error(&n.id, e))?;
                    keys.insert(n.id.clone(), Arc::new(key));
                }
                Ok(Some(keys))
            }
        }
    }
}

fn key_error(id: &NodeId, e: proto::SignatureError) -> NodeError {
    NodeError::Identity { node: id.clone(), message: e.to_string() }
}

/// Registers `node` with the MC and applies every config it pushes (None: no key for it).
fn follow_mc(
    link: &McLink,
    node: &Node,
    edge: Option<Arc<Edge>>,
    http: SocketAddr,
    sn: Option<SocketAddr>,
    clients: Option<SocketAddr>,
) -> Option<McClient> {
    let cfg = node.config();
    let Some(key) = link.keys.get(&cfg.id) else {
        tracing::warn!(node = %cfg.id, "no key for this node: it will not register with the management center");
        return None;
    };
    let member = Member {
        id: cfg.id.clone(),
        tier: cfg.tier,
        role: cfg.role,
        http,
        sn,
        clients,
        capacity_kbps: if cfg.role == Role::Edge { cfg.edge.admission.capacity_kbps } else { 0 },
        key: None,
        upstream: Default::default(),
    };
    let hubs = node.clone();
    let spool_dir = link.spool_dir.join(cfg.id.as_str());
    let spool = match sn_core::spool::Spool::open(&spool_dir) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(node = %cfg.id, dir = %spool_dir.display(), error = %e, "no report spool: this node sends no reports");
            None
        }
    };
    let mc_cfg = McClientConfig {
        mc: link.addr,
        key: key.clone(),
        mc_public_key: link.mc_public_key.clone(),
        member,
        load: {
            let edge = edge.clone();
            Arc::new(move || {
                let live = edge.as_ref().map(|e| sn_edge::report::live(e)).unwrap_or_default();
                // An edge's clients are its viewers and its LiveSky clients (P0); a relay SN's,
                // the leases on its channels (children, viewers).
                let users = match &edge {
                    Some(_) => live.iter().map(|r| r.users).sum(),
                    None => hubs.hubs().iter().map(|h| h.users() as u64).sum(),
                };
                Heartbeat {
                    users,
                    failovers: livesky_net::metrics::total(&hubs.metrics().relay_failovers),
                    // Channels in stage 4 (past N*c/S): their new clients go to other edges, so
                    // the GSLB should stop sending them here.
                    full: live
                        .iter()
                        .filter(|r| r.stage == sn_edge::model::Stage::Four as u8)
                        .filter_map(|r| proto::ChannelId::new(&r.channel).ok())
                        .collect(),
                    live,
                }
            })
        },
        spool,
    };
    let client = mc_client::spawn(mc_cfg, node.book_handle(), node.cancel_token());
    node.set_mc(client.clone());
    if let Some(e) = &edge {
        sn_edge::report::spawn_reporter(e.clone(), client.clone(), link.report_every);
    }
    if let Some(e) = &edge {
        let (e, n, mut drain) = (e.clone(), node.clone(), client.draining.clone());
        node.spawn(async move {
            loop {
                tokio::select! {
                    _ = n.cancelled() => return,
                    r = drain.changed() => if r.is_err() { return },
                }
                let on = *drain.borrow_and_update();
                e.set_draining(on);
            }
        });
    }
    let mut rx = client.config.clone();
    let n = node.clone();
    node.spawn(async move {
        loop {
            tokio::select! {
                _ = n.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
            }
            let cfg = rx.borrow_and_update().clone();
            if let Some(cfg) = cfg {
                n.apply_config(&cfg);
                if let Some(e) = &edge {
                    e.set_channels(cfg.channels.values());
                    e.set_admission(&cfg.node.edge.admission);
                }
            }
        }
    });
    Some(client)
}

impl Cluster {
    /// Starts the nodes named in `only` (all when `None`) in one process, each with a fresh
    /// identity key that the others know.
    pub async fn start(topology: Topology, only: Option<&[NodeId]>) -> Result<Cluster, NodeError> {
        Self::start_with_keys(topology, only, None, Identities::Fresh).await
    }

    /// As [`Cluster::start`]; each node also registers with the management center (with the
    /// link's keys, which are also its SN-link identities) and follows the configuration it
    /// pushes. Without a link, fresh keys as in [`Cluster::start`].
    pub async fn start_with_mc(
        topology: Topology,
        only: Option<&[NodeId]>,
        mc: Option<McLink>,
    ) -> Result<Cluster, NodeError> {
        let ids = match &mc {
            Some(link) => Identities::Given(link.keys.clone()),
            None => Identities::Fresh,
        };
        Self::start_with_keys(topology, only, mc, ids).await
    }

    /// As [`Cluster::start_with_mc`], with the nodes' identity keys given.
    pub async fn start_with_keys(
        topology: Topology,
        only: Option<&[NodeId]>,
        mc: Option<McLink>,
        identities: Identities,
    ) -> Result<Cluster, NodeError> {
        let book = AddressBook::from_topology(&topology);
        let keys = identities.keys(&topology)?;
        for (id, key) in keys.iter().flatten() {
            book.set_key(id.clone(), proto::NodePublicKey::from_bytes(&key.public()).map_err(|e| key_error(id, e))?);
        }
        let mut chosen: Vec<&NodeConfig> =
            topology.nodes.iter().filter(|n| only.is_none_or(|ids| ids.contains(&n.id))).collect();
        chosen.sort_by_key(|n| n.tier);
        let mut bound = Vec::new();
        for cfg in chosen {
            let sources: Vec<_> = topology
                .channels_of(&cfg.id)
                .map(|c| sn_core::ChannelConfig { origin: Some(cfg.id.clone()), ..c.clone() })
                .collect();
            let listeners = NodeListeners::bind(cfg, &sources).await?;
            if let Some(a) = listeners.sn_addr() {
                book.set(cfg.id.clone(), a);
            }
            bound.push((cfg.clone(), sources, listeners));
        }
        let clips = builtin_clips();
        let mut nodes = Vec::new();
        for (config, sources, listeners) in bound {
            let http = listeners.http_addr().unwrap_or(config.http_listen);
            let sn = listeners.sn_addr();
            let (rtmp, srt) = (listeners.rtmp_addr(), listeners.srt_addr());
            let tcp_ingest =
                listeners.tcp_ingest.iter().filter_map(|(c, l)| l.local_addr().ok().map(|a| (c.clone(), a))).collect();
            let catalog = topology.channels.iter().map(|c| c.id.clone()).collect();
            let identity = match &keys {
                Some(k) => Some(k.get(&config.id).cloned().ok_or_else(|| NodeError::Identity {
                    node: config.id.clone(),
                    message: "no identity key for this node (give it --key-file)".into(),
                })?),
                None => None,
            };
            let spec = NodeSpec { config, sources, catalog, identity, book: book.clone(), clips: clips.clone() };
            let node = Node::start(spec, listeners).await?;
            let edge = (node.config().role == Role::Edge).then(|| Edge::new(node.clone(), &topology.channels));
            let client = match &edge {
                Some(e) => e.start_client_service().await?,
                None => None,
            };
            let (router, takeover) = match &edge {
                Some(e) => (sn_edge::router(e.clone()), Some(sn_edge::ts_viewer::takeover(e.clone()))),
                None => (sn_core::http::base_router(node.clone()), None),
            };
            node.serve_http(router, takeover);
            let mc = mc.as_ref().and_then(|link| follow_mc(link, &node, edge.clone(), http, sn, client));
            nodes.push(RunningNode { node, edge, http, sn, tcp_ingest, client, rtmp, srt, mc });
        }
        Ok(Cluster { topology, nodes, book })
    }

    pub fn get(&self, id: &str) -> Option<&RunningNode> {
        self.nodes.iter().find(|n| n.id().as_str() == id)
    }

    pub fn edges(&self) -> impl Iterator<Item = &RunningNode> {
        self.nodes.iter().filter(|n| n.config().role == Role::Edge)
    }

    /// Stops every node and waits (bounded) for their tasks.
    pub async fn shutdown(&self) {
        for n in self.nodes.iter().rev() {
            n.node.shutdown();
        }
        for n in &self.nodes {
            if !n.node.stopped(Duration::from_secs(5)).await {
                tracing::warn!(node = %n.id(), "node did not stop within 5 s");
            }
        }
    }

    pub fn endpoints(&self) -> Endpoints {
        let ingest = self
            .nodes
            .iter()
            .find(|n| n.node.sources().iter().any(|s| s.cfg.source == SourceConfig::Push))
            .map(|n| n.url("/ingest"));
        let edges: Vec<EdgeEndpoint> = self
            .edges()
            .map(|e| EdgeEndpoint {
                id: e.id().to_string(),
                http: e.url(""),
                metrics: e.url("/metrics"),
                clients: e.client.map(|a| a.to_string()),
            })
            .collect();
        let nodes = self
            .nodes
            .iter()
            .map(|n| NodeEndpoint {
                id: n.id().to_string(),
                tier: n.config().tier,
                role: n.config().role.as_str(),
                http: n.url(""),
                metrics: n.url("/metrics"),
                sn: n.sn.map(|a| a.to_string()),
            })
            .collect();
        let channels: Vec<String> = self.topology.channels.iter().map(|c| c.id.to_string()).collect();
        let tcp_ingest =
            self.nodes.iter().flat_map(|n| n.tcp_ingest.iter().map(|(c, a)| (c.to_string(), a.to_string()))).collect();
        let mut play = Vec::new();
        for e in &edges {
            for c in &channels {
                play.push(format!("{}/live/{c}.ts", e.http));
                play.push(format!("{}/live/{c}/index.m3u8", e.http));
            }
        }
        let rtmp = self.nodes.iter().find_map(|n| n.rtmp).map(|a| format!("rtmp://{a}/{}", sn_core::rtmp::APP));
        let srt = self.nodes.iter().find_map(|n| n.srt).map(|a| format!("srt://{a}"));
        Endpoints {
            ingest,
            tcp_ingest,
            rtmp,
            srt,
            edges,
            nodes,
            channels,
            play,
            peers: Vec::new(),
            mc: None,
            gslb: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_on_their_own_addresses_share_ports_and_siblings_follow() {
        let mut topo = Topology::parse(crate::DEMO_TOPOLOGY, "demo.toml").unwrap_or_else(|e| panic!("{e}"));
        ephemeral_ports(&mut topo);
        let edge =
            |id: &str| topo.nodes.iter().find(|n| n.id.as_str() == id).cloned().unwrap_or_else(|| panic!("{id}"));
        let (e1, e2) = (edge("edge1"), edge("edge2"));
        let (c1, c2) = (e1.edge.client_listen.expect("client port"), e2.edge.client_listen.expect("client port"));
        assert_ne!(c1.port(), 0, "an OS-chosen port, the same for both edges");
        assert_eq!((c1.port(), e1.http_listen.port()), (c2.port(), e2.http_listen.port()));
        assert_eq!(c1.ip().to_string(), "127.0.0.2");
        assert_eq!(e1.edge.siblings, [c2.to_string()]);
        assert_eq!(e2.edge.siblings, [c1.to_string()]);
        // Relay nodes (all on 127.0.0.1) get ports of their own.
        assert_eq!(edge("tier0").http_listen.port(), 0);
        // A second demo in the same process gets other ports.
        let mut again = Topology::parse(crate::DEMO_TOPOLOGY, "demo.toml").unwrap_or_else(|e| panic!("{e}"));
        ephemeral_ports(&mut again);
        let c1b = again.nodes.iter().find_map(|n| n.edge.client_listen.filter(|_| n.id.as_str() == "edge1"));
        assert_ne!(c1b.map(|a| a.port()), Some(c1.port()));
    }
}
