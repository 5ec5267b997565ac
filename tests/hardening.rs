//! Attacks on the ingest and HTTP ports, made the way an attacker makes them (issue 20): hostile
//! RTMP messages, idle and half-sent connections, silent publishers. Each test shows the node
//! stays up, other viewers keep getting frames, the attacker is refused, and a metric counts it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use livesky_tests::*;
use rml_rtmp::sessions::{ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult};
use sn_core::rtmp::craft::{self, amf0};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CHANNELS: &str = r#"
[[channel]]
id = "live"
source = { kind = "push" }

[[channel]]
id = "other"
source = { kind = "push" }
"#;

/// Tier 0 with RTMP, an edge, and short timeouts so the test sees them act.
fn topology() -> String {
    let limits = "limits = { rtmp_handshake_timeout_seconds = 1.0, ingest_idle_timeout_seconds = 1.5, \
                  http_header_timeout_seconds = 1.0, http_max_per_ip = 40 }";
    [
        CHANNELS.to_string(),
        loopback_node(
            "tier0",
            0,
            sn_core::Role::Relay,
            &[],
            &format!("ingest = {{ rtmp_listen = \"127.0.0.1:0\" }}\n{limits}"),
        ),
        loopback_node("edge", 1, sn_core::Role::Edge, &["tier0"], limits),
    ]
    .concat()
}

/// Pushes the demo clip to channel `other` and watches it from the edge: the victim. Returns a
/// handle whose `bytes_since` says how much the viewer got lately.
struct Victim {
    pusher: tokio::task::JoinHandle<(u16, String)>,
    received: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    viewer: tokio::task::JoinHandle<()>,
}

