//! `livesky demo`: the whole data path in one process with no setup — Tier 0 looping the bundled
//! clip (channel `demo`) and waiting for a push (channel `live`), a core SN, two edges.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use sn_core::Topology;

use crate::launch::{Cluster, ephemeral_ports};

pub struct DemoOptions {
    pub config: Option<PathBuf>,
    pub endpoints_file: Option<PathBuf>,
    pub duration: Option<Duration>,
    pub ephemeral_ports: bool,
}

pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let mut topo = match &opts.config {
        Some(p) => Topology::load(p)?,
        None => Topology::parse(crate::DEMO_TOPOLOGY, "built-in configs/demo.toml")?,
    };
    if opts.ephemeral_ports {
        ephemeral_ports(&mut topo);
    }
    let cluster = Cluster::start(topo, None).await.context("starting the demo nodes")?;
    let ep = cluster.endpoints();
    if let Some(path) = &opts.endpoints_file {
        ep.write(path).with_context(|| format!("writing endpoints file {}", path.display()))?;
    }
    println!("LiveSky-rs demo is running. Ctrl-C stops it.\n");
    for e in &ep.edges {
        println!("  play (HTTP-TS)  ffplay {}/live/demo.ts", e.http);
        println!("  play (HLS)      ffplay {}/live/demo/index.m3u8", e.http);
    }
    if let Some(ingest) = &ep.ingest {
        println!("\n  broadcast       ffmpeg -re -i feed.ts -c copy -f mpegts {ingest}/live");
        if let Some(e) = ep.edges.first() {
            println!("  then play       ffplay {}/live/live.ts", e.http);
        }
    }
    println!();
    for n in &ep.nodes {
        println!("  {:<6} tier {} {:<5} metrics {}", n.id, n.tier, n.role, n.metrics);
    }
    println!();
    match opts.duration {
        Some(d) => tokio::select! {
            _ = tokio::time::sleep(d) => tracing::info!("demo duration reached"),
            _ = tokio::signal::ctrl_c() => {}
        },
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("stopping");
    cluster.shutdown().await;
    Ok(())
}
