//! Web pages in the swarm (headless Chromium): the edge's `/watch/demo` page runs the peer core
//! as WebAssembly, joins over the edge's WebSocket, swaps chunks with native `livesky peer`
//! players over WebRTC data channels and plays through Media Source. Also prints the page's
//! CPU per peer (BENCHMARKS.md quotes it; nothing here times anything).

use std::time::{Duration, Instant};

use livesky::swarm::{Member, spawn_peer, spawn_peer_with};
use livesky_peer::driver::Transport;
use livesky_tests::chromium::{Browser, WEBRTC_FLAGS};
use livesky_tests::*;
use proto::ChannelId;
use serde_json::Value;
use sn_core::Role;
use tokio_util::sync::CancellationToken;

const BITRATE_KBPS: u64 = 500;
const UPLOAD_KBPS: u32 = 750;
const PLAY: Duration = Duration::from_secs(60);
const STATUS: &str = "JSON.stringify(window.LiveSky && LiveSky.players[0] ? LiveSky.players[0].status() : null)";

fn topology(n1c: u32) -> String {
    let edge_extra = format!(
        "[node.edge]\nclient_listen = \"127.0.0.1:0\"\nstun_listen = \"127.0.0.1:0\"\n\
         [node.edge.admission]\nn1c = {n1c}\ncapacity_kbps = {}\nalpha = 1.5\nk_prime = 3\nlambda = 0.0\nmu = 0.0\n\
         upload_cap_factor = 1.5\njoins_per_ip_per_sec = 100.0\njoin_burst_per_ip = 100.0",
        10 * BITRATE_KBPS
    );
    [
        format!(
            "[[channel]]\nid = \"demo\"\nbitrate_kbps = {BITRATE_KBPS}\nsubstreams = 4\nsource = {{ kind = \"loop\", path = \"builtin:demo\" }}\n"
        ),
        loopback_node("tier0", 0, Role::Relay, &[], ""),
        loopback_node("edge", 1, Role::Edge, &["tier0"], &edge_extra),
    ]
    .concat()
}

fn chromium_here() -> bool {
    if tool_available("chromium", "--version") {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "CI must install chromium (see .ci/run)");
    eprintln!("chromium not installed: skipping");
    false
}

async fn pages(browser: &Browser) -> Vec<Value> {
    browser
        .eval_all(STATUS)
        .await
        .into_iter()
        .map(|v| v.as_str().and_then(|s| serde_json::from_str(s).ok()).unwrap_or(Value::Null))
        .collect()
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(0.0)
}

