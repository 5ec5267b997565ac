//! The service's rules for what clients say and do: signalling, drains, bans, accounting and
//! identities, each with the attack it stops.

use super::*;

#[test]
fn webrtc_signalling_is_relayed_between_clients_of_the_edge_only() {
    let mut s = Service::new(ServiceConfig::new(channel(), AdmissionConfig::paper()));
    let t0 = Instant::now();
    for conn in 0..2u64 {
        let from = SocketAddr::from(([192, 0, 2, conn as u8 + 1], 5000));
        let join = proto::peer::Join {
            version: proto::peer::CLIENT_PROTOCOL_VERSION,
            channel: channel(),
            token: String::new(),
            upload_kbps: 600,
            listen: Some(from),
            buffer_ms: 15_000,
            redirects: 0,
            nat: proto::nat::NatClass::Open,
        };
        s.handle(t0, Input::Joined { conn: conn.into(), from, join });
    }
    drain(&mut s);
    let offer = ToEdge::Signal { to: PeerId(2), kind: proto::peer::SignalKind::Offer, payload: "v=0".into() };
    s.handle(t0, Input::Message { conn: ConnId(0), msg: offer });
    let relayed = drain(&mut s);
    assert_eq!(
        relayed,
        [Output::Send {
            conn: ConnId(1),
            msg: FromEdge::Signal { from: PeerId(1), kind: proto::peer::SignalKind::Offer, payload: "v=0".into() }
        }]
    );
    // To a peer id this edge does not know: dropped, nothing sent anywhere.
    s.handle(
        t0,
        Input::Message {
            conn: ConnId(0),
            msg: ToEdge::Signal { to: PeerId(99), kind: proto::peer::SignalKind::Answer, payload: String::new() },
        },
    );
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.stats().signals_relayed, 1);
}

/// Issue 20, finding 11: signals went to any peer id without limit; flooding a victim's queue
/// got it dropped from the trees. Now a client signals only peers it was introduced to, nothing
/// oversized, and no faster than the rate allows.
#[test]
fn signals_go_only_to_introduced_peers_small_and_rate_limited() {
    let mut s = Service::new(ServiceConfig::new(channel(), AdmissionConfig::paper()));
    let t0 = Instant::now();
    // A stranger first (no listen address: nobody is sent to it), then two neighbours.
    s.handle(t0, Input::Joined { conn: ConnId(7), from: ip(77), join: join_msg(None, 0) });
    drain(&mut s);
    let ids = clients_at(&mut s, t0, &[ip(1), ip(2)]);
    let [a, b] = [ids[0], ids[1]];
    let signal = |to: PeerId, len: usize| ToEdge::Signal {
        to,
        kind: proto::peer::SignalKind::Candidate,
        payload: "c".repeat(len),
    };
    // conn 0 is the first of `clients_at`, whose conn numbers restart at 0.
    s.handle(t0, Input::Message { conn: ConnId(7), msg: signal(a, 10) });
    s.handle(t0, Input::Message { conn: ConnId(0), msg: signal(b, MAX_SIGNAL_BYTES + 1) });
    assert!(drain(&mut s).is_empty(), "a stranger's and an oversized signal are dropped");
    for _ in 0..300 {
        s.handle(t0, Input::Message { conn: ConnId(0), msg: signal(b, 100) });
    }
    let relayed = drain(&mut s).len();
    assert_eq!(relayed, SIGNAL_BURST as usize, "a burst, then nothing until the bucket refills");
    assert_eq!(s.stats().signals_refused, 2 + 300 - relayed as u64);
    s.handle(t0 + Duration::from_secs(1), Input::Message { conn: ConnId(0), msg: signal(b, 100) });
    assert_eq!(drain(&mut s).len(), 1, "refilled");
}

