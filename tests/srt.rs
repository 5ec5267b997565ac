//! SRT ingest on Tier 0: an SRT broadcaster (srt-tokio in process, and ffmpeg's libsrt when
//! installed) reaches viewers at the edge; refusals (busy, keys, unknown or non-push channels,
//! stream ids) are clean; garbage and misbehaving callers on the SRT port harm no later session;
//! passphrases; and caller mode (Tier 0 calls an encoder waiting in listener mode).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use livesky_tests::*;
use sn_core::srt::{bind_srt, serve_srt};
use srt_tokio::SrtSocket;
use tokio_util::sync::CancellationToken;

const CHANNELS: &str = r#"
[[channel]]
id = "open"
source = { kind = "push" }

[[channel]]
id = "keyed"
stream_key = "s3cret"
source = { kind = "push" }

[[channel]]
id = "spare"
source = { kind = "push" }

[[channel]]
id = "looped"
source = { kind = "loop", path = "builtin:demo" }
"#;

/// 7 TS packets: what SRT encoders put in one datagram.
const PAYLOAD: usize = 1316;

/// Starts an SRT ingest on `node` with its own passphrase (beside the one its config may name);
/// returns its address.
async fn srt_ingest(node: &sn_core::Node, passphrase: Option<&str>, stop: &CancellationToken) -> SocketAddr {
    let bound = bind_srt("127.0.0.1:0".parse().unwrap(), passphrase.map(str::to_string)).await.expect("SRT binds");
    let addr = bound.local_addr();
    tokio::spawn(serve_srt(node.clone(), bound, stop.clone()));
    addr
}

async fn call(addr: SocketAddr, sid: Option<&str>, passphrase: Option<&str>) -> std::io::Result<SrtSocket> {
    let mut b = SrtSocket::builder();
    if let Some(p) = passphrase {
        b = b.encryption(0, p);
    }
    b.call(addr, sid).await
}

/// Sends `data` in 1316-byte payloads at `bytes_per_sec`, then closes the connection; whether
/// the connection took it all.
async fn send(mut socket: SrtSocket, data: &[u8], bytes_per_sec: usize) -> bool {
    let start = tokio::time::Instant::now();
    for (i, part) in data.chunks(PAYLOAD).enumerate() {
        if i % 10 == 0 {
            tokio::time::sleep_until(start + Duration::from_secs_f64((i * PAYLOAD) as f64 / bytes_per_sec as f64))
                .await;
        }
        if socket.send((Instant::now(), Bytes::copy_from_slice(part))).await.is_err() {
            return false;
        }
    }
    socket.close().await.is_ok()
}

async fn push(addr: SocketAddr, sid: &str, passphrase: Option<&str>, data: &'static [u8], rate: usize) {
    let socket = call(addr, Some(sid), passphrase).await.expect("SRT broadcaster accepted");
    assert!(send(socket, data, rate).await, "the SRT connection took the whole feed");
}

async fn chunks(node: &livesky::launch::RunningNode, channel: &str) -> f64 {
    metric(&node.url("/metrics"), "livesky_ingest_chunks_total", &[&format!("channel=\"{channel}\"")]).await
}

async fn sessions(node: &livesky::launch::RunningNode, channel: &str, outcome: &str) -> f64 {
    let needles = [format!("channel=\"{channel}\""), format!("outcome=\"{outcome}\"")];
    metric(&node.url("/metrics"), "livesky_ingest_sessions_total", &[&needles[0], &needles[1]]).await
}

