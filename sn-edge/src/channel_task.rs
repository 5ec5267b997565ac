//! One task per channel owns the edge's sans-IO [`crate::service::Service`] (tracker, trees,
//! admission) and [`crate::feeder::Feeder`] (what chunks each client gets, when): it feeds them
//! client messages, the chunks arriving in the hub's ring and their timeouts, and hands what they
//! decide to each connection's queue. [`crate::clients`] runs the connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::peer::FromEdge;
use proto::{ChannelId, Chunk, StartAt};
use sn_core::Origin;
use sn_core::hub::{ChannelHub, CursorEnd, Lease};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Edge;
use crate::EdgeError;
use crate::admission::{AdmissionConfig, Snapshot};
use crate::feeder::{ChunkMeta, Feeder, FeederConfig, RecentChunks};
use crate::service::{ClientView, ConnId, Input, Output, PeriodReport, Service, ServiceConfig, ServiceStats};

/// Messages a connection's queue holds before the edge gives up on a client that does not read.
pub(crate) const CONN_QUEUE: usize = 512;

/// Bitrate, substream count and legacy formats per channel, from the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelInfo {
    pub bitrate_kbps: u32,
    pub substreams: u16,
    pub ts: bool,
    pub hls: bool,
    /// The operator's glass-to-glass target for LiveSky players.
    pub target_latency_ms: Option<u32>,
}

impl Default for ChannelInfo {
    /// A channel the edge was not told about (relayed on demand): the defaults of the topology.
    fn default() -> Self {
        ChannelInfo { bitrate_kbps: 400, substreams: 4, ts: true, hls: true, target_latency_ms: None }
    }
}

/// The service's handle on one connection: its queue, and a switch that closes it even when the
/// queue is full (a client that does not read must not keep a socket the trees forgot).
pub(crate) struct ConnOut {
    pub(crate) tx: mpsc::Sender<ConnCmd>,
    pub(crate) kill: CancellationToken,
}

pub(crate) enum ServiceIn {
    /// `browser`: it came over the WebSocket, from a web page.
    Joined {
        conn: ConnId,
        from: SocketAddr,
        join: proto::peer::Join,
        out: ConnOut,
        browser: bool,
    },
    Input(Input),
    /// Who is in the channel (`/p2p/clients`).
    Clients {
        limit: usize,
        reply: tokio::sync::oneshot::Sender<Vec<ClientView>>,
    },
}

pub(crate) enum ConnCmd {
    Send(FromEdge),
    /// Chunks the feeder decided to send this client, in order.
    Chunks(Vec<Chunk>),
    Close,
}

#[derive(Clone)]
pub(crate) struct ServiceHandle {
    pub(crate) inbox: mpsc::Sender<ServiceIn>,
    view: Arc<Mutex<Option<(Snapshot, ServiceStats)>>>,
    /// Startup delays (ms) reported since the edge's last report to the MC.
    startups: Arc<Mutex<Vec<u32>>>,
}

/// The client services of one edge, by channel.
#[derive(Default)]
pub struct Services {
    map: Mutex<HashMap<ChannelId, ServiceHandle>>,
    /// Drained by an operator: services started from now on drain too.
    draining: std::sync::atomic::AtomicBool,
    pub(crate) next_conn: AtomicU64,
    /// The client port's connection caps, shared by its TCP listener and the WebSocket route
    /// (`None` until the client port starts: without it there is no tracker for pages to join).
    pub(crate) slots: Mutex<Option<livesky_net::limits::ConnLimiter>>,
    /// Siblings the MC's membership does not list as alive: no client is redirected to them.
    dead_siblings: Mutex<std::collections::BTreeSet<String>>,
}

