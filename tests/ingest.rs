//! Tier-0 ingest: HTTP push (with keys, refusals and corrupt input), raw TCP, and origin pull.

use std::time::Duration;

use bytes::Bytes;
use livesky_tests::*;
use tokio::io::AsyncWriteExt;

const CHANNELS: &str = r#"
[[channel]]
id = "open"
source = { kind = "push" }

[[channel]]
id = "keyed"
stream_key = "s3cret"
source = { kind = "push" }

[[channel]]
id = "tcp"
source = { kind = "tcp", listen = "127.0.0.1:0" }

[[channel]]
id = "looped"
source = { kind = "loop", path = "builtin:demo" }

"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_broadcasters_are_refused_clearly_and_disturb_no_other_channel() {
    let cluster = start(&tier0_and_edge(CHANNELS, "")).await;
    let tier0 = cluster.get("tier0").unwrap();
    let edge = cluster.get("edge").unwrap();
    let tier0_metrics = tier0.url("/metrics");

    // A good broadcaster on `keyed`, watched through the edge for the whole test.
    let good = tokio::spawn({
        let url = tier0.url("/ingest/keyed?key=s3cret");
        async move { push(&url, Bytes::from_static(DEMO_CLIP), 100_000).await }
    });
    wait_until(Duration::from_secs(10), "keyed to go live", || {
        let u = tier0_metrics.clone();
        async move { metric(&u, "livesky_ingest_chunks_total", &[r#"channel="keyed""#]).await > 0.0 }
    })
    .await;
    let viewer = tokio::spawn({
        let url = edge.url("/live/keyed.ts");
        async move { read_stream(get(&url).await, usize::MAX, Duration::from_secs(5)).await.len() }
    });

    let garbage = Bytes::from(b"<html>this is not a transport stream</html>\n".repeat(3000));
    let (status, msg) = push(&tier0.url("/ingest/open"), garbage, 10_000_000).await;
    assert_eq!(status, 400, "{msg}");
    assert!(msg.contains("not MPEG-TS"), "{msg}");

    let (status, msg) = push(&tier0.url("/ingest/keyed"), Bytes::from_static(DEMO_CLIP), 10_000_000).await;
    assert_eq!(status, 401, "{msg}");
    assert!(msg.contains("?key="), "tells the broadcaster what to do: {msg}");
    let (status, _) = push(&tier0.url("/ingest/keyed?key=guess"), Bytes::from_static(DEMO_CLIP), 10_000_000).await;
    assert_eq!(status, 403);
    let (status, msg) = push(&tier0.url("/ingest/keyed?key=s3cret"), Bytes::from_static(DEMO_CLIP), 10_000_000).await;
    assert_eq!(status, 409, "second publisher: {msg}");
    let (status, _) = push(&tier0.url("/ingest/nosuch"), Bytes::from_static(DEMO_CLIP), 10_000_000).await;
    assert_eq!(status, 404);
    let (status, _) = push(&tier0.url("/ingest/looped"), Bytes::from_static(DEMO_CLIP), 10_000_000).await;
    assert_eq!(status, 409, "a looped channel takes no push");
    let (status, _) = push(&tier0.url("/ingest/bad%20name"), Bytes::from_static(DEMO_CLIP), 10_000_000).await;
    assert_eq!(status, 400);

    // The good broadcast went on undisturbed: ~5 s of a ~100 kB/s push reached its viewer.
    let seen = viewer.await.unwrap();
    assert!(seen > 300_000, "viewer of keyed got only {seen} bytes");
    let (status, msg) = good.await.unwrap();
    assert_eq!(status, 200, "{msg}");
    assert_eq!(metric(&tier0_metrics, "livesky_ingest_errors_total", &[r#"channel="keyed""#]).await, 0.0);
    assert_eq!(metric(&tier0_metrics, "livesky_ingest_errors_total", &[r#"channel="open""#, "not_ts"]).await, 1.0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_feed_is_resynced_and_keeps_playing() {
    let cluster = start(&tier0_and_edge(CHANNELS, "")).await;
    let tier0 = cluster.get("tier0").unwrap();
    let edge = cluster.get("edge").unwrap();
    // 1,000 bytes of junk in the middle of a packet, a third of the way in.
    let cut = DEMO_CLIP.len() / 3 + 77;
    let mut feed = DEMO_CLIP[..cut].to_vec();
    feed.extend(std::iter::repeat_n(0x47u8, 5).chain((0..995).map(|i| (i * 7) as u8)));
    feed.extend_from_slice(&DEMO_CLIP[cut..]);
    let viewer = tokio::spawn({
        let url = edge.url("/live/open.ts");
        async move { read_stream(get(&url).await, usize::MAX, Duration::from_secs(8)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, msg) = push(&tier0.url("/ingest/open"), Bytes::from(feed), 400_000).await;
    assert_eq!(status, 200, "{msg}");
    let got = viewer.await.unwrap();
    assert!(got.len() > DEMO_CLIP.len() * 9 / 10, "viewer got {} bytes", got.len());
    assert!(got.chunks(188).all(|p| p[0] == 0x47), "viewer only ever sees whole, aligned packets");
    let skipped = metric(&tier0.url("/metrics"), "livesky_ingest_skipped_bytes_total", &[r#"channel="open""#]).await;
    assert!((1000.0..1200.0).contains(&skipped), "skipped {skipped} bytes to regain sync");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tcp_ingest_reaches_the_edge_byte_for_byte() {
    let cluster = start(&tier0_and_edge(CHANNELS, "")).await;
    let tier0 = cluster.get("tier0").unwrap();
    let edge = cluster.get("edge").unwrap();
    let addr = tier0.tcp_ingest.iter().find(|(c, _)| c.as_str() == "tcp").unwrap().1;
    let want: Vec<u8> = expected_chunks(DEMO_CLIP).concat();
    let viewer = tokio::spawn({
        let url = edge.url("/live/tcp.ts");
        let n = want.len();
        async move { read_stream(get(&url).await, n, Duration::from_secs(30)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    for part in DEMO_CLIP.chunks(8 * 1024) {
        s.write_all(part).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(s);
    let got = viewer.await.unwrap();
    assert!(got == want, "TCP-ingested stream differs ({} vs {} bytes)", got.len(), want.len());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier0_pulls_from_an_origin_url() {
    // The "origin" is another cluster's edge serving HTTP-TS of a looped clip.
    let origin = start(&tier0_and_edge(CHANNELS, "")).await;
    let origin_url = origin.get("edge").unwrap().url("/live/looped.ts");
    let puller = start(&tier0_and_edge(
        &format!("[[channel]]\nid = \"relayed\"\nsource = {{ kind = \"pull\", url = \"{origin_url}\" }}\n"),
        "",
    ))
    .await;
    let url = puller.get("edge").unwrap().url("/live/relayed.ts");
    let (status, _) = get_all(&puller.get("edge").unwrap().url("/live/relayed/0.ts")).await;
    assert_eq!(status, 404, "no HLS state before a playlist request");
    let got = read_stream(get(&url).await, 200_000, Duration::from_secs(15)).await;
    assert!(got.len() >= 200_000, "pulled stream gave {} bytes", got.len());
    assert_eq!(&got[..1], &[0x47]);
    if require_ffmpeg() {
        let errors = ffmpeg_check(&url, 6).await;
        assert!(errors.trim().is_empty(), "ffmpeg reported: {errors}");
    }
    puller.shutdown().await;
    origin.shutdown().await;
}
