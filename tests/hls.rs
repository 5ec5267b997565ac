//! Low-latency HLS at the edge as players see it: blocking playlist reloads, parts and preload
//! hints over HTTP; ffmpeg decoding the same playlist; hls.js (the npm package that web/build.sh
//! installs) playing it in headless Chromium in low-latency mode.

use std::time::{Duration, Instant};

use livesky_tests::chromium::{Browser, WEBRTC_FLAGS};
use livesky_tests::*;
use serde_json::Value;

fn topology() -> String {
    tier0_and_edge("[[channel]]\nid = \"demo\"\nsource = { kind = \"loop\", path = \"builtin:demo\" }\n", "")
}

fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    let rest = &line[at..];
    match rest.strip_prefix('"') {
        Some(q) => q.split('"').next(),
        None => rest.split(',').next(),
    }
}

/// `(msn, part)` of `N.P.ts`.
fn part_name(uri: &str) -> (u64, usize) {
    let (m, p) = uri.trim_end_matches(".ts").split_once('.').expect("a part URI is N.P.ts");
    (m.parse().expect("msn"), p.parse().expect("part"))
}

fn is_ts(body: &[u8]) -> bool {
    !body.is_empty() && body.len().is_multiple_of(188) && body.chunks(188).all(|p| p[0] == 0x47)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ll_hls_blocks_reloads_holds_hinted_parts_and_parts_make_the_segment() {
    let cluster = start(&topology()).await;
    let e = cluster.get("edge").unwrap();
    let base = e.url("/live/demo/");
    let (status, pl) = get_text(&format!("{base}index.m3u8")).await;
    assert_eq!(status, 200, "{pl}");
    for tag in ["#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500,", "#EXT-X-PART-INF:PART-TARGET=0.500"]
    {
        assert!(pl.contains(tag), "{tag} in {pl}");
    }
    assert!(pl.contains("#EXT-X-PROGRAM-DATE-TIME:"), "{pl}");
    let hint = pl.lines().find(|l| l.starts_with("#EXT-X-PRELOAD-HINT:TYPE=PART,")).expect("a preload hint");
    let (msn, part) = part_name(attr(hint, "URI").expect("the hint's URI"));

    // The hinted part is held until it is made; then the blocking reload for it answers with a
    // playlist that lists it.
    let (status, body) = get_all(&format!("{base}{msn}.{part}.ts")).await;
    assert_eq!(status, 200, "the hinted part {msn}.{part}");
    assert!(is_ts(&body), "a part is whole TS packets");
    let (status, pl) = get_text(&format!("{base}index.m3u8?_HLS_msn={msn}&_HLS_part={part}")).await;
    assert_eq!(status, 200, "{pl}");
    assert!(pl.contains(&format!("URI=\"{msn}.{part}.ts\"")), "the blocking reload lists {msn}.{part}: {pl}");
    let (status, _) = get_text(&format!("{base}index.m3u8?_HLS_msn={}", msn + 5)).await;
    assert_eq!(status, 400, "more than two segments ahead");

    // Once segment `msn` is complete, its parts put together are the segment.
    let (status, pl) = get_text(&format!("{base}index.m3u8?_HLS_msn={}", msn + 1)).await;
    assert_eq!(status, 200, "{pl}");
    let parts: Vec<&str> = pl
        .lines()
        .filter(|l| l.starts_with("#EXT-X-PART:"))
        .filter_map(|l| attr(l, "URI"))
        .filter(|u| part_name(u).0 == msn)
        .collect();
    assert!(parts.len() >= 3, "a 2 s segment in parts of at most 0.5 s: {pl}");
    let mut joined = Vec::new();
    for p in &parts {
        let (status, body) = get_all(&format!("{base}{p}")).await;
        assert_eq!(status, 200, "{p}");
        joined.extend_from_slice(&body);
    }
    let (status, whole) = get_all(&format!("{base}{msn}.ts")).await;
    assert_eq!(status, 200);
    assert!(joined[..] == whole[..], "parts of {msn} ({} bytes) = the segment ({} bytes)", joined.len(), whole.len());
    for l in pl.lines().filter(|l| l.starts_with("#EXT-X-PART:")) {
        let d: f64 = attr(l, "DURATION").and_then(|d| d.parse().ok()).expect("a part duration");
        assert!(d > 0.0 && d <= 0.5, "parts stay within the part target: {l}");
    }
    let (status, _) = get_all(&format!("{base}{}.99.ts", msn + 1)).await;
    assert_eq!(status, 404, "a part far past the hint is not held");

    if require_ffmpeg() {
        let complaints = ffmpeg_check(&format!("{base}index.m3u8"), 6).await;
        assert!(complaints.is_empty(), "ffmpeg decodes the LL-HLS playlist as plain HLS: {complaints}");
    }
}

/// One response off a kept-alive connection: status, lower-cased head, body.
async fn response(s: &mut tokio::io::BufReader<tokio::net::TcpStream>) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), s.read_line(&mut line)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed in a head: {head}");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().expect("a length"));
    let mut body = vec![0; len];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut body)).await.unwrap().unwrap();
    (status, head, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_players_kept_alive_connection_gets_playlists_and_segments_and_hyper_keeps_the_rules() {
    use tokio::io::AsyncWriteExt;
    let cluster = start(&topology()).await;
    let e = cluster.get("edge").unwrap();
    let (status, pl) = get_text(&e.url("/live/demo/index.m3u8")).await;
    assert_eq!(status, 200, "{pl}");
    let connect =
        || async { tokio::io::BufReader::new(tokio::net::TcpStream::connect(e.http).await.expect("connects")) };
    let req = |path: &str, extra: &str| format!("GET {path} HTTP/1.1\r\nHost: edge\r\n{extra}\r\n");
    let mut s = connect().await;
    s.get_mut().write_all(req("/live/demo/index.m3u8", "").as_bytes()).await.unwrap();
    let (status, head, body) = response(&mut s).await;
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("application/vnd.apple.mpegurl") && head.contains("date: "), "{head}");
    let pl = String::from_utf8(body).unwrap();
    let seg = pl.lines().rfind(|l| l.ends_with(".ts")).expect("a segment").to_string();
    let seg_path = format!("/live/demo/{seg}");
    // A segment and a playlist sent together are answered in order on the same connection.
    let two = [req(&seg_path, ""), req("/live/demo/index.m3u8", "")].concat();
    s.get_mut().write_all(two.as_bytes()).await.unwrap();
    let (status, head, whole) = response(&mut s).await;
    assert_eq!(status, 200, "{head}");
    assert!(is_ts(&whole) && head.contains("etag: \"") && head.contains("date: "), "{head}");
    assert!(head.contains("cache-control: public, max-age=60, immutable"), "{head}");
    let etag = head.lines().find_map(|l| l.strip_prefix("etag: ")).unwrap().trim().to_string();
    assert_eq!(response(&mut s).await.0, 200);
    // A range is hyper's: it answers it, and the connection's later requests, by the same rules.
    s.get_mut().write_all(req(&seg_path, "Range: bytes=0-187\r\n").as_bytes()).await.unwrap();
    let (status, head, part) = response(&mut s).await;
    assert_eq!((status, part.len()), (206, 188), "{head}");
    s.get_mut().write_all(req(&seg_path, "").as_bytes()).await.unwrap();
    let (status, head, again) = response(&mut s).await;
    assert_eq!(status, 200);
    assert!(again == whole && head.contains(&format!("etag: {etag}")), "{head}");
    // An error is answered and the connection stays open.
    let mut s = connect().await;
    s.get_mut().write_all(req("/live/nosuch/index.m3u8", "").as_bytes()).await.unwrap();
    assert_eq!(response(&mut s).await.0, 404);
    s.get_mut().write_all(req(&seg_path, "Connection: close\r\n").as_bytes()).await.unwrap();
    let (status, head, body) = response(&mut s).await;
    assert!(status == 200 && body == whole && head.contains("connection: close"), "{head}");
    // What these connections were served counts in the serving path's cost figures.
    let (_, m) = get_text(&e.url("/metrics")).await;
    let figure = |name: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(name) && l.contains("kind=\"hls\""))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name}{{kind=\"hls\"}} in /metrics"))
    };
    assert!(figure("livesky_edge_serve_bytes_total") >= (2 * whole.len()) as f64);
    assert!(figure("livesky_edge_serve_bytes_per_cpu_second") > 0.0);
}

