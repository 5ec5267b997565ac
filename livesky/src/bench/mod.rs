//! `livesky bench …`: benchmarks that print a table (and can write it to a file).

mod admit;
mod fanout;
mod fanout_hls;
mod fanout_llhls;
mod floor;
mod gslb;
mod http1;
mod latency;
mod mcpush;
mod peers;
mod procfs;
mod soak;

pub use admit::AdmitArgs;
pub use fanout::FanoutArgs;
pub use gslb::GslbBenchArgs;
pub use latency::LatencyArgs;
pub use mcpush::McPushArgs;
pub use peers::PeersArgs;

#[derive(clap::Subcommand)]
pub enum BenchCmd {
    /// Edge HTTP-TS fan-out (or HLS segments, `--mode hls`, or LL-HLS players, `--mode ll-hls`)
    /// vs nginx: delivered rate and server CPU at N concurrent viewers.
    Fanout(FanoutArgs),
    /// Joins per second one edge admits (admission + tree assignment) as its swarm grows.
    Admit(AdmitArgs),
    /// Management center config push: TOML change → all N SNs acknowledged, and XML bytes.
    McPush(McPushArgs),
    /// GSLB: prefix database at 1M prefixes, and DNS queries/s per core against NSD.
    Gslb(GslbBenchArgs),
    /// CPU and memory per peer player and startup delay, for swarms of 10/50/100 peers.
    Peers(PeersArgs),
    /// Startup (push and P2P peers) and glass-to-glass latency with the edge at capacity, in
    /// normal and low-latency mode: 40 WebRTC peers on loopback.
    Latency(LatencyArgs),
    /// The HTTP-TS floor server `bench fanout` runs in a process of its own.
    #[command(hide = true)]
    FloorServe(floor::FloorArgs),
}

pub async fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Fanout(a) => fanout::fanout(a).await,
        BenchCmd::Admit(a) => admit::admit(a),
        BenchCmd::Peers(a) => peers::peers(a).await,
        BenchCmd::Latency(a) => latency::latency(a).await,
        BenchCmd::McPush(a) => mcpush::mc_push(a).await,
        BenchCmd::Gslb(a) => gslb::gslb(a).await,
        BenchCmd::FloorServe(a) => floor::floor_serve(a),
    }
}

/// Prints the table and writes it to `out` when given.
fn emit(table: &str, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    use anyhow::Context;
    println!("{table}");
    if let Some(out) = out {
        std::fs::write(out, table).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
