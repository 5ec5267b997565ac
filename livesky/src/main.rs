//! `livesky`: every LiveSky-rs role behind one binary.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use proto::NodeId;
use sn_core::{Role, Topology};
use tracing_subscriber::EnvFilter;

use livesky::demo::{self, DemoOptions};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Without RUST_LOG: our info, and only errors from the WebRTC stack, whose warnings about
/// connectivity checks racing the answer (normal without trickle ICE) would flood the terminal;
/// hickory-server logs every DNS query at info, which a GSLB under load cannot afford.
const DEFAULT_LOG: &str = "info,rtc=error,rtc_ice=error,rtc_dtls=error,rtc_sctp=error,webrtc=error,hickory_server=warn";
/// The simulator runs hundreds of edges' real cores in one process: their info lines (a parent
/// made a leaf, say) are events of the model, not of this process, and would bury the progress bar.
const SIM_LOG: &str = "warn";
use livesky::launch::Cluster;

#[derive(Parser)]
#[command(name = "livesky", version, about = "LiveSky-rs: hybrid CDN-P2P live streaming", long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run Tier 0, a relay SN and two edges on 127.0.0.1, looping a bundled clip as channel `demo`
    /// and waiting for a broadcaster on channel `live`.
    Demo {
        /// Topology to run instead of the built-in configs/demo.toml.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Write the endpoints (ingest, edges, metrics) as JSON here once everything listens.
        #[arg(long)]
        endpoints_file: Option<PathBuf>,
        /// Stop by itself after this many seconds.
        #[arg(long)]
        duration: Option<u64>,
        /// Listen on OS-chosen ports instead of the configured ones (see the endpoints file).
        #[arg(long)]
        ephemeral_ports: bool,
        /// Also start this many peer players on the first edge (listed in the endpoints file).
        #[arg(long, default_value_t = 0)]
        peers: usize,
        /// How the demo's peers reach each other: webrtc or tcp.
        #[arg(long, default_value = "webrtc")]
        transport: livesky_peer::driver::Transport,
        /// Edges report to the management center this often.
        #[arg(long, default_value_t = 60)]
        report_seconds: u64,
    },
    /// The management center: SN registry, config push, reports.
    #[command(subcommand)]
    Mc(livesky::mc_cmd::McCmd),
    /// Run one relay service node (Tier 0 or a relay tier) from a topology file.
    Sn(NodeArgs),
    /// Run one edge service node from a topology file.
    Edge(NodeArgs),
    /// The DNS global load balancer: sends each viewer to a nearby, lightly loaded edge.
    Gslb(livesky::gslb_cmd::GslbArgs),
    /// Find the edge for livesky://DOMAIN/CHANNEL through the GSLB, as a player does.
    Resolve(livesky::gslb_cmd::ResolveArgs),
    /// The viewer's peer player.
    #[command(subcommand)]
    Peer(livesky::peer_cmd::PeerCmd),
    /// Run N peer players against an edge's client port and print the aggregate table.
    Swarm(livesky::swarm::SwarmArgs),
    /// Replay a scenario (e.g. configs/scenarios/cpc2007.toml) in the simulator.
    Sim(livesky::sim_cmd::SimArgs),
    /// Benchmarks (results as a table).
    #[command(subcommand)]
    Bench(livesky::bench::BenchCmd),
}

#[derive(clap::Args)]
struct NodeArgs {
    /// Topology file (see configs/demo.toml).
    #[arg(long)]
    config: PathBuf,
    /// Which [[node]] of the file to run; needed when the file has more than one.
    #[arg(long)]
    node: Option<NodeId>,
    /// Register with the management center at this address (host:port of its control port).
    #[arg(long)]
    mc: Option<std::net::SocketAddr>,
    /// File holding this node's identity seed (64 hex digits; `livesky mc keygen` makes one).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// The MC's public key (hex): the node talks to no other MC (required with --mc).
    #[arg(long)]
    mc_public_key: Option<String>,
    /// Development only: run without the MC's pinned key or this node's identity key (SN links
    /// unauthenticated) and accept the example keys. Never in a deployment.
    #[arg(long)]
    insecure_dev: bool,
    /// Where reports wait until the MC has them (a directory per node is made inside).
    #[arg(long, default_value = "livesky-spool")]
    spool_dir: PathBuf,
    /// Edges report to the MC this often.
    #[arg(long, default_value_t = 60)]
    report_seconds: u64,
}

