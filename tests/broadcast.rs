//! Broadcasters' protocols with a real encoder: RTMP (`ffmpeg -f flv rtmp://…`) and SRT (`ffmpeg -f
//! mpegts srt://…`) through the node's configured listeners are playable from an edge within 3 s; one
//! RTMP publisher per channel (refused or taken over); a publisher that reconnects resumes the same
//! channel for connected viewers; garbage on the RTMP port harms nobody. (SRT's refusals, garbage and
//! caller mode: `tests/srt.rs`.)

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use livesky_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

const CHANNELS: &str = r#"
[[channel]]
id = "live"
source = { kind = "push" }

[[channel]]
id = "keyed"
stream_key = "s3cret"
source = { kind = "push" }

[[channel]]
id = "other"
source = { kind = "push" }
"#;

fn topology(takeover: bool) -> String {
    let ingest =
        format!("ingest = {{ rtmp_listen = \"127.0.0.1:0\", srt_listen = \"127.0.0.1:0\", takeover = {takeover} }}");
    tier0_and_edge(CHANNELS, &ingest)
}

/// A 30 s H.264 (with B-frames) + AAC feed, as a broadcaster's file: `ffmpeg -stream_loop` on the
/// bundled clip repeats a timestamp at the loop point, which players then (rightly) complain about.
fn feed_file(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("livesky-rtmp-{name}-{}.ts", std::process::id()));
    let lavfi = ["testsrc=size=320x240:rate=25:duration=30", "sine=frequency=440:duration=30"];
    let status = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-f", "lavfi", "-i", lavfi[0], "-f", "lavfi", "-i", lavfi[1]])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-pix_fmt", "yuv420p", "-c:a", "aac"])
        .args(["-f", "mpegts", "-y"])
        .arg(&path)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg made the test feed");
    path
}

/// `ffmpeg -re -i feed.ts -c copy -f flv URL`, as an encoder pushes.
fn encoder(feed: &std::path::Path, url: &str) -> Child {
    encoder_as(feed, url, "flv")
}

