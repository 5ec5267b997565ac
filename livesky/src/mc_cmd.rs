//! `livesky mc`: run the management center, ask it to reload, make identity keys.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Subcommand;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use livesky_mgmt_center::{McServer, McSettings};

#[derive(Subcommand)]
pub enum McCmd {
    /// Run the management center (see configs/mc.toml).
    Run {
        #[arg(long)]
        config: PathBuf,
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
}

pub async fn run(cmd: McCmd) -> anyhow::Result<()> {
    match cmd {
        McCmd::Run { config } => {
            let settings = McSettings::load(&config)?;
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
        McCmd::Keygen => {
            let (key, seed) = proto::NodeKey::generate()?;
            println!("seed (secret, for the node's --key-file or the MC's key): {seed}");
            println!("public key (for the MC's sn_keys, or the SNs' --mc-public-key): {}", key.public_hex());
            Ok(())
        }
    }
}
