//! Chaos on loopback: the broadcaster's source dies and comes back; a slowloris crowd holds
//! connections open on an edge; one address floods an edge with joins. Each test asserts what
//! a viewer saw, and that the MC got every report the edges made meanwhile.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use livesky_tests::{DEMO_CLIP, assert_no_report_lost, get, metric, push, tcp_peer, wait_until, with_mc};
use proto::ChannelId;
use proto::peer::{CLIENT_PROTOCOL_VERSION, FromEdge, Join, PeerControlCodec, ToEdge};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Framed;

/// Reads `url` for `secs`, noting when each piece of the body arrived.
fn timed_viewer(url: String, secs: u64) -> tokio::task::JoinHandle<Vec<(Instant, usize)>> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        let resp = get(&url).await;
        assert_eq!(resp.status(), 200, "{url}");
        let mut body = resp.into_body();
        let end = tokio::time::Instant::now() + Duration::from_secs(secs);
        while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(end, body.frame()).await {
            if let Ok(data) = frame.into_data() {
                got.push((Instant::now(), data.len()));
            }
        }
        got
    })
}

/// Edges report every second here, so a lost report shows as a missing period.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The longest silence between pieces.
fn longest_gap(got: &[(Instant, usize)]) -> Duration {
    got.windows(2).map(|w| w[1].0 - w[0].0).max().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_broadcast_source_that_comes_back_resumes_for_connected_viewers() {
    let topology = livesky_tests::tier0_and_edge("[[channel]]\nid = \"live\"\nsource = { kind = \"push\" }\n", "");
    let (mc, cluster, path, _) = with_mc("source-death", &topology, REPORT_EVERY).await;
    let ingest = cluster.get("tier0").expect("tier0").url("/ingest/live");
    let edge = cluster.get("edge").expect("edge");
    // The encoder runs ~6 s at the clip's rate (50 kB/s), dies mid-stream, and is back 3 s later.
    let first = tokio::spawn({
        let url = ingest.clone();
        async move { push(&url, Bytes::from_static(DEMO_CLIP), 50_000).await }
    });
    let metrics = cluster.get("tier0").expect("tier0").url("/metrics");
    wait_until(Duration::from_secs(10), "the channel to go live", || {
        let m = metrics.clone();
        async move { metric(&m, "livesky_ingest_chunks_total", &["live"]).await > 20.0 }
    })
    .await;
    // Written on every tick (not paced): a gap then is the outage's, not a paced write's hold.
    let viewer = timed_viewer(edge.url("/live/live.ts?latency=low"), 16);
    tokio::time::sleep(Duration::from_secs(4)).await;
    first.abort();
    let died = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = tokio::spawn({
        let url = ingest.clone();
        async move { push(&url, Bytes::from_static(DEMO_CLIP), 50_000).await }
    });
    let got = viewer.await.expect("viewer");
    second.abort();
    let after: usize = got.iter().filter(|(t, _)| *t > died + Duration::from_secs(3)).map(|(_, n)| n).sum();
    let gap = longest_gap(&got);
    eprintln!("source outage 3 s: the viewer's longest gap {gap:?}, {after} bytes after the source came back");
    assert!(after > 100_000, "the same viewer connection carries the resumed broadcast: {after} bytes");
    assert!(gap < Duration::from_secs(6), "{gap:?}");
    let rows = assert_no_report_lost(&path, &["edge"]).await;
    assert_eq!(rows.iter().map(|r| r.joins).sum::<u64>(), 1, "one viewer session, reported once: {rows:?}");
    let (served, reported) =
        (got.iter().map(|(_, n)| *n as u64).sum::<u64>(), rows.iter().map(|r| r.cdn_bytes).sum::<u64>());
    assert!(reported >= served, "the edge reported {reported} bytes served; the viewer got {served}");
    cluster.shutdown().await;
    mc.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_crowd_does_not_starve_real_viewers() {
    let (mc, cluster, path, _) = with_mc("slowloris", livesky::DEMO_TOPOLOGY, REPORT_EVERY).await;
    let edge = cluster.get("edge1").expect("edge1");
    let addr = edge.http;
    // 200 connections that send a request line and then a header byte every second, forever.
    let mut crowd = Vec::new();
    for _ in 0..200 {
        crowd.push(tokio::spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return };
            let _ = s.write_all(b"GET /live/demo.ts HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
            for _ in 0..60 {
                if s.write_all(b"a").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Written on every tick (not paced), so that a gap is the attack's doing.
    let got = timed_viewer(edge.url("/live/demo.ts?latency=low"), 8).await.expect("viewer");
    let bytes: usize = got.iter().map(|(_, n)| n).sum();
    eprintln!("with 200 slowloris connections: a viewer got {bytes} bytes in 8 s, longest gap {:?}", longest_gap(&got));
    assert!(bytes > 200_000, "the viewer plays: {bytes}");
    assert!(longest_gap(&got) < Duration::from_secs(3));
    let (code, _) = livesky_tests::get_text(&edge.url("/metrics")).await;
    assert_eq!(code, 200);
    let edge1 = assert_no_report_lost(&path, &["edge1"]).await;
    // The crowd never finished a request: the one real viewer is the only session.
    assert_eq!(edge1.iter().map(|r| r.joins).sum::<u64>(), 1, "{edge1:?}");
    let reported: u64 = edge1.iter().map(|r| r.cdn_bytes).sum();
    assert!(reported >= bytes as u64, "the edge reported {reported} bytes served; the viewer got {bytes}");
    for c in crowd {
        c.abort();
    }
    cluster.shutdown().await;
    mc.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_joins_is_refused_and_playing_peers_do_not_notice() {
    let (mc, cluster, path, _) = with_mc("flood", livesky::DEMO_TOPOLOGY, REPORT_EVERY).await;
    let edge = cluster.get("edge1").expect("edge1");
    let cancel = tokio_util::sync::CancellationToken::new();
    let peer = tcp_peer(edge, &cancel).await;
    let mut stats = peer.stats.clone();
    wait_until(Duration::from_secs(15), "the peer to play", || {
        let st = *stats.borrow_and_update();
        async move { st.play.played_ms > 2_000 }
    })
    .await;
    let before = *peer.stats.borrow();
    // 400 joins from one address, as fast as they go.
    let port = edge.client.expect("client port");
    let (mut refused, mut welcomed) = (0, 0);
    let started = Instant::now();
    for _ in 0..400 {
        let Ok(s) = tokio::net::TcpStream::connect(port).await else { continue };
        let mut f = Framed::new(s, PeerControlCodec::default());
        let join = Join {
            version: CLIENT_PROTOCOL_VERSION,
            channel: ChannelId::new("demo").expect("channel"),
            token: String::new(),
            upload_kbps: 600,
            listen: None,
            buffer_ms: 15_000,
            redirects: 0,
            nat: proto::nat::NatClass::Open,
        };
        if f.send(ToEdge::Join(join)).await.is_err() {
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(5), f.next()).await {
            Ok(Some(Ok(FromEdge::Refused { .. }))) => refused += 1,
            Ok(Some(Ok(FromEdge::Welcome(_)))) => welcomed += 1,
            _ => {}
        }
    }
    let flood = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = *peer.stats.borrow();
    eprintln!(
        "400 joins in {flood:?}: {refused} refused, {welcomed} let in; the playing peer's stalls {} → {}, played {} → {} ms",
        before.play.stalls, after.play.stalls, before.play.played_ms, after.play.played_ms
    );
    assert!(refused >= 350, "{refused}");
    assert_eq!(after.play.stalls, before.play.stalls, "the playing peer did not stall");
    assert!(after.play.played_ms > before.play.played_ms + 2_000);
    let rows = assert_no_report_lost(&path, &["edge1"]).await;
    let joins: u64 = rows.iter().map(|r| r.joins).sum();
    assert_eq!(joins, 1 + welcomed, "every join let in is reported once: {rows:?}");
    cancel.cancel();
    cluster.shutdown().await;
    mc.shutdown();
}
