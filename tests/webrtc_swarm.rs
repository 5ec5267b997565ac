//! Issue 4's swarm on loopback: one edge (N1c = 4, N*c = 10, K' = 3: with α = 1.5 it holds
//! 10 × (1 + 1.5 + 2.25) ≈ 47 clients) and 30 peer players whose links are
//! WebRTC data channels (ICE through the edge's STUN, offers and answers through its relay). First
//! 60 s of steady play, then churn: every 10 s the 3 peers feeding the most children vanish without
//! a word while 3 new ones join.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use livesky::swarm::{Member, spawn_peer};
use livesky_peer::core::PeerStats;
use livesky_peer::driver::Transport;
use livesky_tests::*;
use proto::ChannelId;
use sn_core::Role;
use tokio_util::sync::CancellationToken;

/// The clip averages ~400 kbit/s; the channel declares 500.
const BITRATE_KBPS: u64 = 500;
const N_STAR: u64 = 10;
const PEERS: usize = 30;
/// Each peer's slots carry 1.5 × the stream rate (the paper's default upload cap).
fn upload_kbps() -> u32 {
    offering(BITRATE_KBPS * 3 / 2)
}
const STEADY: Duration = Duration::from_secs(60);
const CHURN_ROUNDS: usize = 3;

fn topology() -> String {
    let edge_extra = format!(
        "[node.edge]\nclient_listen = \"127.0.0.1:0\"\nstun_listen = \"127.0.0.1:0\"\n\
         [node.edge.admission]\nn1c = 4\ncapacity_kbps = {}\nalpha = 1.5\nk_prime = 3\nlambda = 0.0\nmu = 0.0\n\
         upload_cap_factor = 1.5\njoins_per_ip_per_sec = 100.0\njoin_burst_per_ip = 100.0",
        N_STAR * BITRATE_KBPS
    );
    [
        format!(
            "[[channel]]\nid = \"demo\"\nbitrate_kbps = {BITRATE_KBPS}\nsubstreams = 4\nsource = {{ kind = \"loop\", path = \"builtin:demo\" }}\n"
        ),
        loopback_node("tier0", 0, Role::Relay, &[], ""),
        loopback_node("edge", 1, Role::Edge, &["tier0"], &edge_extra),
    ]
    .concat()
}

struct Viewer {
    member: Member,
    since: Instant,
}

impl Viewer {
    fn join(edge: std::net::SocketAddr, cancel: &CancellationToken) -> Viewer {
        let channel = ChannelId::new("demo").unwrap();
        Viewer { member: spawn_peer(edge, &channel, upload_kbps(), Transport::WebRtc, cancel), since: Instant::now() }
    }

    fn stats(&self) -> PeerStats {
        *self.member.stats.borrow()
    }

    /// Never more than its token bucket allows: the rate plus one bucket of burst.
    fn check_upload_cap(&self, i: usize) {
        let st = self.stats();
        let rate = f64::from(upload_kbps()) * 125.0;
        let allowed = rate * (self.since.elapsed().as_secs_f64() + 1.0) + 64.0 * 1024.0;
        assert!(
            (st.bytes_up as f64) <= allowed,
            "peer {i} uploaded {} B, cap allows {allowed:.0}: {st:?}",
            st.bytes_up
        );
    }
}

fn q1(stats: &[PeerStats]) -> f64 {
    let played: u64 = stats.iter().map(|s| s.play.played_ms).sum();
    let stalled: u64 = stats.iter().map(|s| s.play.stalled_ms).sum();
    played as f64 / (played + stalled).max(1) as f64
}

