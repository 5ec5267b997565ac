//! The edge as tracker, seed and admission controller, with real peers on loopback: 40 peer
//! drivers (the peer core over TCP) join one edge with N1c = 5 and N*c = 12.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use livesky::swarm::spawn_peer;
use livesky_peer::driver::{Ended, Net, Transport};
use livesky_tests::*;
use proto::ChannelId;
use sn_core::Role;
use tokio_util::sync::CancellationToken;

/// The clip averages ~400 kbit/s; the channel declares 500 so upload budgets have headroom.
const BITRATE_KBPS: u64 = 500;

fn topology() -> String {
    let edge_extra = format!(
        "[node.edge]\nclient_listen = \"127.0.0.1:0\"\nstun_listen = \"127.0.0.1:0\"\n\
         [node.edge.admission]\nn1c = 5\ncapacity_kbps = {}\nalpha = 1.5\nk_prime = 2\nlambda = 0.0\nmu = 0.0\n\
         upload_cap_factor = 2.5\njoins_per_ip_per_sec = 100.0\njoin_burst_per_ip = 100.0",
        12 * BITRATE_KBPS
    );
    [
        format!("[[channel]]\nid = \"demo\"\nbitrate_kbps = {BITRATE_KBPS}\nsource = {{ kind = \"loop\", path = \"builtin:demo\" }}\n"),
        loopback_node("tier0", 0, Role::Relay, &[], ""),
        loopback_node("edge", 1, Role::Edge, &["tier0"], &edge_extra),
    ]
    .concat()
}