fn pick_node(topo: &Topology, wanted: Option<&NodeId>, role: Role, path: &std::path::Path) -> anyhow::Result<NodeId> {
    let node = match wanted {
        Some(id) => topo.node(id).with_context(|| {
            let ids: Vec<_> = topo.nodes.iter().map(|n| n.id.to_string()).collect();
            format!("{} has no node `{id}` (it has: {})", path.display(), ids.join(", "))
        })?,
        None => match topo.nodes.as_slice() {
            [only] => only,
            _ => {
                let ids: Vec<_> = topo.nodes.iter().map(|n| n.id.to_string()).collect();
                bail!("{} describes several nodes; pick one with --node ({})", path.display(), ids.join(", "))
            }
        },
    };
    if node.role != role {
        let (is, cmd) =
            if node.role == Role::Edge { ("an edge", "livesky edge") } else { ("a relay node", "livesky sn") };
        bail!("node `{}` is {is}; run it with `{cmd}`", node.id);
    }
    Ok(node.id.clone())
}

async fn run_node(args: NodeArgs, role: Role) -> anyhow::Result<()> {
    let topo = Topology::load(&args.config)?;
    let id = pick_node(&topo, args.node.as_ref(), role, &args.config)?;
    let key = match &args.key_file {
        Some(path) => {
            let seed = std::fs::read_to_string(path).with_context(|| format!("reading key file {}", path.display()))?;
            if !args.insecure_dev && proto::config::is_example_secret(&seed) {
                bail!(
                    "{} is one of the published example keys: make this node its own with `livesky mc keygen` \
                     (or pass --insecure-dev for a development setup)",
                    path.display()
                );
            }
            Some(std::sync::Arc::new(
                proto::NodeKey::from_hex_seed(&seed).with_context(|| format!("key file {}", path.display()))?,
            ))
        }
        None if args.insecure_dev => None,
        None => bail!(
            "node `{id}` needs its identity key to prove itself on SN links and to the MC: pass --key-file \
             (`livesky mc keygen` makes one), or --insecure-dev for a development setup"
        ),
    };
    let mc = match (args.mc, &key) {
        (Some(addr), Some(key)) => {
            match &args.mc_public_key {
                Some(k) => proto::check_public_key(k).context("--mc-public-key")?,
                None if args.insecure_dev => {
                    tracing::warn!("--insecure-dev: this node will trust any management center at {addr}")
                }
                None => bail!(
                    "--mc needs --mc-public-key (the MC's public key, `livesky mc keygen` printed it): without it \
                     the node would take its config and peers' keys from anyone at {addr}"
                ),
            }
            let keys = std::collections::HashMap::from([(id.clone(), key.clone())]);
            Some(livesky::launch::McLink {
                addr,
                mc_public_key: args.mc_public_key.clone(),
                keys,
                spool_dir: args.spool_dir.clone(),
                report_every: Duration::from_secs(args.report_seconds.max(1)),
            })
        }
        _ => None,
    };
    let identities = match key {
        Some(k) => livesky::launch::Identities::Given(std::collections::HashMap::from([(id.clone(), k)])),
        None => livesky::launch::Identities::Insecure,
    };
    let cluster = Cluster::start_with_keys(topo, Some(std::slice::from_ref(&id)), mc, identities).await?;
    if let Some(n) = cluster.get(id.as_str()) {
        tracing::info!(node = %id, http = %n.http, sn = ?n.sn, "running; Ctrl-C stops");
    }
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("stopping");
    cluster.shutdown().await;
    Ok(())
}

/// Errors reach the user as one message (the whole chain of causes), not as a backtrace: these
/// machines set RUST_BACKTRACE=1, and `anyhow` would print one for "address already in use".
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let default_log = if matches!(cli.cmd, Cmd::Sim(_)) { SIM_LOG } else { DEFAULT_LOG };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_log)))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(async {
        match cli.cmd {
            Cmd::Demo { config, endpoints_file, duration, ephemeral_ports, peers, transport, report_seconds } => {
                let duration = duration.map(Duration::from_secs);
                let report_every = Duration::from_secs(report_seconds.max(1));
                let opts =
                    DemoOptions { peers, transport, config, endpoints_file, duration, ephemeral_ports, report_every };
                demo::run(opts).await
            }
            Cmd::Mc(cmd) => livesky::mc_cmd::run(cmd).await,
            Cmd::Sn(args) => run_node(args, Role::Relay).await,
            Cmd::Edge(args) => run_node(args, Role::Edge).await,
            Cmd::Bench(cmd) => livesky::bench::run(cmd).await,
            Cmd::Swarm(args) => livesky::swarm::run(args).await,
            Cmd::Peer(cmd) => livesky::peer_cmd::run(cmd).await,
            Cmd::Gslb(args) => livesky::gslb_cmd::run(args).await,
            Cmd::Resolve(args) => livesky::gslb_cmd::resolve(args).await,
            Cmd::Sim(args) => tokio::task::block_in_place(|| livesky::sim_cmd::run(args)),
        }
    })
}