/// The same, in container `format` (`flv` for RTMP, `mpegts` for SRT).
fn encoder_as(feed: &std::path::Path, url: &str, format: &str) -> Child {
    Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-re", "-i"])
        .arg(feed)
        .args(["-c", "copy", "-f", format, url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg starts")
}

async fn stderr_of(mut child: Child) -> String {
    let _ = child.start_kill();
    let mut text = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = tokio::time::timeout(Duration::from_secs(5), e.read_to_string(&mut text)).await;
    }
    let _ = child.wait().await;
    text
}

async fn chunks(metrics: &str, channel: &str) -> f64 {
    metric(metrics, "livesky_ingest_chunks_total", &[&format!("channel=\"{channel}\"")]).await
}

/// Pushes a 30 s feed with ffmpeg to `url` in `format`; the edge must serve it within 3 s, and a
/// real player must decode 20 s of it without a complaint.
async fn plays_cleanly_within_3_s(protocol: &str, format: &str) {
    if !require_ffmpeg() {
        return;
    }
    let cluster = start(&topology(false)).await;
    let (tier0, edge) = (cluster.get("tier0").expect("tier0"), cluster.get("edge").expect("edge"));
    let url = match protocol {
        "rtmp" => format!("rtmp://{}/live/live", tier0.rtmp.expect("RTMP listens")),
        _ => format!("srt://{}?streamid=live", tier0.srt.expect("SRT listens")),
    };
    let feed = feed_file(protocol);
    let t0 = Instant::now();
    let enc = encoder_as(&feed, &url, format);
    let play = edge.url("/live/live.ts");
    let first = tokio::spawn({
        let play = play.clone();
        async move { read_stream(get(&play).await, 188 * 100, Duration::from_secs(10)).await.len() }
    });
    assert!(first.await.expect("viewer") >= 188 * 100, "the edge served the {protocol} feed");
    let playable = t0.elapsed();
    eprintln!("{protocol} push → first 18.8 kB at the edge after {playable:?}");
    assert!(playable < Duration::from_secs(3), "took {playable:?}");
    // Ingest health while it is live: how it arrives, its frame rate, and A/V drift. The test
    // feed's clocks agree; what shows is the muxer's interleave (ffmpeg's MPEG-TS muxer packs
    // audio into PES of up to ~0.5 s), so the bound is loose: a drifting encoder shows as a trend.
    let status: serde_json::Value = serde_json::from_str(&get_text(&tier0.url("/status")).await.1).expect("JSON");
    let live = status["channels"].as_array().and_then(|l| l.iter().find(|c| c["id"] == "live")).expect("live");
    assert_eq!(live["protocol"], protocol, "{live}");
    assert!(live["frame_rate"].as_f64().is_some_and(|f| (f - 25.0).abs() < 1.0), "{live}");
    let health = async || {
        let status: serde_json::Value = serde_json::from_str(&get_text(&tier0.url("/status")).await.1).expect("JSON");
        status["channels"].as_array().and_then(|l| l.iter().find(|c| c["id"] == "live").cloned()).expect("live")
    };
    let mut live = live.clone();
    let t = Instant::now();
    while !live["av_drift_ms"].is_i64() && t.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        live = health().await;
    }
    assert!(live["av_drift_ms"].as_i64().is_some_and(|d| d.abs() < 1_000), "{live}");
    let complaints = ffmpeg_check(&play, 20).await;
    assert_eq!(complaints, "", "ffmpeg found problems in the edge's stream");
    let enc_err = stderr_of(enc).await;
    assert!(enc_err.is_empty(), "the encoder complained: {enc_err}");
    cluster.shutdown().await;
    let _ = std::fs::remove_file(feed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtmp_push_from_ffmpeg_plays_cleanly_from_an_edge_within_3_s() {
    plays_cleanly_within_3_s("rtmp", "flv").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_srt_push_from_ffmpeg_plays_cleanly_from_an_edge_within_3_s() {
    plays_cleanly_within_3_s("srt", "mpegts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_rtmp_publisher_is_refused_keys_are_checked_and_a_reconnect_resumes_for_viewers() {
    if !require_ffmpeg() {
        return;
    }
    let cluster = start(&topology(false)).await;
    let (tier0, edge) = (cluster.get("tier0").expect("tier0"), cluster.get("edge").expect("edge"));
    let rtmp = tier0.rtmp.expect("RTMP listens");
    let metrics = tier0.url("/metrics");
    let clip = feed_file("busy");
    let first = encoder(&clip, &format!("rtmp://{rtmp}/live/live"));
    wait_until(Duration::from_secs(10), "live to go live", || async { chunks(&metrics, "live").await > 10.0 }).await;
    // A viewer stays connected through everything that follows.
    let viewer = tokio::spawn({
        let url = edge.url("/live/live.ts");
        async move { read_stream(get(&url).await, usize::MAX, Duration::from_secs(12)).await }
    });
    // A second publisher on the same channel: refused, and ffmpeg exits with an error.
    let second = encoder(&clip, &format!("rtmp://{rtmp}/live/live"));
    let out = tokio::time::timeout(Duration::from_secs(10), second.wait_with_output()).await.expect("refused fast");
    let out = out.expect("ffmpeg ran");
    assert!(!out.status.success(), "the second publisher was refused");
    // Keys: missing and wrong are refused; right is taken.
    for (url, ok) in [("keyed", false), ("keyed?key=nope", false), ("keyed?key=s3cret", true)] {
        let enc = encoder(&clip, &format!("rtmp://{rtmp}/live/{url}"));
        if ok {
            wait_until(Duration::from_secs(10), "keyed to go live", || async { chunks(&metrics, "keyed").await > 0.0 })
                .await;
            let _ = stderr_of(enc).await;
        } else {
            let out =
                tokio::time::timeout(Duration::from_secs(10), enc.wait_with_output()).await.expect("refused fast");
            assert!(!out.expect("ffmpeg ran").status.success(), "{url} was refused");
        }
    }
    assert!(metric(&metrics, "livesky_ingest_refused_total", &["rtmp"]).await >= 3.0);
    // The first publisher drops and comes back: the same viewer connection goes on.
    let _ = stderr_of(first).await;
    let before = chunks(&metrics, "live").await;
    let again = encoder(&clip, &format!("rtmp://{rtmp}/live/live"));
    wait_until(Duration::from_secs(10), "live to resume", || async { chunks(&metrics, "live").await > before + 25.0 })
        .await;
    // The resumed broadcast is marked as a discontinuity: HLS players are told to reset.
    let playlist = edge.url("/live/live/index.m3u8");
    wait_until(Duration::from_secs(10), "a discontinuity in the edge's HLS playlist", || async {
        get_text(&playlist).await.1.contains("#EXT-X-DISCONTINUITY\n")
    })
    .await;
    let got = viewer.await.expect("viewer");
    let _ = stderr_of(again).await;
    assert!(got.len() > 200_000, "the viewer kept receiving across the reconnect: {} bytes", got.len());
    assert!(got.chunks(188).all(|p| p[0] == 0x47), "whole TS packets throughout");
    let discontinuities = metric(&tier0.url("/metrics"), "livesky_ingest_sessions_total", &["live", "ok"]).await;
    assert!(discontinuities >= 1.0, "the first session ended cleanly");
    cluster.shutdown().await;
    let _ = std::fs::remove_file(clip);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_takeover_a_new_rtmp_publisher_replaces_the_live_one() {
    if !require_ffmpeg() {
        return;
    }
    let cluster = start(&topology(true)).await;
    let tier0 = cluster.get("tier0").expect("tier0");
    let rtmp = tier0.rtmp.expect("RTMP listens");
    let metrics = tier0.url("/metrics");
    let clip = feed_file("takeover");
    let first = encoder(&clip, &format!("rtmp://{rtmp}/live/live"));
    wait_until(Duration::from_secs(10), "live to go live", || async { chunks(&metrics, "live").await > 10.0 }).await;
    let second = encoder(&clip, &format!("rtmp://{rtmp}/live/live"));
    wait_until(Duration::from_secs(10), "the first publisher cut off", || async {
        metric(&metrics, "livesky_ingest_sessions_total", &["live", "taken_over"]).await >= 1.0
    })
    .await;
    let before = chunks(&metrics, "live").await;
    wait_until(Duration::from_secs(10), "the new publisher feeding", || async {
        chunks(&metrics, "live").await > before + 25.0
    })
    .await;
    let _ = stderr_of(first).await;
    let _ = stderr_of(second).await;
    cluster.shutdown().await;
    let _ = std::fs::remove_file(clip);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_rtmp_port_harms_no_channel() {
    let cluster = start(&topology(false)).await;
    let (tier0, edge) = (cluster.get("tier0").expect("tier0"), cluster.get("edge").expect("edge"));
    let rtmp = tier0.rtmp.expect("RTMP listens");
    // Another channel is fed over HTTP meanwhile.
    let pusher = tokio::spawn({
        let url = tier0.url("/ingest/other");
        async move { push(&url, Bytes::from_static(DEMO_CLIP), 100_000).await }
    });
    let viewer = tokio::spawn({
        let url = edge.url("/live/other.ts");
        async move { read_stream(get(&url).await, usize::MAX, Duration::from_secs(6)).await.len() }
    });
    // Garbage before, in and after the handshake, an HTTP request, and connections that say nothing.
    let mut silent = Vec::new();
    // Each from an address of its own: one address gets `rtmp_max_per_ip` (4) connections.
    for i in 0..40u8 {
        let mut s = connect_from(&format!("127.0.1.{}", i + 1), rtmp).await.expect("connect");
        match i % 4 {
            0 => drop(s.write_all(&[i; 4096]).await),
            1 => drop(s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await),
            2 => {
                // A valid C0+C1, then junk where RTMP chunks should be.
                let mut hello = vec![3u8];
                hello.extend(std::iter::repeat_n(i, 1536));
                let _ = s.write_all(&hello).await;
                let mut s0s1s2 = vec![0u8; 1 + 1536 * 2];
                let _ = tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut s0s1s2)).await;
                let _ = s.write_all(&s0s1s2[1..1537]).await;
                let _ = s.write_all(&[0xff; 8192]).await;
            }
            _ => {
                silent.push(s);
                continue;
            }
        }
    }
    let got = viewer.await.expect("viewer");
    assert!(got > 100_000, "the other channel's viewer got only {got} bytes");
    let (code, _) = get_text(&tier0.url("/metrics")).await;
    assert_eq!(code, 200, "the node still answers");
    // And RTMP still works after all that.
    if ffmpeg_available() {
        let clip = feed_file("garbage");
        let enc = encoder(&clip, &format!("rtmp://{rtmp}/live/live"));
        let metrics = tier0.url("/metrics");
        wait_until(Duration::from_secs(10), "a real publisher after the garbage", || async {
            chunks(&metrics, "live").await > 5.0
        })
        .await;
        let _ = stderr_of(enc).await;
        let _ = std::fs::remove_file(clip);
    }
    drop(silent);
    pusher.abort();
    cluster.shutdown().await;
}