async fn p2p_view(edge: &livesky::launch::RunningNode) -> (u64, u64, u64) {
    let v = p2p_status(edge).await;
    let field = |name: &str| v[name].as_u64().unwrap_or(0);
    (field("stage"), field("p0"), field("nc"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_peers_take_one_edge_through_all_four_stages_and_play_continuously() {
    let _swarm = one_swarm_at_a_time().await;
    let cluster = start(&topology()).await;
    let edge = cluster.get("edge").unwrap();
    let client_port = edge.client.expect("edge runs the client service");
    let cancel = CancellationToken::new();
    let channel = ChannelId::new("demo").unwrap();
    let started_at = tokio::time::Instant::now();
    let mut peers = Vec::new();
    let mut stages = Vec::new();
    let mut joined = Vec::new();
    for _ in 0..40 {
        peers.push(spawn_peer(client_port, &channel, offering(BITRATE_KBPS * 5 / 2), Transport::Tcp, &cancel));
        joined.push(std::time::Instant::now());
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (stage, _, _) = p2p_view(edge).await;
        if stages.last() != Some(&stage) {
            stages.push(stage);
        }
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (stage, p0, nc) = p2p_view(edge).await;
    assert_eq!(stages, [1, 2, 3, 4], "stages seen while joining");
    assert_eq!((stage, p0, nc), (4, 40, 12));
    let elapsed = started_at.elapsed().as_secs_f64();

    let mut push = 0;
    for (i, p) in peers.iter().enumerate() {
        let st = *p.stats.borrow();
        assert!(st.startup.is_some(), "peer {i} never started: {st:?}");
        assert_eq!(st.play.stalls, 0, "peer {i} stalled: {st:?}");
        assert_eq!(st.play.skipped_chunks, 0, "peer {i} skipped: {st:?}");
        assert!(st.verifying && st.bad_chunks == 0, "peer {i} checks every chunk: {st:?}");
        // Without a burst (edge at capacity) a peer waits for its parents' catch-up.
        let startup = st.startup.unwrap_or_default();
        assert!(startup < Duration::from_secs(6), "peer {i} took {startup:?} to start");
        // From then on it played in real time.
        let expect = joined[i].elapsed().saturating_sub(startup + Duration::from_millis(1500));
        assert!(st.play.played_ms >= expect.as_millis() as u64, "peer {i} played too little: {st:?}");
        assert!(p.played.load(Ordering::Relaxed) > 0, "peer {i} output nothing");
        if st.push {
            push += 1;
        } else {
            assert!(st.bytes_from_peers > st.bytes_from_edge, "P2P peer {i} is fed by peers: {st:?}");
        }
    }
    assert_eq!(push, 12, "Nc push peers");
    // The edge stays within its capacity (the budget may run one second ahead).
    let sent = metric(&edge.url("/metrics"), "livesky_edge_client_bytes_total", &[]).await;
    let capacity = (12 * BITRATE_KBPS * 125) as f64;
    assert!(sent <= capacity * (elapsed + 1.0), "edge sent {sent} bytes in {elapsed:.1} s; capacity {capacity} B/s");

    cancel.cancel();
    for p in peers {
        assert_eq!(p.task.await.unwrap().unwrap(), Ended::Left);
    }
    // Leaving peers told the edge.
    wait_until(Duration::from_secs(5), "the edge to see everyone leave", || async { p2p_view(edge).await.1 == 0 })
        .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_answers_binding_requests_and_ignores_garbage() {
    let cluster = start(&topology()).await;
    let edge = cluster.get("edge").unwrap();
    let stun = edge.edge.as_ref().unwrap().stun_addr().unwrap();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    sock.send_to(b"definitely not stun", stun).await.unwrap();
    let req = binding_request();
    sock.send_to(&req, stun).await.unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(mapped_address(&buf[..n]), me);
    let m = edge.url("/metrics");
    assert_eq!(metric(&m, "livesky_stun_requests_total", &["ignored"]).await, 1.0);
    cluster.shutdown().await;
}

fn binding_request() -> Vec<u8> {
    use rtc_stun::message::{BINDING_REQUEST, Message, Setter, TransactionId};
    let mut m = Message::new();
    let setters: [Box<dyn Setter>; 2] = [Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)];
    m.build(&setters).unwrap();
    m.raw
}

fn mapped_address(data: &[u8]) -> SocketAddr {
    use rtc_stun::message::{BINDING_SUCCESS, Getter, Message};
    use rtc_stun::xoraddr::XorMappedAddress;
    let mut m = Message::new();
    m.unmarshal_binary(data).unwrap();
    assert_eq!(m.typ, BINDING_SUCCESS);
    let mut a = XorMappedAddress::default();
    a.get_from(&m).unwrap();
    SocketAddr::new(a.ip, a.port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p2p_peers_output_is_valid_ts_while_it_is_fed_by_peers() {
    let _swarm = one_swarm_at_a_time().await;
    let cluster = start(&topology()).await;
    let edge = cluster.get("edge").unwrap().client.unwrap();
    let cancel = CancellationToken::new();
    let channel = ChannelId::new("demo").unwrap();
    // Five push peers (N1c = 5), then the one we watch: it joins in stage 2, fed by peers.
    let pushers: Vec<_> = (0..5).map(|_| spawn_peer(edge, &channel, 1250, Transport::WebRtc, &cancel)).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cfg = livesky_peer::core::PeerConfig::new(channel.clone());
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let player = livesky::peer_cmd::start_player(
        Net { edge, listen: any, transport: Transport::WebRtc },
        channel,
        cfg,
        any,
        false,
        cancel.clone(),
    )
    .await
    .unwrap();
    let mut stats = player.stats.clone();
    tokio::time::timeout(Duration::from_secs(10), stats.wait_for(|s| s.startup.is_some())).await.unwrap().unwrap();
    if require_ffmpeg() {
        let errors = ffmpeg_check(&format!("http://{}/live.ts", player.http), 12).await;
        assert!(errors.trim().is_empty(), "ffmpeg on the peer's output: {errors}");
    } else {
        tokio::time::sleep(Duration::from_secs(12)).await;
    }
    let st = *player.stats.borrow();
    assert!(!st.push, "the watched peer is a P2P peer");
    assert!(st.verifying && st.bad_chunks == 0, "Tier 0's key reached the peer through the edge: {st:?}");
    assert_eq!(st.play.stalls, 0, "{st:?}");
    assert!(st.bytes_from_peers > 2 * st.bytes_from_edge, "mostly from peers: {st:?}");
    let (_, m) = get_text(&format!("http://{}/metrics", player.http)).await;
    assert!(m.contains("livesky_peer_received_bytes_total{from=\"peer\"}"), "{m}");
    cancel.cancel();
    assert_eq!(player.task.await.unwrap().unwrap(), Ended::Left);
    for p in pushers {
        p.task.await.unwrap().unwrap();
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampering_webrtc_peer_is_reported_dropped_and_never_played() {
    let _swarm = one_swarm_at_a_time().await;
    let cluster = start(&topology()).await;
    let edge = cluster.get("edge").unwrap();
    let client_port = edge.client.unwrap();
    let cancel = CancellationToken::new();
    let channel = ChannelId::new("demo").unwrap();
    let join = |tamper: bool| {
        let mut cfg = livesky_peer::core::PeerConfig::new(channel.clone());
        cfg.upload_kbps = offering(BITRATE_KBPS * 5 / 2);
        cfg.faults.tamper = tamper;
        livesky::swarm::spawn_peer_with(cfg, client_port, Transport::WebRtc, &cancel)
    };
    // Five push peers (N1c = 5), the second flipping bytes in all it forwards; then P2P peers.
    let mut peers = Vec::new();
    for i in 0..11 {
        peers.push(join(i == 1));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_until(Duration::from_secs(30), "children to report the tamperer", || async {
        p2p_status(edge).await["bad_chunk_reports"].as_u64().unwrap_or(0) > 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let tamperer = *peers[1].stats.borrow();
    assert!(tamperer.push, "the tamperer was a parent: {tamperer:?}");
    assert_eq!(tamperer.children, 0, "nobody takes chunks from it any more: {tamperer:?}");
    let detected: u64 = peers.iter().map(|p| p.stats.borrow().bad_chunks).sum();
    assert!(detected > 0);
    for (i, p) in peers.iter().enumerate().skip(5) {
        let st = *p.stats.borrow();
        // Only verified chunks are played: a rejected chunk is re-fetched or skipped, never played.
        assert!(st.verifying && st.startup.is_some(), "peer {i}: {st:?}");
        assert_eq!(st.play.stalls, 0, "peer {i}: {st:?}");
        assert!(st.bytes_from_peers > 0, "peer {i} is fed by peers: {st:?}");
    }
    cancel.cancel();
    for p in peers {
        let _ = tokio::time::timeout(Duration::from_secs(10), p.task).await;
    }
    cluster.shutdown().await;
}
