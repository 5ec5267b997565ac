//! `livesky swarm`: runs N peer players in this process against one edge's client port and prints
//! the aggregate table (startup, stalls, Q1, P2P share), with a live status line meanwhile.
//! Peer links are WebRTC data channels by default (`--transport tcp` for plain TCP).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use livesky_peer::core::{PeerConfig, PeerStats};
use livesky_peer::driver::{self, Ended, Net, Transport};
use proto::ChannelId;
use proto::quality::LatencyHistogram;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct SwarmArgs {
    /// The edge's LiveSky client port (`client_listen`), e.g. 127.0.0.1:7600.
    #[arg(long)]
    pub edge: SocketAddr,
    #[arg(long, default_value = "demo")]
    pub channel: ChannelId,
    #[arg(long, default_value_t = 10)]
    pub peers: usize,
    /// Milliseconds between joins.
    #[arg(long, default_value_t = 250)]
    pub join_interval_ms: u64,
    /// Upload each peer offers, kbit/s.
    #[arg(long, default_value_t = 1000)]
    pub upload_kbps: u32,
    /// Seconds to run after the last join (Ctrl-C stops earlier).
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// How peers reach each other: webrtc or tcp.
    #[arg(long, default_value = "webrtc")]
    pub transport: Transport,
}

/// One peer player running in this process.
pub struct Member {
    pub stats: watch::Receiver<PeerStats>,
    /// Bytes of the reassembled stream played so far.
    pub played: Arc<AtomicU64>,
    pub task: tokio::task::JoinHandle<Result<Ended, driver::PeerError>>,
}

/// Starts a peer player against `edge`; its peer links bind to loopback.
pub fn spawn_peer(
    edge: SocketAddr,
    channel: &ChannelId,
    upload_kbps: u32,
    transport: Transport,
    cancel: &CancellationToken,
) -> Member {
    let mut cfg = PeerConfig::new(channel.clone());
    cfg.upload_kbps = upload_kbps;
    spawn_peer_with(cfg, edge, transport, cancel)
}

/// [`spawn_peer`] with a full peer configuration.
pub fn spawn_peer_with(cfg: PeerConfig, edge: SocketAddr, transport: Transport, cancel: &CancellationToken) -> Member {
    let (tx, stats) = watch::channel(PeerStats::default());
    let (play_tx, mut play_rx) = mpsc::channel::<proto::Chunk>(1024);
    let played = Arc::new(AtomicU64::new(0));
    let counter = played.clone();
    tokio::spawn(async move {
        while let Some(c) = play_rx.recv().await {
            counter.fetch_add(c.payload.len() as u64, Ordering::Relaxed);
        }
    });
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let net = Net { edge, listen, transport };
    let task = tokio::spawn(driver::run(cfg, net, Some(play_tx), tx, cancel.child_token()));
    Member { stats, played, task }
}

pub(crate) fn merged_latency(all: &[PeerStats]) -> LatencyHistogram {
    all.iter().fold(LatencyHistogram::default(), |mut h, s| {
        h.merge(&s.latency);
        h
    })
}

pub(crate) fn latency_text(h: &LatencyHistogram) -> String {
    h.p50_p95().map_or("-".into(), |(a, b)| format!("{:.1}/{:.1} s", f64::from(a) / 1e3, f64::from(b) / 1e3))
}

fn status(members: &[Member]) -> String {
    let all: Vec<PeerStats> = members.iter().map(|m| *m.stats.borrow()).collect();
    let playing = all.iter().filter(|s| s.startup.is_some()).count();
    let push = all.iter().filter(|s| s.push).count();
    let from_edge: u64 = all.iter().map(|s| s.bytes_from_edge).sum();
    let from_peers: u64 = all.iter().map(|s| s.bytes_from_peers).sum();
    let stalls: u64 = all.iter().map(|s| s.play.stalls).sum();
    let share = 100.0 * proto::quality::p2p_share(from_peers as f64, from_edge as f64);
    format!(
        "{} peers, {playing} playing, {push} push, P2P share {share:.1} %, stalls {stalls}, latency p50/p95 {}",
        members.len(),
        latency_text(&merged_latency(&all))
    )
}

pub async fn run(args: SwarmArgs) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let mut members = Vec::new();
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    tokio::pin!(stop);
    for _ in 0..args.peers {
        members.push(spawn_peer(args.edge, &args.channel, args.upload_kbps, args.transport, &cancel));
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(args.join_interval_ms)) => {}
            _ = &mut stop => break,
        }
        eprint!("\r{}   ", status(&members));
    }
    let end = tokio::time::Instant::now() + Duration::from_secs(args.duration);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => eprint!("\r{}   ", status(&members)),
            _ = &mut stop => break,
        }
    }
    eprintln!();
    cancel.cancel();
    println!("{}", finish(members).await?);
    Ok(())
}

/// Waits for the (cancelled) members to end; their table, one row per peer.
pub async fn finish(members: Vec<Member>) -> anyhow::Result<String> {
    let mut rows = String::from(
        "| peer | mode | startup (ms) | stalls | stalled (ms) | catch-ups | Q1 | latency p50/p95 | buffer (ms) | from edge (kB) | from peers (kB) | uploaded (kB) | played (kB) | ended |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (i, m) in members.into_iter().enumerate() {
        let ended = match tokio::time::timeout(Duration::from_secs(5), m.task).await {
            Ok(r) => r.context("peer task")?.map_or_else(|e| e.to_string(), |e| format!("{e:?}")),
            Err(_) => "still running after 5 s".into(),
        };
        let s = *m.stats.borrow();
        let q1 = proto::quality::q1(s.play.played_ms, s.play.stalled_ms).map_or("-".to_string(), |q| format!("{q:.4}"));
        rows.push_str(&format!(
            "| {i} | {} | {} | {} | {} | {} | {q1} | {} | {} | {} | {} | {} | {} | {ended} |\n",
            if s.push { "push" } else { "p2p" },
            s.startup.map_or("-".into(), |d| d.as_millis().to_string()),
            s.play.stalls,
            s.play.stalled_ms,
            s.play.catchups,
            latency_text(&s.latency),
            s.buffered_ms,
            s.bytes_from_edge / 1000,
            s.bytes_from_peers / 1000,
            s.bytes_up / 1000,
            m.played.load(Ordering::Relaxed) / 1000,
        ));
    }
    Ok(rows)
}
