//! Whole swarms on fake time: real peer cores, the service and the feeder, through the four stages,
//! churn, loss, tampering and denial.

use super::*;

#[test]
fn forty_peers_take_the_edge_through_all_four_stages_and_all_play() {
    // N1c = 5, N*c = 12 (paper model α = 1.5, K' = 2 → bounds 12.5 and 30); peers offer 2.5 ×
    // the stream so the trees can hold everyone past stage 4 without a sibling edge.
    let mut net = Net::new(5, 12, 2.5);
    for _ in 0..40 {
        net.add_peer(PEER_KBPS);
        net.run(Duration::from_millis(500));
    }
    net.run(Duration::from_secs(30));
    assert_eq!(net.stages, [Stage::One, Stage::Two, Stage::Three, Stage::Four]);
    let snap = net.service.snapshot();
    assert_eq!((snap.p0, snap.nc), (40, 12), "{snap:?}");
    assert_eq!(snap.tree.unfed, 0);

    let mut push = 0;
    for (i, p) in net.peers.iter().enumerate() {
        let st = p.core.stats();
        assert!(st.startup.is_some(), "peer {i} never started: {st:?}");
        assert_eq!(st.play.stalls, 0, "peer {i} stalled: {st:?}");
        assert!(continuous(&p.played), "peer {i} skipped chunks");
        // Without a burst (edge at capacity) a peer waits for a keyframe and 2 s after it.
        let startup = st.startup.unwrap();
        assert!(startup < Duration::from_secs(5), "peer {i} took {startup:?} to start");
        // From then on it played in real time.
        let expect = ((net.now - p.joined - startup).as_secs_f64() - 1.0) * 25.0;
        assert!(p.played.len() as f64 >= expect, "peer {i} played {} chunks, expected {expect}", p.played.len());
        let secs = net.elapsed();
        assert!(st.bytes_up as f64 <= p.upload_bps * secs + 64.0 * 1024.0, "peer {i} uploaded over its cap");
        if st.push {
            push += 1;
        } else {
            assert!(st.bytes_from_peers > st.bytes_from_edge, "P2P peer {i} is fed by peers: {st:?}");
        }
    }
    assert_eq!(push, 12);
    // The edge never sent more than its capacity (plus the one second its budget may hold), but
    // for the start run each joiner gets whatever the budget: at most start_ms (2 s) and a GOP.
    let start_run = (2.0 + GOP_SECS) * (CHUNK_BYTES * 25) as f64;
    let limit = net.capacity_bps * (net.elapsed() + 1.0) + 40.0 * start_run;
    assert!((net.edge_bytes as f64) <= limit, "edge sent {} bytes, capacity {limit}", net.edge_bytes);
}

#[test]
fn orphans_of_a_vanished_parent_keep_playing() {
    let mut net = Net::new(3, 6, 2.5);
    for _ in 0..14 {
        net.add_peer(PEER_KBPS);
        net.run(Duration::from_millis(300));
    }
    net.run(Duration::from_secs(10));
    // The push peer with the most children vanishes.
    let victim = (0..net.peers.len())
        .filter(|&i| net.peers[i].core.stats().push)
        .max_by_key(|&i| net.peers[i].core.stats().children)
        .unwrap();
    assert!(net.peers[victim].core.stats().children > 0);
    let before: Vec<usize> = net.peers.iter().map(|p| p.played.len()).collect();
    net.kill(victim);
    net.run(Duration::from_secs(20));
    for (i, p) in net.peers.iter().enumerate().filter(|(i, _)| *i != victim) {
        let st = p.core.stats();
        assert_eq!(st.play.stalls, 0, "peer {i} stalled after the parent left: {st:?}");
        assert!(p.played.len() >= before[i] + 19 * 25, "peer {i} kept playing");
        assert!(continuous(&p.played));
    }
    assert!(net.service.stats().parent_troubles > 0, "orphans asked the edge");
    assert_eq!(net.service.snapshot().p0, 13);
}

