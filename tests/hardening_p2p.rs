//! Attacks on an edge's LiveSky client port (issue 20), by a raw client speaking the client
//! protocol from addresses of its own, against a real `livesky peer` player: lying bad-chunk
//! reports, wrapped report counters, vouching for a sybil's upload, signalling floods. Each test
//! shows the victim keeps playing, the attacker's words are refused, and a metric counts it.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use livesky_tests::*;
use proto::ChannelId;
use proto::peer::{CLIENT_PROTOCOL_VERSION, FromEdge, Join, PeerControlCodec, PeerId, PeerReport, SignalKind, ToEdge};
use sn_core::Role;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

fn topology() -> String {
    let edge_extra = "[node.edge]\nclient_listen = \"127.0.0.1:0\"\n[node.edge.admission]\n\
                      joins_per_ip_per_sec = 100.0\njoin_burst_per_ip = 100.0\nmesh = 64";
    [
        "[[channel]]\nid = \"demo\"\nbitrate_kbps = 500\nsource = { kind = \"loop\", path = \"builtin:demo\" }\n"
            .to_string(),
        loopback_node("tier0", 0, Role::Relay, &[], ""),
        loopback_node("edge", 1, Role::Edge, &["tier0"], edge_extra),
    ]
    .concat()
}

type Raw = Framed<tokio::net::TcpStream, PeerControlCodec>;

/// A hand-driven client from `from`, joined: its peer id and the neighbours it was given.
async fn raw_join(edge: SocketAddr, from: &str, listen: bool) -> (Raw, PeerId, Vec<PeerId>) {
    let (raw, me, neighbours) = raw_join_as(edge, from, listen.then_some(None)).await;
    (raw, me, neighbours.into_iter().map(|(p, _)| p).collect())
}

/// As [`raw_join`]; `listen`: none, its own address (`Some(None)`) or one it claims.
async fn raw_join_as(
    edge: SocketAddr,
    from: &str,
    listen: Option<Option<SocketAddr>>,
) -> (Raw, PeerId, Vec<(PeerId, SocketAddr)>) {
    let stream = connect_from(from, edge).await.expect("connect");
    let local = stream.local_addr().expect("local address");
    let mut raw = Framed::new(stream, PeerControlCodec::default());
    let join = Join {
        version: CLIENT_PROTOCOL_VERSION,
        channel: ChannelId::new("demo").expect("channel"),
        token: String::new(),
        upload_kbps: 750,
        listen: listen.map(|l| l.unwrap_or(local)),
        buffer_ms: 3000,
        redirects: 0,
        nat: proto::nat::NatClass::Open,
    };
    raw.send(ToEdge::Join(join)).await.expect("join sent");
    let (mut me, mut neighbours) = (None, None);
    while me.is_none() || neighbours.is_none() {
        match tokio::time::timeout(Duration::from_secs(5), raw.next()).await {
            Ok(Some(Ok(FromEdge::Welcome(w)))) => me = Some(w.peer),
            Ok(Some(Ok(FromEdge::Neighbours(n)))) => neighbours = Some(n),
            Ok(Some(Ok(_))) => {}
            other => panic!("joining from {from}: {other:?}"),
        }
    }
    (raw, me.unwrap_or_default(), neighbours.unwrap_or_default())
}

/// A real player of `demo` on the edge, and its peer id as the edge knows it (from the /p2p
/// view's only client).
async fn victim(edge: &livesky::launch::RunningNode, cancel: &CancellationToken) -> livesky::peer_cmd::Player {
    let player = tcp_peer(edge, cancel).await;
    let stats = player.stats.clone();
    wait_until(Duration::from_secs(10), "the victim to play", || {
        let s = *stats.borrow();
        async move { s.play.played_ms > 500 }
    })
    .await;
    player
}

async fn playing_on(player: &livesky::peer_cmd::Player, what: &str) {
    let before = player.stats.borrow().play.played_ms;
    let stats = player.stats.clone();
    wait_until(Duration::from_secs(5), what, || {
        let s = *stats.borrow();
        async move { s.play.played_ms > before + 1000 }
    })
    .await;
    assert_eq!(player.stats.borrow().play.stalls, 0, "{what}: the victim stalled");
}