fn ts_aligned(data: &[u8]) -> bool {
    !data.is_empty() && data.len().is_multiple_of(188) && data.chunks(188).all(|p| p[0] == 0x47)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_broadcast_reaches_the_edge_and_bad_publishers_are_refused() {
    let cluster = start(&tier0_and_edge(CHANNELS, "")).await;
    let tier0 = cluster.get("tier0").unwrap();
    let edge = cluster.get("edge").unwrap();
    let stop = CancellationToken::new();
    let addr = srt_ingest(&tier0.node, None, &stop).await;

    // Twice the clip at 4x real time: about 8 s of pushing.
    let clip2: &'static [u8] = [DEMO_CLIP, DEMO_CLIP].concat().leak();
    let good = tokio::spawn(push(addr, "keyed?key=s3cret", None, clip2, 200_000));
    wait_until(Duration::from_secs(10), "keyed to go live over SRT", || async { chunks(tier0, "keyed").await > 0.0 })
        .await;
    let viewer = tokio::spawn({
        let url = edge.url("/live/keyed.ts");
        async move { read_stream(get(&url).await, 100 * 1024, Duration::from_secs(10)).await }
    });

    // While it is live: a second publisher, wrong or missing keys, channels that take no SRT,
    // and stream ids that name nothing are all refused at the handshake.
    let refusals: [(Option<&str>, &str); 9] = [
        (Some("keyed?key=s3cret"), "second publisher"),
        (Some("#!::r=keyed,key=s3cret"), "second publisher (access-control form)"),
        (Some("keyed?key=guess"), "wrong key"),
        (Some("keyed"), "missing key"),
        (Some("nosuch"), "unknown channel"),
        (Some("looped"), "a looped channel"),
        (Some("#!::r=open,m=request"), "a player on the ingest port"),
        (Some("bad name!"), "an invalid channel name"),
        (None, "no stream id"),
    ];
    for (sid, what) in refusals {
        assert!(call(addr, sid, None).await.is_err(), "{what} must be refused");
    }
    let long = "x".repeat(500);
    assert!(call(addr, Some(&long), None).await.is_err(), "an overlong stream id must be refused");
    let refused = metric(&tier0.url("/metrics"), "livesky_ingest_refused_total", &["srt"]).await;
    assert!(refused >= 10.0, "refusals counted: {refused}");

    let seen = viewer.await.unwrap();
    assert!(seen.len() >= 100 * 1024, "edge viewer got {} bytes", seen.len());
    assert!(ts_aligned(&seen), "the edge serves whole TS packets");

    good.await.unwrap();
    wait_until(Duration::from_secs(10), "the SRT session to end cleanly", || async {
        sessions(tier0, "keyed", "ok").await == 1.0
    })
    .await;
    let fed = metric(&tier0.url("/metrics"), "livesky_ingest_bytes_total", &["channel=\"keyed\""]).await;
    assert_eq!(fed as usize, clip2.len(), "every byte sent arrived");
    stop.cancel();
}

/// Garbage datagrams: random bytes of many lengths, and SRT control headers (handshakes among
/// them) followed by random bytes.
fn garbage() -> Vec<Vec<u8>> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = vec![Vec::new(), vec![0x80], vec![0; 16], vec![0xff; 64]];
    for i in 0..400 {
        let len = [1, 3, 15, 16, 17, 48, 64, 100, 1316, 1500][i % 10];
        let mut d: Vec<u8> = (0..len).map(|_| rand() as u8).collect();
        if i % 2 == 0 && len >= 16 {
            // Control packet, type 0 (handshake) or others, zero destination socket id.
            d[..4].copy_from_slice(&[0x80, (i / 2 % 8) as u8, 0, 0]);
            d[12..16].fill(0);
        }
        out.push(d);
    }
    out
}