#[test]
fn joins_are_rate_limited_per_address_and_garbage_before_join_closes() {
    let mut s = Service::new(ServiceConfig::new(channel(), AdmissionConfig::paper()));
    let t0 = Instant::now();
    let from: SocketAddr = "192.0.2.9:5000".parse().unwrap();
    let join = |ch: &str| proto::peer::Join {
        version: proto::peer::CLIENT_PROTOCOL_VERSION,
        channel: ChannelId::new(ch).unwrap(),
        token: String::new(),
        upload_kbps: 600,
        listen: None,
        buffer_ms: 15_000,
        redirects: 0,
        nat: proto::nat::NatClass::Open,
    };
    for conn in 0..25u64 {
        s.handle(t0, Input::Joined { conn: conn.into(), from, join: join("live") });
    }
    let out = drain(&mut s);
    let refused = out.iter().filter(|o| matches!(o, Output::Send { msg: FromEdge::Refused { .. }, .. })).count();
    assert_eq!(refused, 5, "burst of 20 joins per address");
    assert_eq!(s.snapshot().p0, 20);
    s.handle(t0, Input::Joined { conn: ConnId(99), from: "192.0.2.10:1".parse().unwrap(), join: join("other") });
    assert!(
        drain(&mut s)
            .iter()
            .any(|o| matches!(o, Output::Send { msg: FromEdge::Refused { reason }, .. } if reason.contains("other")))
    );
    s.handle(t0, Input::Message { conn: ConnId(500), msg: ToEdge::Heartbeat });
    assert_eq!(drain(&mut s), [Output::Close { conn: ConnId(500) }]);
}

#[test]
fn past_stage_four_clients_are_redirected_to_a_sibling_and_nat_is_recorded() {
    let admission = AdmissionConfig {
        n1c: 1,
        nc_star: 2,
        model: ModelParams { alpha: 1.0, k_prime: 2, lambda: 0.0, mu: 0.0 },
        ..AdmissionConfig::paper()
    };
    let mut cfg = ServiceConfig::new(channel(), admission);
    cfg.siblings = vec!["198.51.100.1:7600".into(), "198.51.100.2:7600".into()];
    let mut s = Service::new(cfg);
    let t0 = Instant::now();
    let public: SocketAddr = "203.0.113.5:40000".parse().unwrap();
    for conn in 0..7u64 {
        // Half the clients report a private address behind a NAT.
        let listen = if conn % 2 == 0 { Some(SocketAddr::from(([10, 0, 0, conn as u8], 9000))) } else { Some(public) };
        s.handle(t0, Input::Joined { conn: conn.into(), from: public, join: join_msg(listen, 0) });
    }
    let redirects: Vec<String> = drain(&mut s)
        .into_iter()
        .filter_map(|o| match o {
            Output::Send { msg: FromEdge::Redirect { to, .. }, .. } => Some(to),
            _ => None,
        })
        .collect();
    // S = 0.5: stage 4 above N*c/S = 4 clients; clients 5, 6 and 7 go elsewhere, round robin.
    assert_eq!(redirects, ["198.51.100.1:7600", "198.51.100.2:7600", "198.51.100.1:7600"]);
    assert_eq!(s.snapshot().p0, 4);
    assert_eq!(s.stats().natted_clients, 2, "clients 0 and 2 report private addresses");
    s.handle(
        t0,
        Input::Message {
            conn: ConnId(0),
            msg: ToEdge::Report(proto::peer::PeerReport { bytes_up: 1000, ..Default::default() }),
        },
    );
    s.handle(
        t0,
        Input::Message {
            conn: ConnId(1),
            msg: ToEdge::Report(proto::peer::PeerReport { bytes_up: 5, ..Default::default() }),
        },
    );
    assert_eq!(s.stats().natted_bytes_up, 1000);
    // Clients repeat their startup delay in every report; the edge counts it once per client.
    for (conn, ms) in [(1u64, 700), (1, 700), (2, 1500)] {
        let r = proto::peer::PeerReport { startup_ms: Some(ms), ..Default::default() };
        s.handle(t0, Input::Message { conn: conn.into(), msg: ToEdge::Report(r) });
    }
    assert_eq!(s.take_startups(), [700, 1500]);
    assert!(s.take_startups().is_empty());
    s.handle(t0, Input::Disconnected { conn: ConnId(0) });
    assert_eq!(s.stats().natted_clients, 1);

    // A sibling reported full gets no more clients; with every sibling full, the edge keeps the
    // client (in its trees) rather than bounce it around.
    let join_next = |s: &mut Service, conn: u64, redirects| {
        s.handle(t0, Input::Joined { conn: conn.into(), from: public, join: join_msg(Some(public), redirects) });
        drain(s).into_iter().find_map(|o| match o {
            Output::Send { msg: FromEdge::Redirect { to, .. }, .. } => Some(to),
            Output::Send { msg: FromEdge::Welcome(_), .. } => Some("welcome".into()),
            _ => None,
        })
    };
    assert_eq!(join_next(&mut s, 9, 0).as_deref(), Some("welcome"), "client 0 left: room for one");
    s.handle(t0, Input::SiblingFull { sibling: "198.51.100.2:7600".into(), full: true });
    assert_eq!(join_next(&mut s, 10, 0).as_deref(), Some("198.51.100.1:7600"));
    assert_eq!(join_next(&mut s, 11, 0).as_deref(), Some("198.51.100.1:7600"));
    s.handle(t0, Input::SiblingFull { sibling: "198.51.100.1:7600".into(), full: true });
    assert_eq!(join_next(&mut s, 12, 0).as_deref(), Some("welcome"));
    s.handle(t0, Input::SiblingFull { sibling: "198.51.100.2:7600".into(), full: false });
    assert_eq!(join_next(&mut s, 13, 0).as_deref(), Some("198.51.100.2:7600"));
    // A client another edge already sent here is kept, though a sibling has room: no ping-pong.
    assert_eq!(join_next(&mut s, 14, 1).as_deref(), Some("welcome"));
}
#[test]
fn a_tampering_peer_is_detected_dropped_and_no_player_sees_its_chunks() {
    let mut net = Net::new(3, 6, 2.5);
    // The second push peer flips a byte in everything it forwards.
    let tamperer = 1;
    for i in 0..12 {
        net.add_peer_with(PEER_KBPS, i == tamperer);
        net.run(Duration::from_millis(300));
    }
    net.run(Duration::from_secs(20));
    assert!(net.peers[tamperer].core.stats().push, "the tamperer got to be a parent");
    let reports = net.service.stats().bad_chunk_reports;
    assert!(reports >= 1, "children reported the bad chunks");
    assert_eq!(net.peers[tamperer].core.stats().children, 0, "nobody takes chunks from it any more");
    let bad: u64 = net.peers.iter().map(|p| p.core.stats().bad_chunks).sum();
    assert!(bad >= 1);
    for (i, p) in net.peers.iter().enumerate() {
        let st = p.core.stats();
        assert_eq!(st.play.stalls, 0, "peer {i}: {st:?}");
        assert!(continuous(&p.played), "peer {i} skipped chunks");
    }
    // (Every played chunk was checked against the channel key in `peer_output`.)
}