#[test]
fn a_drained_edge_sends_every_client_present_and_arriving_to_a_sibling() {
    let mut cfg = ServiceConfig::new(channel(), AdmissionConfig::paper());
    cfg.siblings = vec!["198.51.100.2:7600".into()];
    let mut s = Service::new(cfg);
    let t0 = Instant::now();
    let from = |i: u8| SocketAddr::from(([203, 0, 113, i], 4000));
    for conn in 0..3u64 {
        s.handle(
            t0,
            Input::Joined { conn: conn.into(), from: from(conn as u8), join: join_msg(Some(from(conn as u8)), 0) },
        );
    }
    let welcomed = drain(&mut s).iter().filter(|o| matches!(o, Output::Send { msg: FromEdge::Welcome(_), .. })).count();
    assert_eq!(welcomed, 3);
    let redirected = |out: Vec<Output>| {
        let mut conns: Vec<u64> = out
            .iter()
            .filter_map(|o| match o {
                Output::Send { conn, msg: FromEdge::Redirect { to, .. } } if to == "198.51.100.2:7600" => Some(conn.0),
                _ => None,
            })
            .collect();
        conns.sort_unstable();
        conns
    };
    s.handle(t0, Input::Drain(true));
    assert_eq!(redirected(drain(&mut s)), [0, 1, 2], "every client present is moved");
    s.handle(t0, Input::Joined { conn: ConnId(7), from: from(7), join: join_msg(Some(from(7)), 0) });
    assert_eq!(redirected(drain(&mut s)), [7], "and every one arriving");
    s.handle(t0, Input::Drain(false));
    s.handle(t0, Input::Joined { conn: ConnId(8), from: from(8), join: join_msg(Some(from(8)), 0) });
    assert!(drain(&mut s).iter().any(|o| matches!(o, Output::Send { conn: ConnId(8), msg: FromEdge::Welcome(_) })));
    // Without a sibling a drained edge refuses, with the reason.
    let mut lone = Service::new(ServiceConfig::new(channel(), AdmissionConfig::paper()));
    lone.handle(t0, Input::Drain(true));
    lone.handle(t0, Input::Joined { conn: ConnId(1), from: from(1), join: join_msg(Some(from(1)), 0) });
    assert!(
        drain(&mut lone).iter().any(
            |o| matches!(o, Output::Send { msg: FromEdge::Refused { reason }, .. } if reason.contains("draining"))
        )
    );
}

/// Clients joined from `addrs` (each listening where it connects from, so the edge makes them
/// mesh neighbours of each other); their peer ids.
fn clients_at(s: &mut Service, t0: Instant, addrs: &[SocketAddr]) -> Vec<PeerId> {
    let mut peer_of = Vec::new();
    for (conn, &from) in addrs.iter().enumerate() {
        s.handle(t0, Input::Joined { conn: conn.into(), from, join: join_msg(Some(from), 0) });
        let welcome = drain(s).into_iter().find_map(|o| match o {
            Output::Send { msg: FromEdge::Welcome(w), .. } => Some(w.peer),
            _ => None,
        });
        peer_of.push(welcome.unwrap_or_else(|| panic!("client {conn} welcomed")));
    }
    peer_of
}

fn ip(i: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, i], 5000))
}