async fn refused(edge: &livesky::launch::RunningNode, what: &str) -> f64 {
    metric(&edge.url("/metrics"), "livesky_edge_refused_claims", &[&format!("what=\"{what}\"")]).await
}

/// Issue 20, finding 3: one attacker with two connections got a real `livesky peer play` (and
/// its address) banned for 10 minutes with two BadChunk reports. Reporters now count by
/// identity, so two connections from one address are one reporter, and the victim plays on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_of_one_attacker_cannot_ban_an_honest_peer() {
    let cluster = start(&topology()).await;
    let edge = cluster.get("edge").expect("edge");
    let cancel = CancellationToken::new();
    let player = victim(edge, &cancel).await;
    let client = edge.client.expect("client port");
    let (mut a, _, seen) = raw_join(client, "127.0.7.1", true).await;
    let (mut b, _, _) = raw_join(client, "127.0.7.1", true).await;
    let victim_id = *seen.first().expect("the victim is a mesh neighbour of the attacker");
    for raw in [&mut a, &mut b] {
        for seq in 0..5 {
            raw.send(ToEdge::BadChunk { from: victim_id, seq }).await.expect("report sent");
        }
    }
    wait_until(Duration::from_secs(3), "the reports to arrive", || async {
        p2p_status(edge).await["bad_chunk_reports"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    playing_on(&player, "after the lying reports").await;
    let view = p2p_status(edge).await;
    assert_eq!(view["bans"], 0, "{view}");
    // A stranger the edge never introduced to the victim (it joins with nothing to offer and
    // claims a peer id it was never given) is not even heard.
    let (mut c, _, _) = raw_join(client, "127.0.7.2", false).await;
    c.send(ToEdge::BadChunk { from: PeerId(victim_id.0 + 1000), seq: 1 }).await.expect("sent");
    wait_until(Duration::from_secs(3), "the stranger's report refused", || async {
        refused(edge, "bad_chunk_report").await >= 1.0
    })
    .await;
    cancel.cancel();
    cluster.shutdown().await;
}

/// Issue 20, findings 9 and 10: report fields were summed unchecked (one client wrapped
/// `bytes_from_edge` and the NOC showed 21,818,280,424.9 stalls a minute), and confirmations
/// from anyone credited anyone (60 GiB vouched). Now fields are clamped to what the interval
/// held on the edge's clock, and only introduced receivers confirm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrapped_counters_and_sybil_vouching_are_cut_and_counted() {
    let cluster = start(&topology()).await;
    let edge = cluster.get("edge").expect("edge");
    let cancel = CancellationToken::new();
    let player = victim(edge, &cancel).await;
    let client = edge.client.expect("client port");
    // The sybil first, without a listen address; the inflator after it, also without: the edge
    // introduces neither to the other.
    let (mut sybil, _, _) = raw_join(client, "127.0.8.1", false).await;
    let (mut inflator, inflator_id, _) = raw_join(client, "127.0.8.2", false).await;
    // Ten reports 0.7 s apart: the claims are judged once the receivers had an interval (the
    // longest seen, here the sybil's clamped ~3 s) and a quarter to confirm them.
    for _ in 0..10 {
        let claim = PeerReport { interval_ms: 1000, bytes_up: 60 << 30, ..Default::default() };
        inflator.send(ToEdge::Report(claim)).await.expect("sent");
        let vouch = PeerReport {
            interval_ms: u32::MAX,
            played_ms: u32::MAX,
            stalls: u32::MAX,
            bytes_from_edge: u64::MAX - 1,
            from_peers: vec![(inflator_id, 60 << 30)],
            ..Default::default()
        };
        sybil.send(ToEdge::Report(vouch)).await.expect("sent");
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    wait_until(Duration::from_secs(3), "the reports counted", || async {
        p2p_status(edge).await["reports_clamped"].as_u64().unwrap_or(0) >= 20
    })
    .await;
    let view = p2p_status(edge).await;
    let reported = &view["reported"];
    assert!(reported["stalls"].as_u64().is_some_and(|s| s < 100), "{view}");
    assert!(reported["bytes_from_edge"].as_u64().is_some_and(|b| b < 100 << 20), "{view}");
    assert!(reported["bytes_up"].as_u64().is_some_and(|b| b < 20 << 20), "{view}");
    assert_eq!(view["confirmations_refused"], 10, "{view}");
    assert_eq!(view["inflated_clients"], 1, "{view}");
    assert!(refused(edge, "report_clamped").await >= 20.0);
    playing_on(&player, "after the forged reports").await;
    cancel.cancel();
    cluster.shutdown().await;
}

/// Issue 20, finding 11: signals were unlimited and went to any peer id; flooding a victim's
/// queue dropped it from the trees while its socket stayed open. Now signals go only between
/// introduced peers, small and rate-limited, and a connection whose queue overflows is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signalling_flood_is_cut_and_a_stuck_connection_is_closed() {
    let cluster = start(&topology()).await;
    let edge = cluster.get("edge").expect("edge");
    let cancel = CancellationToken::new();
    let player = victim(edge, &cancel).await;
    let client = edge.client.expect("client port");
    let (mut attacker, _, seen) = raw_join(client, "127.0.9.1", true).await;
    let victim_id = *seen.first().expect("the victim is a neighbour");
    let signal = |to: PeerId, len: usize| ToEdge::Signal { to, kind: SignalKind::Candidate, payload: "x".repeat(len) };
    for i in 0..2000u64 {
        // Oversized, to a peer id it was never introduced to, and plain floods.
        let msg = match i % 4 {
            0 => signal(victim_id, 12 * 1024),
            1 => signal(PeerId(victim_id.0 + 500), 100),
            _ => signal(victim_id, 1000),
        };
        attacker.feed(msg).await.expect("sent");
    }
    SinkExt::<ToEdge>::flush(&mut attacker).await.expect("flushed");
    wait_until(Duration::from_secs(5), "the flood refused", || async { refused(edge, "signal").await >= 1500.0 }).await;
    playing_on(&player, "during the signalling flood").await;
    let view = p2p_status(edge).await;
    assert!(view["signals_relayed"].as_u64().is_some_and(|n| n <= 400), "a burst and the rate: {view}");

    // A client that stops reading while neighbours flood it: its queue overflows, and the edge
    // closes its socket at once rather than leaving it open and forgotten.
    let (stuck, stuck_id, _) = raw_join(client, "127.0.9.2", true).await;
    let metrics = edge.url("/metrics");
    let mut floods = Vec::new();
    for i in 0..12 {
        if metric(&metrics, "livesky_edge_clients_dropped_total", &["queue_full"]).await >= 1.0 {
            break;
        }
        let (mut a, _, seen) = raw_join(client, &format!("127.0.9.{}", 10 + i), true).await;
        assert!(seen.contains(&stuck_id) || i > 0, "the first attacker was introduced to the stuck client");
        for _ in 0..200 {
            a.feed(signal(stuck_id, 8000)).await.expect("sent");
        }
        SinkExt::<ToEdge>::flush(&mut a).await.expect("flushed");
        floods.push(a);
    }
    wait_until(Duration::from_secs(8), "the stuck client's connection closed", || async {
        metric(&metrics, "livesky_edge_clients_dropped_total", &["queue_full"]).await >= 1.0
    })
    .await;
    let mut stuck = stuck.into_inner();
    let (closed, _) = closed_within(&mut stuck, Duration::from_secs(5)).await;
    assert!(closed, "the edge closed the stuck client's socket");
    playing_on(&player, "after the stuck client was closed").await;
    cancel.cancel();
    cluster.shutdown().await;
}

/// Issue 20, finding 13: `Join.listen` was taken at face value, so a client could have the edge
/// send every other peer to a victim's address. Others now get the address it connects from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_made_up_listen_address_is_never_handed_to_others() {
    let cluster = start(&topology()).await;
    let edge = cluster.get("edge").expect("edge");
    let client = edge.client.expect("client port");
    let victim: SocketAddr = "10.9.9.9:4321".parse().expect("addr");
    let (_liar, liar_id, _) = raw_join_as(client, "127.0.12.1", Some(Some(victim))).await;
    let (_other, _, seen) = raw_join_as(client, "127.0.12.2", Some(None)).await;
    let told = seen.iter().find(|(p, _)| *p == liar_id).map(|(_, a)| *a).expect("the liar is a neighbour");
    assert_eq!(told, "127.0.12.1:4321".parse::<SocketAddr>().expect("addr"), "others get the address it connects from");
    cluster.shutdown().await;
}
