//! `livesky bench mc-push`: config push fan-out. One MC, N SN control links (the real SN client,
//! in this process, on loopback); for each change the topology file is rewritten with one
//! channel's bitrate changed and the time until all N SNs have applied and acknowledged it is
//! measured. Also the XML size of that one-channel update against a full snapshot.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use livesky_mgmt_center::{McServer, McSettings};
use proto::config::Role;
use proto::mc::Member;
use proto::{NodeId, NodeKey};
use sn_core::AddressBook;
use sn_core::mc_client::{self, McClientConfig};
use tokio_util::sync::CancellationToken;

use crate::launch::write_atomic;

#[derive(clap::Args)]
pub struct McPushArgs {
    /// SN counts to measure, comma-separated.
    #[arg(long, default_value = "10,100,1000", value_delimiter = ',')]
    pub sns: Vec<usize>,
    /// Config changes timed per SN count.
    #[arg(long, default_value_t = 10)]
    pub changes: usize,
    /// Channels in the topology (the snapshot carries them all; the update one).
    #[arg(long, default_value_t = 20)]
    pub channels: usize,
    /// Also write the table here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn topology(sns: usize, channels: usize, bitrate: u32) -> String {
    let mut t = String::new();
    for c in 0..channels {
        let rate = if c == 0 { bitrate } else { 400 };
        t += &format!("[[channel]]\nid = \"ch{c}\"\nsource = {{ kind = \"push\" }}\nbitrate_kbps = {rate}\n\n");
    }
    t += "[[node]]\nid = \"sn0\"\ntier = 0\nsn_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n";
    for i in 1..sns {
        t += &format!(
            "\n[[node]]\nid = \"sn{i}\"\ntier = 1\nrole = \"edge\"\nhttp_listen = \"127.0.0.1:0\"\nparents = [\"sn0\"]\n"
        );
    }
    t
}

struct Row {
    sns: usize,
    median_ms: f64,
    max_ms: f64,
    update_bytes: usize,
    snapshot_bytes: usize,
}

async fn measure(n: usize, args: &McPushArgs, dir: &std::path::Path) -> anyhow::Result<Row> {
    let n = n.max(1);
    let path = dir.join(format!("topology-{n}.toml"));
    write_atomic(&path, &topology(n, args.channels, 500))?;
    let keys: Vec<Arc<NodeKey>> = (0..n).map(|i| Arc::new(NodeKey::from_seed(seed(i)))).collect();
    let id = |i: usize| NodeId::new(&format!("sn{i}")).context("node id");
    let mut sn_keys = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        sn_keys.insert(id(i)?, k.public_hex());
    }
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let settings = McSettings {
        control_listen: any,
        http_listen: any,
        topology: path.clone(),
        heartbeat_ms: 1000,
        // The benchmark reloads explicitly right after each write; the watcher stays out of the way.
        watch_ms: 60_000,
        key: "11".repeat(32),
        api_token: None,
        db: dir.join(format!("mc-{n}.sqlite")),
        sn_keys,
        limits: Default::default(),
    };
    let mc = McServer::start(settings).await?;
    let cancel = CancellationToken::new();
    for (i, key) in keys.into_iter().enumerate() {
        let member = Member {
            id: id(i)?,
            tier: u8::from(i > 0),
            role: if i == 0 { Role::Relay } else { Role::Edge },
            http: any,
            sn: None,
            clients: None,
            capacity_kbps: 0,
            key: None,
            upstream: Default::default(),
        };
        let cfg = McClientConfig {
            mc: mc.control_addr,
            key,
            mc_public_key: Some(mc.public_key()),
            member,
            load: Arc::new(proto::mc::Heartbeat::default),
            spool: None,
        };
        mc_client::spawn(cfg, Arc::new(AddressBook::default()), cancel.clone());
    }
    let all_at = |v: u64| {
        let acked = mc.acked();
        acked.len() == n && acked.iter().all(|(_, a)| *a == Some(v))
    };
    let start = Instant::now();
    while !all_at(mc.config_version()) {
        if start.elapsed() > Duration::from_secs(60) {
            bail!("{n} SNs did not all register and take their config within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut times = Vec::new();
    for k in 0..args.changes {
        write_atomic(&path, &topology(n, args.channels, 600 + k as u32))?;
        let t0 = Instant::now();
        let v = mc.reload().map_err(anyhow::Error::msg)?;
        while !all_at(v) {
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("change {k} not acknowledged by all {n} SNs within 60 s");
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let (update_bytes, snapshot_bytes) = doc_sizes(args.channels)?;
    cancel.cancel();
    mc.shutdown();
    mc.stopped(Duration::from_secs(5)).await;
    times.sort_by(f64::total_cmp);
    Ok(Row {
        sns: n,
        median_ms: times.get(times.len() / 2).copied().unwrap_or(0.0),
        max_ms: times.last().copied().unwrap_or(0.0),
        update_bytes,
        snapshot_bytes,
    })
}

/// XML bytes an edge gets for a one-channel change, and for a snapshot.
fn doc_sizes(channels: usize) -> anyhow::Result<(usize, usize)> {
    let before = sn_core::Topology::parse(&topology(2, channels, 500), "bench")?;
    let after = sn_core::Topology::parse(&topology(2, channels, 800), "bench")?;
    let edge = NodeId::new("sn1")?;
    let old = proto::mc::SnConfig::derive(&before, &edge, 1).context("edge in topology")?;
    let new = proto::mc::SnConfig::derive(&after, &edge, 2).context("edge in topology")?;
    Ok((new.diff_from(&old).to_xml().len(), new.snapshot().to_xml().len()))
}

fn seed(i: usize) -> [u8; 32] {
    let mut s = [7u8; 32];
    s[..8].copy_from_slice(&(i as u64).to_le_bytes());
    s
}

pub async fn mc_push(args: McPushArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("livesky-bench-mc-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut rows = Vec::new();
    for &n in &args.sns {
        eprintln!("measuring {n} SNs…");
        rows.push(measure(n, &args, &dir).await?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut table = format!(
        "| SNs | changes | TOML change → all acked, median (ms) | max (ms) | XML bytes, one-channel update | XML bytes, snapshot ({} channels) |\n|---|---|---|---|---|---|\n",
        args.channels
    );
    for r in rows {
        table += &format!(
            "| {} | {} | {:.1} | {:.1} | {} | {} |\n",
            r.sns, args.changes, r.median_ms, r.max_ms, r.update_bytes, r.snapshot_bytes
        );
    }
    super::emit(&table, args.out.as_deref())
}
