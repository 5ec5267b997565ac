//! Helpers for the workspace integration tests: start topologies on ephemeral loopback ports, talk
//! HTTP to them, push paced feeds, read metrics, and wait for conditions with deadlines.

pub mod chromium;

use std::convert::Infallible;
use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use livesky::launch::{Cluster, ephemeral_ports};
use sn_core::Topology;
use sn_core::chunker::{Chunker, ChunkerConfig};
use tokio::sync::mpsc;

pub use livesky::DEMO_CLIP;
pub use livesky::launch::loopback_node;

/// Starts a topology (TOML text) on ephemeral ports in this process.
pub async fn start(topology: &str) -> Cluster {
    let mut topo = Topology::parse(topology, "test topology").expect("test topology is valid");
    ephemeral_ports(&mut topo);
    Cluster::start(topo, None).await.expect("cluster starts")
}

/// `channels` (TOML) fed on a Tier 0 named `tier0` (with `tier0_extra` in its `[[node]]` table, e.g.
/// an `ingest = {…}`), served by one edge named `edge`, all on loopback.
pub fn tier0_and_edge(channels: &str, tier0_extra: &str) -> String {
    [
        channels.to_string(),
        loopback_node("tier0", 0, sn_core::Role::Relay, &[], tier0_extra),
        loopback_node("edge", 1, sn_core::Role::Edge, &["tier0"], ""),
    ]
    .concat()
}

/// The demo topology with its management center, on ephemeral ports, the MC watching a copy of
/// the topology file (returned) in a directory of its own.
pub async fn demo_with_mc(name: &str) -> (livesky_mgmt_center::McServer, Cluster, std::path::PathBuf) {
    let (mc, cluster, path, _) = demo_with_mc_token(name).await;
    (mc, cluster, path)
}

/// As [`demo_with_mc`], with the MC's API token for operator actions.
pub async fn demo_with_mc_token(name: &str) -> (livesky_mgmt_center::McServer, Cluster, std::path::PathBuf, String) {
    with_mc(name, livesky::DEMO_TOPOLOGY, Duration::from_secs(60)).await
}

/// `topology` (TOML text) with its management center, on ephemeral ports, the MC watching a copy
/// of the topology file (returned) in a directory of its own; edges report every `report_every`.
/// Also returns the MC's API token.
pub async fn with_mc(
    name: &str,
    topology: &str,
    report_every: Duration,
) -> (livesky_mgmt_center::McServer, Cluster, std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("livesky-mc-demo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("demo.toml");
    std::fs::write(&path, topology).expect("topology written");
    let mut topo = Topology::load(&path).expect("test topology is valid");
    let (mc, mut link, token) =
        livesky::launch::start_local_mc(&topo, path.clone(), &dir, true).await.expect("MC starts");
    link.report_every = report_every;
    ephemeral_ports(&mut topo);
    let cluster = Cluster::start_with_mc(topo, None, Some(link)).await.expect("nodes start");
    (mc, cluster, path, token)
}

/// The demo with its MC and GSLB (zone `livesky.test`, the demo's prefix database), once the
/// GSLB knows both edges. Returns the topology file the MC watches, too.
pub async fn demo_with_gslb(
    name: &str,
) -> (livesky_mgmt_center::McServer, Cluster, livesky_gslb::Gslb, std::path::PathBuf) {
    let (mc, cluster, path) = demo_with_mc(name).await;
    let gslb = gslb_over(&mc, &path).await;
    (mc, cluster, gslb, path)
}

/// A GSLB fed by `mc` (the demo's prefix database, written next to the topology at `path`), once
/// it knows both demo edges.
pub async fn gslb_over(mc: &livesky_mgmt_center::McServer, path: &std::path::Path) -> livesky_gslb::Gslb {
    let geo = path.with_file_name("geo.csv");
    std::fs::write(&geo, livesky::DEMO_GEO).expect("geo written");
    let gslb = livesky::gslb_cmd::start_local_gslb(mc.http_addr, geo, true).await.expect("GSLB starts");
    wait_until(Duration::from_secs(10), "the GSLB to learn both edges", || async { gslb.edges() == 2 }).await;
    gslb
}

/// Checks that the MC holds every report of `nodes` (started by [`with_mc`] with the topology at
/// `path`) made up to now: once a period past this moment is stored and their spools are empty,
/// each node's periods for each channel must follow one another with none missing or doubled.
/// Returns the nodes' rows.
pub async fn assert_no_report_lost(path: &std::path::Path, nodes: &[&str]) -> Vec<livesky_mgmt_center::reports::Row> {
    let dir = path.parent().expect("the topology is in the MC's directory");
    let store = livesky_mgmt_center::reports::ReportStore::open(&dir.join("mc.sqlite")).expect("report store");
    let rows = || -> Vec<_> {
        store.rows(None, 0).expect("rows").into_iter().filter(|r| nodes.contains(&r.node.as_str())).collect()
    };
    let unix_ms = livesky_net::clock::unix_ms;
    let asked = unix_ms();
    let pending = |node: &str| std::fs::read_dir(dir.join("spool").join(node)).map(|d| d.count()).unwrap_or(0);
    wait_until(Duration::from_secs(20), "every report up to now delivered", || async {
        let rows = rows();
        nodes.iter().all(|n| pending(n) == 0 && rows.iter().any(|r| r.node == *n && r.start_ms + r.period_ms >= asked))
    })
    .await;
    let rows = rows();
    for node in nodes {
        let mine: Vec<_> = rows.iter().filter(|r| r.node == *node).collect();
        let mut channels: Vec<&str> = mine.iter().map(|r| r.channel.as_str()).collect();
        channels.sort_unstable();
        channels.dedup();
        for ch in channels {
            let periods: Vec<(u64, u64)> =
                mine.iter().filter(|r| r.channel == ch).map(|r| (r.start_ms, r.period_ms)).collect();
            for w in periods.windows(2) {
                assert_eq!(w[0].0 + w[0].1, w[1].0, "{node}/{ch}: a period is missing or doubled: {periods:?}");
            }
        }
    }
    rows
}

/// A peer player of channel `demo` on `edge`'s client port over TCP links, until `cancel`.
pub async fn tcp_peer(
    edge: &livesky::launch::RunningNode,
    cancel: &tokio_util::sync::CancellationToken,
) -> livesky::peer_cmd::Player {
    tcp_peer_on(edge, "demo", cancel).await
}

/// As [`tcp_peer`], on `channel`.
pub async fn tcp_peer_on(
    edge: &livesky::launch::RunningNode,
    channel: &str,
    cancel: &tokio_util::sync::CancellationToken,
) -> livesky::peer_cmd::Player {
    let channel = proto::ChannelId::new(channel).expect("channel");
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let net = livesky_peer::driver::Net {
        edge: edge.client.expect("the edge has a client port"),
        listen: any,
        transport: livesky_peer::driver::Transport::Tcp,
    };
    let cfg = livesky_peer::core::PeerConfig::new(channel.clone());
    livesky::peer_cmd::start_player(net, channel, cfg, any, false, cancel.clone()).await.expect("peer starts")
}

/// Swarm tests take both cores: the tests of one binary run in parallel, so each swarm test holds
/// this while it runs, and their timing assertions measure the system, not the neighbours.
pub async fn one_swarm_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static SWARM: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SWARM.lock().await
}