impl Victim {
    async fn start(cluster: &livesky::launch::Cluster) -> Victim {
        let (tier0, edge) = (cluster.get("tier0").expect("tier0"), cluster.get("edge").expect("edge"));
        let url = tier0.url("/ingest/other");
        let pusher = tokio::spawn(async move { push(&url, Bytes::from_static(DEMO_CLIP), 60_000).await });
        let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let play = edge.url("/live/other.ts");
        let counter = received.clone();
        let viewer = tokio::spawn(async move {
            use http_body_util::BodyExt;
            let mut body = get(&play).await.into_body();
            while let Some(Ok(f)) = body.frame().await {
                if let Ok(d) = f.into_data() {
                    counter.fetch_add(d.len(), std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        let v = Victim { pusher, received, viewer };
        v.still_playing("before the attack").await;
        v
    }

    /// The viewer gets frames: more bytes within 3 s.
    async fn still_playing(&self, when: &str) {
        let before = self.received.load(std::sync::atomic::Ordering::Relaxed);
        wait_until(Duration::from_secs(3), &format!("the victim's frames {when}"), || async {
            self.received.load(std::sync::atomic::Ordering::Relaxed) > before + 188 * 20
        })
        .await;
    }

    fn stop(self) {
        self.pusher.abort();
        self.viewer.abort();
    }
}

/// Handshakes as an RTMP client from `from`; returns the stream (the server's first messages
/// unread).
async fn rtmp_handshake(from: &str, rtmp: SocketAddr) -> TcpStream {
    let mut s = connect_from(from, rtmp).await.expect("connect");
    let (mut hs, c0c1) = craft::ClientHandshake::start();
    s.write_all(&c0c1).await.expect("C0+C1");
    let mut buf = vec![0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await.expect("S0+S1+S2").expect("read");
        assert!(n > 0, "server closed during the handshake");
        if let Some((c2, _)) = hs.server_bytes(&buf[..n]) {
            s.write_all(&c2).await.expect("C2");
            return s;
        }
    }
}

/// A real publish from `from` with rml_rtmp's client: connect, publish `stream`; Ok once the
/// server accepts it.
async fn rtmp_publish(from: &str, rtmp: SocketAddr, stream: &str) -> Result<TcpStream, String> {
    let mut s = connect_from(from, rtmp).await.map_err(|e| e.to_string())?;
    let (mut hs, c0c1) = craft::ClientHandshake::start();
    s.write_all(&c0c1).await.map_err(|e| e.to_string())?;
    let (mut client, _) = ClientSession::new(ClientSessionConfig::new()).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65536];
    let mut open = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut pending: Vec<ClientSessionResult> = Vec::new();
    loop {
        let n = match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) => return Err("the server closed the connection".into()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("no answer within 5 s".into()),
        };
        let mut input = buf[..n].to_vec();
        if !open {
            let Some((c2, rest)) = hs.server_bytes(&input) else { continue };
            s.write_all(&c2).await.map_err(|e| e.to_string())?;
            open = true;
            pending.push(client.request_connection("live".into()).map_err(|e| e.to_string())?);
            input = rest;
        }
        pending.extend(client.handle_input(&input).map_err(|e| e.to_string())?);
        while !pending.is_empty() {
            for r in std::mem::take(&mut pending) {
                match r {
                    ClientSessionResult::OutboundResponse(p) => {
                        s.write_all(&p.bytes).await.map_err(|e| e.to_string())?
                    }
                    ClientSessionResult::RaisedEvent(ClientSessionEvent::ConnectionRequestAccepted) => {
                        let req =
                            client.request_publishing(stream.into(), rml_rtmp::sessions::PublishRequestType::Live);
                        pending.push(req.map_err(|e| e.to_string())?);
                    }
                    ClientSessionResult::RaisedEvent(ClientSessionEvent::PublishRequestAccepted) => return Ok(s),
                    ClientSessionResult::RaisedEvent(ClientSessionEvent::ConnectionRequestRejected { description }) => {
                        return Err(description);
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Issue 20, finding 1: one RTMP message used to abort the whole process (AMF0 nested ~20,000
/// deep overflowed the stack in rml_amf0; a shortened second header and a one-value command
/// panicked in rml_rtmp). Now each ends its own connection, counted, and nothing else notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_rtmp_messages_end_only_their_own_connection() {
    let cluster = start(&topology()).await;
    let (tier0, edge) = (cluster.get("tier0").expect("tier0"), cluster.get("edge").expect("edge"));
    let rtmp = tier0.rtmp.expect("RTMP listens");
    let victim = Victim::start(&cluster).await;
    let half_then_shorter = {
        let first = craft::message(4, 9, 1, 0, &[0x17; 300], 128);
        let mut b = first[..12 + 128].to_vec();
        b.extend_from_slice(&craft::message(4, 9, 1, 0, &[0x17; 10], 128));
        b
    };
    let attacks: Vec<(&str, Vec<u8>)> = vec![
        (
            "AMF0 strict arrays 20,000 deep (100 KB), before connect",
            craft::command(|p| {
                amf0::string(p, "connect");
                amf0::number(p, 1.0);
                amf0::nested_arrays(p, 20_000);
            }),
        ),
        (
            "AMF0 strict arrays 13,000 deep (64 KB)",
            craft::command(|p| {
                amf0::string(p, "connect");
                amf0::number(p, 1.0);
                amf0::nested_arrays(p, 13_000);
            }),
        ),
        ("a second type-0 header shortening a half-read message", half_then_shorter),
        ("an AMF command with one value", craft::command(|p| amf0::string(p, "connect"))),
    ];
    for (i, (what, bytes)) in attacks.iter().enumerate() {
        let mut s = rtmp_handshake(&format!("127.0.3.{}", i + 1), rtmp).await;
        let _ = s.write_all(bytes).await;
        let (closed, _) = closed_within(&mut s, Duration::from_secs(3)).await;
        assert!(closed, "{what}: the node should close that connection");
        victim.still_playing(&format!("after {what}")).await;
    }
    let metrics = tier0.url("/metrics");
    let malformed = metric(&metrics, "livesky_ingest_protocol_errors_total", &["rtmp", "malformed"]).await;
    assert!(malformed >= attacks.len() as f64, "each attack counted: {malformed}");
    // The port still takes a real publisher.
    rtmp_publish("127.0.3.100", rtmp, "live").await.expect("a real publisher after the attacks");
    assert_eq!(get_text(&edge.url("/metrics")).await.0, 200);
    victim.stop();
    cluster.shutdown().await;
}

/// Issue 20, finding 8: 64 idle TCP connections used to take every RTMP slot, so the real
/// broadcaster could not publish. Now one address holds at most `rtmp_max_per_ip` (4) and
/// those are cut after the handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_take_the_rtmp_port() {
    let cluster = start(&topology()).await;
    let tier0 = cluster.get("tier0").expect("tier0");
    let rtmp = tier0.rtmp.expect("RTMP listens");
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(connect_from("127.0.4.1", rtmp).await.expect("connect"));
    }
    let metrics = tier0.url("/metrics");
    let refused = metric(&metrics, "livesky_connections_refused_total", &["rtmp", "per_ip"]).await;
    assert_eq!(refused, 60.0, "all but 4 refused at once");
    // The broadcaster, from its own address, gets in while they sit there.
    let publisher = rtmp_publish("127.0.4.2", rtmp, "live").await.expect("the broadcaster publishes");
    let t0 = Instant::now();
    for s in &mut idle {
        let (closed, _) = closed_within(s, Duration::from_secs(3)).await;
        assert!(closed, "every idle connection is closed, refused or cut by the handshake timeout");
    }
    assert!(t0.elapsed() < Duration::from_secs(2), "the 4 let in are cut within the 1 s handshake timeout");
    assert!(metric(&metrics, "livesky_ingest_protocol_errors_total", &["rtmp", "timeout"]).await >= 4.0);
    drop(publisher);
    cluster.shutdown().await;
}

/// Issue 20, finding 5: the HTTP servers had no timeouts or caps; idle and half-sent sockets
/// stayed forever and, at the descriptor limit, new viewers failed silently. Now a connection
/// without a whole request header within the timeout is closed, and past the per-address cap
/// a connection gets 503 at once, while viewers from elsewhere play on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_http_connections_are_cut_and_capped() {
    let cluster = start(&topology()).await;
    let edge = cluster.get("edge").expect("edge");
    let victim = Victim::start(&cluster).await;
    let http = edge.http;
    let mut socks = Vec::new();
    for i in 0..200 {
        let mut s = connect_from("127.0.5.1", http).await.expect("connect");
        if i % 2 == 0 {
            let _ = s.write_all(b"GET /live/other.ts HTTP/1.1\r\nHost: edge\r\nX-Slow: ").await;
        }
        socks.push(s);
    }
    let t0 = Instant::now();
    let mut refused = 0;
    let mut timed_out = 0;
    for s in &mut socks {
        let (closed, got) = closed_within(s, Duration::from_secs(4)).await;
        assert!(closed, "every idle or half-sent connection is closed");
        if String::from_utf8_lossy(&got).starts_with("HTTP/1.1 503") {
            refused += 1;
        } else {
            timed_out += 1;
        }
    }
    let took = t0.elapsed();
    assert_eq!((refused, timed_out), (160, 40), "40 per address get in (and time out), the rest get 503");
    assert!(took < Duration::from_secs(4), "all closed within the 1 s header timeout and slack: {took:?}");
    victim.still_playing("after 200 idle sockets").await;
    // A viewer on the same address as the flood gets in again once the timeouts freed its places.
    let (code, _) = get_text(&format!("http://{http}/metrics")).await;
    assert_eq!(code, 200);
    let metrics = edge.url("/metrics");
    assert!(metric(&metrics, "livesky_connections_refused_total", &["http", "per_ip"]).await >= 160.0);
    let timeouts = metric(&metrics, "livesky_connections_refused_total", &["http", "timeout"]).await;
    assert!(timeouts >= 40.0);
    // A kept-alive HLS player's connection (served off hyper) that goes quiet after an answer is cut
    // by the same timeout, and counted as hyper's are.
    let mut quiet = connect_from("127.0.5.2", http).await.expect("connect");
    quiet.write_all(b"GET /live/nosuch/index.m3u8 HTTP/1.1\r\nHost: edge\r\n\r\n").await.expect("send");
    let (closed, got) = closed_within(&mut quiet, Duration::from_secs(4)).await;
    assert!(closed && got.starts_with(b"HTTP/1.1 404"), "{}", String::from_utf8_lossy(&got));
    wait_until(Duration::from_secs(2), "the quiet HLS connection counted", || async {
        metric(&metrics, "livesky_connections_refused_total", &["http", "timeout"]).await > timeouts
    })
    .await;
    victim.stop();
    cluster.shutdown().await;
}

/// Issue 20, finding 7: a publisher that connected and went silent held its channel forever (the
/// real broadcaster got 409). Now HTTP and raw-TCP feeds end after `ingest_idle_timeout_seconds`
/// without data, and the channel is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_publisher_frees_its_channel() {
    let channels =
        format!("{CHANNELS}\n[[channel]]\nid = \"raw\"\nsource = {{ kind = \"tcp\", listen = \"127.0.0.1:0\" }}\n");
    let topo = topology().replacen(CHANNELS, &channels, 1);
    let cluster = start(&topo).await;
    let tier0 = cluster.get("tier0").expect("tier0");
    let metrics = tier0.url("/metrics");
    // HTTP: headers and 20 TS packets, then nothing.
    let mut silent = connect_from("127.0.6.1", tier0.http).await.expect("connect");
    let head =
        "POST /ingest/live HTTP/1.1\r\nhost: tier0\r\ntransfer-encoding: chunked\r\ncontent-type: video/mp2t\r\n\r\n";
    let mut req = head.as_bytes().to_vec();
    req.extend_from_slice(format!("{:x}\r\n", 188 * 20).as_bytes());
    req.extend_from_slice(&DEMO_CLIP[..188 * 20]);
    req.extend_from_slice(b"\r\n");
    silent.write_all(&req).await.expect("send");
    let piece = Bytes::from_static(&DEMO_CLIP[..188 * 2000]);
    wait_until(Duration::from_secs(2), "the silent publisher to hold the channel", || async {
        metric(&metrics, "livesky_ingest_bytes_total", &["live"]).await > 0.0
    })
    .await;
    let (code, body) = push(&tier0.url("/ingest/live"), piece.clone(), 4_000_000).await;
    assert_eq!(code, 409, "busy while the silent one holds it: {body}");
    let (closed, said) = closed_within(&mut silent, Duration::from_secs(3)).await;
    let said = String::from_utf8_lossy(&said).into_owned();
    assert!(closed && said.starts_with("HTTP/1.1 408"), "the silent publisher is told and closed: {said}");
    let (code, body) = push(&tier0.url("/ingest/live"), piece, 4_000_000).await;
    assert_eq!(code, 200, "the real broadcaster gets the channel: {body}");
    assert!(metric(&metrics, "livesky_ingest_protocol_errors_total", &["http", "timeout"]).await >= 1.0);

    // Raw TCP: the same.
    let raw = tier0.tcp_ingest.iter().find(|(c, _)| c.as_str() == "raw").map(|(_, a)| *a).expect("TCP ingest");
    let mut quiet = connect_from("127.0.6.2", raw).await.expect("connect");
    quiet.write_all(&DEMO_CLIP[..188 * 20]).await.expect("send");
    let (closed, _) = closed_within(&mut quiet, Duration::from_secs(3)).await;
    assert!(closed, "a silent TCP feed is closed after the idle timeout");
    let before = metric(&metrics, "livesky_ingest_chunks_total", &["raw"]).await;
    let mut real = connect_from("127.0.6.3", raw).await.expect("connect");
    real.write_all(&DEMO_CLIP[..188 * 3000]).await.expect("send");
    wait_until(Duration::from_secs(3), "the next TCP feed to be taken", || async {
        metric(&metrics, "livesky_ingest_chunks_total", &["raw"]).await > before + 10.0
    })
    .await;
    assert!(metric(&metrics, "livesky_ingest_protocol_errors_total", &["tcp", "timeout"]).await >= 1.0);
    cluster.shutdown().await;
}