fn p2p_share(stats: &[PeerStats]) -> f64 {
    let edge: u64 = stats.iter().map(|s| s.bytes_from_edge).sum();
    let peers: u64 = stats.iter().map(|s| s.bytes_from_peers).sum();
    peers as f64 / (edge + peers).max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_webrtc_peers_carry_most_of_the_stream_and_survive_churn() {
    let _swarm = one_swarm_at_a_time().await;
    // The edge reports every second: churn must not cost a report.
    let (mc, cluster, path, _) = with_mc("churn", &topology(), Duration::from_secs(1)).await;
    let edge = cluster.get("edge").unwrap();
    let client_port = edge.client.expect("edge runs the client service");
    let cancel = CancellationToken::new();
    let t0 = Instant::now();
    let mut viewers: Vec<Viewer> = Vec::new();
    for _ in 0..PEERS {
        viewers.push(Viewer::join(client_port, &cancel));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_until(Duration::from_secs(30), "every peer to start playing", || {
        let all = viewers.iter().all(|v| v.stats().startup.is_some());
        async move { all }
    })
    .await;
    tokio::time::sleep(STEADY.saturating_sub(t0.elapsed())).await;

    // Steady state: 60 s from the first join.
    let stats: Vec<PeerStats> = viewers.iter().map(Viewer::stats).collect();
    for (i, st) in stats.iter().enumerate() {
        eprintln!(
            "peer {i:2}: push {} startup {:?} stalls {} stalled {} ms, edge {} kB, peers {} kB, up {} kB, parents {}, children {}, mesh {}, repaired {}",
            st.push,
            st.startup.map(|d| d.as_millis()),
            st.play.stalls,
            st.play.stalled_ms,
            st.bytes_from_edge / 1000,
            st.bytes_from_peers / 1000,
            st.bytes_up / 1000,
            st.parents,
            st.children,
            st.mesh,
            st.repair.repaired
        );
    }
    for (i, (v, st)) in viewers.iter().zip(&stats).enumerate() {
        assert_eq!(st.play.stalls, 0, "peer {i} stalled after startup: {st:?}");
        assert_eq!(st.play.skipped_chunks, 0, "peer {i} skipped: {st:?}");
        assert!(st.verifying && st.bad_chunks == 0, "peer {i} checks every chunk: {st:?}");
        assert!(v.member.played.load(Ordering::Relaxed) > 30 * 40_000, "peer {i} played too little: {st:?}");
        v.check_upload_cap(i);
    }
    let share = p2p_share(&stats);
    assert!(share >= 0.5, "P2P share of delivered bytes {:.1} %", share * 100.0);
    let sent = metric(&edge.url("/metrics"), "livesky_edge_client_bytes_total", &[]).await;
    let capacity = (N_STAR * BITRATE_KBPS * 125) as f64;
    let elapsed = t0.elapsed().as_secs_f64();
    assert!(sent <= capacity * (elapsed + 1.0), "edge sent {sent} B in {elapsed:.1} s; capacity {capacity} B/s");
    let status = p2p_status(edge).await;
    // 30 clients are past the stage-3 threshold: the edge pushes to as many as it can, no more.
    assert_eq!(status["stage"].as_u64(), Some(3), "{status}");
    assert!(status["nc"].as_u64().is_some_and(|nc| nc <= N_STAR), "{status}");
    eprintln!("steady: P2P share {:.1} %, edge {:.0} kbit/s", share * 100.0, sent * 8.0 / 1000.0 / elapsed);

    // Churn: 10 % of the peers vanish every 10 s — the busiest parents — and as many join.
    let refocus_before = status["refocus_total"].as_u64().unwrap_or(0);
    let before: Vec<PeerStats> = viewers.iter().map(Viewer::stats).collect();
    let mut survivors_before = before;
    for _ in 0..CHURN_ROUNDS {
        let mut order: Vec<usize> = (0..viewers.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(viewers[i].stats().children));
        let mut victims: Vec<usize> = order[..PEERS / 10].to_vec();
        victims.sort_unstable_by(|a, b| b.cmp(a));
        for i in victims {
            let v = viewers.remove(i);
            survivors_before.remove(i);
            v.member.task.abort();
        }
        for _ in 0..PEERS / 10 {
            viewers.push(Viewer::join(client_port, &cancel));
            survivors_before.push(PeerStats::default());
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    // The orphans' substreams were fed by the edge for a while (refocus), then parents took over.
    let status = p2p_status(edge).await;
    let refocused = status["refocus_total"].as_u64().unwrap_or(0) - refocus_before;
    assert!(refocused > 0, "orphans were refocused on the edge: {status}");
    wait_until(Duration::from_secs(20), "refocused peers to return to trees", || async {
        let s = p2p_status(edge).await;
        s["edge_substreams"].as_u64() == s["nc"].as_u64().map(|nc| nc * 4) && s["unfed_substreams"].as_u64() == Some(0)
    })
    .await;

    // What viewers saw during churn: only the interval since it began (new peers: since joining).
    let during: Vec<PeerStats> = viewers
        .iter()
        .zip(&survivors_before)
        .map(|(v, b)| {
            let mut s = v.stats();
            s.play.played_ms -= b.play.played_ms;
            s.play.stalled_ms -= b.play.stalled_ms;
            s.bytes_from_edge -= b.bytes_from_edge;
            s.bytes_from_peers -= b.bytes_from_peers;
            s
        })
        .collect();
    let churn_q1 = q1(&during);
    let worst = during.iter().map(|s| q1(std::slice::from_ref(s))).fold(1.0, f64::min);
    eprintln!(
        "churn: {refocused} refocus, Q1 {churn_q1:.4} (worst peer {worst:.4}), P2P share {:.1} %",
        p2p_share(&during) * 100.0
    );
    assert!(churn_q1 >= 0.99, "Q1 during churn {churn_q1:.4}");
    for (i, v) in viewers.iter().enumerate() {
        assert!(v.stats().startup.is_some(), "peer {i} plays: {:?}", v.stats());
        assert_eq!(v.stats().bad_chunks, 0);
        v.check_upload_cap(i);
    }
    cancel.cancel();
    for v in viewers {
        let _ = tokio::time::timeout(Duration::from_secs(10), v.member.task).await;
    }
    wait_until(Duration::from_secs(15), "every peer gone from the edge", || async {
        p2p_status(edge).await["p0"].as_u64() == Some(0)
    })
    .await;
    let rows = assert_no_report_lost(&path, &["edge"]).await;
    let joins: u64 = rows.iter().map(|r| r.joins).sum();
    let leaves: u64 = rows.iter().map(|r| r.leaves).sum();
    let joined = (PEERS + CHURN_ROUNDS * PEERS / 10) as u64;
    assert_eq!((joins, leaves), (joined, joined), "every join and leave reported once");
    cluster.shutdown().await;
    mc.shutdown();
}
