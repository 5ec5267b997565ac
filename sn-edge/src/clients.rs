//! The edge's client port (LiveSky clients, TCP) and STUN server (UDP): the thin tokio layer around
//! [`crate::service::Service`]. One task per channel owns the service; one task per client
//! connection reads its control messages, writes what the service tells it, and pushes chunks:
//! the substreams the edge feeds that client (live, counted against the channel's egress budget
//! but never held back) and its start burst (paced by whatever budget is left).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use proto::peer::{EdgeControlCodec, FromEdge, ToEdge};
use proto::{ChannelId, Chunk, StartAt, SubstreamId, TokenBucket};
use sn_core::Origin;
use sn_core::hub::{ChannelHub, Cursor, CursorEnd, CursorEvent, Lease};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Edge;
use crate::admission::{AdmissionConfig, Snapshot};
use crate::model::ModelParams;
use crate::service::{ConnId, Input, Output, Service, ServiceConfig, ServiceStats};

/// Control frames from clients are small (joins, reports, signalling).
const MAX_CLIENT_FRAME: usize = 64 * 1024;
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const CONN_QUEUE: usize = 512;
/// Chunks of a substream the edge starts feeding that the client may have missed.
const BACKFILL_CHUNKS: u64 = 50;

/// Bitrate, substream count and legacy formats per channel, from the topology.
#[derive(Debug, Clone, Copy)]
pub struct ChannelInfo {
    pub bitrate_kbps: u32,
    pub substreams: u16,
    pub ts: bool,
    pub hls: bool,
}

impl Default for ChannelInfo {
    /// A channel the edge was not told about (relayed on demand): the defaults of the topology.
    fn default() -> Self {
        ChannelInfo { bitrate_kbps: 400, substreams: 4, ts: true, hls: true }
    }
}

/// The service's handle on one connection: its queue, and a switch that closes it even when the
/// queue is full (a client that does not read must not keep a socket the trees forgot).
struct ConnOut {
    tx: mpsc::Sender<ConnCmd>,
    kill: CancellationToken,
}

enum ServiceIn {
    Joined { conn: ConnId, from: SocketAddr, join: proto::peer::Join, out: ConnOut },
    Input(Input),
    Reconfigure(AdmissionConfig),
    Drain(bool),
}

enum ConnCmd {
    Send(FromEdge),
    Close,
    Serve { mask: u64, burst_ms: Option<u32>, backfill: u64 },
}

#[derive(Clone)]
struct ServiceHandle {
    inbox: mpsc::Sender<ServiceIn>,
    hub: Arc<ChannelHub>,
    budget: Arc<Mutex<TokenBucket>>,
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
    next_conn: AtomicU64,
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
            let cfg = admission_config(edge, edge.channel_info(channel));
            if h.inbox.try_send(ServiceIn::Reconfigure(cfg)).is_err() {
                tracing::warn!(%channel, "client service busy or gone: admission update not delivered");
            }
        }
    }

    /// Starts or ends a drain on every channel's service.
    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, std::sync::atomic::Ordering::Release);
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for (channel, h) in map.iter() {
            if h.inbox.try_send(ServiceIn::Drain(on)).is_err() {
                tracing::warn!(%channel, "client service busy or gone: drain not delivered");
            }
        }
    }

    pub fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Acquire)
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
    let a = edge.admission_settings();
    AdmissionConfig {
        n1c: a.n1c,
        nc_star: crate::model::Thresholds::nc_star_for(a.capacity_kbps, info.bitrate_kbps),
        model: ModelParams { alpha: a.alpha, k_prime: a.k_prime, lambda: a.lambda, mu: a.mu },
        margin: a.margin,
        substreams: info.substreams,
        media_kbps: info.bitrate_kbps,
        upload_cap_factor: a.upload_cap_factor,
        mesh: a.mesh,
        session_timeout: Duration::from_secs(a.session_timeout_seconds),
        max_clients: a.max_clients,
        alpha_from_clients: a.alpha_from_clients,
        seed: 0x5eed,
    }
}

