//! Trust: viewer tokens issued by the MC gate legacy players and LiveSky clients at the edges;
//! an SN never takes a chunk that fails the channel's signature check from its parent.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use livesky_tests::{demo_with_mc_token, get_text, post_json, wait_until};
use proto::ChannelId;
use proto::peer::{CLIENT_PROTOCOL_VERSION, FromEdge, Join, PeerControlCodec, ToEdge};
use tokio_util::codec::Framed;

/// Status of a GET, reading at most the head of a live stream.
async fn status(url: &str) -> u16 {
    let resp = livesky_tests::get(url).await;
    resp.status().as_u16()
}

/// What an edge answers a LiveSky join carrying `token`: the reason it refused, or None when
/// it welcomed the client.
async fn join_refusal(client_port: std::net::SocketAddr, token: &str) -> Option<String> {
    let stream = tokio::net::TcpStream::connect(client_port).await.expect("client port");
    let mut framed = Framed::new(stream, PeerControlCodec::default());
    let join = Join {
        version: CLIENT_PROTOCOL_VERSION,
        channel: ChannelId::new("demo").expect("channel"),
        token: token.into(),
        upload_kbps: 600,
        listen: None,
        buffer_ms: 15_000,
        redirects: 0,
        nat: proto::nat::NatClass::Open,
    };
    framed.send(ToEdge::Join(join)).await.expect("join sent");
    match tokio::time::timeout(Duration::from_secs(10), framed.next()).await {
        Ok(Some(Ok(FromEdge::Refused { reason }))) => Some(reason),
        Ok(Some(Ok(FromEdge::Welcome(_)))) => None,
        other => panic!("neither welcome nor refusal: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_tokens_gate_legacy_players_and_livesky_clients() {
    let (mc, cluster, path, api) = demo_with_mc_token("tokens").await;
    let edge = cluster.get("edge1").expect("edge1");
    let ts = edge.url("/live/demo.ts");
    let client_port = edge.client.expect("client port");
    assert_eq!(status(&ts).await, 200, "open before the channel requires tokens");
    assert_eq!(join_refusal(client_port, "").await, None);

    // The operator makes `demo` require tokens; the MC pushes it with its own key as issuer.
    let text = std::fs::read_to_string(&path).expect("topology");
    std::fs::write(&path, text.replacen("id = \"demo\"\n", "id = \"demo\"\nrequire_token = true\n", 1)).expect("write");
    wait_until(Duration::from_secs(15), "edge1 to refuse tokenless viewers", || {
        let ts = ts.clone();
        async move { status(&ts).await == 403 }
    })
    .await;
    let (_, why) = get_text(&ts).await;
    assert!(why.contains("requires one"), "{why}");
    let refused = join_refusal(client_port, "").await.expect("a tokenless LiveSky client is refused");
    assert!(refused.contains("token"), "{refused}");

    // A content provider's backend asks the MC for tokens; only with the API token.
    let tokens = format!("http://{}/api/tokens", mc.http_addr);
    let ask = |channel: &str, client: &str, ttl: u64| {
        format!(r#"{{"channel":"{channel}","client":"{client}","ttl_s":{ttl}}}"#)
    };
    assert_eq!(post_json(&tokens, None, &ask("demo", "v1", 600)).await.0, 401);
    assert_eq!(post_json(&tokens, Some(&api), &ask("nope", "v1", 600)).await.0, 404);
    assert_eq!(post_json(&tokens, Some(&api), &ask("live", "v1", 600)).await.0, 409, "live needs no token");
    assert_eq!(post_json(&tokens, Some(&api), &ask("demo", "a b", 600)).await.0, 400);
    assert_eq!(post_json(&tokens, Some(&api), "{").await.0, 400);
    let (code, body) = post_json(&tokens, Some(&api), &ask("demo", "v1", 600)).await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let token = v["token"].as_str().expect("token").to_string();

    // With it: HTTP-TS, HLS (segment URIs carry it on), and a LiveSky join.
    assert_eq!(status(&format!("{ts}?token={token}")).await, 200);
    let playlist = edge.url(&format!("/live/demo/index.m3u8?token={token}"));
    let (code, text) = get_text(&playlist).await;
    assert_eq!(code, 200, "{text}");
    let segment = text.lines().find(|l| !l.starts_with('#') && !l.is_empty()).expect("a segment").to_string();
    assert!(segment.ends_with(&format!("?token={token}")), "{segment}");
    assert_eq!(status(&edge.url(&format!("/live/demo/{segment}"))).await, 200);
    assert_eq!(status(&edge.url(&format!("/live/demo/{}", segment.split('?').next().unwrap_or("")))).await, 403);
    assert_eq!(join_refusal(client_port, &token).await, None, "a LiveSky client with a token is welcomed");

    // Tampered, for another channel's name, or expired: refused.
    let stretched =
        token.replacen(&v["expires"].to_string(), &(v["expires"].as_u64().unwrap_or(0) + 9999).to_string(), 1);
    assert_eq!(status(&format!("{ts}?token={stretched}")).await, 403);
    let (_, short) = post_json(&tokens, Some(&api), &ask("demo", "v2", 1)).await;
    let short: serde_json::Value = serde_json::from_str(&short).expect("json");
    let short = short["token"].as_str().expect("token").to_string();
    wait_until(Duration::from_secs(5), "the 1-s token to expire", || {
        let url = format!("{ts}?token={short}");
        async move { status(&url).await == 403 }
    })
    .await;
    let (_, why) = get_text(&format!("{ts}?token={short}")).await;
    assert!(why.contains("expired"), "{why}");
    let refused = join_refusal(client_port, &short).await.expect("expired token refused");
    assert!(refused.contains("expired"), "{refused}");
    let refused_total = livesky_tests::metric(&edge.url("/metrics"), "livesky_viewers_refused_total", &["demo"]).await;
    assert!(refused_total >= 5.0, "{refused_total}");
    cluster.shutdown().await;
    mc.shutdown();
}

/// A chunk of `channel` at `seq`: whole TS packets, a keyframe, signed.
fn signed_chunk(signer: &proto::ChannelSigner, seq: u64) -> proto::Chunk {
    let mut payload = vec![0u8; 4 * proto::TS_PACKET_LEN];
    for p in payload.chunks_exact_mut(proto::TS_PACKET_LEN) {
        p[0] = 0x47;
        p[1] = 0x1f;
        p[2] = 0xff;
    }
    let header = proto::ChunkHeader {
        channel: ChannelId::new("demo").expect("channel"),
        seq,
        ingest_ms: 0,
        media_ts: seq * 90_000,
        flags: proto::ChunkFlags::KEYFRAME,
    };
    let mut c = proto::Chunk { header, payload: bytes::Bytes::from(payload), signature: None };
    signer.sign(&mut c);
    c
}

/// The edge's newest chunk of `demo`, from its `/status`.
async fn last_seq(edge: &livesky::launch::RunningNode) -> Option<u64> {
    let (_, body) = get_text(&edge.url("/status")).await;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["channels"].as_array()?.iter().find(|c| c["id"] == "demo")?["last_seq"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_drops_a_parent_that_sends_a_forged_chunk_and_never_passes_it_on() {
    use proto::{SnCodec, SnMessage};
    // A parent SN that signs chunks 1..=5, forges 6 (a byte changed after signing) on its first
    // session, and sends 6 and 7 properly to whoever subscribes again.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let parent_addr = listener.local_addr().expect("addr");
    let signer = proto::ChannelSigner::from_seed([5; 32]);
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::channel::<u32>(4);
    // The parent proves it is t0 with t0's key, as the edge expects.
    let t0_key = std::sync::Arc::new(proto::NodeKey::from_seed([6; 32]));
    let parent_key = t0_key.clone();
    let parent = tokio::spawn(async move {
        for session in 0u32.. {
            let Ok((stream, _)) = listener.accept().await else { return };
            let mut framed = Framed::new(stream, SnCodec::default());
            let Some(sub) = livesky_tests::accept_child(&mut framed, "t0", &parent_key).await else {
                continue;
            };
            let ok = SnMessage::SubscribeOk {
                channel: sub.channel,
                source: proto::SourceStatus::Live,
                verify_key: Some(signer.verifier().to_bytes()),
            };
            let _ = framed.send(ok).await;
            let seqs: Vec<u64> = if session == 0 { (1..=6).collect() } else { vec![6, 7] };
            for seq in seqs {
                let mut c = signed_chunk(&signer, seq);
                if session == 0 && seq == 6 {
                    let mut forged = c.payload.to_vec();
                    forged[100] ^= 0xff;
                    c.payload = bytes::Bytes::from(forged);
                }
                if framed.send(SnMessage::Chunk(c)).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Until the edge hangs up (keepalives aside).
            while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(20), framed.next()).await {}
            let _ = closed_tx.send(session).await;
        }
    });
    let topology = format!(
        "[[channel]]\nid = \"demo\"\nsource = {{ kind = \"push\" }}\n\n[[node]]\nid = \"t0\"\ntier = 0\nsn_listen = \"{parent_addr}\"\nhttp_listen = \"127.0.0.1:0\"\n{}",
        livesky_tests::loopback_node("edge", 1, sn_core::Role::Edge, &["t0"], "")
    );
    let topo = sn_core::Topology::parse(&topology, "test").expect("topology");
    let only = [proto::NodeId::new("edge").expect("id")];
    let keys = std::collections::HashMap::from([
        (proto::NodeId::new("t0").expect("id"), t0_key),
        (proto::NodeId::new("edge").expect("id"), std::sync::Arc::new(proto::NodeKey::from_seed([7; 32]))),
    ]);
    let ids = livesky::launch::Identities::Given(keys);
    let cluster = livesky::launch::Cluster::start_with_keys(topo, Some(&only), None, ids).await.expect("edge starts");
    let edge = cluster.get("edge").expect("edge");
    // A viewer makes the edge subscribe.
    let viewer = tokio::spawn(livesky_tests::read_stream(
        livesky_tests::get(&edge.url("/live/demo.ts")).await,
        1 << 20,
        Duration::from_secs(10),
    ));
    let first = tokio::time::timeout(Duration::from_secs(15), closed_rx.recv()).await;
    assert_eq!(first.ok().flatten(), Some(0), "the edge hung up on the parent that forged chunk 6");
    wait_until(Duration::from_secs(15), "the edge to resume from the parent's genuine chunks", || async {
        last_seq(edge).await == Some(7)
    })
    .await;
    // Chunk 6 in the edge's ring is the genuine one: what a viewer reads carries no forged byte.
    let got = viewer.await.unwrap_or_default();
    assert!(!got.is_empty());
    assert!(
        got.chunks(proto::TS_PACKET_LEN).all(|p| p.get(100).is_none_or(|b| *b == 0)),
        "a forged byte reached a viewer"
    );
    parent.abort();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_key_rotated_by_config_push_reaches_playing_peers_without_bans() {
    let (mc, cluster, path) = livesky_tests::demo_with_mc("rotate").await;
    let edge = cluster.get("edge1").expect("edge1");
    let cancel = tokio_util::sync::CancellationToken::new();
    let peers = [livesky_tests::tcp_peer(edge, &cancel).await, livesky_tests::tcp_peer(edge, &cancel).await];
    wait_until(Duration::from_secs(20), "both peers to play", || {
        let played: Vec<u64> = peers.iter().map(|p| p.stats.borrow().play.played_ms).collect();
        async move { played.iter().all(|&ms| ms > 2_000) }
    })
    .await;
    // The operator rotates the channel key: Tier 0 signs with the new one.
    let seed = "4242424242424242424242424242424242424242424242424242424242424242";
    let new_key = proto::ChannelSigner::from_hex_seed(seed).expect("seed").verifier().to_hex();
    let text = std::fs::read_to_string(&path).expect("topology");
    std::fs::write(&path, text.replacen("id = \"demo\"\n", &format!("id = \"demo\"\nsigning_key = \"{seed}\"\n"), 1))
        .expect("write");
    let tier0 = cluster.get("tier0").expect("tier0").url("/status");
    wait_until(Duration::from_secs(15), "Tier 0 to sign with the new key", || {
        let url = tier0.clone();
        let want = new_key.clone();
        async move { get_text(&url).await.1.contains(&want) }
    })
    .await;
    let before: Vec<u64> = peers.iter().map(|p| p.stats.borrow().play.played_ms).collect();
    // Chunks keep coming, checked against the new key: both peers play 8 s more.
    wait_until(Duration::from_secs(30), "the peers to play on under the new key", || {
        let played: Vec<u64> = peers.iter().map(|p| p.stats.borrow().play.played_ms).collect();
        let before = before.clone();
        async move { played.iter().zip(&before).all(|(now, b)| *now > b + 8_000) }
    })
    .await;
    let status = livesky_tests::p2p_status(edge).await;
    assert_eq!(status["bans"], 0, "nobody was banned for the rotation: {status}");
    for p in &peers {
        let st = *p.stats.borrow();
        assert!(st.verifying, "{st:?}");
        eprintln!(
            "after rotation: stalls {} stalled {} ms, bad chunks {}",
            st.play.stalls, st.play.stalled_ms, st.bad_chunks
        );
        assert!(st.play.stalls <= 1, "{st:?}");
    }
    cancel.cancel();
    cluster.shutdown().await;
    mc.shutdown();
}
