//! The management center on loopback: registration and death, authentication, config pushes
//! (updates, snapshots, hot reload, rejected files), with real SN control links.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use livesky::launch::write_atomic;
use livesky_mgmt_center::{McServer, McSettings};
use livesky_tests::{get_text, post, wait_until};
use proto::mc::{self, Alive, McMessage, Member};
use proto::{NodeId, NodeKey};
use sn_core::AddressBook;
use sn_core::mc_client::{self, McClient, McClientConfig};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const TOPOLOGY: &str = r#"
[[channel]]
id = "demo"
source = { kind = "loop", path = "builtin:demo" }
bitrate_kbps = 500

[[channel]]
id = "live"
source = { kind = "push" }

[[node]]
id = "t0"
tier = 0
sn_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"

[[node]]
id = "e1"
tier = 1
role = "edge"
http_listen = "127.0.0.1:0"
parents = ["t0"]

[[node]]
id = "e2"
tier = 1
role = "edge"
http_listen = "127.0.0.1:0"
parents = ["t0"]
"#;

const TOKEN: &str = "test-token";
const LIMIT: Duration = Duration::from_secs(10);

struct Mc {
    server: McServer,
    settings: McSettings,
    dir: PathBuf,
    keys: BTreeMap<&'static str, Arc<NodeKey>>,
}