#[test]
fn a_sender_reported_by_two_clients_is_banned_and_one_liar_bans_nobody() {
    let mut s = Service::new(ServiceConfig::new(channel(), AdmissionConfig::paper()));
    let t0 = Instant::now();
    let peer_of = clients_at(&mut s, t0, &[ip(1), ip(2), ip(3), ip(4)]);
    let report = |s: &mut Service, reporter: u64, sender: usize| {
        s.handle(t0, Input::Message { conn: reporter.into(), msg: ToEdge::BadChunk { from: peer_of[sender], seq: 7 } });
        drain(s)
    };
    let closed = |out: &[Output], conn: u64| out.iter().any(|o| *o == Output::Close { conn: ConnId(conn) });
    // Client 3 lies about client 1 (twice): client 1 stops feeding others but stays.
    assert!(!closed(&report(&mut s, 3, 1), 1));
    assert!(!closed(&report(&mut s, 3, 1), 1), "one reporter, however often, is one report");
    // Clients 1 and 2 both report client 0: banned, told why, disconnected.
    assert!(!closed(&report(&mut s, 1, 0), 0));
    let out = report(&mut s, 2, 0);
    assert!(closed(&out, 0), "{out:?}");
    assert!(out.iter().any(
        |o| matches!(o, Output::Send { conn: ConnId(0), msg: FromEdge::Refused { reason } } if reason.contains("banned"))
    ));
    assert_eq!((s.stats().bans, s.snapshot().p0), (1, 3));
    // Rejoining from its address is refused until the ban runs out; others join.
    let t1 = t0 + Duration::from_secs(60);
    s.handle(t1, Input::Joined { conn: ConnId(10), from: ip(1), join: join_msg(None, 0) });
    assert!(drain(&mut s).iter().any(
        |o| matches!(o, Output::Send { msg: FromEdge::Refused { reason }, .. } if reason.contains("banned for 540 s"))
    ));
    s.handle(t1, Input::Joined { conn: ConnId(11), from: ip(9), join: join_msg(None, 0) });
    assert!(drain(&mut s).iter().any(|o| matches!(o, Output::Send { msg: FromEdge::Welcome(_), .. })));
    let t2 = t0 + Duration::from_secs(601);
    s.handle(t2, Input::Joined { conn: ConnId(12), from: ip(1), join: join_msg(None, 0) });
    assert!(
        drain(&mut s).iter().any(|o| matches!(o, Output::Send { msg: FromEdge::Welcome(_), .. })),
        "the ban ran out"
    );
    assert_eq!(s.stats().refused_banned, 1);
}

/// Issue 20, finding 3: an attacker with two connections got an honest peer banned. A report
/// counts only from a peer introduced to the accused, and reporters count by identity.
#[test]
fn strangers_and_one_identity_on_many_connections_ban_nobody() {
    let mut s = Service::new(ServiceConfig::new(channel(), AdmissionConfig::paper()));
    let t0 = Instant::now();
    // Two strangers without a listen address (nobody is ever sent to them), then the victim,
    // then two attacker connections from one address, introduced to it as mesh neighbours.
    for conn in [3u64, 4] {
        s.handle(t0, Input::Joined { conn: conn.into(), from: ip(conn as u8 + 10), join: join_msg(None, 0) });
    }
    drain(&mut s);
    let victim = clients_at(&mut s, t0, &[ip(1)])[0];
    for conn in [1u64, 2] {
        let from = SocketAddr::from(([198, 51, 100, 7], 6000 + conn as u16));
        s.handle(t0, Input::Joined { conn: conn.into(), from, join: join_msg(Some(from), 0) });
    }
    drain(&mut s);
    for conn in 1..=4u64 {
        s.handle(t0, Input::Message { conn: conn.into(), msg: ToEdge::BadChunk { from: victim, seq: 7 } });
    }
    let out = drain(&mut s);
    assert!(!out.iter().any(|o| *o == Output::Close { conn: ConnId(0) }), "the victim stays: {out:?}");
    let st = s.stats();
    assert_eq!((st.bans, st.bad_chunk_reports, st.bad_chunk_refused), (0, 2, 2), "{st:?}");
}