impl Services {
    /// Startup delays (ms) reported on `channel` since the last call.
    pub fn take_startups(&self, channel: &ChannelId) -> Vec<u32> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(channel)
            .map(|h| std::mem::take(&mut *h.startups.lock().unwrap_or_else(|e| e.into_inner())))
            .unwrap_or_default()
    }

    /// Sends every channel's service its admission parameters anew.
    pub(crate) fn reconfigure(&self, edge: &Edge) {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for (channel, h) in map.iter() {
            let info = edge.channel_info(channel);
            let input = Input::Reconfigure {
                admission: admission_config(edge, info),
                target_latency_ms: info.target_latency_ms,
            };
            if h.inbox.try_send(ServiceIn::Input(input)).is_err() {
                tracing::warn!(%channel, "client service busy or gone: admission update not delivered");
            }
        }
    }

    /// Which siblings are dead now; each service hears of every change (a dead sibling is treated as
    /// a full one: no redirects to it).
    pub fn set_dead_siblings(&self, dead: std::collections::BTreeSet<String>) {
        let mut known = self.dead_siblings.lock().unwrap_or_else(|e| e.into_inner());
        if *known == dead {
            return;
        }
        let changed: Vec<(String, bool)> =
            known.symmetric_difference(&dead).map(|s| (s.clone(), dead.contains(s))).collect();
        for (sibling, is_dead) in &changed {
            tracing::info!(%sibling, dead = is_dead, "sibling edge {}", if *is_dead { "is gone: no redirects to it" } else { "is back" });
        }
        *known = dead;
        drop(known);
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for h in map.values() {
            for (sibling, full) in &changed {
                let _ =
                    h.inbox.try_send(ServiceIn::Input(Input::SiblingFull { sibling: sibling.clone(), full: *full }));
            }
        }
    }

    /// Starts or ends a drain on every channel's service.
    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, std::sync::atomic::Ordering::Release);
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for (channel, h) in map.iter() {
            if h.inbox.try_send(ServiceIn::Input(Input::Drain(on))).is_err() {
                tracing::warn!(%channel, "client service busy or gone: drain not delivered");
            }
        }
    }

    pub fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The first `limit` clients of every channel, as its tracker holds them (a busy service
    /// that does not answer within a second is left out).
    pub async fn clients(&self, limit: usize) -> Vec<(ChannelId, Vec<ClientView>)> {
        let handles: Vec<(ChannelId, mpsc::Sender<ServiceIn>)> = {
            let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.iter().map(|(c, h)| (c.clone(), h.inbox.clone())).collect()
        };
        let mut out = Vec::new();
        for (channel, inbox) in handles {
            let (reply, rx) = tokio::sync::oneshot::channel();
            if inbox.try_send(ServiceIn::Clients { limit, reply }).is_err() {
                continue;
            }
            if let Ok(Ok(v)) = tokio::time::timeout(Duration::from_secs(1), rx).await {
                out.push((channel, v));
            }
        }
        out
    }

    /// Stage, P0, Nc and counters of every channel with LiveSky clients.
    pub fn views(&self) -> Vec<(ChannelId, Snapshot, ServiceStats)> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .filter_map(|(c, h)| h.view.lock().unwrap_or_else(|e| e.into_inner()).map(|(s, st)| (c.clone(), s, st)))
            .collect()
    }
}

pub(crate) fn admission_config(edge: &Edge, info: ChannelInfo) -> AdmissionConfig {
    AdmissionConfig::from_settings(&edge.admission_settings(), info.bitrate_kbps, info.substreams)
}

pub(crate) async fn service_for(edge: &Arc<Edge>, channel: &ChannelId) -> Result<ServiceHandle, EdgeError> {
    if let Some(h) = edge.clients.map.lock().unwrap_or_else(|e| e.into_inner()).get(channel)
        && !h.inbox.is_closed()
    {
        return Ok(h.clone());
    }
    let lease = edge
        .node
        .open(channel, StartAt::Live, &Origin::Viewer, Duration::from_secs(8))
        .await
        .map_err(|e| EdgeError::Channel { channel: channel.clone(), reason: e.to_string() })?;
    let mut map = edge.clients.map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = map.get(channel)
        && !h.inbox.is_closed()
    {
        return Ok(h.clone());
    }
    let info = edge.channel_info(channel);
    let s = edge.settings();
    let mut cfg = ServiceConfig::new(channel.clone(), admission_config(edge, info));
    cfg.siblings = s.siblings.clone();
    cfg.joins_per_ip_per_sec = s.admission.joins_per_ip_per_sec;
    cfg.join_burst_per_ip = s.admission.join_burst_per_ip;
    cfg.max_burst_ms = s.admission.max_burst_ms;
    cfg.target_latency_ms = info.target_latency_ms;
    cfg.stun = edge.stun_addr();
    cfg.channel_key = lease.hub().verify_key();
    let feeder = Feeder::new(FeederConfig::new(info.substreams, s.admission.capacity_kbps as f64 * 125.0));
    let (inbox, rx) = mpsc::channel(4096);
    let handle = ServiceHandle { inbox, view: Arc::default(), startups: Arc::default() };
    map.insert(channel.clone(), handle.clone());
    drop(map);
    for sibling in edge.clients.dead_siblings.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = handle.inbox.try_send(ServiceIn::Input(Input::SiblingFull { sibling: sibling.clone(), full: true }));
    }
    info!(node = %edge.node.id(), %channel, nc_star = cfg.admission.nc_star, n1c = cfg.admission.n1c, "P2P service started");
    cfg.linger = Duration::from_secs(u64::from(edge.node.config().linger_seconds));
    let mut service = Service::new(cfg);
    service.handle(now_std(), Input::Drain(edge.clients.draining()));
    edge.node.spawn(run_service(edge.clone(), (service, feeder), lease, handle.clone(), rx));
    Ok(handle)
}