impl Mc {
    async fn start(name: &str) -> Mc {
        let dir = std::env::temp_dir().join(format!("livesky-mc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("topology.toml"), TOPOLOGY).unwrap_or_else(|e| panic!("{e}"));
        let keys: BTreeMap<&str, Arc<NodeKey>> = [("t0", 1u8), ("e1", 2), ("e2", 3)]
            .into_iter()
            .map(|(n, s)| (n, Arc::new(NodeKey::from_seed([s; 32]))))
            .collect();
        let settings = McSettings {
            control_listen: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
            http_listen: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
            topology: dir.join("topology.toml"),
            heartbeat_ms: 200,
            watch_ms: 50,
            key: "07".repeat(32),
            api_token: Some(TOKEN.into()),
            db: dir.join("mc.sqlite"),
            sn_keys: keys.iter().map(|(n, k)| (id(n), k.public_hex())).collect(),
            limits: Default::default(),
        };
        let server = McServer::start(settings.clone()).await.unwrap_or_else(|e| panic!("{e}"));
        Mc { server, settings, dir, keys }
    }

    /// Stops the MC and starts it again on the same ports and database.
    async fn restart_after(&mut self, down: Duration) {
        self.server.shutdown();
        assert!(self.server.stopped(LIMIT).await, "the MC did not stop");
        tokio::time::sleep(down).await;
        self.settings.control_listen = self.server.control_addr;
        self.settings.http_listen = self.server.http_addr;
        self.server = McServer::start(self.settings.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.http_addr)
    }

    fn client(&self, node: &str, cancel: &CancellationToken) -> McClient {
        let cfg = McClientConfig {
            mc: self.server.control_addr,
            key: self.keys[node].clone(),
            mc_public_key: Some(self.server.public_key()),
            member: member(node),
            load: Arc::new(|| proto::mc::Heartbeat { users: 3, ..Default::default() }),
            spool: None,
        };
        mc_client::spawn(cfg, Arc::new(AddressBook::default()), cancel.clone())
    }

    fn write_topology(&self, text: &str) {
        // Atomic, as editors and config management do: the watcher never sees half a file.
        write_atomic(&self.dir.join("topology.toml"), text).unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for Mc {
    fn drop(&mut self) {
        self.server.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap_or_else(|e| panic!("{e}"))
}

fn member(node: &str) -> Member {
    Member {
        id: id(node),
        tier: if node == "t0" { 0 } else { 1 },
        role: if node == "t0" { proto::config::Role::Relay } else { proto::config::Role::Edge },
        http: "127.0.0.1:9".parse().unwrap_or_else(|e| panic!("{e}")),
        sn: (node == "t0").then(|| "127.0.0.1:7".parse().unwrap_or_else(|e| panic!("{e}"))),
        clients: None,
        capacity_kbps: 1000,
        key: None,
        upstream: Default::default(),
    }
}

/// A hand-driven control link, to see exactly what the MC sends.
struct Raw {
    link: livesky_net::mclink::McLink,
}

impl Raw {
    async fn register(mc: &Mc, node: &str, key: &NodeKey, have_version: u64) -> (Raw, McMessage) {
        let stream = TcpStream::connect(mc.server.control_addr).await.unwrap_or_else(|e| panic!("{e}"));
        let pinned = proto::NodePublicKey::from_hex(&mc.server.public_key()).ok();
        let link = livesky_net::mc_tls::connect(stream, pinned).await.unwrap_or_else(|e| panic!("{e}"));
        let mut raw = Raw { link };
        let McMessage::Challenge(c) = raw.recv().await else { panic!("no challenge") };
        let alive = Alive {
            member: member(node),
            have_version,
            nonce: "n".into(),
            signature: key.sign_hex(&mc::alive_proof(&id(node), &c.nonce)),
        };
        raw.link.send(McMessage::Alive(alive)).await.unwrap_or_else(|e| panic!("{e}"));
        let first = raw.recv().await;
        (raw, first)
    }

    /// The next message; heartbeats go out while waiting, as a live SN's do.
    async fn recv(&mut self) -> McMessage {
        let deadline = tokio::time::Instant::now() + LIMIT;
        while tokio::time::Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(100), self.link.next()).await {
                Ok(Some(Ok(m))) => return m,
                Ok(other) => panic!("the MC closed the link: {other:?}"),
                Err(_) => {
                    let beat = McMessage::Heartbeat(mc::Heartbeat::default());
                    self.link.send(beat).await.unwrap_or_else(|e| panic!("{e}"));
                }
            }
        }
        panic!("no message from the MC within {LIMIT:?}")
    }

    /// The next config document, skipping membership news.
    async fn config(&mut self) -> mc::ConfigXml {
        loop {
            if let McMessage::Config(doc) = self.recv().await {
                return *doc;
            }
        }
    }
}

async fn members_of(c: &McClient) -> Vec<String> {
    c.members.borrow().keys().map(|k| k.to_string()).collect()
}

#[tokio::test]
async fn sns_register_see_each_other_and_the_dead_are_removed() {
    let mc = Mc::start("registry").await;
    let cancel = CancellationToken::new();
    let t0 = mc.client("t0", &cancel);
    let e1_cancel = CancellationToken::new();
    let e1 = mc.client("e1", &e1_cancel);
    wait_until(LIMIT, "both registered and told of each other", || {
        let (t0, e1) = (t0.clone(), e1.clone());
        async move { members_of(&t0).await == ["e1", "t0"] && members_of(&e1).await == ["e1", "t0"] }
    })
    .await;
    // Each got its config and acknowledged it.
    assert_eq!(t0.config.borrow().as_ref().map(|c| c.version), Some(1));
    wait_until(LIMIT, "acks", || async { mc.server.acked().iter().all(|(_, v)| *v == Some(1)) }).await;
    let (_, list) = get_text(&mc.url("/members")).await;
    assert!(list.contains("\"id\":\"e1\"") && list.contains("\"users\":3"), "{list}");
    // An SN that stops (its link closes) is gone for everyone at once.
    e1_cancel.cancel();
    wait_until(LIMIT, "e1 gone", || async { members_of(&t0).await == ["t0"] }).await;
    // One that goes silent with its link open is declared dead after three heartbeats (200 ms).
    let (mut raw, welcome) = Raw::register(&mc, "e2", &mc.keys["e2"], 0).await;
    assert!(matches!(welcome, McMessage::Welcome(_)), "{welcome:?}");
    wait_until(LIMIT, "e2 seen", || async { members_of(&t0).await == ["e2", "t0"] }).await;
    let since = std::time::Instant::now();
    wait_until(LIMIT, "silent e2 dead", || async { members_of(&t0).await == ["t0"] }).await;
    let took = since.elapsed();
    assert!(took >= Duration::from_millis(500), "declared dead after only {took:?}");
    // Its link is closed by the MC.
    let closed = tokio::time::timeout(LIMIT, async { while let Some(Ok(_)) = raw.link.next().await {} }).await;
    assert!(closed.is_ok(), "the MC keeps a dead SN's link open");
    let (_, m) = get_text(&mc.url("/metrics")).await;
    assert!(m.contains("livesky_mc_members{role=\"relay\"} 1"), "{m}");
    cancel.cancel();
}

#[tokio::test]
async fn strangers_and_wrong_keys_are_refused() {
    let mc = Mc::start("auth").await;
    // Right id, wrong key.
    let (_, reply) = Raw::register(&mc, "e1", &NodeKey::from_seed([99; 32]), 0).await;
    let McMessage::Refused(r) = reply else { panic!("accepted a wrong key: {reply:?}") };
    assert!(r.reason.contains("e1"), "{}", r.reason);
    // An id the MC has no key for.
    let (_, reply) = Raw::register(&mc, "intruder", &NodeKey::from_seed([98; 32]), 0).await;
    assert!(matches!(reply, McMessage::Refused(_)), "{reply:?}");
    // The real client with a wrong idea of the MC's key does not trust it.
    let cancel = CancellationToken::new();
    let cfg = McClientConfig {
        mc: mc.server.control_addr,
        key: mc.keys["t0"].clone(),
        mc_public_key: Some(NodeKey::from_seed([5; 32]).public_hex()),
        member: member("t0"),
        load: Arc::new(proto::mc::Heartbeat::default),
        spool: None,
    };
    let c = mc_client::spawn(cfg, Arc::new(AddressBook::default()), cancel.clone());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(c.config.borrow().is_none(), "took config from an MC it could not verify");
    let (_, m) = get_text(&mc.url("/metrics")).await;
    assert!(m.contains("livesky_mc_refused_total{reason=\"bad_signature\"} 1"), "{m}");
    assert!(m.contains("livesky_mc_refused_total{reason=\"unknown_node\"} 1"), "{m}");
    assert!(mc.server.members().iter().all(|m| m.as_str() != "intruder"));
    cancel.cancel();
}

#[tokio::test]
async fn a_changed_bitrate_is_pushed_as_just_that_element_and_old_versions_get_snapshots() {
    let mc = Mc::start("push").await;
    let (mut raw, _) = Raw::register(&mc, "e1", &mc.keys["e1"], 0).await;
    let first = raw.config().await;
    assert_eq!((first.version, first.base), (1, None));
    raw.link.send(McMessage::Ack(mc::Ack { version: 1 })).await.unwrap_or_else(|e| panic!("{e}"));
    mc.write_topology(&TOPOLOGY.replace("bitrate_kbps = 500", "bitrate_kbps = 800"));
    let up = raw.config().await;
    assert_eq!(
        up.to_xml(),
        r#"<config node="e1" version="2" base="1"><channel id="demo" origin="t0" source="loop" path="builtin:demo" speed="1" substreams="4" bitrate-kbps="800" legacy="ts hls"/></config>"#
    );
    // Reconnecting with version 1: the update again; with a version the MC never had: a snapshot.
    drop(raw);
    let (mut raw, _) = Raw::register(&mc, "e1", &mc.keys["e1"], 1).await;
    let doc = raw.config().await;
    assert_eq!((doc.version, doc.base, doc.channels.len()), (2, Some(1), 1));
    drop(raw);
    let (mut raw, _) = Raw::register(&mc, "e1", &mc.keys["e1"], 77).await;
    let doc = raw.config().await;
    assert_eq!((doc.version, doc.base, doc.channels.len()), (2, None, 2));
    assert!(doc.node.is_some());
    // Version 2 is known, but once the MC has moved on by more than its history, a snapshot.
    drop(raw);
    for rate in 0..=livesky_mgmt_center::store::HISTORY as u32 {
        mc.write_topology(&TOPOLOGY.replace("bitrate_kbps = 500", &format!("bitrate_kbps = {}", 1000 + rate)));
        mc.server.reload().unwrap_or_else(|e| panic!("{e}"));
    }
    let (mut raw, _) = Raw::register(&mc, "e1", &mc.keys["e1"], 2).await;
    let doc = raw.config().await;
    assert_eq!(doc.base, None, "version 2 is {} versions old", doc.version - 2);
    assert!(doc.version > 2 + livesky_mgmt_center::store::HISTORY as u64);
    // An SN that cannot apply an update asks for a resync and gets a snapshot.
    raw.link
        .send(McMessage::Resync(mc::Resync { have_version: 0, reason: "test".into() }))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(raw.config().await.base, None);
}

#[tokio::test]
async fn a_malformed_topology_is_refused_naming_the_key_and_the_running_config_stays() {
    let mc = Mc::start("reject").await;
    let cancel = CancellationToken::new();
    let e1 = mc.client("e1", &cancel);
    wait_until(LIMIT, "config", || async { e1.config.borrow().is_some() }).await;
    mc.write_topology(&TOPOLOGY.replace("bitrate_kbps = 500", "bitrate_kbps = \"fast\""));
    let (status, body) = post(&mc.url("/reload"), Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bitrate_kbps"), "the error names the key: {body}");
    let (_, cfg) = get_text(&mc.url("/config")).await;
    assert!(cfg.contains("\"version\":1") && cfg.contains("bitrate_kbps"), "{cfg}");
    assert_eq!(mc.server.config_version(), 1);
    // Actions need the token.
    assert_eq!(post(&mc.url("/reload"), None).await.0, 401);
    assert_eq!(post(&mc.url("/reload"), Some("guess")).await.0, 401);
    // Fixed: a channel added reaches the SN without a restart.
    mc.write_topology(&format!("{TOPOLOGY}\n[[channel]]\nid = \"news\"\nsource = {{ kind = \"push\" }}\n"));
    wait_until(LIMIT, "news pushed", || async {
        e1.config.borrow().as_ref().is_some_and(|c| c.channels.keys().any(|k| k.as_str() == "news"))
    })
    .await;
    assert_eq!(e1.config.borrow().as_ref().map(|c| (c.version, c.channels.len())), Some((2, 3)));
    let (status, body) = post(&mc.url("/reload"), Some(TOKEN)).await;
    assert_eq!((status, body.trim()), (200, r#"{"version":2}"#), "an unchanged file keeps its version");
    cancel.cancel();
}

#[tokio::test]
async fn a_channel_added_to_the_file_is_playable_from_an_edge_within_two_seconds() {
    let (mc, cluster, path) = livesky_tests::demo_with_mc("add").await;
    wait_until(LIMIT, "every SN registered and configured", || async {
        let acked = mc.acked();
        acked.len() == 4 && acked.iter().all(|(_, v)| *v == Some(1))
    })
    .await;
    let edge = cluster.get("edge1").unwrap_or_else(|| panic!("edge1"));
    // A viewer of the running channel, reading throughout.
    let viewer = livesky_tests::get(&edge.url("/live/demo.ts")).await;
    assert_eq!(viewer.status(), 200);
    let reading = tokio::spawn(livesky_tests::read_stream(viewer, 1 << 30, Duration::from_secs(6)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    let extra =
        format!("{text}\n[[channel]]\nid = \"extra\"\nsource = {{ kind = \"loop\", path = \"builtin:demo\" }}\n");
    write_atomic(&path, &extra).unwrap_or_else(|e| panic!("{e}"));
    let since = std::time::Instant::now();
    let url = edge.url("/live/extra.ts");
    wait_until(Duration::from_secs(2), "the new channel plays from the edge", || {
        let url = url.clone();
        async move {
            let resp = livesky_tests::get(&url).await;
            resp.status() == 200
                && livesky_tests::read_stream(resp, 188 * 100, Duration::from_millis(500)).await.len() >= 188 * 100
        }
    })
    .await;
    eprintln!("channel `extra` playable {:?} after the file changed", since.elapsed());
    assert_eq!(mc.config_version(), 2);
    // The running viewer never noticed: its stream went on without a break.
    let got = reading.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(got.len() > 200_000, "the demo viewer got only {} bytes in 6 s", got.len());
    assert!(got.chunks(188).all(|p| p[0] == 0x47), "the demo viewer's stream broke");
    // Removed again: Tier 0 stops feeding it.
    write_atomic(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    let tier0 = cluster.get("tier0").unwrap_or_else(|| panic!("tier0"));
    wait_until(LIMIT, "extra no longer fed", || async {
        tier0.node.source(&proto::ChannelId::new("extra").unwrap_or_else(|e| panic!("{e}"))).is_none()
    })
    .await;
    cluster.shutdown().await;
    mc.shutdown();
    let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
}

#[tokio::test]
async fn reports_survive_an_mc_outage_and_each_period_is_stored_exactly_once() {
    let mut mc = Mc::start("outage").await;
    let mut topo = sn_core::Topology::parse(TOPOLOGY, "test").unwrap_or_else(|e| panic!("{e}"));
    livesky::launch::ephemeral_ports(&mut topo);
    let keys = mc.keys.iter().map(|(n, k)| (id(n), k.clone())).collect();
    let link = livesky::launch::McLink {
        addr: mc.server.control_addr,
        mc_public_key: Some(mc.server.public_key()),
        keys,
        spool_dir: mc.dir.join("spool"),
        // One-second "minutes": the outage spans thirty of them.
        report_every: Duration::from_secs(1),
    };
    let cluster =
        livesky::launch::Cluster::start_with_mc(topo, None, Some(link)).await.unwrap_or_else(|e| panic!("{e}"));
    let edge = cluster.get("e1").unwrap_or_else(|| panic!("e1"));
    let viewer = livesky_tests::get(&edge.url("/live/demo.ts")).await;
    let reading = tokio::spawn(livesky_tests::read_stream(viewer, 1 << 30, Duration::from_secs(50)));
    let rows = |mc: &Mc| {
        let db = livesky_mgmt_center::reports::ReportStore::open(&mc.settings.db).unwrap_or_else(|e| panic!("{e}"));
        db.rows(Some("demo"), 0)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .filter(|r| r.node == "e1")
            .collect::<Vec<_>>()
    };
    wait_until(LIMIT, "reports flowing", || async { rows(&mc).len() >= 2 }).await;
    mc.restart_after(Duration::from_secs(30)).await;
    let spool = mc.dir.join("spool").join("e1");
    let pending = || std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0);
    assert!(pending() >= 25, "the edge kept only {} reports while the MC was down", pending());
    wait_until(Duration::from_secs(20), "spool drained after the restart", || async { pending() == 0 }).await;
    let got = rows(&mc);
    let starts: Vec<u64> = got.iter().map(|r| r.start_ms).collect();
    assert!(starts.len() >= 32, "only {} periods stored", starts.len());
    for w in starts.windows(2) {
        assert_eq!(w[1] - w[0], 1000, "a period is missing or doubled around {}: {starts:?}", w[0]);
    }
    // The viewer was served all along, and the rows say so.
    let bytes: u64 = got.iter().map(|r| r.cdn_bytes).sum();
    assert!(bytes > 500_000, "reported CDN bytes {bytes}");
    // (The first period may end before the viewer arrived.)
    assert!(got.iter().skip(1).all(|r| r.users == 1), "{got:?}");
    assert_eq!(got.iter().map(|r| r.joins).sum::<u64>(), 1, "{got:?}");
    reading.abort();
    cluster.shutdown().await;
}

#[tokio::test]
async fn an_sn_can_look_up_another_before_connecting_to_it() {
    let mc = Mc::start("lookup").await;
    let cancel = CancellationToken::new();
    let t0 = mc.client("t0", &cancel);
    wait_until(LIMIT, "t0 registered", || async { *t0.registered.borrow() }).await;
    let (mut raw, _) = Raw::register(&mc, "e1", &mc.keys["e1"], 1).await;
    raw.link.send(McMessage::Lookup(mc::Lookup { id: id("t0") })).await.unwrap_or_else(|e| panic!("{e}"));
    let answer = loop {
        if let McMessage::Members(m) = raw.recv().await
            && !m.full
            && m.members.iter().any(|x| x.id.as_str() == "t0")
        {
            break m;
        }
    };
    assert_eq!(answer.members[0].sn, member("t0").sn);
    // The client side: what the membership already holds, else asked; unknown ids time out empty.
    let e2 = mc.client("e2", &cancel);
    let found = e2.lookup(&id("t0"), LIMIT).await.unwrap_or_else(|| panic!("t0 not found"));
    assert_eq!(found.sn, member("t0").sn);
    assert!(e2.lookup(&id("nobody"), Duration::from_millis(300)).await.is_none());
    cancel.cancel();
}

/// A LiveSky player (TCP links) of the demo channel on the edge whose client port is `edge`.
async fn demo_player(edge: std::net::SocketAddr, cancel: &CancellationToken) -> livesky::peer_cmd::Player {
    let channel = proto::ChannelId::new("demo").unwrap_or_else(|e| panic!("{e}"));
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let net = livesky_peer::driver::Net { edge, listen: any, transport: livesky_peer::driver::Transport::Tcp };
    let cfg = livesky_peer::core::PeerConfig::new(channel.clone());
    livesky::peer_cmd::start_player(net, channel, cfg, any, false, cancel.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn admission_parameters_edited_in_the_file_reach_a_running_edge() {
    let (mc, cluster, path) = livesky_tests::demo_with_mc("admission").await;
    let edge = cluster.get("edge1").unwrap_or_else(|| panic!("edge1"));
    let client = edge.client.unwrap_or_else(|| panic!("edge1 has a client port"));
    let cancel = CancellationToken::new();
    let _player = demo_player(client, &cancel).await;
    let metrics = edge.url("/metrics");
    let bound = |name: &'static str| {
        let metrics = metrics.clone();
        async move { livesky_tests::metric(&metrics, "livesky_edge_stage_bound", &["channel=\"demo\"", name]).await }
    };
    wait_until(LIMIT, "the client service runs with the file's N1c", || async { bound("\"n1c\"").await == 4.0 }).await;
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    let edited = text.replacen("n1c = 4\ncapacity_kbps = 5000", "n1c = 40\ncapacity_kbps = 50000", 1);
    assert_ne!(edited, text);
    write_atomic(&path, &edited).unwrap_or_else(|e| panic!("{e}"));
    wait_until(LIMIT, "N1c and N*c follow the file", || async {
        bound("\"n1c\"").await == 40.0 && bound("\"nc_star\"").await == 100.0
    })
    .await;
    // The other edge kept its own parameters.
    let other = livesky_tests::metric(
        &cluster.get("edge2").unwrap_or_else(|| panic!("edge2")).url("/metrics"),
        "livesky_edge_stage_bound",
        &["n1c"],
    )
    .await;
    assert!(other == 0.0 || other == 4.0, "{other}");
    cancel.cancel();
    cluster.shutdown().await;
    mc.shutdown();
    let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
}

/// An operator sets the channel's `target_latency_ms` in the file while viewers play: the running
/// channel takes it, a player joining afterwards plays in low-latency mode with the target as its
/// buffer, and the one already playing keeps its own (its welcome came before).
#[tokio::test]
async fn a_latency_target_edited_in_the_file_reaches_players_joining_a_running_channel() {
    let (mc, cluster, path) = livesky_tests::demo_with_mc("latency-target").await;
    let edge = cluster.get("edge1").unwrap_or_else(|| panic!("edge1"));
    let client = edge.client.unwrap_or_else(|| panic!("edge1 has a client port"));
    let cancel = CancellationToken::new();
    let play = || demo_player(client, &cancel);
    let first = play().await;
    let started = |p: &livesky::peer_cmd::Player| p.stats.borrow().startup.is_some();
    wait_until(LIMIT, "the first player plays", || async { started(&first) }).await;
    assert_eq!(first.stats.borrow().buffer_target_ms, 15_000, "no target in the file yet");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    let edited = text.replacen("# target_latency_ms = 3000", "target_latency_ms = 3000", 1);
    assert_ne!(edited, text);
    write_atomic(&path, &edited).unwrap_or_else(|e| panic!("{e}"));
    // The push takes well under a second; a player that joins before it arrives keeps 15 s, so
    // join until one is welcomed with the target (each one a new client of the running channel).
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut players = Vec::new();
    loop {
        let p = play().await;
        wait_until(LIMIT, "a new player plays", || async { started(&p) }).await;
        let target = p.stats.borrow().buffer_target_ms;
        players.push(p);
        if target == 3_000 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no player got the 3 s target: {target}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(players.len() <= 3, "the target arrived within a few joins: {}", players.len());
    assert_eq!(first.stats.borrow().buffer_target_ms, 15_000, "a playing viewer keeps its buffer");
    cancel.cancel();
    cluster.shutdown().await;
    mc.shutdown();
    let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
}
