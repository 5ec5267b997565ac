//! `livesky gslb` (run the DNS load balancer) and `livesky resolve` (ask it, as a player does).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use livesky_gslb::client::{Lookup, Via, resolve_edge};
use livesky_gslb::{Gslb, GslbSettings};

#[derive(clap::Args)]
pub struct GslbArgs {
    /// Settings file (see configs/gslb.toml).
    #[arg(long)]
    pub config: PathBuf,
}

/// Where a player looks edges up: flags shared by `livesky resolve` and `livesky peer play`.
#[derive(clap::Args, Clone, Default)]
pub struct LookupArgs {
    /// The CDN's DNS server (the GSLB), e.g. 127.0.0.1:5353. With it, livesky://DOMAIN/CHANNEL
    /// means "ask for CHANNEL.DOMAIN".
    #[arg(long)]
    pub dns: Option<SocketAddr>,
    /// The GSLB's HTTP fallback, e.g. http://127.0.0.1:8053, asked when DNS fails.
    #[arg(long)]
    pub gslb_http: Option<String>,
}

impl LookupArgs {
    pub fn is_set(&self) -> bool {
        self.dns.is_some() || self.gslb_http.is_some()
    }

    pub fn lookup(&self) -> Lookup {
        Lookup { nameserver: self.dns, http: self.gslb_http.clone(), timeout: Duration::from_secs(2) }
    }
}

#[derive(clap::Args)]
pub struct ResolveArgs {
    /// livesky://DOMAIN[:PORT]/CHANNEL (PORT: the edges' client port, default 7600).
    pub url: String,
    #[command(flatten)]
    pub lookup: LookupArgs,
}

/// Where the demo's GSLB answers (in the endpoints file).
#[derive(Debug, serde::Serialize)]
pub struct GslbEndpoint {
    /// DNS, UDP and TCP (`host:port`).
    pub dns: String,
    pub zone: String,
    /// The HTTP fallback: `GET {http}/CHANNEL`.
    pub http: String,
    pub metrics: String,
}

impl GslbEndpoint {
    pub fn of(g: &Gslb, zone: &str) -> Self {
        GslbEndpoint {
            dns: g.dns_addr.to_string(),
            zone: zone.to_string(),
            http: format!("http://{}", g.http_addr),
            metrics: format!("http://{}/metrics", g.http_addr),
        }
    }
}

/// The demo's zone.
pub const DEMO_ZONE: &str = "livesky.test";

/// A GSLB in this process for the demo: zone `livesky.test`, answering from the MC at `mc_http`
/// and the prefix database at `geo`; DNS on 7753 and HTTP on 7754, or OS-chosen ports. Polls
/// the MC every 500 ms (so a dead edge leaves the answers within about a second of the MC
/// noticing).
pub async fn start_local_gslb(mc_http: SocketAddr, geo: PathBuf, ephemeral: bool) -> anyhow::Result<Gslb> {
    let port = |p: u16| SocketAddr::from(([127, 0, 0, 1], if ephemeral { 0 } else { p }));
    let mut s = GslbSettings::new(DEMO_ZONE, port(7753), port(7754), format!("http://{mc_http}"), geo);
    s.ns_addrs = vec![std::net::IpAddr::from([127, 0, 0, 1])];
    s.poll_ms = 500;
    s.watch_ms = 500;
    Gslb::start(s).await.context("starting the GSLB")
}

pub async fn run(args: GslbArgs) -> anyhow::Result<()> {
    let settings = GslbSettings::load(&args.config)?;
    let g = Gslb::start(settings).await.context("starting the GSLB")?;
    println!("GSLB: DNS {} (UDP and TCP) · HTTP fallback and metrics http://{}", g.dns_addr, g.http_addr);
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("stopping");
    g.shutdown();
    g.stopped(Duration::from_secs(5)).await;
    Ok(())
}

pub async fn resolve(args: ResolveArgs) -> anyhow::Result<()> {
    let (domain, port, channel) = crate::peer_cmd::parse_url(&args.url)?;
    let r = resolve_edge(&domain, port, channel.as_str(), &args.lookup.lookup()).await?;
    let via = match r.via {
        Via::Dns => format!("DNS {}", args.lookup.dns.map(|d| d.to_string()).unwrap_or_default()),
        Via::Http => format!("HTTP fallback {}", args.lookup.gslb_http.unwrap_or_default()),
    };
    for e in &r.edges {
        println!("livesky://{e}/{channel}\t(via {via})");
    }
    Ok(())
}