fn now_std() -> std::time::Instant {
    Instant::now().into_std()
}

/// The chunks of a hub's ring, as the feeder sees them.
struct RingView<'a>(&'a sn_core::ring::ChunkRing);

impl RecentChunks for RingView<'_> {
    fn first_seq(&self) -> Option<u64> {
        self.0.first_seq()
    }
    fn last_seq(&self) -> Option<u64> {
        self.0.last_seq()
    }
    fn meta(&self, seq: u64) -> Option<ChunkMeta> {
        let c = self.0.get(seq)?;
        Some(ChunkMeta { media_ts: c.header.media_ts, keyframe: c.header.is_keyframe(), len: c.payload.len() })
    }
}

async fn run_service(
    edge: Arc<Edge>,
    (mut service, mut feeder): (Service, Feeder),
    lease: Lease,
    handle: ServiceHandle,
    mut rx: mpsc::Receiver<ServiceIn>,
) {
    let channel = service.channel().clone();
    let hub = lease.hub().clone();
    let mut cursor = hub.cursor_after_newest();
    let mut batch = Vec::with_capacity(64);
    let mut conns: HashMap<ConnId, ConnOut> = HashMap::new();
    loop {
        let service_wake = service.poll_timeout().map(Instant::from_std);
        tokio::select! {
            _ = edge.node.cancelled() => break,
            msg = rx.recv() => match msg {
                Some(ServiceIn::Joined { conn, from, join, out, browser }) => {
                    conns.insert(conn, out);
                    let input = if browser { Input::BrowserJoined { conn, from, join } } else { Input::Joined { conn, from, join } };
                    service.handle(now_std(), input);
                    publish_view(&edge, &channel, &service, &handle);
                }
                Some(ServiceIn::Clients { limit, reply }) => {
                    let _ = reply.send(service.client_views(limit));
                }
                Some(ServiceIn::Input(input)) => {
                    match &input {
                        Input::Disconnected { conn } => {
                            conns.remove(conn);
                            feeder.forget(*conn);
                        }
                        Input::Drain(on) => tracing::info!(node = %edge.node.id(), %channel, on, "drain"),
                        Input::Reconfigure { admission: cfg, target_latency_ms } => {
                            feeder.set_egress(now_std(), edge.admission_settings().capacity_kbps as f64 * 125.0);
                            tracing::info!(node = %edge.node.id(), %channel, n1c = cfg.n1c, nc_star = cfg.nc_star, alpha = cfg.model.alpha, ?target_latency_ms, "admission parameters updated");
                        }
                        _ => {}
                    }
                    service.handle(now_std(), input);
                }
                None => break,
            },
            ev = cursor.next(&mut batch, 64) => match ev {
                Ok(_) => {
                    let ring = hub.ring();
                    for c in batch.drain(..) {
                        feeder.new_chunk(now_std(), c.seq(), &RingView(&ring));
                    }
                }
                Err(CursorEnd::Lagged { .. }) => {
                    cursor.skip_to_latest_keyframe();
                }
                Err(_) => break,
            },
            _ = tokio::time::sleep_until(service_wake.unwrap_or_else(far_future)), if service_wake.is_some() => {
                service.handle_timeout(now_std());
                publish_view(&edge, &channel, &service, &handle);
                let fresh = service.take_startups();
                if !fresh.is_empty() {
                    let mut kept = handle.startups.lock().unwrap_or_else(|e| e.into_inner());
                    // Bounded while nobody collects them (no management center).
                    if kept.len() < 10_000 {
                        kept.extend(fresh);
                    }
                }
            }
        }
        let now = now_std();
        service.handle(now, Input::ChannelKey(hub.verify_key()));
        let status = hub.status();
        service.handle(now, Input::Source { status: status.source, last_seq: status.last_seq });
        if carry_out(&edge, &channel, &hub, &mut service, &mut feeder, &mut conns) == Carried::Idle {
            break;
        }
    }
    for (_, c) in conns.drain() {
        c.kill.cancel();
    }
    let mut map = edge.clients.map.lock().unwrap_or_else(|e| e.into_inner());
    if map.get(&channel).is_some_and(|h| h.inbox.same_channel(&handle.inbox)) {
        map.remove(&channel);
    }
    drop(map);
    drop(lease);
    info!(%channel, "P2P service stopped");
}