/// Plays `n` peers for 30 s over peer links that lose `loss` of their chunks.
fn lossy_run(repair: bool, loss: f64) -> Net {
    let mut net = Net::new(3, 6, 2.5);
    net.repair = repair;
    net.loss = loss;
    for _ in 0..16 {
        net.add_peer(PEER_KBPS);
        net.run(Duration::from_millis(300));
    }
    net.run(Duration::from_secs(30));
    net
}

#[test]
fn mesh_repair_fills_chunks_lost_on_peer_links() {
    let net = lossy_run(true, 0.03);
    let mut repaired = 0;
    for (i, p) in net.peers.iter().enumerate() {
        let st = p.core.stats();
        assert_eq!((st.play.stalls, st.play.skipped_chunks), (0, 0), "peer {i}: {st:?}");
        assert!(continuous(&p.played), "peer {i}");
        repaired += st.repair.repaired;
    }
    assert!(repaired > 100, "repaired {repaired} chunks");
    // The same losses without repair leave holes.
    let bare = lossy_run(false, 0.03);
    let holes: u64 = bare.peers.iter().map(|p| p.core.stats().play.skipped_chunks + p.core.stats().play.stalls).sum();
    assert!(holes > 10, "without repair the losses show: {holes}");
}

#[test]
fn ten_percent_abrupt_leaves_every_ten_seconds_keep_q1_above_099() {
    // The peer-player issue's scenario: N1c = 4, N*c = 10, 30 peers; then every 10 s a tenth of
    // them vanish without a word while as many new ones join.
    let mut net = Net::new(4, 10, 2.5);
    for _ in 0..30 {
        net.add_peer(PEER_KBPS);
        net.run(Duration::from_millis(300));
    }
    net.run(Duration::from_secs(10));
    let mut rng = proto::rng::SplitMix64::new(99);
    for _round in 0..6 {
        let alive: Vec<usize> = (0..net.peers.len()).filter(|&i| net.peers[i].alive).collect();
        for _ in 0..3 {
            let victim = alive[rng.below(alive.len() as u64) as usize];
            if net.peers[victim].alive {
                net.kill(victim);
            }
            net.add_peer(PEER_KBPS);
        }
        net.run(Duration::from_secs(10));
    }
    let (mut played, mut stalled) = (0u64, 0u64);
    for p in net.peers.iter().filter(|p| p.alive) {
        let st = p.core.stats();
        played += st.play.played_ms;
        stalled += st.play.stalled_ms;
    }
    let q1 = played as f64 / (played + stalled) as f64;
    eprintln!("churn run: Q1 = {q1:.5}, played {played} ms, stalled {stalled} ms");
    for (i, p) in net.peers.iter().enumerate().filter(|(_, p)| p.alive) {
        let st = p.core.stats();
        // Links come and go with churn; what is known of closed ones must go with them.
        assert!(st.repair.maps_held <= st.links, "peer {i} keeps maps of closed links: {st:?}");
    }
    assert!(q1 >= 0.99, "Q1 = {q1:.4}");
    let snap = net.service.snapshot();
    // The edge sees an abrupt leave as the dropped connection and re-feeds the orphans at once:
    // from another parent, or from itself (refocus) until a parent has room.
    assert!(snap.tree.refocus_total > 0, "orphans refocused on the edge: {snap:?}");
    // Orphans came back into trees: the edge feeds only its push peers again, nobody waits.
    assert_eq!(snap.tree.unfed, 0, "{snap:?}");
    assert_eq!(snap.tree.edge_substreams, snap.nc as usize * 4, "refocused substreams returned to trees: {snap:?}");
}

