//! The NOC's API and page with the demo running: live numbers from heartbeats, SNs by tier with
//! liveness, server-sent updates.

use std::time::Duration;

use http_body_util::BodyExt;
use livesky_tests::{demo_with_mc, get, get_text, get_with_bearer, wait_until};

async fn json(url: &str) -> serde_json::Value {
    let (status, body) = get_text(url).await;
    assert_eq!(status, 200, "{url}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_follows_a_viewer_and_the_sn_table_shows_a_dead_edge() {
    let (mc, cluster, path) = demo_with_mc("noc").await;
    let base = format!("http://{}", mc.http_addr);
    let (status, page) = get_text(&format!("{base}/")).await;
    assert_eq!(status, 200);
    assert!(page.contains("LiveSky NOC") && page.contains("/api/events"), "the embedded page");
    assert!(!page.contains("<script src=\"http"), "no scripts from elsewhere");
    // One legacy viewer on edge1, reading.
    let viewer = get(&cluster.get("edge1").expect("edge1").url("/live/demo.ts")).await;
    let reading = tokio::spawn(livesky_tests::read_stream(viewer, 16 << 20, Duration::from_secs(30)));
    let url = format!("{base}/api/overview");
    wait_until(Duration::from_secs(15), "the viewer and its bandwidth in the overview", || {
        let url = url.clone();
        async move {
            let o = json(&url).await;
            let now = &o["now"];
            now["viewers_legacy"] == 1 && now["cdn_mbps"].as_f64().is_some_and(|m| m > 0.2)
        }
    })
    .await;
    let o = json(&url).await;
    assert!(o["history"].as_array().is_some_and(|h| !h.is_empty()), "{o}");
    for field in ["leaves_per_min", "q2", "startup_p50_ms", "stalls_per_min", "p2p_share"] {
        assert!(o["now"].get(field).is_some(), "{field} in {o}");
    }
    // The channel page's data: ingest health at Tier 0 (keyframe spacing once its ring holds
    // two) and the viewer per edge.
    let channel_url = format!("{base}/api/channel/demo");
    wait_until(Duration::from_secs(10), "two keyframes at Tier 0", || {
        let url = channel_url.clone();
        async move { json(&url).await["ingest"]["status"]["keyframe_interval_ms"].is_u64() }
    })
    .await;
    let ch = json(&channel_url).await;
    let ingest = &ch["ingest"]["status"];
    assert_eq!(ch["ingest"]["node"], "tier0", "{ch}");
    assert!(ingest["kbps"].as_u64().is_some_and(|k| k > 100), "{ch}");
    assert!(ingest["keyframe_interval_ms"].as_u64().is_some_and(|k| k > 0), "{ch}");
    assert_eq!(ingest["ingest_errors"], 0);
    assert_eq!(ingest["protocol"], "loop", "{ch}");
    assert!(ingest["frame_rate"].as_f64().is_some_and(|f| f > 20.0 && f < 30.0), "the clip is 25 fps: {ch}");
    let edges = ch["edges"].as_array().cloned().unwrap_or_default();
    assert!(edges.iter().any(|e| e["edge"] == "edge1" && e["users"] == 1), "{ch}");
    let (status, page) = get_text(&format!("{base}/channel/demo")).await;
    assert_eq!(status, 200);
    assert!(page.contains("\"kind\":\"channel\""), "the page comes with its data");
    // Live updates: an `overview` event within a few seconds.
    let resp = get(&format!("{base}/api/events")).await;
    assert_eq!(resp.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("text/event-stream"));
    let mut body = resp.into_body();
    let mut seen = String::new();
    let got = tokio::time::timeout(Duration::from_secs(6), async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(d) = frame.data_ref() {
                seen.push_str(&String::from_utf8_lossy(d));
                if seen.contains("event: overview") && seen.contains("\"viewers_legacy\":1") {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(got, Ok(true), "{seen}");
    let sns = json(&format!("{base}/api/sns")).await;
    let list = sns["sns"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 4, "{sns}");
    assert!(list.iter().all(|s| s["alive"] == true && s["config_version"].is_u64()), "{sns}");
    assert_eq!(list[0]["id"], "tier0", "by tier");
    cluster.get("edge2").expect("edge2").node.shutdown();
    wait_until(Duration::from_secs(5), "edge2 shown dead", || {
        let url = format!("{base}/api/sns");
        async move {
            let s = json(&url).await;
            s["sns"].as_array().is_some_and(|l| l.iter().any(|s| s["id"] == "edge2" && s["alive"] == false))
        }
    })
    .await;
    reading.abort();
    cluster.shutdown().await;
    mc.shutdown();
    let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
}

async fn post(url: &str, token: Option<&str>) -> u16 {
    livesky_tests::post(url, token).await.0
}

/// P0 of the edge's first (here: only) channel with LiveSky clients; 0 with none.
fn p0(channel: &serde_json::Value) -> u64 {
    channel["p0"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_actions_need_the_token_drain_moves_peers_and_offline_stops_a_channel() {
    let (mc, cluster, path, token) = livesky_tests::demo_with_mc_token("actions").await;
    let base = format!("http://{}", mc.http_addr);
    for action in ["/api/edges/edge1/drain", "/api/channels/demo/offline", "/api/reload"] {
        assert_eq!(post(&format!("{base}{action}"), None).await, 401, "{action} without a token");
        assert_eq!(post(&format!("{base}{action}"), Some("wrong")).await, 401, "{action} with a wrong token");
    }
    assert_eq!(post(&format!("{base}/api/edges/nosuch/drain"), Some(&token)).await, 404);
    // A peer player on edge1.
    let (edge1, edge2) = (cluster.get("edge1").expect("edge1"), cluster.get("edge2").expect("edge2"));
    let cancel = tokio_util::sync::CancellationToken::new();
    let player = livesky_tests::tcp_peer(edge1, &cancel).await;
    wait_until(Duration::from_secs(10), "the peer on edge1", || async {
        p0(&livesky_tests::p2p_status(edge1).await) == 1
    })
    .await;
    // Drain edge1: the GSLB's feed drops it and the peer moves to edge2.
    assert_eq!(post(&format!("{base}/api/edges/edge1/drain"), Some(&token)).await, 200);
    wait_until(Duration::from_secs(10), "the peer moved to edge2", || async {
        p0(&livesky_tests::p2p_status(edge2).await) == 1 && p0(&livesky_tests::p2p_status(edge1).await) == 0
    })
    .await;
    let feed = json(&format!("{base}/edges")).await;
    let ids: Vec<&str> =
        feed["edges"].as_array().map(|l| l.iter().filter_map(|e| e["id"].as_str()).collect()).unwrap_or_default();
    assert_eq!(ids, ["edge2"], "{feed}");
    let sns = json(&format!("{base}/api/sns")).await;
    assert!(sns["sns"].as_array().is_some_and(|l| l.iter().any(|s| s["id"] == "edge1" && s["draining"] == true)));
    // Its player re-joined on edge2 (new session, new counters) and plays on.
    wait_until(Duration::from_secs(10), "the moved peer playing", || async {
        player.stats.borrow().play.played_ms > 1000
    })
    .await;
    assert_eq!(post(&format!("{base}/api/edges/edge1/undrain"), Some(&token)).await, 200);
    wait_until(Duration::from_secs(5), "edge1 back in the feed", || async {
        json(&format!("{base}/edges")).await["edges"].as_array().is_some_and(|l| l.len() == 2)
    })
    .await;
    // Take channel `demo` offline, then back.
    assert_eq!(post(&format!("{base}/api/channels/demo/offline"), Some(&token)).await, 200);
    let url = edge2.url("/live/demo.ts");
    wait_until(Duration::from_secs(10), "demo gone from edge2", || {
        let url = url.clone();
        async move { livesky_tests::get(&url).await.status() == 404 }
    })
    .await;
    let (_, doc) = get_with_bearer(&format!("{base}/config/edge2"), &token).await;
    assert!(!doc.contains("id=\"demo\""), "{doc}");
    assert!(json(&format!("{base}/api/sns")).await["offline"] == serde_json::json!(["demo"]));
    assert_eq!(post(&format!("{base}/api/channels/demo/online"), Some(&token)).await, 200);
    wait_until(Duration::from_secs(10), "demo back on edge2", || {
        let url = url.clone();
        async move { livesky_tests::get(&url).await.status() == 200 }
    })
    .await;
    cancel.cancel();
    cluster.shutdown().await;
    mc.shutdown();
    let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
}