/// Where web/build.sh's `npm install` puts hls.js.
fn hls_js() -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/node_modules/hls.js/dist/hls.min.js");
    if path.exists() {
        return Some(path);
    }
    assert!(std::env::var_os("CI").is_none(), "CI installs hls.js (web/build.sh runs npm install)");
    eprintln!("hls.js not installed (run web/build.sh or `npm install` in web/): skipping");
    None
}

const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><video id="v" muted autoplay></video>
<script src="hls.min.js"></script>
<script>
const v = document.getElementById("v");
const s = { waiting: 0, stalls: [], errors: [], urls: new Set(), started: null, since: null };
const hls = new Hls({ lowLatencyMode: true });
hls.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) s.errors.push(d.type + ":" + d.details); });
// What the video element did, with its buffered ranges (printed when the test fails).
const t0 = performance.now();
s.log = [];
const ranges = () => { const b = v.buffered; const r = []; for (let i = 0; i < b.length; i++) r.push([+b.start(i).toFixed(2), +b.end(i).toFixed(2)]); return r; };
v.addEventListener("waiting", () => s.log.push([((performance.now()-t0)/1000).toFixed(2), "waiting", +v.currentTime.toFixed(2), JSON.stringify(ranges())]));
v.addEventListener("playing", () => s.log.push([((performance.now()-t0)/1000).toFixed(2), "playing", +v.currentTime.toFixed(2), JSON.stringify(ranges())]));
hls.on(Hls.Events.FRAG_LOADED, (_, d) => { if (d.part) { s.urls.add(d.part.url); } });
v.addEventListener("playing", () => {
  const now = performance.now();
  if (s.started === null) s.started = now;
  if (s.since !== null) s.stalls.push([(s.since - s.started) / 1000, (now - s.since) / 1000]);
  s.since = null;
});
v.addEventListener("waiting", () => { if (s.started !== null) { s.waiting++; s.since = performance.now(); } });
hls.loadSource("PLAYLIST");
hls.attachMedia(v);
window.status_ = () => JSON.stringify({
  t: v.currentTime,
  behind: hls.playingDate ? (Date.now() - hls.playingDate.getTime()) / 1000 : null,
  latency: hls.latency,
  low_latency: hls.lowLatencyMode,
  log: s.log, waiting: s.waiting, stalls: s.stalls, errors: s.errors, parts: s.urls.size,
  playing: s.started !== null,
});
</script>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_plays_the_edges_ll_hls_under_three_seconds_behind_the_ingest() {
    if !tool_available("chromium", "--version") {
        assert!(std::env::var_os("CI").is_none(), "CI must install chromium (see .ci/run)");
        eprintln!("chromium not installed: skipping");
        return;
    }
    let Some(hls_js) = hls_js() else { return };
    let cluster = start(&topology()).await;
    let e = cluster.get("edge").unwrap();
    // A viewer opens a brand-new channel: its first segment is listed and no more. The edge holds
    // the player's first playlist until a second segment is whole (`Segmenter::startable`);
    // started on one segment, hls.js reloaded it in a loop and stalled once.
    let playlist = e.url("/live/demo/index.m3u8");
    // (A blocking request is answered as soon as what it names is out, first playlist or not.)
    let first_part_of_the_second = e.url("/live/demo/index.m3u8?_HLS_msn=1&_HLS_part=0");
    wait_until(Duration::from_secs(30), "a first segment listed", || async {
        get_text(&first_part_of_the_second).await.1.matches("#EXTINF:").count() == 1
    })
    .await;
    let dir = std::env::temp_dir().join(format!("livesky-hlsjs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&hls_js, dir.join("hls.min.js")).unwrap();
    std::fs::write(dir.join("index.html"), PAGE.replace("PLAYLIST", &playlist)).unwrap();
    let browser = Browser::launch(&format!("file://{}/index.html", dir.display()), WEBRTC_FLAGS).await;
    let status = || async {
        let v = browser.eval_all("window.status_ ? window.status_() : null").await;
        v.first().and_then(|s| s.as_str()).and_then(|s| serde_json::from_str::<Value>(s).ok()).unwrap_or(Value::Null)
    };
    let t0 = Instant::now();
    loop {
        let s = status().await;
        if s["playing"] == true && s["t"].as_f64().unwrap_or(0.0) > 0.5 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "hls.js did not start playing in 30 s: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let started = Instant::now();
    let first = status().await;
    eprintln!("hls.js playing after {:.1} s: {first}", t0.elapsed().as_secs_f64());
    // Sixty seconds of play, sampled each second (after a few seconds to settle on its target).
    let mut behind = Vec::new();
    let mut last = first.clone();
    while started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        last = status().await;
        assert!(last["errors"].as_array().is_some_and(|e| e.is_empty()), "hls.js fatal errors: {last}");
        if started.elapsed() > Duration::from_secs(5)
            && let Some(b) = last["behind"].as_f64()
        {
            behind.push(b);
        }
    }
    behind.sort_by(f64::total_cmp);
    let (_, m) = get_text(&e.url("/metrics")).await;
    for l in m.lines().filter(|l| l.contains("hls_requests")) {
        eprintln!("{l}");
    }
    let played = last["t"].as_f64().unwrap_or(0.0) - first["t"].as_f64().unwrap_or(0.0);
    let (median, worst) = (behind[behind.len() / 2], behind[behind.len() - 1]);
    eprintln!(
        "hls.js over 60 s: played {played:.1} s; behind the ingest median {median:.2} s, worst {worst:.2} s; {last}"
    );
    assert!(last["low_latency"] == true && last["parts"].as_u64().unwrap_or(0) > 50, "hls.js loaded parts: {last}");
    assert!(played > 57.0, "playback advanced with the clock (played {played:.1} s in 60 s): {last}");
    assert_eq!(last["waiting"].as_u64(), Some(0), "no stall after playback started: {last}");
    assert!(worst < 3.0, "every sample under 3 s behind the ingest (median {median:.2}, worst {worst:.2})");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn attributes_are_read_quoted_or_not() {
    let l = "#EXT-X-PART:DURATION=0.480,URI=\"3.0.ts\",INDEPENDENT=YES";
    assert_eq!((attr(l, "DURATION"), attr(l, "URI"), attr(l, "GAP")), (Some("0.480"), Some("3.0.ts"), None));
}
