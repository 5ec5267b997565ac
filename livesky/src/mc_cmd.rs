//! `livesky mc`: run the management center, ask it to reload, make identity keys.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Subcommand;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use livesky_mgmt_center::{McServer, McSettings, reports};

#[derive(Subcommand)]
pub enum McCmd {
    /// Run the management center (see configs/mc.toml).
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Development only: accept the published example key and api_token of configs/mc.toml.
        #[arg(long)]
        insecure_dev: bool,
    },
    /// Make a running MC re-read its topology file now (it also watches the file).
    Reload {
        /// The MC's HTTP API, e.g. http://127.0.0.1:7780
        #[arg(long, default_value = "http://127.0.0.1:7780")]
        api: String,
        /// The MC's api_token.
        #[arg(long, env = "LIVESKY_MC_TOKEN")]
        token: String,
    },
    /// Print a new identity key: the seed for the node (or MC), the public key for the other side.
    Keygen,
    /// Print the stored reports: a table per edge and period, or hourly billing CSV.
    Report {
        /// The MC's settings file (its `db` is read), or give --db.
        #[arg(long, required_unless_present = "db")]
        config: Option<PathBuf>,
        /// The report database itself.
        #[arg(long)]
        db: Option<PathBuf>,
        /// Only this channel.
        #[arg(long)]
        channel: Option<String>,
        /// From when: 90m, 2h, 3d (ago) or YYYY-MM-DD[THH:MM] (UTC).
        #[arg(long, default_value = "1h")]
        since: String,
        /// CSV of CDN and P2P bytes per hour, channel and edge (for billing).
        #[arg(long)]
        billing: bool,
    },
}

pub async fn run(cmd: McCmd) -> anyhow::Result<()> {
    match cmd {
        McCmd::Run { config, insecure_dev } => {
            let settings = McSettings::load(&config)?;
            let examples = [("mc.key", Some(&settings.key)), ("mc.api_token", settings.api_token.as_ref())];
            for (key, value) in examples {
                if !insecure_dev && value.is_some_and(|v| proto::config::is_example_secret(v)) {
                    bail!(
                        "{}: `{key}` is the published example: make your own (`livesky mc keygen` for the key, \
                         any long random string for the token), or pass --insecure-dev for a development setup",
                        config.display()
                    );
                }
            }
            let mc = McServer::start(settings).await.context("starting the management center")?;
            println!("management center: control {} · API http://{}", mc.control_addr, mc.http_addr);
            println!("public key (pin it on the SNs with --mc-public-key): {}", mc.public_key());
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("stopping");
            mc.shutdown();
            mc.stopped(Duration::from_secs(5)).await;
            Ok(())
        }
        McCmd::Reload { api, token } => {
            let url = format!("{}/reload", api.trim_end_matches('/'));
            let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let req = hyper::Request::post(&url)
                .header("authorization", format!("Bearer {token}"))
                .body(Empty::new())
                .context("building the request")?;
            let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
                .await
                .with_context(|| format!("{url} did not answer within 10 s"))?
                .with_context(|| format!("cannot reach {url}"))?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let body = String::from_utf8_lossy(&body);
            if !status.is_success() {
                bail!("reload refused ({status}): {}", body.trim());
            }
            println!("{}", body.trim());
            Ok(())
        }
        McCmd::Report { config, db, channel, since, billing } => {
            let path = match (db, config) {
                (Some(db), _) => db,
                (None, Some(cfg)) => McSettings::load(&cfg)?.db,
                (None, None) => bail!("give --config or --db"),
            };
            if !path.exists() {
                bail!("no report database at {}", path.display());
            }
            let store = reports::ReportStore::open(&path)?;
            let now = livesky_net::clock::unix_ms();
            let since = reports::parse_since(&since, now).map_err(anyhow::Error::msg)?;
            if billing {
                println!("hour_utc,channel,edge,cdn_bytes,p2p_bytes");
                for r in store.billing(since)? {
                    println!(
                        "{},{},{},{},{}",
                        reports::utc_time(r.hour_ms),
                        r.channel,
                        r.node,
                        r.cdn_bytes,
                        r.p2p_bytes
                    );
                }
                return Ok(());
            }
            println!(
                "{:<19} {:<10} {:<12} {:>6} {:>6} {:>6} {:>12} {:>12} {:>6} {:>8} {:>5} {:>8} {:>12} {:>15}",
                "period (UTC)",
                "edge",
                "channel",
                "users",
                "joins",
                "leaves",
                "CDN bytes",
                "P2P bytes",
                "stalls",
                "Q1",
                "stage",
                "starts",
                "startup p50",
                "latency p50/95"
            );
            for r in store.rows(channel.as_deref(), since)? {
                let q1 = proto::quality::q1(r.played_ms, r.stalled_ms).map_or("-".to_string(), |q| format!("{q:.4}"));
                let mut st = r.startups.clone();
                st.sort_unstable();
                let p50 = st.get(st.len() / 2).map_or("-".to_string(), |v| format!("{v} ms"));
                let latency = r
                    .latency()
                    .p50_p95()
                    .map_or("-".to_string(), |(a, b)| format!("{:.1}/{:.1} s", f64::from(a) / 1e3, f64::from(b) / 1e3));
                println!(
                    "{:<19} {:<10} {:<12} {:>6} {:>6} {:>6} {:>12} {:>12} {:>6} {:>8} {:>5} {:>8} {:>12} {:>15}",
                    reports::utc_time(r.start_ms),
                    r.node,
                    r.channel,
                    r.users,
                    r.joins,
                    r.leaves,
                    r.cdn_bytes,
                    r.p2p_bytes,
                    r.stalls,
                    q1,
                    r.stage,
                    st.len(),
                    p50,
                    latency
                );
            }
            Ok(())
        }
        McCmd::Keygen => {
            let (key, seed) = proto::NodeKey::generate()?;
            println!("seed (secret, for the node's --key-file or the MC's key): {seed}");
            println!("public key (for the MC's sn_keys, or the SNs' --mc-public-key): {}", key.public_hex());
            Ok(())
        }
    }
}
