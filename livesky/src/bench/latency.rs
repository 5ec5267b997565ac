//! `livesky bench latency`: how fast every kind of client starts and how close to live it plays,
//! with the edge at its capacity. Tier 0 and one edge (N*c = 10 clients' worth of egress) run in
//! a child process; 40 peer players over WebRTC data channels on loopback join one every 250 ms,
//! so most of them are fed by other peers. Measured once in normal mode (15 s buffer) and once in
//! low-latency mode (`livesky peer play --low-latency`), side by side in one table: startup
//! p50/p95 for push and for P2P peers separately, glass-to-glass latency p50/p95 over every
//! chunk played, P2P share of the bytes the peers received, stalls after startup, catch-ups.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use livesky_peer::core::{PeerConfig, PeerStats};
use livesky_peer::driver::Transport;
use proto::ChannelId;
use sn_core::Role;
use tokio_util::sync::CancellationToken;

use super::fanout::{check_fd_limit, spawn_demo};
use super::peers::percentile;
use crate::launch::loopback_node;
use crate::peer_cmd::LOW_LATENCY_MS;
use crate::swarm::{Member, finish, latency_text, merged_latency, spawn_peer_with};

#[derive(clap::Args, Clone)]
pub struct LatencyArgs {
    /// Peers joining the edge.
    #[arg(long, default_value_t = 40)]
    pub peers: usize,
    /// Milliseconds between joins.
    #[arg(long, default_value_t = 250)]
    pub join_interval_ms: u64,
    /// Seconds measured after the last join.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Upload each peer offers, kbit/s (the edge caps it at 1.5 × the stream rate).
    #[arg(long, default_value_t = 1000)]
    pub upload_kbps: u32,
    /// Modes to measure: normal, low-latency.
    #[arg(long, value_delimiter = ',', default_value = "normal,low-latency")]
    pub modes: Vec<Mode>,
    /// Also write the table (markdown) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also print each peer's row (as `livesky swarm` does) after each mode.
    #[arg(long)]
    pub details: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Normal,
    LowLatency,
}

/// The demo channel (~400 kbit/s, declared 500) on an edge whose egress holds 10 clients:
/// N1c = 4, N*c = 10, as in `configs/demo.toml`, with trees up to K' = 4 deep: with the paper's
/// K' = 2 ten push peers' slots hold 15 more peers and the rest wait for a sibling edge.
fn topology() -> String {
    let edge = "limits = { clients_max_per_ip = 1000000, http_max_per_ip = 1000000 }\n[node.edge]\nclient_listen = \"127.0.0.1:0\"\n[node.edge.admission]\nn1c = 4\ncapacity_kbps = 5000\n\
                k_prime = 4\nalpha_from_clients = true\njoins_per_ip_per_sec = 1000.0\njoin_burst_per_ip = 1000.0";
    format!(
        "[[channel]]\nid = \"demo\"\nbitrate_kbps = 500\nsubstreams = 4\nsource = {{ kind = \"loop\", path = \"builtin:demo\" }}\n{}{}",
        loopback_node("tier0", 0, Role::Relay, &[], ""),
        loopback_node("edge", 1, Role::Edge, &["tier0"], edge),
    )
}

/// Startup p50/p95 in ms of the peers `pick` selects, and how many there were.
fn startups(stats: &[PeerStats], pick: impl Fn(&PeerStats) -> bool) -> String {
    let mut ms: Vec<f64> =
        stats.iter().filter(|s| pick(s)).filter_map(|s| s.startup).map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    if ms.is_empty() {
        return "-".into();
    }
    format!("{:.0} / {:.0} ({})", percentile(&ms, 0.5), percentile(&ms, 0.95), ms.len())
}

fn row(mode: Mode, n: usize, stats: &[PeerStats]) -> String {
    let latency = latency_text(&merged_latency(stats));
    let (edge_b, peer_b) = stats.iter().fold((0u64, 0u64), |(e, p), s| (e + s.bytes_from_edge, p + s.bytes_from_peers));
    let share = 100.0 * proto::quality::p2p_share(peer_b as f64, edge_b as f64);
    let stalls: u64 = stats.iter().map(|s| s.play.stalls).sum();
    let catchups: u64 = stats.iter().map(|s| s.play.catchups).sum();
    let playing = stats.iter().filter(|s| s.startup.is_some()).count();
    format!(
        "| {} | {n} ({playing} playing) | {} | {} | {latency} | {share:.0} % | {stalls} | {catchups} |\n",
        match mode {
            Mode::Normal => "normal (15 s buffer)",
            Mode::LowLatency => "low-latency (3 s)",
        },
        startups(stats, |s| s.push),
        startups(stats, |s| !s.push),
    )
}

pub async fn latency(args: LatencyArgs) -> anyhow::Result<()> {
    check_fd_limit(args.peers * 8)?;
    let dir = std::env::temp_dir().join(format!("livesky-bench-latency-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut table = String::from(
        "| mode | peers | push peers: startup p50 / p95 ms (n) | P2P peers: startup p50 / p95 ms (n) | glass-to-glass p50 / p95 | P2P share | stalls after startup | catch-ups |\n|---|---|---|---|---|---|---|---|\n",
    );
    let channel = ChannelId::new("demo")?;
    for &mode in &args.modes {
        let (mut child, ep) = spawn_demo(&dir, &topology()).await?;
        let edge: std::net::SocketAddr =
            ep["edges"][0]["clients"].as_str().context("edge has no client port")?.parse().context("client port")?;
        // Let the edge's ring hold a whole normal-mode buffer.
        tokio::time::sleep(Duration::from_secs(16)).await;
        let cancel = CancellationToken::new();
        let mut members: Vec<Member> = Vec::new();
        for i in 0..args.peers {
            let mut cfg = PeerConfig::new(channel.clone());
            if mode == Mode::LowLatency {
                cfg = cfg.low_latency(LOW_LATENCY_MS);
            }
            cfg.upload_kbps = args.upload_kbps;
            members.push(spawn_peer_with(cfg, edge, Transport::WebRtc, &cancel));
            tokio::time::sleep(Duration::from_millis(args.join_interval_ms)).await;
            if (i + 1) % 10 == 0 {
                eprintln!("   {mode:?}: {} peers joined", i + 1);
            }
        }
        let mut left = args.seconds;
        while left > 0 {
            eprintln!("   {mode:?}: measuring, {left} s left");
            let step = left.min(10);
            tokio::time::sleep(Duration::from_secs(step)).await;
            left -= step;
        }
        let stats: Vec<PeerStats> = members.iter().map(|m| *m.stats.borrow()).collect();
        table.push_str(&row(mode, args.peers, &stats));
        cancel.cancel();
        let rows = finish(members).await?;
        if args.details {
            eprintln!("{mode:?}:\n{rows}");
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    super::emit(&table, args.out.as_deref())
}