#[test]
fn an_inflated_upload_claim_is_flagged_and_left_out_of_the_figures() {
    let mut s = Service::new(ServiceConfig::new(channel(), AdmissionConfig::paper()));
    let t0 = Instant::now();
    let ids = clients_at(&mut s, t0, &[ip(1), ip(2)]);
    let report = |up: u64, from: Vec<(PeerId, u64)>| proto::peer::PeerReport {
        interval_ms: 60_000,
        bytes_up: up,
        from_peers: from,
        ..Default::default()
    };
    // Client 0 feeds client 1 about 1 MB a minute and claims 8 (a minute at twice its upload
    // cap, about 10 MB, is the most a report may claim at all); client 1 confirms what it got.
    for minute in 1..=3 {
        let t = t0 + Duration::from_secs(60 * minute);
        s.handle(t, Input::Message { conn: ConnId(0), msg: ToEdge::Report(report(8 << 20, vec![])) });
        s.handle(t, Input::Message { conn: ConnId(1), msg: ToEdge::Report(report(0, vec![(ids[0], 1 << 20)])) });
    }
    let st = s.stats();
    assert_eq!(st.inflated_clients, 1);
    assert_eq!(st.reported.bytes_up, 0, "none of its claims count");
    assert_eq!(st.excluded_bytes_up, 24 << 20);
}

/// Issue 20, finding 10: confirmations came from anyone about anyone, so a sybil vouched for
/// 60 GiB. Now only a receiver introduced to the sender confirms, and only what a report
/// interval can hold.
#[test]
fn only_introduced_receivers_confirm_and_only_what_an_interval_holds() {
    let mut s = Service::new(ServiceConfig::new(channel(), AdmissionConfig::paper()));
    let t0 = Instant::now();
    // A sybil with no listen address, before client 0: never introduced to it.
    s.handle(t0, Input::Joined { conn: ConnId(5), from: ip(50), join: join_msg(None, 0) });
    drain(&mut s);
    let ids = clients_at(&mut s, t0, &[ip(1)]);
    let claim = |up: u64| proto::peer::PeerReport { interval_ms: 60_000, bytes_up: up, ..Default::default() };
    let vouch =
        proto::peer::PeerReport { interval_ms: 60_000, from_peers: vec![(ids[0], 60 << 30)], ..Default::default() };
    for minute in 1..=3 {
        let t = t0 + Duration::from_secs(60 * minute);
        s.handle(t, Input::Message { conn: ConnId(0), msg: ToEdge::Report(claim(5 << 20)) });
        s.handle(t, Input::Message { conn: ConnId(5), msg: ToEdge::Report(vouch.clone()) });
    }
    let st = s.stats();
    assert_eq!(st.confirmations_refused, 3);
    assert_eq!(st.inflated_clients, 1, "the sybil's word is worth nothing: {st:?}");
    // Wrapped counters are cut to what a minute holds.
    s.handle(
        t0 + Duration::from_secs(240),
        Input::Message {
            conn: ConnId(5),
            msg: ToEdge::Report(proto::peer::PeerReport {
                interval_ms: u32::MAX,
                played_ms: 60_000,
                stalls: u32::MAX,
                bytes_from_edge: u64::MAX - 5,
                ..Default::default()
            }),
        },
    );
    let st = s.stats();
    assert_eq!(st.reports_clamped, 4, "the three 60 GiB vouches and this one");
    assert!(st.reported.stalls <= 62_000 / 1000 + 1 && st.reported.bytes_from_edge < 1 << 30, "{:?}", st.reported);
}

#[test]
fn a_second_client_with_a_connected_identity_is_noticed() {
    let mut s = Service::new(ServiceConfig::new(channel(), AdmissionConfig::paper()));
    let t0 = Instant::now();
    let with_token = |token: &str| proto::peer::Join { token: token.into(), ..join_msg(None, 0) };
    s.handle(
        t0,
        Input::Joined { conn: ConnId(1), from: "192.0.2.1:1".parse().unwrap(), join: with_token("9.alice.ff") },
    );
    s.handle(
        t0,
        Input::Joined { conn: ConnId(2), from: "198.51.100.1:1".parse().unwrap(), join: with_token("9.bob.ff") },
    );
    assert_eq!(s.stats().duplicate_identities, 0);
    s.handle(
        t0,
        Input::Joined { conn: ConnId(3), from: "203.0.113.1:1".parse().unwrap(), join: with_token("9.alice.ee") },
    );
    assert_eq!(s.stats().duplicate_identities, 1, "alice on a second machine");
}

