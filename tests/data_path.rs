//! The CDN data path end to end on loopback: broadcaster → Tier 0 → relay tier → edge → viewer.

use std::time::Duration;

use bytes::Bytes;
use livesky_tests::*;
use sn_core::Role;

/// Tier 0 → two peered relay SNs → one edge that prefers core-a.
fn peered_cores() -> String {
    let linger = "linger_seconds = 1";
    [
        "[[channel]]\nid = \"t\"\nsource = { kind = \"push\" }\n".to_string(),
        loopback_node("tier0", 0, Role::Relay, &[], ""),
        loopback_node("core-a", 1, Role::Relay, &["tier0"], &format!("peers = [\"core-b\"]\n{linger}")),
        loopback_node("core-b", 1, Role::Relay, &["tier0"], &format!("peers = [\"core-a\"]\n{linger}")),
        loopback_node("edge", 2, Role::Edge, &["core-a", "core-b"], linger),
    ]
    .concat()
}

/// The clip's bitrate is ~50 kB/s; pushing at twice that makes a ~8 s broadcast.
const PUSH_RATE: usize = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chunk_arrives_once_in_order_through_a_core_failover() {
    // Edges report every second: the failover must not cost a report either.
    let (mc, cluster, path, _) = livesky_tests::with_mc("failover", &peered_cores(), Duration::from_secs(1)).await;
    let edge = cluster.get("edge").unwrap();
    let ingest = cluster.get("tier0").unwrap().url("/ingest/t");
    let want: Vec<u8> = expected_chunks(DEMO_CLIP).concat();

    // The viewer comes first: it waits for the broadcaster and must then get the whole feed.
    let viewer_url = edge.url("/live/t.ts");
    let viewer = tokio::spawn({
        let n = want.len();
        async move {
            let resp = get(&viewer_url).await;
            assert_eq!(resp.status(), 200);
            read_stream(resp, n, Duration::from_secs(60)).await
        }
    });
    let edge_status = edge.url("/status");
    wait_until(Duration::from_secs(10), "the edge to open channel t", || {
        let u = edge_status.clone();
        async move { get_text(&u).await.1.contains(r#""id":"t""#) }
    })
    .await;
    let pusher = tokio::spawn(async move { push(&ingest, Bytes::from_static(DEMO_CLIP), PUSH_RATE).await });

    // Kill the relay SN serving the edge once about a third of the feed went through it.
    let edge_metrics = edge.url("/metrics");
    wait_until(Duration::from_secs(30), "the edge to relay 130 chunks", || {
        let u = edge_metrics.clone();
        async move { metric(&u, "livesky_relay_chunks_total", &[r#"channel="t""#]).await >= 130.0 }
    })
    .await;
    cluster.get("core-a").unwrap().node.shutdown();

    let got = viewer.await.unwrap();
    let (status, msg) = pusher.await.unwrap();
    assert_eq!(status, 200, "push: {msg}");
    assert_eq!(got.len(), want.len(), "viewer got {} of {} bytes", got.len(), want.len());
    if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
        panic!("viewer's stream differs from the broadcast at byte {i} (packet {})", i / 188);
    }
    assert!(metric(&edge_metrics, "livesky_relay_failovers_total", &[]).await >= 1.0);
    assert_eq!(metric(&edge_metrics, "livesky_relay_missing_chunks_total", &[]).await, 0.0);
    let core_b = cluster.get("core-b").unwrap().url("/metrics");
    assert!(metric(&core_b, "livesky_relay_chunks_total", &[]).await > 0.0, "core-b took over");
    let rows = livesky_tests::assert_no_report_lost(&path, &["edge"]).await;
    assert_eq!(rows.iter().map(|r| r.joins).sum::<u64>(), 1, "{rows:?}");
    let reported: u64 = rows.iter().map(|r| r.cdn_bytes).sum();
    assert!(reported >= want.len() as u64, "the edge reported {reported} bytes served of {}", want.len());
    cluster.shutdown().await;
    mc.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_channel_is_404_at_the_edge_and_climbs_nowhere() {
    let cluster = start(&peered_cores()).await;
    let edge = cluster.get("edge").unwrap();
    let t0 = std::time::Instant::now();
    let (status, body) = get_text(&edge.url("/live/nosuch.ts")).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no channel nosuch"), "{body}");
    assert!(t0.elapsed() < Duration::from_secs(1), "took {:?}", t0.elapsed());
    // A name outside the topology opens nothing: no core and not Tier 0 is asked (issue 20).
    // (Subscriptions among same-tier peers cannot loop either: see the upstream core's tests.)
    for node in ["tier0", "core-a", "core-b"] {
        let m = cluster.get(node).unwrap().url("/metrics");
        let asked = metric(&m, "livesky_child_sessions_total", &[]).await;
        assert_eq!(asked, 0.0, "{node} was asked for it");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_are_opened_on_demand_and_closed_when_idle() {
    let cluster = start(&peered_cores()).await;
    let edge = cluster.get("edge").unwrap();
    let ingest = cluster.get("tier0").unwrap().url("/ingest/t");
    let pusher = tokio::spawn(async move { push(&ingest, Bytes::from_static(DEMO_CLIP), 50_000).await });
    let core_a = cluster.get("core-a").unwrap().url("/metrics");
    assert_eq!(metric(&core_a, "livesky_child_sessions", &[]).await, 0.0, "nothing subscribed before a viewer");

    let resp = get(&edge.url("/live/t.ts")).await;
    assert_eq!(resp.status(), 200);
    let got = read_stream(resp, 188 * 100, Duration::from_secs(10)).await;
    assert!(got.len() >= 188 * 100, "got {} bytes", got.len());
    assert_eq!(metric(&core_a, "livesky_child_sessions", &[]).await, 1.0, "edge subscribed to core-a");
    // The viewer is gone (response dropped): after linger_seconds the edge lets go upstream.
    wait_until(Duration::from_secs(10), "core-a to lose its child", || {
        let u = core_a.clone();
        async move { metric(&u, "livesky_child_sessions", &[]).await == 0.0 }
    })
    .await;
    pusher.abort();
    cluster.shutdown().await;
}
