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
