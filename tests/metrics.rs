//! Every role's `/metrics` page is valid Prometheus text: `promtool check metrics` accepts it
//! (the management center, the GSLB, Tier 0, the relay SN, the edges and peer players, all running).

use std::time::Duration;

use livesky_tests::{demo_with_gslb, get_text, wait_until};
use tokio::io::AsyncWriteExt;

fn promtool_available() -> bool {
    std::process::Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// What promtool said about `page` (empty: accepted).
async fn promtool(page: &str) -> String {
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(page.as_bytes()).await.expect("page written to promtool");
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("promtool finished in time")
        .expect("promtool output");
    if out.status.success() {
        return String::new();
    }
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn promtool_accepts_every_metrics_page() {
    if !promtool_available() {
        assert!(std::env::var_os("CI").is_none(), "CI must install promtool (see .ci/run)");
        eprintln!("promtool not installed: skipping");
        return;
    }
    let (mc, cluster, gslb, path) = demo_with_gslb("metrics").await;
    // A query answered, and a redirect, so the GSLB's labelled series exist.
    let ns = gslb.dns_addr;
    let ips = livesky_gslb::client::lookup(ns, "demo.livesky.test.", Duration::from_secs(2)).await;
    assert!(ips.is_ok_and(|i| !i.is_empty()), "the GSLB answers");
    assert_eq!(livesky_tests::get(&format!("http://{}/demo", gslb.http_addr)).await.status(), 302);
    let edge = cluster.get("edge1").expect("edge1");
    let client = edge.client.expect("edge1 has a client port");
    let channel = proto::ChannelId::new("demo").expect("channel");
    let cancel = tokio_util::sync::CancellationToken::new();
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let net = livesky_peer::driver::Net { edge: client, listen: any, transport: livesky_peer::driver::Transport::Tcp };
    let mut players = Vec::new();
    for _ in 0..2 {
        let cfg = livesky_peer::core::PeerConfig::new(channel.clone());
        let p = livesky::peer_cmd::start_player(net, channel.clone(), cfg, any, false, cancel.clone())
            .await
            .expect("peer starts");
        players.push(p);
    }
    // Something on every page: peers playing, a viewer on the other edge, reports acknowledged.
    let viewer = livesky_tests::get(&cluster.get("edge2").expect("edge2").url("/live/demo.ts")).await;
    let reading = tokio::spawn(livesky_tests::read_stream(viewer, 1 << 20, Duration::from_secs(10)));
    let peer_urls: Vec<String> = players.iter().map(|p| format!("http://{}/metrics", p.http)).collect();
    wait_until(Duration::from_secs(15), "peers playing", || {
        let url = peer_urls[0].clone();
        async move { get_text(&url).await.1.contains("livesky_peer_received_bytes_total{") }
    })
    .await;
    let mut pages = vec![
        ("mc".to_string(), format!("http://{}/metrics", mc.http_addr)),
        ("gslb".to_string(), format!("http://{}/metrics", gslb.http_addr)),
    ];
    pages.extend(cluster.nodes.iter().map(|n| (n.id().to_string(), n.url("/metrics"))));
    pages.extend(peer_urls.iter().enumerate().map(|(i, u)| (format!("peer{i}"), u.clone())));
    let mut seen = String::new();
    for (who, url) in &pages {
        let (status, page) = get_text(url).await;
        assert_eq!(status, 200, "{who}: {url}");
        let verdict = promtool(&page).await;
        assert!(verdict.is_empty(), "promtool rejects the /metrics of {who}:\n{verdict}");
        seen.push_str(&page);
    }
    for name in [
        "livesky_mc_members",
        "livesky_mc_config_version",
        "livesky_config_version",
        "livesky_relay_failovers_total",
        "livesky_ingest_chunks_total",
        "livesky_edge_stage",
        "livesky_viewer_bytes_total",
        "livesky_gslb_queries_total",
        "livesky_gslb_lookup_seconds_bucket",
        "livesky_gslb_http_redirects_total",
    ] {
        assert!(seen.contains(name), "no {name} on any page");
    }
    cancel.cancel();
    reading.abort();
    gslb.shutdown();
    cluster.shutdown().await;
    mc.shutdown();
    let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
}