#[test]
fn a_parent_that_takes_children_but_forwards_nothing_is_made_a_leaf() {
    let mut net = Net::new(3, 6, 2.5);
    // The second push peer accepts children and sends them nothing.
    let denier = 1;
    for i in 0..14 {
        net.add_peer_cfg(PEER_KBPS, |c| c.faults.deny = i == denier);
        net.run(Duration::from_millis(300));
    }
    net.run(Duration::from_secs(30));
    assert!(net.peers[denier].core.stats().push, "the denier got to be a parent");
    assert_eq!(net.peers[denier].core.stats().children, 0, "nobody is left waiting on it");
    assert!(net.service.stats().demoted >= 1, "{:?}", net.service.stats());
    let stalled: Vec<usize> =
        (0..net.peers.len()).filter(|&i| i != denier && net.peers[i].core.stats().play.stalls > 0).collect();
    assert!(stalled.is_empty(), "mesh repair covers the gap until the move: {stalled:?}");
}

/// Joins two clients that were sent here by other edges `redirects` times and offer no upload
/// (the first takes the edge's one slot, the second has no parent and no room), runs the chores
/// for 8 s and returns the redirects sent: (second, conn, to).
fn unfed_redirects(redirects: u8) -> (Vec<(u64, ConnId, String)>, Service) {
    let admission = AdmissionConfig { n1c: 1, nc_star: 1, ..AdmissionConfig::paper() };
    let mut cfg = ServiceConfig::new(channel(), admission);
    cfg.siblings = vec!["198.51.100.1:7600".into()];
    let mut s = Service::new(cfg);
    let t0 = Instant::now();
    for conn in 0..2u64 {
        let from = SocketAddr::from(([203, 0, 113, conn as u8 + 1], 40000));
        let join = proto::peer::Join { upload_kbps: 0, ..join_msg(Some(from), redirects) };
        s.handle(t0, Input::Joined { conn: conn.into(), from, join });
    }
    drain(&mut s);
    let mut redirected = Vec::new();
    for secs in 1..=8u64 {
        s.handle_timeout(t0 + Duration::from_secs(secs));
        for o in drain(&mut s) {
            if let Output::Send { conn, msg: FromEdge::Redirect { to, .. } } = o {
                redirected.push((secs, conn, to));
            }
        }
    }
    (redirected, s)
}

/// A client that no parent and no edge slot can feed is sent to a sibling within its start burst
/// rather than left to stall (`livesky demo --peers 40`: one peer, minutes; then 2.1 s with a
/// 5 s grace).
#[test]
fn a_client_nobody_can_feed_goes_to_a_sibling() {
    let (redirected, s) = unfed_redirects(1);
    assert_eq!(redirected.len(), 1, "{redirected:?}");
    let (secs, conn, to) = &redirected[0];
    assert_eq!((*conn, to.as_str()), (ConnId(1), "198.51.100.1:7600"));
    assert!((2..=3).contains(secs), "after the grace, before its burst runs out: {secs} s");
    assert_eq!(s.snapshot().p0, 1);
}

/// Two full edges do not bounce a client between them until its player gives up: after a few
/// moves it stays and waits for a parent or edge room.
#[test]
fn a_client_edges_already_bounced_stays_and_waits() {
    let (redirected, s) = unfed_redirects(2);
    assert!(redirected.is_empty(), "{redirected:?}");
    assert_eq!(s.snapshot().p0, 2);
}