async fn service_for(edge: &Arc<Edge>, channel: &ChannelId) -> Result<ServiceHandle, String> {
    if let Some(h) = edge.clients.map.lock().unwrap_or_else(|e| e.into_inner()).get(channel)
        && !h.inbox.is_closed()
    {
        return Ok(h.clone());
    }
    let lease = edge
        .node
        .open(channel, StartAt::Live, &Origin::Viewer, Duration::from_secs(8))
        .await
        .map_err(|e| format!("channel {channel}: {e}"))?;
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
    cfg.stun = edge.stun_addr();
    cfg.channel_key = lease.hub().verify_key();
    let bytes_per_sec = s.admission.capacity_kbps as f64 * 125.0;
    let budget = Arc::new(Mutex::new(TokenBucket::new(bytes_per_sec, bytes_per_sec)));
    let (inbox, rx) = mpsc::channel(4096);
    let handle =
        ServiceHandle { inbox, hub: lease.hub().clone(), budget, view: Arc::default(), startups: Arc::default() };
    map.insert(channel.clone(), handle.clone());
    drop(map);
    info!(node = %edge.node.id(), %channel, nc_star = cfg.admission.nc_star, n1c = cfg.admission.n1c, "P2P service started");
    let mut service = Service::new(cfg);
    service.set_draining(edge.clients.draining());
    edge.node.spawn(run_service(edge.clone(), service, lease, handle.clone(), rx));
    Ok(handle)
}

fn now_std() -> std::time::Instant {
    Instant::now().into_std()
}

