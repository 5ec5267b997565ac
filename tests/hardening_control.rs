//! Attacks on the control plane (issue 20): the MC's API handing out secrets, random channel
//! names opening upstream chains, strangers on SN ports and on the MC's control port. Real
//! services on loopback; each test shows the refusal, its reason, the metric, and that viewers
//! play on.

use std::time::{Duration, Instant};

use livesky_tests::*;

const SECRETS: &str = r#"
[[channel]]
id = "demo"
source = { kind = "loop", path = "builtin:demo" }
stream_key = "sk-very-secret-stream-key"
signing_key = "4242424242424242424242424242424242424242424242424242424242424242"

[[channel]]
id = "pulled"
source = { kind = "srt_call", addr = "127.0.0.1:9", passphrase = "srt-passphrase-secret" }
"#;

fn secret_topology() -> String {
    [
        SECRETS.to_string(),
        loopback_node(
            "tier0",
            0,
            sn_core::Role::Relay,
            &[],
            "ingest = { srt_listen = \"127.0.0.1:0\", srt_passphrase = \"node-srt-passphrase\" }",
        ),
        loopback_node("edge", 1, sn_core::Role::Edge, &["tier0"], ""),
    ]
    .concat()
}

/// Issue 20, finding 2: `GET /config/{node}` needed no token and returned the origin's stream
/// keys, signing-key seed and SRT passphrases. Now it needs the API token and shows no secret;
/// no other MC page shows one either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mc_never_shows_secrets_and_wants_its_token_for_configs() {
    let (mc, cluster, path, token) = with_mc("secrets", &secret_topology(), Duration::from_secs(60)).await;
    let base = format!("http://{}", mc.http_addr);
    let (code, body) = get_text(&format!("{base}/config/tier0")).await;
    assert_eq!(code, 401, "no token: {body}");
    let (code, body) = get_with_bearer(&format!("{base}/config/tier0"), "wrong").await;
    assert_eq!(code, 401, "wrong token: {body}");
    let (code, doc) = get_with_bearer(&format!("{base}/config/tier0"), &token).await;
    assert_eq!(code, 200);
    assert!(doc.contains("(redacted)"), "{doc}");
    let secrets = ["sk-very-secret-stream-key", "42424242", "srt-passphrase-secret", "node-srt-passphrase"];
    let mut pages = vec![doc];
    for page in ["/config/edge", "/config", "/members", "/edges", "/api/overview", "/api/sns", "/api/channel/demo"] {
        pages.push(get_with_bearer(&format!("{base}{page}"), &token).await.1);
    }
    for (i, page) in pages.iter().enumerate() {
        for s in secrets {
            assert!(!page.contains(s), "page {i} shows secret {s}: {page}");
        }
    }
    // The origin still got its secrets over the control link: the channel is signed with the seed.
    let tier0 = cluster.get("tier0").expect("tier0");
    let want = proto::ChannelSigner::from_hex_seed(&"42".repeat(32)).expect("seed").verifier().to_hex();
    wait_until(Duration::from_secs(5), "the origin's channel key", || async {
        get_text(&tier0.url("/status")).await.1.contains(&want)
    })
    .await;
    assert!(metric(&format!("{base}/metrics"), "livesky_mc_api_refused_total", &["config"]).await >= 2.0);
    cluster.shutdown().await;
    mc.shutdown();
    let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
}

/// Issue 20, finding 6: any valid channel name opened an upstream chain edge→core→Tier 0 and
/// left Prometheus series on each (3,000 random names grew the edge's /metrics from 1.4 KB to
/// 2.4 MB). Now names outside the topology are refused before anything opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_channel_names_open_nothing_and_grow_no_metrics() {
    let topo = [
        "[[channel]]\nid = \"demo\"\nsource = { kind = \"loop\", path = \"builtin:demo\" }\n".to_string(),
        loopback_node("tier0", 0, sn_core::Role::Relay, &[], ""),
        loopback_node("core", 1, sn_core::Role::Relay, &["tier0"], ""),
        loopback_node("edge", 2, sn_core::Role::Edge, &["core"], ""),
    ]
    .concat();
    let cluster = start(&topo).await;
    let edge = cluster.get("edge").expect("edge");
    let viewer = tokio::spawn({
        let url = edge.url("/live/demo.ts");
        async move { read_stream(get(&url).await, usize::MAX, Duration::from_secs(8)).await.len() }
    });
    let sizes = async || {
        let mut total = 0;
        for n in ["tier0", "core", "edge"] {
            total += get_text(&cluster.get(n).expect("node").url("/metrics")).await.1.len();
        }
        total
    };
    // Wait for the demo's series to exist, then measure.
    wait_until(Duration::from_secs(5), "the demo channel at the edge", || async {
        get_text(&edge.url("/metrics")).await.1.contains("channel=\"demo\"")
    })
    .await;
    let before = sizes().await;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..10 {
        let base = edge.url("/live/");
        tasks.push(tokio::spawn(async move {
            let mut not_found = 0;
            for i in 0..300 {
                let (code, _) = get_text(&format!("{base}rnd{worker}x{i}.ts")).await;
                not_found += usize::from(code == 404);
            }
            not_found
        }));
    }
    let mut refused = 0;
    for t in tasks {
        refused += t.await.expect("task");
    }
    eprintln!("3,000 random channel names in {:?}", t0.elapsed());
    assert_eq!(refused, 3000, "every random name gets 404");
    // Labelled by name, 3,000 names would add hundreds of kB (2.4 MB at the edge before the fix);
    // what grows now is the few series any running node adds as it goes.
    let after = sizes().await;
    assert!(after < before + 16 * 1024, "metrics grew from {before} to {after} bytes");
    for n in ["tier0", "core", "edge"] {
        let m = get_text(&cluster.get(n).expect("node").url("/metrics")).await.1;
        assert!(!m.contains("rnd"), "{n} labels a metric with a random name");
    }
    for n in ["tier0", "core", "edge"] {
        let status = get_text(&cluster.get(n).expect("node").url("/status")).await.1;
        assert!(!status.contains("rnd"), "{n} opened a random channel: {status}");
    }
    let unknown = metric(&edge.url("/metrics"), "livesky_unknown_channel_requests_total", &["http"]).await;
    assert_eq!(unknown, 3000.0);
    assert!(viewer.await.expect("viewer") > 200_000, "the real viewer kept playing");
    cluster.shutdown().await;
}

