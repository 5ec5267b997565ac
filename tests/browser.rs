//! The NOC dashboard in a real browser (headless Chromium) while the demo runs with peers: the
//! numbers it shows match the MC's API within one refresh, and screenshots of the overview and
//! an edge page are saved for CI (`target/ci-artifacts/`).

use std::path::PathBuf;
use std::time::Duration;

use livesky_tests::{get_text, wait_until};

/// Runs headless Chromium on `url` with `extra` flags; returns stdout.
async fn chromium(url: &str, extra: &[String]) -> String {
    let profile = std::env::temp_dir().join(format!("livesky-chromium-{}-{}", std::process::id(), extra.len()));
    let out = tokio::process::Command::new("chromium")
        .args(livesky_tests::chromium::FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("chromium finished within 60 s")
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element with id `id` in `dom`.
fn text_of(dom: &str, attr: &str) -> String {
    let Some(at) = dom.find(attr) else { return String::new() };
    let rest = &dom[at..];
    let start = rest.find('>').map_or(0, |i| i + 1);
    let end = rest[start..].find('<').map_or(0, |i| i + start);
    rest[start..end].trim().to_string()
}

async fn json(url: &str) -> serde_json::Value {
    let (status, body) = get_text(url).await;
    assert_eq!(status, 200, "{url}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}"))
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ci-artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_the_api_says_and_screenshots_are_saved() {
    if !livesky_tests::tool_available("chromium", "--version") {
        assert!(std::env::var_os("CI").is_none(), "CI must install chromium (see .ci/run)");
        eprintln!("chromium not installed: skipping");
        return;
    }
    let (mc, cluster, path, _) = livesky_tests::demo_with_mc_token("browser").await;
    let base = format!("http://{}", mc.http_addr);
    // Two peers on edge1, a legacy viewer on edge2.
    let edge1 = cluster.get("edge1").expect("edge1");
    let cancel = tokio_util::sync::CancellationToken::new();
    for _ in 0..2 {
        livesky_tests::tcp_peer(edge1, &cancel).await;
    }
    let viewer = livesky_tests::get(&cluster.get("edge2").expect("edge2").url("/live/demo.ts")).await;
    let reading = tokio::spawn(livesky_tests::read_stream(viewer, 16 << 20, Duration::from_secs(60)));
    let overview = format!("{base}/api/overview");
    wait_until(Duration::from_secs(20), "the peers, the viewer and their bandwidth in the overview", || {
        let url = overview.clone();
        async move {
            let o = json(&url).await;
            let now = &o["now"];
            now["viewers_livesky"] == 2
                && now["viewers_legacy"] == 1
                && now["cdn_mbps"].as_f64().is_some_and(|m| m > 0.5)
        }
    })
    .await;

    let dom = chromium(&format!("{base}/"), &["--dump-dom".into()]).await;
    let api = json(&overview).await;
    assert_eq!(text_of(&dom, "id=\"viewers-livesky\""), api["now"]["viewers_livesky"].to_string(), "{dom}");
    assert_eq!(text_of(&dom, "id=\"viewers-legacy\""), api["now"]["viewers_legacy"].to_string());
    // Bandwidth moves every 2 s: what the page shows is one of the API's last points.
    let shown = text_of(&dom, "id=\"cdn-mbps\"");
    let history = api["history"].as_array().cloned().unwrap_or_default();
    let recent: Vec<String> = history
        .iter()
        .rev()
        .take(3)
        .chain([&api["now"]])
        .filter_map(|p| p["cdn_mbps"].as_f64())
        .map(|m| format!("{m:.2}"))
        .collect();
    assert!(recent.contains(&shown), "the page shows {shown} Mbit/s; the API's last points: {recent:?}");
    let sns = json(&format!("{base}/api/sns")).await;
    assert_eq!(text_of(&dom, "id=\"config-version\""), sns["config_version"].to_string());
    for sn in ["tier0", "core1", "edge1", "edge2"] {
        assert!(dom.contains(&format!("<tr id=\"sn-{sn}\">")), "{sn} in the SN table");
    }

    let edge_dom = chromium(&format!("{base}/edge/edge1"), &["--dump-dom".into()]).await;
    let p2p = livesky_tests::p2p_status(edge1).await;
    assert_eq!(text_of(&edge_dom, "class=\"p0\""), p2p["p0"].to_string(), "P0 as the edge says");
    assert_eq!(text_of(&edge_dom, "class=\"stage\""), p2p["stage"].to_string());
    assert!(edge_dom.contains("<circle"), "the live point on the model's curve");

    let dir = artifacts();
    for (name, url) in
        [("dashboard-overview.png", format!("{base}/")), ("dashboard-edge.png", format!("{base}/edge/edge1"))]
    {
        let file = dir.join(name);
        let _ = std::fs::remove_file(&file);
        chromium(&url, &[format!("--screenshot={}", file.display())]).await;
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{name}: {size} bytes");
    }
    cancel.cancel();
    reading.abort();
    cluster.shutdown().await;
    mc.shutdown();
    let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
}

/// Issue 22: the NOC's P2P share is live. With 10 peers playing, the overview page shows, at any
/// moment after the first 15 s, a P2P share within 5 points of what the peers themselves count
/// (bytes from peers over all bytes received, over the last 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_noc_p2p_share_follows_what_the_peers_count() {
    if !livesky_tests::tool_available("chromium", "--version") {
        assert!(std::env::var_os("CI").is_none(), "CI must install chromium (see .ci/run)");
        eprintln!("chromium not installed: skipping");
        return;
    }
    let (mc, cluster, path, _) = livesky_tests::demo_with_mc_token("browser-p2p").await;
    let base = format!("http://{}", mc.http_addr);
    let edge1 = cluster.get("edge1").expect("edge1");
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut peers = Vec::new();
    for _ in 0..10 {
        peers.push(livesky_tests::tcp_peer(edge1, &cancel).await);
        // Under the edge's join limit per address.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The peers' own counts, once a second: (edge bytes, peer bytes) summed.
    let sum = |peers: &[livesky::peer_cmd::Player]| {
        peers
            .iter()
            .map(|p| *p.stats.borrow())
            .fold((0u64, 0u64), |(e, p), s| (e + s.bytes_from_edge, p + s.bytes_from_peers))
    };
    let mut counts = std::collections::VecDeque::new();
    let started = tokio::time::Instant::now();
    let mut checked = Vec::new();
    while checked.len() < 4 {
        counts.push_back(sum(&peers));
        if counts.len() > 11 {
            counts.pop_front();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if started.elapsed() < Duration::from_secs(15) || !started.elapsed().as_secs().is_multiple_of(5) {
            continue;
        }
        let dom = chromium(&format!("{base}/"), &["--dump-dom".into()]).await;
        let shown = text_of(&dom, "id=\"p2p-share\"");
        let page: f64 = shown.trim_end_matches(" %").parse().unwrap_or_else(|e| panic!("P2P share {shown:?}: {e}"));
        let ((e0, p0), (e1, p1)) = (counts[0], sum(&peers));
        let own = 100.0 * (p1 - p0) as f64 / ((e1 - e0) + (p1 - p0)).max(1) as f64;
        eprintln!("at {:?}: NOC {page:.1} %, peers {own:.1} %", started.elapsed());
        assert!((page - own).abs() <= 5.0, "the NOC shows {page} % P2P, the peers count {own:.1} %");
        checked.push((page, own));
    }
    assert!(checked.iter().any(|(_, own)| *own > 20.0), "P2P actually flowed: {checked:?}");
    cancel.cancel();
    cluster.shutdown().await;
    mc.shutdown();
    let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
}
