//! Trust: viewer tokens issued by the MC gate legacy players and LiveSky clients at the edges.

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
    let ask = |channel: &str, client: &str, ttl: u64| format!(r#"{{"channel":"{channel}","client":"{client}","ttl_s":{ttl}}}"#);
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
    let stretched = token.replacen(&v["expires"].to_string(), &(v["expires"].as_u64().unwrap_or(0) + 9999).to_string(), 1);
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