/// What a peer reports as its upload for the edge to give out `kbps` of it in slots (the edge
/// gives out [`livesky_edge_core::admission::UPLOAD_SHARE`] of what a peer reports).
pub fn offering(kbps: u64) -> u32 {
    (kbps as f64 / livesky_edge_core::admission::UPLOAD_SHARE).ceil() as u32 + 1
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let t0 = Instant::now();
    while !cond().await {
        assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn get(url: &str) -> Response<Incoming> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri = url.parse().expect("valid test URL");
    tokio::time::timeout(Duration::from_secs(20), client.get(uri))
        .await
        .unwrap_or_else(|_| panic!("GET {url} got no response headers in 20 s"))
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// Status and whole body (for finite responses).
pub async fn get_all(url: &str) -> (u16, Bytes) {
    let resp = get(url).await;
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(20), resp.into_body().collect())
        .await
        .expect("body within 20 s")
        .expect("body readable")
        .to_bytes();
    (status, body)
}

/// The edge's `/p2p` view of its first channel with LiveSky clients (stage, P0, Nc, counters).
pub async fn p2p_status(edge: &livesky::launch::RunningNode) -> serde_json::Value {
    let (_, body) = get_text(&edge.url("/p2p")).await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("/p2p answers JSON");
    v["channels"][0].clone()
}

/// GET with `Authorization: Bearer TOKEN`: status and body text.
pub async fn get_with_bearer(url: &str, token: &str) -> (u16, String) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::builder()
        .uri(url)
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::new())
        .expect("valid request");
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .unwrap_or_else(|_| panic!("GET {url} got no answer in 20 s"))
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    (status, String::from_utf8_lossy(&body).into_owned())
}

pub async fn get_text(url: &str) -> (u16, String) {
    let (s, b) = get_all(url).await;
    (s, String::from_utf8_lossy(&b).into_owned())
}

/// Reads an endless body until `want` bytes arrived (or the stream ends / `limit` passes).
pub async fn read_stream(resp: Response<Incoming>, want: usize, limit: Duration) -> Vec<u8> {
    let mut body = resp.into_body();
    let mut out = Vec::with_capacity(want.min(16 << 20));
    let deadline = tokio::time::Instant::now() + limit;
    while out.len() < want {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    out.extend_from_slice(&d);
                }
            }
            Ok(Some(Err(_))) | Ok(None) | Err(_) => break,
        }
    }
    out
}