/// Clients report every ~10 s for live figures; Q2 stays per client and minute (LiveSky §4.4),
/// and the start burst is allowed in the first report only.
#[test]
fn frequent_reports_count_q2_per_client_minute_and_the_burst_once() {
    let mut s = Service::new(ServiceConfig::new(channel(), AdmissionConfig::paper()));
    let t0 = Instant::now();
    clients_at(&mut s, t0, &[ip(1), ip(2)]);
    let report = |stalls: u32, from_edge: u64| proto::peer::PeerReport {
        interval_ms: 10_000,
        played_ms: 10_000,
        stalls,
        bytes_from_edge: from_edge,
        ..Default::default()
    };
    // Two minutes of 10 s reports: client 0 stalls once in its first minute, client 1 never.
    for i in 1..=12u64 {
        let t = t0 + Duration::from_secs(10 * i);
        let stalls = u32::from(i == 3);
        s.handle(t, Input::Message { conn: ConnId(0), msg: ToEdge::Report(report(stalls, 0)) });
        s.handle(t, Input::Message { conn: ConnId(1), msg: ToEdge::Report(report(0, 0)) });
    }
    let st = s.stats();
    assert_eq!((st.reported.reports, st.reported.stalled_reports), (4, 1), "four client-minutes, one stalled");
    assert_eq!(st.reported.played_ms, 240_000);
    // The live P2P rate is each client's latest report, gone with the client.
    let p2p = |bytes| proto::peer::PeerReport { bytes_from_peers: bytes, ..report(0, 0) };
    let t = t0 + Duration::from_secs(130);
    s.handle(t, Input::Message { conn: ConnId(0), msg: ToEdge::Report(p2p(400_000)) });
    s.handle(t, Input::Message { conn: ConnId(1), msg: ToEdge::Report(p2p(100_000)) });
    assert_eq!(s.stats().p2p_bytes_per_sec, 50_000);
    s.handle(t + Duration::from_secs(10), Input::Message { conn: ConnId(0), msg: ToEdge::Report(p2p(200_000)) });
    assert_eq!(s.stats().p2p_bytes_per_sec, 30_000);
    s.handle(t, Input::Disconnected { conn: ConnId(1) });
    assert_eq!(s.stats().p2p_bytes_per_sec, 20_000);
    // A third client's first report may hold its start burst (15 s at 400 kbit/s) on top of
    // 10 s at four times the rate; its next one only the latter.
    let joined = t0 + Duration::from_secs(150);
    s.handle(joined, Input::Joined { conn: ConnId(2), from: ip(3), join: join_msg(Some(ip(3)), 0) });
    drain(&mut s);
    let asked = 10 << 20;
    for i in 1..=2u64 {
        let t = t0 + Duration::from_secs(150 + 10 * i);
        s.handle(t, Input::Message { conn: ConnId(2), msg: ToEdge::Report(report(0, asked)) });
    }
    let (rate, burst) = (400 * 125u64, 2 * 400 * 125 * 15u64);
    assert_eq!(s.stats().reported.bytes_from_edge, 2 * rate * 10 * 4 + burst);
}

/// A client (asking a 15 s buffer) joins on `conn`: the target its welcome names (outer `None`:
/// no welcome), and its start burst.
fn welcome_target_and_burst(s: &mut Service, now: Instant, conn: u64) -> (Option<Option<u32>>, Option<u32>) {
    let from = SocketAddr::from(([203, 0, 113, conn as u8 + 1], 40000));
    s.handle(now, Input::Joined { conn: ConnId(conn), from, join: join_msg(Some(from), 0) });
    let out = drain(s);
    let target = out.iter().find_map(|o| match o {
        Output::Send { msg: FromEdge::Welcome(w), .. } => Some(w.target_latency_ms),
        _ => None,
    });
    let burst = out.iter().find_map(|o| match o {
        Output::Serve { order, .. } => order.burst_ms,
        _ => None,
    });
    (target, burst)
}

