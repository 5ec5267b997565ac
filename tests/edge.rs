//! Legacy viewers at the edge: HTTP-TS and HLS as real players see them, slow and stuck viewers,
//! and malformed requests.

use std::time::Duration;

use livesky_tests::*;
use sn_core::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Tier 0 looping the demo clip at `speed`× → one relay SN → two edges (`edge_extra` goes into
/// edge1's `[node.edge]`).
fn looped(speed: f64, edge_extra: &str) -> String {
    [
        format!(
            "[[channel]]\nid = \"demo\"\nsource = {{ kind = \"loop\", path = \"builtin:demo\", speed = {speed} }}\n"
        ),
        loopback_node("tier0", 0, Role::Relay, &[], ""),
        loopback_node("core1", 1, Role::Relay, &["tier0"], ""),
        loopback_node("edge1", 2, Role::Edge, &["core1"], &format!("[node.edge]\n{edge_extra}")),
        loopback_node("edge2", 2, Role::Edge, &["core1"], ""),
    ]
    .concat()
}

fn starts_with_pat(ts: &[u8]) -> bool {
    ts.len() >= 188 && ts[0] == 0x47 && ts[1] & 0x40 != 0 && (u16::from(ts[1] & 0x1f) << 8 | u16::from(ts[2])) == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_ts_and_hls_play_cleanly_from_both_edges() {
    let cluster = start(&looped(1.0, "")).await;
    for edge in ["edge1", "edge2"] {
        let e = cluster.get(edge).unwrap();
        let resp = get(&e.url("/live/demo.ts")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "video/mp2t");
        let ts = read_stream(resp, 188 * 50, Duration::from_secs(10)).await;
        assert!(starts_with_pat(&ts), "{edge}: HTTP-TS starts at a keyframe chunk (PAT first)");
        // Sent from the spool: files in the system's temp dir, or memory files where that
        // directory cannot hold unnamed files; never by plain writes.
        let spooled = |to: &'static str| {
            let url = e.url("/metrics");
            async move { metric(&url, "livesky_edge_spool_chunks_total", &[&format!("to=\"{to}\"")]).await }
        };
        assert!(spooled("file").await + spooled("memory_file").await >= 1.0, "{edge}: no chunk was spooled");
        assert_eq!(spooled("none").await, 0.0, "{edge}: chunks were written without the spool");

        let (status, pl) = get_text(&e.url("/live/demo/index.m3u8")).await;
        assert_eq!(status, 200, "{pl}");
        assert!(pl.starts_with("#EXTM3U\n") && pl.contains("#EXT-X-TARGETDURATION:2\n"), "{pl}");
        let segs: Vec<&str> = pl.lines().filter(|l| l.ends_with(".ts")).collect();
        assert!(!segs.is_empty(), "{pl}");
        for l in pl.lines().filter_map(|l| l.strip_prefix("#EXTINF:")) {
            let d: f64 = l.trim_end_matches(',').parse().unwrap();
            assert!((1.9..2.1).contains(&d), "segment of {d} s in {pl}");
        }
        for s in &segs {
            let (status, body) = get_all(&e.url(&format!("/live/demo/{s}"))).await;
            assert_eq!(status, 200);
            assert!(starts_with_pat(&body) && body.len() % 188 == 0, "segment {s} is whole packets from PAT");
        }
        // The window slides.
        let first_seq = |pl: &str| -> u64 {
            pl.lines().find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:")).unwrap().parse().unwrap()
        };
        let last = segs.last().unwrap().trim_end_matches(".ts").parse::<u64>().unwrap();
        let url = e.url("/live/demo/index.m3u8");
        wait_until(Duration::from_secs(10), "a new segment", || {
            let u = url.clone();
            async move { get_text(&u).await.1.contains(&format!("\n{}.ts\n", last + 1)) }
        })
        .await;
        assert!(first_seq(&get_text(&url).await.1) >= first_seq(&pl));
    }
    if require_ffmpeg() {
        let mut checks = Vec::new();
        for edge in ["edge1", "edge2"] {
            let e = cluster.get(edge).unwrap();
            for path in ["/live/demo.ts", "/live/demo/index.m3u8"] {
                let url = e.url(path);
                checks.push(tokio::spawn(async move { (url.clone(), ffmpeg_check(&url, 20).await) }));
            }
        }
        for c in checks {
            let (url, errors) = c.await.unwrap();
            assert!(errors.trim().is_empty(), "ffmpeg on {url} reported: {errors}");
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_viewers_skip_ahead_and_stuck_viewers_are_dropped() {
    // 50× the clip's rate (~2.5 MB/s) fills socket buffers in seconds.
    // Started at the newest keyframe: a start lead would be most of the 2 s allowed behind live.
    let cluster =
        start(&looped(50.0, "stuck_viewer_seconds = 2.0\nmax_viewer_lag_seconds = 2.0\nviewer_start_lead_ms = 0"))
            .await;
    let e = cluster.get("edge1").unwrap();
    let metrics = e.url("/metrics");
    let host = e.http;
    let request = format!("GET /live/demo.ts HTTP/1.1\r\nHost: {host}\r\n\r\n");

    // Stuck: asks, then never reads (with a tiny receive window).
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stuck = sock.connect(host).await.unwrap();
    stuck.write_all(request.as_bytes()).await.unwrap();

    // Slow: reads steadily at ~100 kB/s, far below the stream's rate.
    let slow = tokio::spawn({
        let request = request.clone();
        async move {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.set_recv_buffer_size(8192).unwrap();
            let mut s = sock.connect(host).await.unwrap();
            s.write_all(request.as_bytes()).await.unwrap();
            let mut total = 0usize;
            let mut buf = [0u8; 2048];
            let t0 = std::time::Instant::now();
            while t0.elapsed() < Duration::from_secs(8) {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            total
        }
    });
    // A normal viewer keeps up meanwhile.
    let normal = read_stream(get(&e.url("/live/demo.ts")).await, 5_000_000, Duration::from_secs(10)).await;
    assert!(normal.len() >= 5_000_000, "normal viewer got {} bytes", normal.len());

    wait_until(Duration::from_secs(30), "the stuck viewer to be dropped", || {
        let u = metrics.clone();
        async move { metric(&u, "livesky_viewer_drops_total", &[r#"reason="stuck""#]).await >= 1.0 }
    })
    .await;
    let slow_bytes = slow.await.unwrap();
    assert!(slow_bytes > 200_000, "the slow viewer kept receiving ({slow_bytes} bytes)");
    let (_, m) = get_text(&metrics).await;
    let viewer_lines: Vec<&str> = m.lines().filter(|l| l.starts_with("livesky_viewer")).collect();
    assert!(
        metric(&metrics, "livesky_viewer_skips_total", &[]).await >= 1.0,
        "the slow viewer skipped ahead: {viewer_lines:#?}"
    );
    assert_eq!(metric(&metrics, "livesky_viewer_drops_total", &[r#"reason="stuck""#]).await, 1.0, "only the stuck one");
    drop(stuck);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_clear_errors() {
    let cluster = start(&looped(1.0, "")).await;
    let e = cluster.get("edge1").unwrap();
    for (path, want) in [
        ("/live/bad%20name.ts", 400),
        ("/live/nosuch.ts", 404),
        ("/live/demo", 404),
        ("/live/demo/abc.ts", 404),
        ("/live/demo/99999999.ts", 404),
        ("/live/nosuch/index.m3u8", 404),
        ("/nothing/here", 404),
    ] {
        let (status, body) = get_text(&e.url(path)).await;
        assert_eq!(status, want, "{path}: {body}");
    }
    // Garbage on the HTTP port closes that connection only.
    let mut s = tokio::net::TcpStream::connect(e.http).await.unwrap();
    s.write_all(&[0u8, 1, 2, 0xff, b'\n', b'\r', b'\n'].repeat(100)).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let (status, _) = get_text(&e.url("/live/demo/index.m3u8")).await;
    assert_eq!(status, 200, "the edge still serves");
    cluster.shutdown().await;
}

/// HTTP-TS is served off hyper, on the raw socket, so only a connection's first request can
/// be a stream; a stream asked later on a kept-alive connection is redirected to a new one, and
/// the stream itself is close-delimited (no chunked framing), in the request's HTTP version.
#[tokio::test]
async fn http_ts_is_a_connections_first_request_and_ends_with_the_connection() {
    let cluster = start(&looped(1.0, "")).await;
    let e = cluster.get("edge1").unwrap();
    let host = e.http;
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let two = format!(
        "GET /live/demo/index.m3u8 HTTP/1.1\r\nHost: {host}\r\n\r\nGET /live/demo.ts?token=x HTTP/1.1\r\nHost: {host}\r\n\r\n"
    );
    s.write_all(two.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("closed after the redirect")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    assert!(text.contains("#extm3u"), "the playlist first: {text}");
    assert!(text.contains("307 temporary redirect") && text.contains("location: /live/demo.ts?token=x"), "{text}");
    // The channel name is percent-decoded, as in every other route.
    for (version, path) in [("1.0", "/live/demo.ts"), ("1.1", "/live/d%65mo.ts")] {
        let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
        s.write_all(format!("GET {path} HTTP/{version}\r\nHost: {host}\r\n\r\n").as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < buf.len() {
            match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf[got..])).await {
                Ok(Ok(n)) if n > 0 => got += n,
                other => panic!("stream ended early after {got} bytes: {other:?}"),
            }
        }
        let at = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
        let head = String::from_utf8_lossy(&buf[..at]).to_ascii_lowercase();
        assert!(head.starts_with(&format!("http/{version} 200 ok")), "{head}");
        assert!(head.contains("connection: close") && !head.contains("transfer-encoding"), "{head}");
        assert!(starts_with_pat(&buf[at..]), "the body is TS from a keyframe chunk");
    }
    cluster.shutdown().await;
}

/// A viewer's reads over `secs`: bytes, grouped into the edge's writes (reads less than 50 ms
/// apart are one write), as (ms since the first byte, bytes).
async fn writes_seen(host: std::net::SocketAddr, path: &str, secs: u64) -> Vec<(u64, usize)> {
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut writes: Vec<(u64, usize)> = Vec::new();
    let (mut t0, mut last) = (None, std::time::Instant::now());
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    while let Ok(Ok(n)) = tokio::time::timeout_at(end, s.read(&mut buf)).await {
        assert!(n > 0, "the edge closed the stream");
        let now = std::time::Instant::now();
        let t0 = *t0.get_or_insert(now);
        match writes.last_mut() {
            Some(w) if now - last < Duration::from_millis(50) => w.1 += n,
            _ => writes.push(((now - t0).as_millis() as u64, n)),
        }
        last = now;
    }
    writes
}

/// A viewer starts about `viewer_start_lead_ms` behind live with that much in one burst, and is
/// then written in a few large writes, never more than a hold apart; `?latency=low` starts at
/// the newest keyframe and is written on every tick; another value is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_ts_viewers_are_paced_unless_they_ask_for_low_latency() {
    let cluster = start(&looped(1.0, "")).await;
    let e = cluster.get("edge1").unwrap();
    // Wait until the edge holds a few seconds of the channel, so the lead is there to take.
    let _ = writes_seen(e.http, "/live/demo.ts", 4).await;
    let (paced, low) =
        tokio::join!(writes_seen(e.http, "/live/demo.ts", 8), writes_seen(e.http, "/live/demo.ts?latency=low", 8));
    // ~400 kbit/s: 2 s of lead (and the response head) is well over 60 kB.
    assert!(paced[0].1 > 60_000, "the start burst holds the lead: {paced:?}");
    // Defaults: 0.5 s margin, holds of at most 3 s: a write every 1.4-3 s.
    assert!((3..=8).contains(&paced.len()), "a few large writes: {paced:?}");
    let gaps: Vec<u64> = paced.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(gaps.iter().all(|&g| g <= 3_500), "never held beyond the hold: {gaps:?}");
    assert!(low.len() >= 25, "every 100 ms tick: {} writes: {low:?}", low.len());
    let total = |w: &[(u64, usize)]| w.iter().map(|x| x.1).sum::<usize>();
    assert!(total(&low) > 300_000 && total(&paced) > 300_000, "both kept up");

    let (head, body) = raw_request(e.http, "GET", "/live/demo.ts?latency=fast", "").await;
    assert!(head.starts_with("http/1.1 400"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("latency=low"), "says what is known");
    cluster.shutdown().await;
}

/// One request on its own connection (`Connection: close`): the head (lower-cased) and body.
async fn raw_request(host: std::net::SocketAddr, method: &str, path: &str, extra: &str) -> (String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await.expect("answered and closed").unwrap();
    let at = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    (String::from_utf8_lossy(&buf[..at]).to_ascii_lowercase(), buf[at..].to_vec())
}

/// Segments are immutable: a cache in front can revalidate them (ETag) and players can fetch
/// parts of them (Range) or only their size (HEAD).
#[tokio::test]
async fn hls_segments_answer_range_etag_and_head() {
    let cluster = start(&looped(1.0, "")).await;
    let e = cluster.get("edge1").unwrap();
    let (status, pl) = get_text(&e.url("/live/demo/index.m3u8")).await;
    assert_eq!(status, 200, "{pl}");
    let seg = format!("/live/demo/{}", pl.lines().rfind(|l| l.ends_with(".ts")).unwrap());
    let (head, whole) = raw_request(e.http, "GET", &seg, "").await;
    assert!(head.starts_with("http/1.1 200") && head.contains("accept-ranges: bytes"), "{head}");
    let etag = head.lines().find_map(|l| l.strip_prefix("etag: ")).expect("an etag").to_string();
    let (head, part) = raw_request(e.http, "GET", &seg, "Range: bytes=188-375\r\n").await;
    assert!(head.starts_with("http/1.1 206"), "{head}");
    assert!(head.contains(&format!("content-range: bytes 188-375/{}", whole.len())), "{head}");
    assert_eq!(part, whole[188..376]);
    let (head, _) = raw_request(e.http, "GET", &seg, &format!("Range: bytes={}-\r\n", whole.len())).await;
    assert!(
        head.starts_with("http/1.1 416") && head.contains(&format!("content-range: bytes */{}", whole.len())),
        "{head}"
    );
    let (head, body) = raw_request(e.http, "GET", &seg, &format!("If-None-Match: {etag}\r\n")).await;
    assert!(head.starts_with("http/1.1 304") && body.is_empty(), "{head}");
    let (head, body) = raw_request(e.http, "HEAD", &seg, "").await;
    assert!(head.starts_with("http/1.1 200") && head.contains(&format!("content-length: {}", whole.len())), "{head}");
    assert!(body.is_empty(), "HEAD has no body");
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_channel_offered_only_as_hls_refuses_http_ts_with_a_reason() {
    let topo = looped(1.0, "").replace("speed = 1 }", "speed = 1 }\nlegacy = [\"hls\"]");
    assert!(topo.contains("legacy"), "{topo}");
    let cluster = start(&topo).await;
    let e = cluster.get("edge1").unwrap();
    let (status, body) = get_text(&e.url("/live/demo.ts")).await;
    assert_eq!(status, 404);
    assert!(body.contains("not offered as HTTP-TS"), "{body}");
    let (status, pl) = get_text(&e.url("/live/demo/index.m3u8")).await;
    assert_eq!(status, 200, "{pl}");
    cluster.shutdown().await;
}