/// HSv5 conclusion handshakes that srt-protocol 0.4.4 panics on while parsing or admitting them:
/// extension blocks of types it does not handle, a key response in a request, and keying
/// material with no key size announced.
fn poisoned_handshakes() -> Vec<Vec<u8>> {
    let handshake = |enc: u16, blocks: &[(u16, u16)]| {
        let mut p = 0x8000_0000u32.to_be_bytes().to_vec();
        p.extend_from_slice(&[0; 12]);
        p.extend_from_slice(&5u32.to_be_bytes());
        p.extend_from_slice(&enc.to_be_bytes());
        p.extend_from_slice(&5u16.to_be_bytes());
        p.extend_from_slice(&[0; 12]);
        p.extend_from_slice(&0xffff_ffffu32.to_be_bytes());
        p.extend_from_slice(&[0; 24]);
        for &(t, words) in blocks {
            p.extend_from_slice(&t.to_be_bytes());
            p.extend_from_slice(&words.to_be_bytes());
            p.extend(std::iter::repeat_n(0x61, usize::from(words) * 4));
        }
        p
    };
    let mut out: Vec<Vec<u8>> = [0, 4, 6, 7, 8].iter().map(|&t| handshake(0, &[(1, 3), (t, 1)])).collect();
    out.push(handshake(0, &[(1, 3), (3, 10)]));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_misbehaving_callers_on_the_srt_port_harm_no_session() {
    let cluster = start(&tier0_and_edge(CHANNELS, "")).await;
    let tier0 = cluster.get("tier0").unwrap();
    let stop = CancellationToken::new();
    let addr = srt_ingest(&tier0.node, None, &stop).await;

    // A broadcaster live on `open` while the port is hammered.
    let live = tokio::spawn(push(addr, "open", None, DEMO_CLIP, 200_000));
    // A caller that encrypts without announcing its key size, on a port without passphrase:
    // srt-protocol 0.4.4 panics on its handshake (`unimplemented!("expected no secrets")`), so the
    // port's socket filter drops it and the caller times out.
    let encrypting = tokio::spawn(call(addr, Some("spare"), Some("0123456789")));
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for d in garbage().into_iter().chain(poisoned_handshakes()) {
        let _ = udp.send_to(&d, addr).await;
    }
    live.await.unwrap();
    wait_until(Duration::from_secs(10), "the live session to end cleanly", || async {
        sessions(tier0, "open", "ok").await == 1.0
    })
    .await;
    let fed = metric(&tier0.url("/metrics"), "livesky_ingest_bytes_total", &["channel=\"open\""]).await;
    assert_eq!(fed as usize, DEMO_CLIP.len(), "garbage did not disturb the live session");
    assert!(encrypting.await.unwrap().is_err(), "the encrypting caller got no session");
    let restarts = metric(&tier0.url("/metrics"), "livesky_ingest_srt_port_restarts_total", &[]).await;
    assert_eq!(restarts, 0.0, "the port's task never died");

    // A TS-less feed ends its own session only.
    let not_ts: &'static [u8] = b"<html>not a transport stream</html>\n".repeat(4000).leak();
    let socket = call(addr, Some("open"), None).await.expect("accepted before the feed is seen");
    let _ = send(socket, not_ts, 1_000_000).await;
    wait_until(Duration::from_secs(10), "the TS-less session to be dropped", || async {
        sessions(tier0, "open", "error").await == 1.0
    })
    .await;

    // After all of it, a good session works.
    let before = chunks(tier0, "keyed").await;
    let good = call(addr, Some("keyed?key=s3cret"), None).await.expect("a good broadcaster is accepted");
    assert!(send(good, DEMO_CLIP, 400_000).await);
    wait_until(Duration::from_secs(10), "chunks after the garbage", || async {
        chunks(tier0, "keyed").await > before + 10.0
    })
    .await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_passphrase_is_required_and_checked() {
    let cluster = start(&tier0_and_edge(CHANNELS, "")).await;
    let tier0 = cluster.get("tier0").unwrap();
    let stop = CancellationToken::new();
    assert!(bind_srt("127.0.0.1:0".parse().unwrap(), Some("short".into())).await.is_err());
    let addr = srt_ingest(&tier0.node, Some("0123456789"), &stop).await;

    assert!(call(addr, Some("open"), None).await.is_err(), "an unencrypted caller is refused");
    assert!(call(addr, Some("open"), Some("9876543210")).await.is_err(), "a wrong passphrase is refused");
    for (key_size, sid) in [(16, "keyed?key=s3cret"), (32, "spare")] {
        // A caller that announces its key size (as ffmpeg does) gets that size.
        let s = SrtSocket::builder().encryption(key_size, "0123456789").call(addr, Some(sid)).await;
        drop(s.unwrap_or_else(|e| panic!("AES-{} caller refused: {e}", key_size * 8)));
    }
    push(addr, "open", Some("0123456789"), DEMO_CLIP, 400_000).await;
    wait_until(Duration::from_secs(10), "the encrypted session to end cleanly", || async {
        sessions(tier0, "open", "ok").await >= 1.0
    })
    .await;
    let fed = metric(&tier0.url("/metrics"), "livesky_ingest_bytes_total", &["channel=\"open\""]).await;
    assert!(fed as usize >= DEMO_CLIP.len(), "decrypted feed arrived: {fed}");
    assert!(chunks(tier0, "open").await > 10.0);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier0_calls_an_encoder_in_srt_listener_mode() {
    // The encoder waits on a port chosen first, so that the topology can name it.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let encoder_addr = udp.local_addr().unwrap();
    let encoder = tokio::spawn(async move {
        let socket = SrtSocket::builder()
            .encryption(0, "0123456789")
            .socket(udp)
            .listen_on(encoder_addr)
            .await
            .expect("Tier 0 calls in");
        assert!(send(socket, DEMO_CLIP, 400_000).await);
    });
    let channels = format!(
        "[[channel]]\nid = \"called\"\nsource = {{ kind = \"srt_call\", addr = \"{encoder_addr}\", stream_id = \"cam1\", passphrase = \"0123456789\" }}\n"
    );
    let cluster = start(&tier0_and_edge(&channels, "")).await;
    let tier0 = cluster.get("tier0").unwrap();
    tokio::time::timeout(Duration::from_secs(20), encoder).await.expect("encoder done in time").unwrap();
    wait_until(Duration::from_secs(10), "the called session to end cleanly", || async {
        sessions(tier0, "called", "ok").await >= 1.0
    })
    .await;
    assert!(chunks(tier0, "called").await > 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_pushes_over_srt_with_and_without_passphrase() {
    if !require_ffmpeg() {
        return;
    }
    let cluster = start(&tier0_and_edge(CHANNELS, "")).await;
    let tier0 = cluster.get("tier0").unwrap();
    let stop = CancellationToken::new();
    let plain = srt_ingest(&tier0.node, None, &stop).await;
    let secret = srt_ingest(&tier0.node, Some("0123456789"), &stop).await;
    let clip = std::env::temp_dir().join(format!("livesky-srt-{}.ts", std::process::id()));
    std::fs::write(&clip, DEMO_CLIP).unwrap();
    let ffmpeg = |url: String| {
        let clip = clip.clone();
        async move {
            let out = tokio::process::Command::new("ffmpeg")
                .args(["-nostdin", "-v", "error", "-readrate", "4", "-i"])
                .arg(&clip)
                .args(["-c", "copy", "-f", "mpegts", &url])
                .stdin(Stdio::null())
                .output();
            let out = tokio::time::timeout(Duration::from_secs(30), out).await.expect("ffmpeg done").expect("runs");
            (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
        }
    };
    let (ok, err) = ffmpeg(format!("srt://{plain}?streamid=keyed?key=s3cret")).await;
    assert!(ok, "ffmpeg SRT push failed: {err}");
    let (ok, err) = ffmpeg(format!("srt://{secret}?streamid=open&passphrase=0123456789")).await;
    assert!(ok, "ffmpeg encrypted SRT push failed: {err}");
    let (ok, _) = ffmpeg(format!("srt://{plain}?streamid=keyed?key=guess")).await;
    assert!(!ok, "ffmpeg with a wrong key must fail");
    let _ = std::fs::remove_file(&clip);
    for channel in ["keyed", "open"] {
        wait_until(Duration::from_secs(10), "ffmpeg's SRT sessions to end", || async {
            sessions(tier0, channel, "ok").await >= 1.0
        })
        .await;
        assert!(chunks(tier0, channel).await > 10.0, "{channel} got chunks from ffmpeg");
    }
    stop.cancel();
}

/// A broadcaster that comes back within `reconnect_grace_seconds` resumes for the same viewers;
/// one that does not come back in time ends the broadcast for everyone: HTTP-TS streams end after the last chunk, the HLS playlist is closed
/// with `#EXT-X-ENDLIST`, LiveSky peers play out and leave, and new viewers are told it ended. The
/// broadcaster here names its channel by the stream key alone, as OBS does; a new broadcast
/// later plays again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_whose_publisher_does_not_come_back_in_time_ends_for_every_viewer() {
    let topology = [
        CHANNELS.to_string(),
        loopback_node("tier0", 0, sn_core::Role::Relay, &[], "ingest = { reconnect_grace_seconds = 2 }"),
        loopback_node("edge", 1, sn_core::Role::Edge, &["tier0"], "edge = { client_listen = \"127.0.0.1:0\" }"),
    ]
    .concat();
    let cluster = start(&topology).await;
    let (tier0, edge) = (cluster.get("tier0").unwrap(), cluster.get("edge").unwrap());
    let stop = CancellationToken::new();
    let addr = srt_ingest(&tier0.node, None, &stop).await;

    let broadcast = tokio::spawn(push(addr, "s3cret", None, DEMO_CLIP, 150_000));
    wait_until(Duration::from_secs(10), "the key-named broadcast to feed `keyed`", || async {
        chunks(tier0, "keyed").await > 10.0
    })
    .await;
    let ts = get(&edge.url("/live/keyed.ts")).await;
    assert_eq!(ts.status(), 200);
    let viewer = tokio::spawn(read_stream(ts, usize::MAX, Duration::from_secs(60)));
    let playlist = edge.url("/live/keyed/index.m3u8");
    wait_until(Duration::from_secs(15), "an HLS playlist", || async { get_text(&playlist).await.0 == 200 }).await;
    let peer_stop = CancellationToken::new();
    let peer = tcp_peer_on(edge, "keyed", &peer_stop).await;
    let mut stats = peer.stats.clone();
    tokio::time::timeout(Duration::from_secs(15), stats.wait_for(|s| s.play.played_chunks > 0))
        .await
        .expect("the peer plays")
        .expect("peer running");

    broadcast.await.unwrap();
    wait_until(Duration::from_secs(2), "the first session to end", || async {
        sessions(tier0, "keyed", "ok").await == 1.0
    })
    .await;
    // Back within the grace (with the channel's name and key this time): the same viewers go on.
    push(addr, "keyed?key=s3cret", None, DEMO_CLIP, 150_000).await;
    let left = Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(20), viewer).await.expect("the TS stream ended").unwrap();
    let waited = left.elapsed();
    eprintln!("the TS viewer's stream ended {waited:?} after the broadcaster left (grace 2 s)");
    assert!(waited >= Duration::from_millis(1500), "not before the grace was up: {waited:?}");
    assert!(ts_aligned(&got), "whole TS packets");
    assert!(got.len() > DEMO_CLIP.len(), "one viewer connection carried both sessions: {} bytes", got.len());
    assert_eq!(sessions(tier0, "keyed", "ok").await, 2.0);
    wait_until(Duration::from_secs(5), "the HLS playlist to be closed", || async {
        get_text(&playlist).await.1.ends_with("#EXT-X-ENDLIST\n")
    })
    .await;
    let (code, body) = get_text(&edge.url("/live/keyed.ts")).await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("has ended"), "{body}");
    let status = get_text(&tier0.url("/status")).await.1;
    assert!(status.contains("\"source\":\"ended\""), "{status}");
    let ended = metric(&tier0.url("/metrics"), "livesky_ingest_broadcasts_ended_total", &["channel=\"keyed\""]).await;
    assert_eq!(ended, 1.0);
    // The feed came in at 3× real time, so the peer plays out up to ~20 s it holds before it leaves.
    let buffered = Duration::from_millis(stats.borrow().buffered_ms);
    let ended = tokio::time::timeout(buffered + Duration::from_secs(10), peer.task).await;
    let ended = ended.expect("the peer left after playing what it held").unwrap();
    assert_eq!(ended.expect("peer ran"), livesky_peer::driver::Ended::BroadcastEnded);
    // A new broadcast on the channel plays again.
    let again = tokio::spawn(push(addr, "keyed?key=s3cret", None, DEMO_CLIP, 150_000));
    wait_until(Duration::from_secs(15), "a new broadcast to be watchable", || async {
        get(&edge.url("/live/keyed.ts")).await.status() == 200
    })
    .await;
    stop.cancel();
    again.abort();
}
