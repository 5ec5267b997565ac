//! `livesky demo`: the whole system in one process with no setup — Tier 0 looping the bundled
//! clip (channel `demo`) and waiting for a push (channel `live`), a relay SN, two edges in two
//! regions, the management center and the GSLB.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use sn_core::Topology;

use crate::gslb_cmd::{DEMO_ZONE, GslbEndpoint, start_local_gslb};
use crate::launch::{Cluster, McEndpoint, ephemeral_ports, start_local_mc};

pub struct DemoOptions {
    /// Peer players to start against the first edge with a client port.
    pub peers: usize,
    /// How those peers reach each other.
    pub transport: livesky_peer::driver::Transport,
    pub config: Option<PathBuf>,
    pub endpoints_file: Option<PathBuf>,
    pub duration: Option<Duration>,
    pub ephemeral_ports: bool,
    /// Edges report to the MC this often.
    pub report_every: Duration,
}

pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    // The MC's database and the nodes' report spools live for the demo's run.
    let state = std::env::temp_dir().join(format!("livesky-demo-{}", std::process::id()));
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    // The management center watches a file: the given one, or the built-in demo written out.
    let path = match &opts.config {
        Some(p) => p.clone(),
        None => {
            let p = state.join("demo.toml");
            std::fs::write(&p, crate::DEMO_TOPOLOGY).with_context(|| format!("writing {}", p.display()))?;
            p
        }
    };
    let mut topo = Topology::load(&path)?;
    let (mc, mut link, token) = start_local_mc(&topo, path.clone(), &state, opts.ephemeral_ports).await?;
    link.report_every = opts.report_every;
    if opts.ephemeral_ports {
        ephemeral_ports(&mut topo);
    }
    let cluster = Cluster::start_with_mc(topo, None, Some(link)).await.context("starting the demo nodes")?;
    let geo = state.join("geo.csv");
    std::fs::write(&geo, crate::DEMO_GEO).with_context(|| format!("writing {}", geo.display()))?;
    let gslb = start_local_gslb(mc.http_addr, geo.clone(), opts.ephemeral_ports).await?;
    let mut ep = cluster.endpoints();
    ep.mc = Some(McEndpoint::of(&mc));
    ep.gslb = Some(GslbEndpoint::of(&gslb, DEMO_ZONE));
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut players = Vec::new();
    if opts.peers > 0 {
        let edge = cluster.edges().find_map(|e| e.client).context("--peers needs an edge with client_listen")?;
        let channel = proto::ChannelId::new("demo").context("channel name")?;
        let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let net = livesky_peer::driver::Net { edge, listen: any, transport: opts.transport };
        for _ in 0..opts.peers {
            let cfg = livesky_peer::core::PeerConfig::new(channel.clone());
            let p = crate::peer_cmd::start_player(net, channel.clone(), cfg, any, false, cancel.clone()).await?;
            ep.peers.push(crate::launch::PeerEndpoint {
                http: format!("http://{}", p.http),
                metrics: format!("http://{}/metrics", p.http),
            });
            players.push(p);
            // Stay under the edge's join limit per address (5/s by default).
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    if let Some(path) = &opts.endpoints_file {
        ep.write(path).with_context(|| format!("writing endpoints file {}", path.display()))?;
    }
    println!("LiveSky-rs demo is running. Ctrl-C stops it.\n");
    for e in &ep.edges {
        println!("  play (HTTP-TS)  ffplay {}/live/demo.ts", e.http);
        println!("  play (HLS)      ffplay {}/live/demo/index.m3u8", e.http);
        if e.clients.is_some() {
            println!("  play (browser)  {}/watch/demo   (a P2P peer in the page; ?upload=false to only watch)", e.http);
        }
    }
    if let Some(ingest) = &ep.ingest {
        println!("\n  broadcast       ffmpeg -re -i feed.ts -c copy -f mpegts {ingest}/live");
        if let Some(rtmp) = &ep.rtmp {
            println!(
                "  or with RTMP    ffmpeg -re -i feed.mp4 -c copy -f flv {rtmp}/live   (OBS: server {rtmp}, key live)"
            );
        }
        if let Some(srt) = &ep.srt {
            println!("  or with SRT     ffmpeg -re -i feed.ts -c copy -f mpegts '{srt}?streamid=live'");
        }
        if let Some(e) = ep.edges.first() {
            println!("  then play       ffplay {}/live/live.ts", e.http);
        }
    }
    for p in &ep.peers {
        println!("  peer player     ffplay {}/live.ts", p.http);
    }
    let (dns, port) = (gslb.dns_addr.ip(), gslb.dns_addr.port());
    println!("\n  GSLB (DNS)      dig @{dns} -p {port} demo.{DEMO_ZONE} A +subnet=203.0.113.0/24");
    println!("  GSLB (HTTP)     curl -i http://{}/demo", gslb.http_addr);
    // DNS answers carry addresses; the port is the edges' client port, the same on every edge.
    let client_port = ep.edges.iter().find_map(|e| e.clients.as_deref()?.rsplit_once(':').map(|(_, p)| p.to_string()));
    if let Some(p) = client_port {
        println!(
            "  peer via GSLB   livesky peer play livesky://{DEMO_ZONE}:{p}/demo --dns {} --player ffplay",
            gslb.dns_addr
        );
    }
    println!("  client regions  edit {} (the GSLB reloads it)", geo.display());
    println!("\n  channels        edit {} (the management center pushes changes live)", path.display());
    println!("  reload now      livesky mc reload --api http://{} --token {token}", mc.http_addr);
    println!("  NOC dashboard   http://{}/  (operator token {token})", mc.http_addr);
    println!("  SN registry     curl http://{}/members", mc.http_addr);
    println!("  reports         livesky mc report --db {} --since 1h", state.join("mc.sqlite").display());
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
    cancel.cancel();
    for p in players {
        let _ = tokio::time::timeout(Duration::from_secs(3), p.task).await;
    }
    cluster.shutdown().await;
    gslb.shutdown();
    gslb.stopped(Duration::from_secs(5)).await;
    mc.shutdown();
    mc.stopped(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}