/// A stranger's attempt at an SN port: handshake as `claimed` signing with `key` (or zeros),
/// then subscribe to `channel`. What the parent answered.
async fn subscribe_as(
    addr: std::net::SocketAddr,
    claimed: &str,
    tier: u8,
    key: Option<&proto::NodeKey>,
    parent: &str,
    channel: &str,
) -> proto::SnMessage {
    use futures_util::{SinkExt, StreamExt};
    use proto::{Hello, LinkSide, NodeId, SnCodec, SnMessage, StartAt, Subscribe};
    let stream = connect_from("127.0.10.1", addr).await.expect("connect");
    let mut f = tokio_util::codec::Framed::new(stream, SnCodec::default());
    let me = NodeId::new(claimed).expect("id");
    let nonce = [9u8; 32];
    f.send(SnMessage::Hello(Hello { version: proto::PROTOCOL_VERSION, node: me.clone(), tier, nonce }))
        .await
        .expect("hello");
    let their = match tokio::time::timeout(Duration::from_secs(5), f.next()).await {
        Ok(Some(Ok(SnMessage::Challenge { nonce, .. }))) => nonce,
        other => panic!("expected a challenge: {other:?}"),
    };
    let parent = NodeId::new(parent).expect("id");
    let proof = key.map_or([0u8; 64], |k| k.sign(&proto::link_proof(LinkSide::Child, &me, &parent, &their, &nonce)));
    let sub =
        Subscribe { channel: proto::ChannelId::new(channel).expect("channel"), start: StartAt::Live, path: vec![] };
    f.send(SnMessage::Auth { proof }).await.expect("auth");
    f.send(SnMessage::Subscribe(sub)).await.expect("subscribe");
    match tokio::time::timeout(Duration::from_secs(8), f.next()).await {
        Ok(Some(Ok(m))) => m,
        other => panic!("no answer to the subscription: {other:?}"),
    }
}