/// The service's state for `/p2p`, the dashboard and the metrics.
fn publish_view(edge: &Edge, channel: &ChannelId, service: &Service, handle: &ServiceHandle) {
    let (snap, stats) = (service.snapshot(), service.stats());
    edge.metrics.observe_service(channel, &snap, &stats);
    *handle.view.lock().unwrap_or_else(|e| e.into_inner()) = Some((snap, stats));
}

/// Hands what the service and the feeder decided to the connections; a client whose queue is
/// full is closed at once (and its service told).
fn carry_out(
    edge: &Edge,
    channel: &ChannelId,
    hub: &ChannelHub,
    service: &mut Service,
    feeder: &mut Feeder,
    conns: &mut HashMap<ConnId, ConnOut>,
) -> Carried {
    let mut carried = Carried::Done;
    loop {
        let mut dead = Vec::new();
        while let Some(out) = service.poll_output() {
            match out {
                Output::Send { conn, msg } => {
                    if conns.get(&conn).is_some_and(|c| c.tx.try_send(ConnCmd::Send(msg)).is_err()) {
                        dead.push(conn);
                    }
                }
                Output::Close { conn } => {
                    feeder.forget(conn);
                    if let Some(c) = conns.remove(&conn)
                        && c.tx.try_send(ConnCmd::Close).is_err()
                    {
                        c.kill.cancel();
                    }
                }
                Output::Serve { conn, order } => {
                    feeder.serve(now_std(), conn, order, &RingView(&hub.ring()));
                }
                Output::Report(r) => report(edge, channel, &r),
                Output::Idle => carried = Carried::Idle,
            }
        }
        // The feeder's sends, one batch per connection.
        let mut chunks: HashMap<ConnId, Vec<Chunk>> = HashMap::new();
        {
            let ring = hub.ring();
            while let Some(send) = feeder.poll_output() {
                if let Some(c) = ring.get(send.seq) {
                    edge.metrics
                        .client_bytes
                        .with_label_values(&[channel.as_str(), send.kind.as_str()])
                        .inc_by(send.len as u64);
                    chunks.entry(send.conn).or_default().push(c.clone());
                }
            }
        }
        for (conn, batch) in chunks {
            if conns.get(&conn).is_some_and(|c| c.tx.try_send(ConnCmd::Chunks(batch)).is_err()) {
                dead.push(conn);
            }
        }
        if dead.is_empty() {
            return carried;
        }
        for conn in dead {
            warn!(%channel, %conn, "client is not taking what the edge sends it; closing its connection");
            edge.metrics.clients_dropped.with_label_values(&["queue_full"]).inc();
            feeder.forget(conn);
            if let Some(c) = conns.remove(&conn) {
                c.kill.cancel();
            }
            service.handle(now_std(), Input::Disconnected { conn });
        }
    }
}

/// Whether the service said it is idle (no client for its linger): the task then stops.
#[derive(PartialEq)]
enum Carried {
    Done,
    Idle,
}

/// The period's summary in the log (the MC stores the edge's per-minute rows: [`crate::report`]).
fn report(edge: &Edge, channel: &ChannelId, r: &PeriodReport) {
    let (snap, st, refocus_last_minute) = (&r.snapshot, &r.stats, r.refocus);
    let r = &st.reported;
    let p2p_share = proto::quality::p2p_share(r.bytes_from_peers as f64, r.bytes_from_edge as f64);
    let q1 = proto::quality::q1(r.played_ms, r.stalled_ms).map_or("-".to_string(), |q| format!("{q:.4}"));
    info!(
        node = %edge.node.id(), %channel, stage = snap.stage as u8, p0 = snap.p0, nc = snap.nc,
        joins = snap.stats.joins, leaves = snap.stats.leaves, aged_out = snap.stats.aged_out,
        redirects = st.redirected, refocus_last_minute, stalls = r.stalls,
        natted = st.natted_clients, natted_bytes_up = st.natted_bytes_up,
        p2p_share = format!("{p2p_share:.3}"), q1, "per-minute P2P report"
    );
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}