/// An operator's `target_latency_ms` for the channel: a client asking a 15 s buffer gets a start
/// burst of the target, and its welcome names the target so it plays in low-latency mode.
#[test]
fn a_channel_latency_target_caps_the_burst_and_goes_in_the_welcome() {
    let mut cfg = ServiceConfig::new(channel(), AdmissionConfig::paper());
    cfg.target_latency_ms = Some(3_000);
    let t0 = Instant::now();
    assert_eq!(welcome_target_and_burst(&mut Service::new(cfg), t0, 0), (Some(Some(3_000)), Some(3_000)));
    // Without a target, the client's own buffer (15 s).
    let mut s = Service::new(ServiceConfig::new(channel(), AdmissionConfig::paper()));
    assert_eq!(welcome_target_and_burst(&mut s, t0, 0), (Some(None), Some(15_000)));
}

/// The MC pushes a new target to a running channel: clients joining from then on get it, and
/// taking it away again gives them their own buffer.
#[test]
fn a_latency_target_pushed_to_a_running_channel_applies_to_the_next_joins() {
    let mut s = Service::new(ServiceConfig::new(channel(), AdmissionConfig::paper()));
    let t0 = Instant::now();
    assert_eq!(welcome_target_and_burst(&mut s, t0, 0), (Some(None), Some(15_000)));
    let push = |target| Input::Reconfigure { admission: AdmissionConfig::paper(), target_latency_ms: target };
    s.handle(t0, push(Some(4_000)));
    assert_eq!(welcome_target_and_burst(&mut s, t0, 1), (Some(Some(4_000)), Some(4_000)));
    s.handle(t0, push(None));
    assert_eq!(welcome_target_and_burst(&mut s, t0, 2), (Some(None), Some(15_000)));
}

/// Issue 22: on a channel with a tight latency target, a P2P client whose feeds reach it later
/// than 3/4 of the target is fed by the edge while the edge has room; one in time stays P2P.
#[test]
fn a_client_whose_feeds_come_too_late_for_the_target_is_fed_by_the_edge() {
    let admission = AdmissionConfig { n1c: 2, nc_star: 20, ..AdmissionConfig::paper() };
    let mut cfg = ServiceConfig::new(channel(), admission);
    cfg.target_latency_ms = Some(3_000);
    let mut s = Service::new(cfg);
    let t0 = Instant::now();
    let ids = clients_at(&mut s, t0, &[ip(1), ip(2), ip(3), ip(4)]);
    let tracker = s.admission().tracker();
    let push: Vec<bool> = ids.iter().map(|&p| tracker.is_push(p)).collect();
    assert_eq!(push, [true, true, false, false], "{:?}", s.snapshot());
    assert_eq!(tracker.budget(ids[2]), Some(1_500), "half the target for its parents");
    let report = |delay| {
        ToEdge::Report(proto::peer::PeerReport { interval_ms: 10_000, delay_ms: Some(delay), ..Default::default() })
    };
    let t1 = t0 + Duration::from_secs(10);
    s.handle(t1, Input::Message { conn: ConnId(2), msg: report(2_000) });
    s.handle(t1, Input::Message { conn: ConnId(3), msg: report(2_400) });
    let tracker = s.admission().tracker();
    assert!(!tracker.is_push(ids[2]), "2 s of a 3 s target leaves room");
    assert!(tracker.is_push(ids[3]), "2.4 s of a 3 s target does not");
    assert_eq!(s.stats().fed_for_delay, 1);
    // It is told: every substream now comes from the edge.
    let feeds: Vec<_> = drain(&mut s)
        .into_iter()
        .filter_map(|o| match o {
            Output::Send { conn: ConnId(3), msg: FromEdge::Feed { substream, feed } } => Some((substream, feed)),
            _ => None,
        })
        .collect();
    assert_eq!(feeds.len(), usize::from(K), "{feeds:?}");
    assert!(feeds.iter().all(|(_, f)| *f == proto::peer::FeedTo::Edge), "{feeds:?}");
}