/// Pushes `data` as a chunked POST (as ffmpeg does) at `bytes_per_sec`, returning the response.
pub async fn push(url: &str, data: Bytes, bytes_per_sec: usize) -> (u16, String) {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let feeder = tokio::spawn(async move {
        let piece = (bytes_per_sec / 50).max(188);
        let mut next = tokio::time::Instant::now();
        for part in data.chunks(piece) {
            if tx.send(Bytes::copy_from_slice(part)).await.is_err() {
                return;
            }
            next += Duration::from_millis(20);
            tokio::time::sleep_until(next).await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let client: Client<_, StreamBody<_>> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("content-type", "video/mp2t")
        .body(StreamBody::new(Box::pin(stream)))
        .expect("valid request");
    let resp = client.request(req).await;
    feeder.abort();
    match resp {
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// An empty POST with an optional bearer token.
pub async fn post(url: &str, bearer: Option<&str>) -> (u16, String) {
    post_json(url, bearer, "").await
}

/// POSTs `json` (nothing when empty), with a bearer token if given; the status and body.
pub async fn post_json(url: &str, bearer: Option<&str>, json: &str) -> (u16, String) {
    let client: Client<_, http_body_util::Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder().method(Method::POST).uri(url);
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if !json.is_empty() {
        req = req.header("content-type", "application/json");
    }
    let Ok(req) = req.body(http_body_util::Full::new(Bytes::from(json.to_string()))) else {
        return (0, "bad request".into());
    };
    match client.request(req).await {
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// The value of a metric series whose name and labels contain all of `needles`; 0 when absent.
pub async fn metric(metrics_url: &str, name: &str, needles: &[&str]) -> f64 {
    let (_, text) = get_text(metrics_url).await;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// What Tier 0 makes of `feed`: the chunk payloads, in order, as the chunker cuts them.
pub fn expected_chunks(feed: &[u8]) -> Vec<Bytes> {
    let packets = sn_core::resync_all(feed).expect("test feed is TS");
    let mut c = Chunker::new(ChunkerConfig::default(), None);
    let mut out: Vec<Bytes> = packets.iter().filter_map(|p| c.push(p)).map(|d| d.payload).collect();
    out.extend(c.finish().map(|d| d.payload));
    out
}

pub fn ffmpeg_available() -> bool {
    tool_available("ffmpeg", "-version")
}

/// Whether `cmd arg` runs and succeeds (e.g. `dig -v`).
pub fn tool_available(cmd: &str, arg: &str) -> bool {
    std::process::Command::new(cmd).arg(arg).output().is_ok_and(|o| o.status.success())
}

/// Runs `ffmpeg -v error -i URL -t SECS -f null -` and returns what it printed (empty = clean).
pub async fn ffmpeg_check(url: &str, secs: u32) -> String {
    let out = tokio::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i", url, "-t", &secs.to_string(), "-f", "null", "-"])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(u64::from(secs) + 30), out)
        .await
        .expect("ffmpeg finished in time")
        .expect("ffmpeg runs");
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        text.push_str(&format!("\n(exit status {})", out.status));
    }
    text
}

/// In CI a missing ffmpeg is a failure; elsewhere the ffmpeg checks are skipped with a note.
pub fn require_ffmpeg() -> bool {
    if ffmpeg_available() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "CI must install ffmpeg (see .ci/run)");
    eprintln!("ffmpeg not installed: skipping the player checks");
    false
}

/// A TCP connection to `to` from loopback address `from` (e.g. `127.0.0.9`): tests play several
/// hosts, as the per-address caps see them.
pub async fn connect_from(from: &str, to: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let ip: std::net::IpAddr = from.parse().map_err(std::io::Error::other)?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::new(ip, 0))?;
    tokio::time::timeout(Duration::from_secs(5), socket.connect(to)).await.map_err(std::io::Error::other)?
}

/// Reads until the peer closes the connection (true) or `limit` passes (false); what it sent
/// meanwhile is returned too.
pub async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> (bool, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (true, got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (false, got),
        }
    }
}

/// A test parent SN's side of the link handshake as node `me` with `key`: takes the child's
/// Hello, proves itself, takes Auth (unchecked: tests stand in for a parent, not a gatekeeper)
/// and returns the child's Subscribe.
pub async fn accept_child(
    framed: &mut tokio_util::codec::Framed<tokio::net::TcpStream, proto::SnCodec>,
    me: &str,
    key: &proto::NodeKey,
) -> Option<proto::Subscribe> {
    use futures_util::{SinkExt, StreamExt};
    use proto::SnMessage;
    let Some(Ok(SnMessage::Hello(hello))) = framed.next().await else { return None };
    let me = proto::NodeId::new(me).ok()?;
    let nonce = [3u8; 32];
    let proof = key.sign(&proto::link_proof(proto::LinkSide::Parent, &me, &hello.node, &hello.nonce, &nonce));
    framed.send(SnMessage::Challenge { nonce, proof }).await.ok()?;
    let Some(Ok(SnMessage::Auth { .. })) = framed.next().await else { return None };
    match framed.next().await {
        Some(Ok(SnMessage::Subscribe(s))) => Some(s),
        _ => None,
    }
}