async fn join_natives(n: usize, edge: std::net::SocketAddr, cancel: &CancellationToken) -> Vec<Member> {
    let channel = ChannelId::new("demo").unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(spawn_peer(edge, &channel, UPLOAD_KBPS, Transport::WebRtc, cancel));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_pages_and_ten_native_peers_share_one_swarm() {
    if !chromium_here() {
        return;
    }
    let _swarm = one_swarm_at_a_time().await;
    let cluster = start(&topology(4)).await;
    let edge = cluster.get("edge").unwrap();
    let client_port = edge.client.expect("edge runs the client service");
    let cancel = CancellationToken::new();
    let mut natives = join_natives(5, client_port, &cancel).await;
    wait_until(Duration::from_secs(30), "the first native peers to play", || {
        let all = natives.iter().all(|m| m.stats.borrow().startup.is_some());
        async move { all }
    })
    .await;

    let url = format!("http://{}/watch/demo", edge.http);
    let browser = Browser::launch(&url, WEBRTC_FLAGS).await;
    browser.open(&url).await;
    browser.open(&url).await;
    wait_until(Duration::from_secs(40), "three pages to play", || async {
        let p = pages(&browser).await;
        if std::env::var_os("LIVESKY_TEST_VERBOSE").is_some() {
            eprintln!("{p:?}");
        }
        p.len() == 3 && p.iter().all(|s| s["state"] == "playing" && f(s, "current_time") > 0.5)
    })
    .await;
    let t0 = Instant::now();
    let cpu0 = browser.cpu_seconds();
    let first = pages(&browser).await;

    // A page proves steady upload (a minute of on-time, stall-free reports) before any tree
    // depends on it; native peers that join afterwards may then take substreams from it.
    wait_until(Duration::from_secs(100), "the edge to promote a page to parent", || async {
        p2p_status(edge).await["browsers_promoted"].as_u64().unwrap_or(0) > 0
    })
    .await;
    natives.extend(join_natives(5, client_port, &cancel).await);
    wait_until(Duration::from_secs(60), "a native peer to confirm chunks from a page", || async {
        p2p_status(edge).await["page_to_native_bytes"].as_u64().unwrap_or(0) > 0
    })
    .await;
    tokio::time::sleep(PLAY.saturating_sub(t0.elapsed())).await;

    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = browser.cpu_seconds() - cpu0;
    let last = pages(&browser).await;
    let mut best_share: f64 = 0.0;
    for (i, (a, b)) in first.iter().zip(&last).enumerate() {
        eprintln!("page {i}: {b}");
        let advanced = f(b, "current_time") - f(a, "current_time");
        assert!(advanced >= elapsed * 0.8, "page {i} played {advanced:.1} s of {elapsed:.1} s: {b}");
        assert_eq!(b["errors"].as_array().map(Vec::len), Some(0), "page {i} had errors: {b}");
        assert!(b["dropped_frames"].is_number() && f(b, "total_frames") > 0.0, "page {i} reports frames: {b}");
        assert!(b["verifying"] == true && f(b, "bad_chunks") == 0.0, "page {i} checks every chunk: {b}");
        best_share = best_share.max(f(b, "p2p_share"));
    }
    assert!(best_share >= 0.5, "no page took half its bytes from peers (best {:.0} %)", best_share * 100.0);
    for (i, m) in natives.iter().enumerate() {
        let st = *m.stats.borrow();
        assert!(st.startup.is_some() && st.verifying && st.bad_chunks == 0, "native peer {i}: {st:?}");
    }
    eprintln!(
        "bench: page CPU {:.1} % of a core per page over {elapsed:.0} s (Chromium's processes, 3 pages); best page P2P share {:.0} %",
        cpu / elapsed / 3.0 * 100.0,
        best_share * 100.0
    );
    drop(browser);
    cancel.cancel();
    for m in natives {
        let _ = tokio::time::timeout(Duration::from_secs(10), m.task).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_never_plays_a_tampered_chunk() {
    if !chromium_here() {
        return;
    }
    let _swarm = one_swarm_at_a_time().await;
    // N1c = 1: the tamperer is the only push peer, so the page's first parents are all it.
    let cluster = start(&topology(1)).await;
    let edge = cluster.get("edge").unwrap();
    let client_port = edge.client.unwrap();
    let cancel = CancellationToken::new();
    let mut cfg = livesky_peer::core::PeerConfig::new(ChannelId::new("demo").unwrap());
    cfg.upload_kbps = 1250;
    cfg.faults.tamper = true;
    let tamperer = spawn_peer_with(cfg, client_port, Transport::WebRtc, &cancel);
    wait_until(Duration::from_secs(20), "the tamperer to play", || {
        let ok = tamperer.stats.borrow().startup.is_some();
        async move { ok }
    })
    .await;
    let browser = Browser::launch(&format!("http://{}/watch/demo", edge.http), WEBRTC_FLAGS).await;
    wait_until(Duration::from_secs(40), "the page to meet a tampered chunk", || async {
        let p = pages(&browser).await;
        p.first().is_some_and(|s| f(s, "bad_chunks") > 0.0)
    })
    .await;
    let before = pages(&browser).await.remove(0);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let after = pages(&browser).await.remove(0);
    eprintln!("page: {after}");
    // Rejected chunks are dropped before the media pipeline; what it plays is what it verified.
    assert!(after["verifying"] == true, "{after}");
    assert_eq!(after["errors"].as_array().map(Vec::len), Some(0), "the page played nothing broken: {after}");
    let advanced = f(&after, "current_time") - f(&before, "current_time");
    assert!(advanced >= 15.0, "the page plays on from verified chunks ({advanced:.1} s in 20 s): {after}");
    drop(browser);
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), tamperer.task).await;
    cluster.shutdown().await;
}