/// Issue 20, finding 4: SN links were unauthenticated: any host reaching an SN port sent
/// `Hello` and subscribed to any channel (Tier 0 and relay SN ports streamed a `require_token`
/// channel the edge refused). Now each side proves its identity with the key the MC (here, the
/// cluster) knows, and a parent takes only the children the topology names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sn_ports_stream_only_to_the_children_the_topology_names() {
    let topo = [
        "[[channel]]\nid = \"paid\"\nrequire_token = true\nsource = { kind = \"loop\", path = \"builtin:demo\" }\n\
         [[channel]]\nid = \"demo\"\nsource = { kind = \"loop\", path = \"builtin:demo\" }\n"
            .to_string(),
        loopback_node("tier0", 0, sn_core::Role::Relay, &[], ""),
        loopback_node("core", 1, sn_core::Role::Relay, &["tier0"], ""),
        loopback_node("edge", 2, sn_core::Role::Edge, &["core"], ""),
    ]
    .concat();
    let mut topology = sn_core::Topology::parse(&topo, "test").expect("topology");
    livesky::launch::ephemeral_ports(&mut topology);
    let keys: std::collections::HashMap<_, _> = topology
        .nodes
        .iter()
        .map(|n| (n.id.clone(), std::sync::Arc::new(proto::NodeKey::generate().expect("key").0)))
        .collect();
    let edge_key = keys.get(&proto::NodeId::new("edge").expect("id")).cloned().expect("edge key");
    let ids = livesky::launch::Identities::Given(keys);
    let cluster = livesky::launch::Cluster::start_with_keys(topology, None, None, ids).await.expect("cluster");
    let (tier0, core, edge) =
        (cluster.get("tier0").expect("t0"), cluster.get("core").expect("core"), cluster.get("edge").expect("edge"));
    let (code, _) = get_text(&edge.url("/live/paid.ts")).await;
    assert_eq!(code, 403, "the edge wants a token");
    let (t0_sn, core_sn) = (tier0.sn.expect("sn"), core.sn.expect("sn"));
    let mut refusals = Vec::new();
    // Claiming to be the edge without its key; a node nobody knows; the real edge's key, but at
    // Tier 0, which the topology does not name as its parent.
    refusals.push(subscribe_as(core_sn, "edge", 2, None, "core", "paid").await);
    refusals
        .push(subscribe_as(t0_sn, "edge", 2, Some(&proto::NodeKey::generate().expect("k").0), "tier0", "paid").await);
    refusals.push(subscribe_as(t0_sn, "mallory", 1, None, "tier0", "paid").await);
    refusals.push(subscribe_as(t0_sn, "edge", 2, Some(&edge_key), "tier0", "paid").await);
    for (i, r) in refusals.iter().enumerate() {
        assert!(
            matches!(r, proto::SnMessage::SubscribeErr { code: proto::RefuseCode::Forbidden, .. }),
            "attempt {i}: {r:?}"
        );
    }
    // The real edge, with its key, at its real parent: served.
    let ok = subscribe_as(core_sn, "edge", 2, Some(&edge_key), "core", "demo").await;
    assert!(matches!(ok, proto::SnMessage::SubscribeOk { .. }), "{ok:?}");
    let reasons = [("core", "bad_proof", core), ("tier0", "bad_proof", tier0), ("tier0", "no_key", tier0)];
    for (node, reason, n) in reasons {
        let v = metric(&n.url("/metrics"), "livesky_sn_link_refused_total", &[&format!("reason=\"{reason}\"")]).await;
        assert!(v >= 1.0, "{node}: {reason} counted");
    }
    assert!(metric(&tier0.url("/metrics"), "livesky_sn_link_refused_total", &["not_in_topology"]).await >= 1.0);
    // Viewers of the edge never noticed.
    let got = read_stream(get(&edge.url("/live/demo.ts")).await, 100_000, Duration::from_secs(5)).await;
    assert!(got.len() >= 100_000);
    cluster.shutdown().await;
}

/// Issue 20, finding 12 (and 13's last line): the SN↔MC link was plaintext, carrying keys and
/// configs, and the MC parsed up to 8 MiB of XML from anyone before checking a signature. Now it
/// speaks TLS 1.3 with the MC's identity key (an SN pins it), and until an SN has proved its
/// identity its frames may be 16 KiB at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mc_control_link_is_private_and_strangers_get_small_frames() {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::AsyncWriteExt;
    let (mc, cluster, path, _) = demo_with_mc_token("mclink").await;
    let control = mc.control_addr;
    // In plaintext, nothing: no challenge in the clear, and the connection is dropped.
    let mut plain = connect_from("127.0.11.1", control).await.expect("connect");
    plain.write_all(b"<alive id=\"tier0\"/>").await.expect("write");
    let (closed, said) = closed_within(&mut plain, Duration::from_secs(6)).await;
    assert!(closed, "the MC closed a plaintext link");
    assert!(!String::from_utf8_lossy(&said).contains("challenge"), "the MC spoke in the clear: {said:?}");
    // Inside TLS, before registering: a 1 MiB frame is refused without being parsed.
    let pinned = proto::NodePublicKey::from_hex(&mc.public_key()).ok();
    let stream = connect_from("127.0.11.2", control).await.expect("connect");
    let mut link = livesky_net::mc_tls::connect(stream, pinned).await.expect("TLS with the pinned MC");
    let first = tokio::time::timeout(Duration::from_secs(5), link.next()).await;
    assert!(matches!(first, Ok(Some(Ok(proto::mc::McMessage::Challenge(_))))), "{first:?}");
    let big = proto::mc::McMessage::Refused(proto::mc::Refused { reason: "x".repeat(1 << 20) });
    let _ = link.send(big).await;
    let answer = tokio::time::timeout(Duration::from_secs(5), link.next()).await;
    assert!(
        matches!(answer, Ok(Some(Ok(proto::mc::McMessage::Refused(_)))) | Ok(None) | Ok(Some(Err(_)))),
        "{answer:?}"
    );
    let metrics = format!("http://{}/metrics", mc.http_addr);
    assert!(metric(&metrics, "livesky_mc_refused_total", &["tls"]).await >= 1.0);
    assert!(metric(&metrics, "livesky_mc_refused_total", &["protocol"]).await >= 1.0);
    // The real SNs are registered and playing on.
    assert_eq!(mc.members().len(), 4);
    let edge = cluster.get("edge1").expect("edge1");
    let got = read_stream(get(&edge.url("/live/demo.ts")).await, 50_000, Duration::from_secs(5)).await;
    assert!(got.len() >= 50_000);
    cluster.shutdown().await;
    mc.shutdown();
    let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
}