/// Issue 23: a web page joins as a leaf (no upload slots whatever it offers); a minute of on-time,
/// stall-free reports makes it a possible parent; a stall or a late report starts the proof over.
#[test]
fn a_page_is_a_leaf_until_a_minute_of_steady_reports() {
    let mut s = Service::new(ServiceConfig::new(channel(), AdmissionConfig::paper()));
    let t0 = Instant::now();
    s.handle(t0, Input::BrowserJoined { conn: ConnId(0), from: ip(1), join: join_msg(Some(ip(1)), 0) });
    s.handle(t0, Input::Joined { conn: ConnId(1), from: ip(2), join: join_msg(Some(ip(2)), 0) });
    drain(&mut s);
    let (page, native) = (PeerId(1), PeerId(2));
    let slots = |s: &Service, p: PeerId| s.admission.tracker().slots(p).map_or(0, |(_, n)| n);
    assert_eq!(slots(&s, page), 0, "a page starts as a leaf");
    assert!(slots(&s, native) > 0, "a native player offering the same upload gets slots");
    let report =
        |stalls: u32| proto::peer::PeerReport { interval_ms: 10_000, played_ms: 10_000, stalls, ..Default::default() };
    let mut t = t0;
    let mut send = |s: &mut Service, after_s: u64, stalls: u32| {
        t += Duration::from_secs(after_s);
        s.handle(t, Input::Message { conn: ConnId(0), msg: ToEdge::Report(report(stalls)) });
        drain(s);
    };
    for _ in 0..5 {
        send(&mut s, 10, 0);
    }
    send(&mut s, 10, 1);
    assert_eq!(slots(&s, page), 0, "a stall starts the proof over");
    for _ in 0..5 {
        send(&mut s, 10, 0);
    }
    send(&mut s, 40, 0);
    assert_eq!(slots(&s, page), 0, "a late report (a throttled tab) starts it over too");
    for _ in 0..5 {
        send(&mut s, 10, 0);
    }
    assert_eq!(slots(&s, page), 0, "five steady reports are not yet a minute");
    send(&mut s, 10, 0);
    assert_eq!(slots(&s, page), slots(&s, native), "proved: the slots its upload offers");
    assert_eq!(s.stats().browsers_promoted, 1);
    send(&mut s, 10, 0);
    assert_eq!(s.stats().browsers_promoted, 1, "promoted once");
    // Sent to the background: its next report comes late, and it is a leaf again.
    send(&mut s, 60, 0);
    assert_eq!(slots(&s, page), 0, "a page that stops being steady feeds nobody");
    assert_eq!(s.stats().browsers_demoted, 1);
}