async fn run_service(
    edge: Arc<Edge>,
    mut service: Service,
    lease: Lease,
    handle: ServiceHandle,
    mut rx: mpsc::Receiver<ServiceIn>,
) {
    let channel = service.channel().clone();
    let mut conns: HashMap<ConnId, ConnOut> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut next_report = Instant::now() + Duration::from_secs(60);
    let mut refocus_at_report = 0;
    let mut idle_since: Option<Instant> = None;
    let linger = Duration::from_secs(u64::from(edge.node.config().linger_seconds));
    loop {
        tokio::select! {
            _ = edge.node.cancelled() => break,
            msg = rx.recv() => match msg {
                Some(ServiceIn::Joined { conn, from, join, out }) => {
                    conns.insert(conn, out);
                    service.handle(now_std(), Input::Joined { conn, from, join });
                }
                Some(ServiceIn::Input(input)) => {
                    if let Input::Disconnected { conn } = &input {
                        conns.remove(conn);
                    }
                    service.handle(now_std(), input);
                }
                Some(ServiceIn::Drain(on)) => {
                    tracing::info!(node = %edge.node.id(), %channel, on, "drain");
                    service.set_draining(on);
                }
                Some(ServiceIn::Reconfigure(cfg)) => {
                    tracing::info!(node = %edge.node.id(), %channel, n1c = cfg.n1c, nc_star = cfg.nc_star, alpha = cfg.model.alpha, "admission parameters updated");
                    service.reconfigure(cfg);
                }
                None => break,
            },
            _ = tick.tick() => {
                service.tick(now_std());
                let snap = service.snapshot();
                edge.metrics.observe_service(&channel, &snap, &service.stats());
                *handle.view.lock().unwrap_or_else(|e| e.into_inner()) = Some((snap, service.stats()));
                let fresh = service.take_startups();
                if !fresh.is_empty() {
                    let mut kept = handle.startups.lock().unwrap_or_else(|e| e.into_inner());
                    // Bounded while nobody collects them (no management center).
                    if kept.len() < 10_000 {
                        kept.extend(fresh);
                    }
                }
                if Instant::now() >= next_report {
                    next_report += Duration::from_secs(60);
                    report(&edge, &channel, &snap, &service.stats(), snap.tree.refocus_total - refocus_at_report);
                    refocus_at_report = snap.tree.refocus_total;
                }
                if conns.is_empty() {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= linger {
                        break;
                    }
                } else {
                    idle_since = None;
                }
            }
        }
        service.set_channel_key(now_std(), lease.hub().verify_key());
        let status = lease.hub().status();
        service.set_source(status.source, status.last_seq);
        // Carry out what the service decided; a client too slow to take its messages is dropped.
        loop {
            let mut dead = Vec::new();
            for out in service.drain() {
                let (conn, cmd) = match out {
                    Output::Send { conn, msg } => (conn, ConnCmd::Send(msg)),
                    Output::Close { conn } => {
                        if let Some(c) = conns.remove(&conn)
                            && c.tx.try_send(ConnCmd::Close).is_err()
                        {
                            c.kill.cancel();
                        }
                        continue;
                    }
                    Output::Serve { conn, mask, burst_ms, backfill } => {
                        (conn, ConnCmd::Serve { mask, burst_ms, backfill })
                    }
                };
                if let Some(c) = conns.get(&conn)
                    && c.tx.try_send(cmd).is_err()
                {
                    dead.push(conn);
                }
            }
            if dead.is_empty() {
                break;
            }
            for conn in dead {
                warn!(%channel, conn, "client is not taking its control messages; closing its connection");
                edge.metrics.clients_dropped.with_label_values(&["queue_full"]).inc();
                if let Some(c) = conns.remove(&conn) {
                    c.kill.cancel();
                }
                service.handle(now_std(), Input::Disconnected { conn });
            }
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

/// The per-minute summary (logged; the management center will store it).
fn report(edge: &Edge, channel: &ChannelId, snap: &Snapshot, st: &ServiceStats, refocus_last_minute: u64) {
    let r = &st.reported;
    let delivered = r.bytes_from_edge + r.bytes_from_peers;
    let p2p_share = if delivered == 0 { 0.0 } else { r.bytes_from_peers as f64 / delivered as f64 };
    let q1 =
        if r.played_ms + r.stalled_ms == 0 { 1.0 } else { r.played_ms as f64 / (r.played_ms + r.stalled_ms) as f64 };
    info!(
        node = %edge.node.id(), %channel, stage = snap.stage as u8, p0 = snap.p0, nc = snap.nc,
        joins = snap.stats.joins, leaves = snap.stats.leaves, aged_out = snap.stats.aged_out,
        redirects = st.redirected, refocus_last_minute, stalls = r.stalls,
        natted = st.natted_clients, natted_bytes_up = st.natted_bytes_up,
        p2p_share = format!("{p2p_share:.3}"), q1 = format!("{q1:.4}"), "per-minute P2P report"
    );
}

/// Accepts LiveSky clients until the node stops.
pub fn start(edge: Arc<Edge>, listener: TcpListener) {
    let node = edge.node.clone();
    let limits = &node.config().limits;
    let max = edge.settings().admission.max_clients.saturating_add(64);
    let slots = livesky_net::limits::ConnLimiter::new("clients", max, limits.clients_max_per_ip)
        .with_metrics(node.metrics().conns.clone());
    node.spawn(async move {
        let cancel = edge.node.cancel_token();
        while let Some((stream, from, permit)) = livesky_net::limits::accept_capped(&listener, &slots, &cancel).await {
            let Ok(permit) = permit else { continue };
            let _ = stream.set_nodelay(true);
            let edge2 = edge.clone();
            edge.node.spawn(async move {
                let _permit = permit;
                serve_client(edge2, stream, from).await;
            });
        }
    });
}

type ClientFramed = Framed<TcpStream, EdgeControlCodec>;

/// What one client connection pushes: live substreams in `mask`, and a start burst.
struct Feeding {
    mask: u64,
    cursor: Option<Cursor>,
    /// Next and last seq of the start burst still to send.
    burst: Option<(u64, u64)>,
}

async fn serve_client(edge: Arc<Edge>, stream: TcpStream, from: SocketAddr) {
    let mut framed = Framed::new(stream, EdgeControlCodec::with_decode_limit(MAX_CLIENT_FRAME));
    let mut join = match timeout(JOIN_TIMEOUT, framed.next()).await {
        Ok(Some(Ok(ToEdge::Join(j)))) => j,
        Ok(Some(Ok(other))) => {
            debug!(%from, got = proto::WireMessage::kind(&other), "client did not start with a join");
            return;
        }
        Ok(Some(Err(e))) => {
            debug!(%from, error = %e, "bad data from client");
            return;
        }
        _ => return,
    };
    let channel = join.channel.clone();
    if !edge.node.knows(&channel) {
        edge.node.count_unknown_channel("clients");
        let _ = framed.send(FromEdge::Refused { reason: format!("no channel {channel} on this CDN") }).await;
        return;
    }
    match edge.admit_viewer(&channel, &join.token) {
        Ok(Some(_)) => {}
        // An open channel checks no token: one the client made up must not become the identity
        // its bans hold (it would dodge a ban on its address).
        Ok(None) => join.token.clear(),
        Err(e) => {
            debug!(%from, %channel, error = %e, "LiveSky client refused");
            let _ = framed.send(FromEdge::Refused { reason: e.to_string() }).await;
            return;
        }
    }
    let svc = match service_for(&edge, &channel).await {
        Ok(s) => s,
        Err(reason) => {
            let _ = framed.send(FromEdge::Refused { reason }).await;
            return;
        }
    };
    let conn = edge.clients.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel(CONN_QUEUE);
    let kill = CancellationToken::new();
    let out = ConnOut { tx, kill: kill.clone() };
    if svc.inbox.send(ServiceIn::Joined { conn, from, join, out }).await.is_err() {
        return;
    }
    let mut feeding = Feeding { mask: 0, cursor: None, burst: None };
    let mut batch = Vec::with_capacity(64);
    let k = edge.channel_info(&channel).substreams;
    let end = loop {
        let burst_at = burst_ready_at(&svc, &feeding);
        tokio::select! {
            _ = edge.node.cancelled() => break "shutdown",
            _ = kill.cancelled() => break "closed by edge (queue full)",
            msg = framed.next() => match msg {
                Some(Ok(m)) => {
                    if svc.inbox.send(ServiceIn::Input(Input::Message { conn, msg: m })).await.is_err() {
                        break "service gone";
                    }
                }
                Some(Err(e)) => {
                    debug!(%from, error = %e, "bad data from client; closing");
                    break "bad data";
                }
                None => break "closed",
            },
            cmd = rx.recv() => match cmd {
                Some(ConnCmd::Send(m)) => {
                    if write(&mut framed, [m]).await.is_err() {
                        break "write failed";
                    }
                }
                Some(ConnCmd::Close) | None => {
                    let _ = SinkExt::<FromEdge>::flush(&mut framed).await;
                    break "closed by edge";
                }
                Some(ConnCmd::Serve { mask, burst_ms, backfill }) => {
                    if serve_update(&edge, &svc, &channel, &mut feeding, &mut framed, mask, burst_ms, backfill, k).await.is_err() {
                        break "write failed";
                    }
                }
            },
            ev = next_live(&mut feeding.cursor, &mut batch) => match ev {
                Ok(()) => {
                    let mask = feeding.mask;
                    let chunks: Vec<Chunk> = batch.drain(..).filter(|c| mask & (1u64 << SubstreamId::of(c.seq(), k).0) != 0).collect();
                    if send_chunks(&edge, &svc, &channel, &mut framed, chunks, "live").await.is_err() {
                        break "write failed";
                    }
                }
                Err(CursorEnd::Lagged { .. }) => {
                    if let Some(c) = feeding.cursor.as_mut() {
                        c.skip_to_latest_keyframe();
                    }
                }
                Err(_) => break "channel closed",
            },
            _ = tokio::time::sleep_until(burst_at.unwrap_or_else(far_future)), if burst_at.is_some() => {
                if send_burst(&edge, &svc, &channel, &mut feeding, &mut framed).await.is_err() {
                    break "write failed";
                }
            }
        }
    };
    debug!(%from, conn, reason = end, "client connection ended");
    let _ = svc.inbox.send(ServiceIn::Input(Input::Disconnected { conn })).await;
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

async fn next_live(cursor: &mut Option<Cursor>, batch: &mut Vec<Chunk>) -> Result<(), CursorEnd> {
    match cursor {
        Some(c) => loop {
            match c.next(batch, 64).await? {
                CursorEvent::Chunks => return Ok(()),
                CursorEvent::Source(_) => continue,
            }
        },
        None => std::future::pending().await,
    }
}

async fn write<const N: usize>(framed: &mut ClientFramed, msgs: [FromEdge; N]) -> Result<(), ()> {
    let send = async {
        for m in msgs {
            framed.feed(m).await?;
        }
        SinkExt::<FromEdge>::flush(framed).await
    };
    match timeout(WRITE_TIMEOUT, send).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Live or backfill chunks: real-time traffic, counted against the budget but never held back.
async fn send_chunks(
    edge: &Edge,
    svc: &ServiceHandle,
    channel: &ChannelId,
    framed: &mut ClientFramed,
    chunks: Vec<Chunk>,
    kind: &str,
) -> Result<(), ()> {
    if chunks.is_empty() {
        return Ok(());
    }
    let bytes: usize = chunks.iter().map(|c| c.payload.len()).sum();
    svc.budget.lock().unwrap_or_else(|e| e.into_inner()).force_take(now_std(), bytes as f64);
    edge.metrics.client_bytes.with_label_values(&[channel.as_str(), kind]).inc_by(bytes as u64);
    let send = async {
        for c in chunks {
            framed.feed(FromEdge::Chunk(c)).await?;
        }
        SinkExt::<FromEdge>::flush(framed).await
    };
    match timeout(WRITE_TIMEOUT, send).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_update(
    edge: &Edge,
    svc: &ServiceHandle,
    channel: &ChannelId,
    feeding: &mut Feeding,
    framed: &mut ClientFramed,
    mask: u64,
    burst_ms: Option<u32>,
    backfill: u64,
    k: u16,
) -> Result<(), ()> {
    feeding.mask = mask;
    if feeding.cursor.is_none() {
        feeding.cursor = Some(svc.hub.cursor_after_newest());
    }
    if let Some(ms) = burst_ms {
        let ring = svc.hub.ring();
        feeding.burst = match (ring.keyframe_before(u64::from(ms)), ring.last_seq()) {
            (Some(start), Some(last)) => Some((start, last)),
            _ => None,
        };
    }
    if backfill != 0 {
        let chunks: Vec<Chunk> = {
            let ring = svc.hub.ring();
            let last = ring.last_seq().unwrap_or(0);
            let mut v = Vec::new();
            ring.read_from(last.saturating_sub(BACKFILL_CHUNKS), BACKFILL_CHUNKS as usize + 1, &mut v);
            v.retain(|c| backfill & (1u64 << SubstreamId::of(c.seq(), k).0) != 0);
            v
        };
        send_chunks(edge, svc, channel, framed, chunks, "backfill").await?;
    }
    Ok(())
}

/// When the next burst chunk may go under the channel's egress budget.
fn burst_ready_at(svc: &ServiceHandle, feeding: &Feeding) -> Option<Instant> {
    let (next, _) = feeding.burst?;
    let size = svc.hub.ring().get(next).map_or(2048.0, |c| c.payload.len() as f64);
    let at = svc.budget.lock().unwrap_or_else(|e| e.into_inner()).ready_at(now_std(), size);
    Some(Instant::from_std(at))
}

/// Sends burst chunks while the budget has room; the burst is background traffic.
async fn send_burst(
    edge: &Edge,
    svc: &ServiceHandle,
    channel: &ChannelId,
    feeding: &mut Feeding,
    framed: &mut ClientFramed,
) -> Result<(), ()> {
    let Some((mut next, last)) = feeding.burst else { return Ok(()) };
    let mut sent = 0usize;
    while next <= last && sent < 64 {
        let chunk = {
            let ring = svc.hub.ring();
            match ring.get(next) {
                Some(c) => c.clone(),
                None => match ring.first_seq() {
                    // Evicted meanwhile: continue from what is still held.
                    Some(f) if f > next => {
                        next = f;
                        continue;
                    }
                    _ => break,
                },
            }
        };
        let n = chunk.payload.len();
        if !svc.budget.lock().unwrap_or_else(|e| e.into_inner()).try_take(now_std(), n as f64) {
            break;
        }
        edge.metrics.client_bytes.with_label_values(&[channel.as_str(), "burst"]).inc_by(n as u64);
        if timeout(WRITE_TIMEOUT, framed.feed(FromEdge::Chunk(chunk))).await.map_err(|_| ())?.is_err() {
            return Err(());
        }
        next += 1;
        sent += 1;
    }
    feeding.burst = (next <= last).then_some((next, last));
    match timeout(WRITE_TIMEOUT, SinkExt::<FromEdge>::flush(framed)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// A STUN binding server: answers each binding request with the address it came from.
pub fn start_stun(edge: Arc<Edge>, socket: UdpSocket) {
    let node = edge.node.clone();
    node.spawn(async move {
        let mut buf = vec![0u8; 1500];
        loop {
            let (n, from) = tokio::select! {
                _ = edge.node.cancelled() => return,
                r = socket.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(_) => continue,
                },
            };
            let outcome = match stun_response(&buf[..n], from) {
                Some(resp) => {
                    let _ = socket.send_to(&resp, from).await;
                    "answered"
                }
                None => "ignored",
            };
            edge.metrics.stun_requests.with_label_values(&[outcome]).inc();
        }
    });
}

/// The binding success response for a binding request, or None for anything else.
pub fn stun_response(data: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    use rtc_stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Message, Setter};
    use rtc_stun::xoraddr::XorMappedAddress;
    let mut req = Message::new();
    req.unmarshal_binary(data).ok()?;
    if req.typ != BINDING_REQUEST {
        return None;
    }
    let mut resp = Message::new();
    let setters: [Box<dyn Setter>; 4] = [
        Box::new(req.transaction_id),
        Box::new(BINDING_SUCCESS),
        Box::new(XorMappedAddress { ip: from.ip(), port: from.port() }),
        Box::new(rtc_stun::fingerprint::FINGERPRINT),
    ];
    resp.build(&setters).ok()?;
    Some(resp.raw)
}
