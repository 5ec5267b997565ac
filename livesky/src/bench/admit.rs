//! `livesky bench admit`: how many joins per second one edge's client service admits — admission
//! decision, tree assignment, mesh sampling and the resulting feed messages included — as its
//! swarm grows to N clients, and under churn (leave + join) at full size. It drives the same
//! sans-IO service the edge runs, without sockets, so it measures the decision logic alone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use proto::ChannelId;
use proto::peer::{CLIENT_PROTOCOL_VERSION, Join};
use sn_edge::admission::AdmissionConfig;
use sn_edge::model::ModelParams;
use sn_edge::service::{Input, Service, ServiceConfig};

#[derive(clap::Args, Clone)]
pub struct AdmitArgs {
    /// Swarm size to grow to.
    #[arg(long, default_value_t = 10_000)]
    pub clients: u64,
    /// Also write the table (markdown) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

struct Scenario {
    name: &'static str,
    k_prime: u32,
    cap: f64,
}

fn service(s: &Scenario, max_clients: usize) -> Service {
    let admission = AdmissionConfig {
        model: ModelParams { k_prime: s.k_prime, ..ModelParams::paper() },
        upload_cap_factor: s.cap,
        max_clients,
        ..AdmissionConfig::paper()
    };
    let mut cfg = ServiceConfig::new(ChannelId::new("bench").expect("static name"), admission);
    cfg.joins_per_ip_per_sec = 1e9;
    cfg.join_burst_per_ip = 1e9;
    Service::new(cfg)
}

fn join_input(conn: u64, t: Instant) -> (Instant, Input) {
    let ip = [10, (conn >> 16) as u8, (conn >> 8) as u8, conn as u8];
    let addr = SocketAddr::from((ip, 9000));
    let join = Join {
        version: CLIENT_PROTOCOL_VERSION,
        channel: ChannelId::new("bench").expect("static name"),
        token: String::new(),
        upload_kbps: 2_000,
        listen: Some(addr),
        buffer_ms: 15_000,
        redirects: 0,
        nat: proto::nat::NatClass::Open,
    };
    (t, Input::Joined { conn: conn.into(), from: addr, join })
}

pub fn admit(args: AdmitArgs) -> anyhow::Result<()> {
    let scenarios = [
        Scenario { name: "paper: K'=2, cap 1.5×", k_prime: 2, cap: 1.5 },
        Scenario { name: "deep: K'=4, cap 2.5×", k_prime: 4, cap: 2.5 },
    ];
    let n = args.clients;
    let checkpoints: Vec<u64> = [n / 10, n / 2, n].into_iter().filter(|&c| c >= 100).collect();
    let mut table = String::from(
        "| scenario | swarm size | joins/s (last 10 % of joins) | µs per join | admitted to P2P | waiting for parents | churn at full size (leave+join pairs/s) |\n|---|---|---|---|---|---|---|\n",
    );
    for sc in &scenarios {
        let mut svc = service(sc, n as usize + 10);
        let t0 = Instant::now();
        let mut conn = 0u64;
        let mut window_start = Instant::now();
        for &cp in &checkpoints {
            let window = (cp / 10).max(1);
            while conn < cp {
                if conn == cp - window {
                    window_start = Instant::now();
                }
                let (t, input) = join_input(conn, t0);
                svc.handle(t, input);
                while svc.poll_output().is_some() {}
                conn += 1;
            }
            let secs = window_start.elapsed().as_secs_f64();
            let snap = svc.snapshot();
            let churn = if cp == n { churn_rate(&mut svc, &mut conn, t0) } else { String::from("—") };
            table.push_str(&format!(
                "| {} | {} | {:.0} | {:.1} | {} | {} | {} |\n",
                sc.name,
                cp,
                window as f64 / secs,
                secs * 1e6 / window as f64,
                snap.stats.p2p_admits,
                snap.tree.unfed / 4,
                churn
            ));
            eprintln!("   {}: {cp} clients", sc.name);
        }
    }
    super::emit(&table, args.out.as_deref())
}

/// One second of leave + join pairs at full size.
fn churn_rate(svc: &mut Service, conn: &mut u64, t0: Instant) -> String {
    let start = Instant::now();
    let mut pairs = 0u64;
    let mut leaver = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        svc.handle(t0, Input::Disconnected { conn: leaver.into() });
        leaver += 1;
        let (t, input) = join_input(*conn, t0);
        svc.handle(t, input);
        while svc.poll_output().is_some() {}
        *conn += 1;
        pairs += 1;
    }
    format!("{:.0}", pairs as f64 / start.elapsed().as_secs_f64())
}