/// Issue 24: a player measures its NAT after the welcome names the STUN server. Placed blind it
/// could take the edge's direct feed from a peer nobody else can feed, or get a parent it cannot
/// reach; so it is placed when its result arrives (or after the wait, as a web page that cannot
/// measure), and a result whose address is not the connection's counts for nothing.
#[test]
fn clients_are_placed_when_their_nat_is_measured_or_the_wait_ends() {
    use proto::nat::NatClass;
    let mut s = Service::new(ServiceConfig::new(channel(), AdmissionConfig::paper()));
    let t0 = Instant::now();
    let join = |n: u8| {
        let from = ip(n);
        let msg = proto::peer::Join { nat: NatClass::Unknown, ..join_msg(Some(from), 0) };
        Input::Joined { conn: ConnId(u64::from(n)), from, join: msg }
    };
    s.handle(t0, join(1));
    let out = drain(&mut s);
    assert!(out.iter().any(|o| matches!(o, Output::Send { msg: FromEdge::Welcome(_), .. })), "welcomed at once");
    assert!(out.iter().any(|o| matches!(o, Output::Serve { order, .. } if order.burst_ms.is_some())), "start burst");
    assert!(s.admission().is_pending(PeerId(1)) && s.admission().tracker().feeds(PeerId(1)).is_none());
    let nat = |class, mapped| Input::Message { conn: ConnId(1), msg: ToEdge::Nat { class, mapped } };
    s.handle(t0 + Duration::from_millis(300), nat(NatClass::Restricted, Some(ip(1))));
    assert!(!s.admission().is_pending(PeerId(1)));
    let placed = drain(&mut s).into_iter().find_map(|o| match o {
        Output::Send { conn: ConnId(1), msg: FromEdge::Placed { push, upload_slots } } => Some((push, upload_slots)),
        _ => None,
    });
    assert!(placed.is_some_and(|(push, slots)| push && slots > 0), "told where it went: {placed:?}");
    assert_eq!(s.admission().tracker().reach(PeerId(1)).map(|r| r.nat), Some(NatClass::Restricted));
    assert!(s.admission().tracker().feeds(PeerId(1)).is_some_and(|f| f.iter().all(|f| *f == Feed::Edge)));
    // STUN saw another address than the connection's: taken as unknown.
    s.handle(t0 + Duration::from_millis(400), nat(NatClass::Open, Some(ip(9))));
    assert_eq!(s.admission().tracker().reach(PeerId(1)).map(|r| r.nat), Some(NatClass::Unknown));
    assert_eq!(s.stats().nat_mismatches, 1);
    // One that never says: placed once the wait is over.
    s.handle(t0, join(2));
    let mut t = t0;
    while t < t0 + crate::admission::NAT_WAIT + Duration::from_secs(2) && s.admission().is_pending(PeerId(2)) {
        t += Duration::from_millis(100);
        s.handle_timeout(t);
    }
    assert!(!s.admission().is_pending(PeerId(2)));
    assert!(t >= t0 + crate::admission::NAT_WAIT, "placed after {:?}", t - t0);
    assert!(s.admission().tracker().feeds(PeerId(2)).is_some());
    assert_eq!(s.stats().nat_classes, [2, 0, 0, 0], "both count as unknown");
}

/// Issue 24: a child whose every parent went quiet (one home's full uplink fed them all) measures
/// them against live and reports them; a paused broadcast looks the same to it, and the edge,
/// which knows how far its source has got, acts only on the first.
#[test]
fn silent_parents_are_moved_only_for_chunks_the_source_has_produced() {
    use proto::SourceStatus;
    let cfg = AdmissionConfig { n1c: 1, ..AdmissionConfig::paper() };
    let mut s = Service::new(ServiceConfig::new(channel(), cfg));
    let t0 = Instant::now();
    let ids = clients_at(&mut s, t0, &[ip(1), ip(2)]);
    let (parent, child) = (ids[0], ids[1]);
    let feeds = |s: &Service| s.admission().tracker().feeds(child).map(<[Feed]>::to_vec).unwrap_or_default();
    assert_eq!(feeds(&s)[0], Feed::Peer(parent), "{:?}", feeds(&s));
    s.handle(t0, Input::Source { status: SourceStatus::Live, last_seq: Some(100) });
    let trouble = |missing_from| Input::Message {
        conn: ConnId(1),
        msg: ToEdge::ParentTrouble { substream: 0, parent, trouble: proto::peer::Trouble::Silent, missing_from },
    };
    s.handle(t0, trouble(Some(101)));
    assert_eq!(feeds(&s)[0], Feed::Peer(parent), "the source has not produced chunk 101 yet");
    assert_eq!(s.stats().troubles_before_source, 1);
    s.handle(t0, trouble(Some(96)));
    assert_ne!(feeds(&s)[0], Feed::Peer(parent), "chunk 96 exists: the parent is at fault");
}
