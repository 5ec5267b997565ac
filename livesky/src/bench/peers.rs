//! `livesky bench peers`: what a peer player costs — CPU and memory per peer at ~1 Mbit/s with 4
//! substreams — and how fast peers start (p50/p95), for swarms of 10, 50 and 100 peers on
//! loopback. The edge (with Tier 0) runs in a child process; the peers run in this process, whose
//! CPU time and memory growth are divided by the number of peers.
//!
//! Each size runs once per peer transport (WebRTC data channels, TCP), side by side.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use livesky_peer::core::PeerStats;
use livesky_peer::driver::Transport;
use proto::ChannelId;
use sn_core::Role;
use tokio_util::sync::CancellationToken;

use super::fanout::{check_fd_limit, spawn_demo};
use super::procfs::{cpu_seconds, rss_mib};
use crate::launch::loopback_node;
use crate::swarm::spawn_peer;

#[derive(clap::Args, Clone)]
pub struct PeersArgs {
    /// Swarm sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
    pub counts: Vec<usize>,
    /// Seconds measured after the last join.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Peer transports to measure.
    #[arg(long, value_delimiter = ',', default_value = "webrtc,tcp")]
    pub transports: Vec<Transport>,
    /// Also write the table (markdown) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The demo clip at 2.5× speed: ~1 Mbit/s; declared 1,250 kbit/s for upload budgets.
const SPEED: f64 = 2.5;
const DECLARED_KBPS: u32 = 1250;

fn topology() -> String {
    // Every peer runs on this host: no per-address cap applies.
    let edge = "limits = { clients_max_per_ip = 1000000, http_max_per_ip = 1000000 }\n[node.edge]\nclient_listen = \"127.0.0.1:0\"\n[node.edge.admission]\nn1c = 4\ncapacity_kbps = 12500\n\
                k_prime = 4\nupload_cap_factor = 2.5\njoins_per_ip_per_sec = 1000.0\njoin_burst_per_ip = 1000.0";
    format!(
        "[[channel]]\nid = \"demo\"\nbitrate_kbps = {DECLARED_KBPS}\nsubstreams = 4\nsource = {{ kind = \"loop\", path = \"builtin:demo\", speed = {SPEED} }}\n{}{}",
        loopback_node("tier0", 0, Role::Relay, &[], ""),
        loopback_node("edge", 1, Role::Edge, &["tier0"], edge),
    )
}

pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub async fn peers(args: PeersArgs) -> anyhow::Result<()> {
    check_fd_limit(args.counts.iter().copied().max().unwrap_or(0) * 8)?;
    let dir = std::env::temp_dir().join(format!("livesky-bench-peers-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let me = [std::process::id()];
    let mut table = String::from(
        "| peers | transport | stream | CPU per peer (% of a core) | RSS per peer (MiB) | startup p50 (ms) | startup p95 (ms) | stalls | P2P share |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for (&n, &transport) in args.counts.iter().flat_map(|n| args.transports.iter().map(move |t| (n, t))) {
        let (mut child, ep) = spawn_demo(&dir, &topology()).await?;
        let edge: std::net::SocketAddr =
            ep["edges"][0]["clients"].as_str().context("edge has no client port")?.parse().context("client port")?;
        tokio::time::sleep(Duration::from_secs(16)).await; // let the edge's ring hold a full buffer
        let rss0 = rss_mib(&me);
        let cancel = CancellationToken::new();
        let channel = ChannelId::new("demo")?;
        let mut members = Vec::new();
        for _ in 0..n {
            members.push(spawn_peer(edge, &channel, DECLARED_KBPS * 5 / 2, transport, &cancel));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let cpu0 = cpu_seconds(&me);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        let cpu = (cpu_seconds(&me) - cpu0) / t0.elapsed().as_secs_f64() * 100.0 / n as f64;
        let rss = (rss_mib(&me) - rss0) / n as f64;
        let stats: Vec<PeerStats> = members.iter().map(|m| *m.stats.borrow()).collect();
        let mut startup: Vec<f64> = stats.iter().filter_map(|s| s.startup).map(|d| d.as_secs_f64() * 1000.0).collect();
        startup.sort_by(f64::total_cmp);
        let stalls: u64 = stats.iter().map(|s| s.play.stalls).sum();
        let (edge_b, peer_b) =
            stats.iter().fold((0u64, 0u64), |(e, p), s| (e + s.bytes_from_edge, p + s.bytes_from_peers));
        let share = 100.0 * peer_b as f64 / (edge_b + peer_b).max(1) as f64;
        table.push_str(&format!(
            "| {n} | {transport} | ~1 Mbit/s, K = 4 | {cpu:.2} | {rss:.2} | {:.0} | {:.0} | {stalls} | {share:.0} % |\n",
            percentile(&startup, 0.5),
            percentile(&startup, 0.95)
        ));
        eprintln!("   {n} peers over {transport} measured ({} of them started)", startup.len());
        cancel.cancel();
        for m in members {
            let _ = tokio::time::timeout(Duration::from_secs(5), m.task).await;
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    super::emit(&table, args.out.as_deref())
}
