//! `livesky bench gslb`: the prefix database at a million prefixes (load time, lookup cost), then
//! DNS queries per second with the server pinned to one core and dnsperf on the other — the
//! GSLB (loaded with that database and 400 live edges from a stand-in for the MC's `/edges`)
//! against NSD serving a static zone of the same names.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use livesky_gslb::geo::GeoDb;
use proto::mc_api::{ChannelRate, EdgeView, EdgesView};
use tokio::process::{Child, Command};

use super::fanout::which;
use super::procfs::cpu_seconds;

#[derive(clap::Args)]
pub struct GslbBenchArgs {
    /// Seconds of load per server.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Prefixes in the generated database.
    #[arg(long, default_value_t = 1_000_000)]
    pub prefixes: usize,
    /// Skip the NSD run.
    #[arg(long)]
    pub no_nsd: bool,
    /// Also write the table here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `n` prefixes, 90 % IPv4 (/12 to /24, nesting often) and 10 % IPv6 (/32 to /48), in 8 regions
/// and 2 ISPs.
fn geo_csv(n: usize) -> String {
    let mut r = proto::rng::SplitMix64::new(0x9e0_5eed);
    let mut out = String::with_capacity(n * 32);
    for i in 0..n {
        let (region, isp) = (r.next_u64() % 8, if r.next_u64().is_multiple_of(2) { "tel" } else { "uni" });
        if i % 10 == 9 {
            let len = 32 + (r.next_u64() % 17) as u32;
            let net = (u128::from(r.next_u64()) << 64 | u128::from(r.next_u64())) & (u128::MAX << (128 - len));
            out.push_str(&format!("{}/{len},r{region},{isp}\n", std::net::Ipv6Addr::from(net)));
        } else {
            let len = 12 + (r.next_u64() % 13) as u32;
            let net = (r.next_u64() as u32) & (u32::MAX << (32 - len));
            out.push_str(&format!("{}/{len},r{region},{isp}\n", std::net::Ipv4Addr::from(net)));
        }
    }
    out
}

struct GeoRow {
    prefixes: usize,
    ranges: usize,
    load_ms: f64,
    lookup_ns: f64,
    hit_share: f64,
}

fn bench_geo(path: &Path, prefixes: usize) -> anyhow::Result<GeoRow> {
    std::fs::write(path, geo_csv(prefixes)).with_context(|| format!("writing {}", path.display()))?;
    let t0 = Instant::now();
    let db = GeoDb::load(path)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut r = proto::rng::SplitMix64::new(42);
    let addrs: Vec<std::net::IpAddr> = (0..1_000_000)
        .map(|i| {
            if i % 10 == 9 {
                std::net::IpAddr::V6(((u128::from(r.next_u64()) << 64) | u128::from(r.next_u64())).into())
            } else {
                std::net::IpAddr::from((r.next_u64() as u32).to_be_bytes())
            }
        })
        .collect();
    let mut hits = 0usize;
    let t0 = Instant::now();
    for _ in 0..10 {
        for a in &addrs {
            hits += usize::from(std::hint::black_box(db.lookup(*a)).is_some());
        }
    }
    let lookup_ns = t0.elapsed().as_secs_f64() * 1e9 / (10 * addrs.len()) as f64;
    Ok(GeoRow { prefixes: db.len(), ranges: db.ranges(), load_ms, lookup_ns, hit_share: hits as f64 / 1e7 })
}

/// The names both servers answer, as dnsperf's query file: mostly channel lookups, some AAAA,
/// some names that do not exist.
const QUERIES: &[(&str, &str, usize)] = &[
    ("demo.livesky.test", "A", 7),
    ("live.livesky.test", "A", 1),
    ("demo.livesky.test", "AAAA", 1),
    ("nosuch.livesky.test", "A", 1),
];

fn edges_view() -> EdgesView {
    let edges = (0..400u32)
        .map(|i| EdgeView {
            id: format!("edge{i}"),
            region: format!("r{}", i % 8),
            isp: if i % 2 == 0 { "tel" } else { "uni" }.into(),
            addrs: vec![std::net::IpAddr::from([10, 0, (i / 250) as u8, (i % 250) as u8 + 1])],
            http: SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 80)),
            clients: None,
            users: u64::from(i * 37 % 500),
            capacity_kbps: 200_000,
            full: Vec::new(),
        })
        .collect();
    let channels = ["demo", "live"].iter().map(|c| ChannelRate { id: c.to_string(), bitrate_kbps: 400 }).collect();
    EdgesView { version: 1, edges, channels }
}

/// Serves `/edges` like the MC would, until the task is dropped.
async fn fake_mc() -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let json = serde_json::to_string(&edges_view())?;
    let app = axum::Router::new().route("/edges", axum::routing::get(move || async move { json.clone() }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    Ok((addr, task))
}

fn free_port() -> anyhow::Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.port())
}

/// Waits until `port` answers a DNS query for demo.livesky.test.
async fn wait_dns(port: u16, limit: Duration) -> anyhow::Result<()> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let mut q = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in ["demo", "livesky", "test"] {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let t0 = Instant::now();
    let mut buf = [0u8; 512];
    while t0.elapsed() < limit {
        sock.send_to(&q, ("127.0.0.1", port)).await?;
        // An answer with records (ANCOUNT > 0): the GSLB has its edges.
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), sock.recv(&mut buf)).await
            && n > 12
            && buf[7] > 0
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("nothing answered on port {port} within {limit:?}")
}

struct Row {
    server: String,
    qps: f64,
    lost: String,
    latency_ms: f64,
    cpu: f64,
}

/// dnsperf on core 1 against 127.0.0.1:`port` for `seconds`; the server is `pid`.
async fn dnsperf(dir: &Path, port: u16, seconds: u64, pid: u32, ecs: bool) -> anyhow::Result<(f64, String, f64, f64)> {
    let file = dir.join("queries.txt");
    let mut text = String::new();
    for _ in 0..10 {
        for (name, t, n) in QUERIES {
            for _ in 0..*n {
                text.push_str(&format!("{name} {t}\n"));
            }
        }
    }
    std::fs::write(&file, text)?;
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", &port.to_string(), "-l", &seconds.to_string()]);
    cmd.args(["-c", "4", "-q", "200", "-d"]).arg(&file);
    if ecs {
        // Client Subnet 198.51.100.0/24: family 1, source 24, scope 0, three address bytes.
        cmd.args(["-E", "8:00011800c63364"]);
    }
    let cpu0 = cpu_seconds(&[pid]);
    let out = cmd.output().await.context("running dnsperf")?;
    let cpu = cpu_seconds(&[pid]) - cpu0;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| {
        text.lines().find_map(|l| l.trim().strip_prefix(key)).map(|v| v.trim().to_string()).unwrap_or_default()
    };
    let qps: f64 = field("Queries per second:").parse().context("dnsperf printed no queries per second")?;
    let lost = field("Queries lost:");
    let latency: f64 =
        field("Average Latency (s):").split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    Ok((qps, lost, latency * 1e3, cpu / seconds as f64))
}

async fn start_gslb(dir: &Path, geo: &Path, mc: SocketAddr) -> anyhow::Result<(Child, u16)> {
    let port = free_port()?;
    let conf = dir.join("gslb.toml");
    std::fs::write(
        &conf,
        format!(
            "[gslb]\nzone = \"livesky.test\"\ndns_listen = \"127.0.0.1:{port}\"\nhttp_listen = \"127.0.0.1:0\"\n\
             mc = \"http://{mc}\"\ngeo = \"{}\"\nns_addrs = [\"127.0.0.1\"]\n",
            geo.display()
        ),
    )?;
    let exe = std::env::current_exe()?;
    let child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(exe)
        .args(["gslb", "--config"])
        .arg(&conf)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .context("starting the GSLB (is taskset installed?)")?;
    wait_dns(port, Duration::from_secs(30)).await?;
    Ok((child, port))
}

async fn start_nsd(dir: &Path, nsd: &Path) -> anyhow::Result<(Child, u16)> {
    let port = free_port()?;
    let d = dir.display();
    let mut zone = String::from(
        "$ORIGIN livesky.test.\n$TTL 20\n@ IN SOA ns1 hostmaster 1 3600 600 86400 20\n@ IN NS ns1\nns1 IN A 127.0.0.1\n",
    );
    for ch in ["demo", "live"] {
        zone.push_str(&format!("{ch} IN A 10.0.0.1\n{ch} IN A 10.0.0.2\n"));
    }
    std::fs::write(dir.join("livesky.test.zone"), zone)?;
    let conf = format!(
        "server:\n  ip-address: 127.0.0.1@{port}\n  server-count: 1\n  username: \"\"\n  chroot: \"\"\n  \
         zonesdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  database: \"\"\n  zonelistfile: \"{d}/zone.list\"\n  \
         xfrdfile: \"{d}/xfrd.state\"\n  xfrdir: \"{d}\"\n  logfile: \"{d}/nsd.log\"\n  verbosity: 0\n  \
         rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\n\
         remote-control:\n  control-enable: no\nzone:\n  name: livesky.test\n  zonefile: livesky.test.zone\n"
    );
    let path = dir.join("nsd.conf");
    std::fs::write(&path, conf)?;
    let child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(nsd)
        .arg("-d")
        .arg("-c")
        .arg(&path)
        .kill_on_drop(true)
        .spawn()
        .context("starting nsd")?;
    wait_dns(port, Duration::from_secs(10)).await?;
    Ok((child, port))
}

/// NSD forks its server and transfer processes: every process started with our config file.
fn family(conf: &Path) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let needle = conf.to_string_lossy().into_owned();
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle.as_str()))
        })
        .collect()
}

pub async fn gslb(args: GslbBenchArgs) -> anyhow::Result<()> {
    if which("dnsperf").is_none() || which("taskset").is_none() {
        bail!("needs dnsperf and taskset (apt-get install dnsperf util-linux)");
    }
    let dir = std::env::temp_dir().join(format!("livesky-bench-gslb-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let geo_path = dir.join("geo.csv");
    eprintln!("generating and loading {} prefixes…", args.prefixes);
    let g = tokio::task::block_in_place(|| bench_geo(&geo_path, args.prefixes))?;
    let (mc, mc_task) = fake_mc().await?;
    let mut rows = Vec::new();
    {
        eprintln!("GSLB: {} s of dnsperf, twice (without and with Client Subnet)…", 2 * args.seconds);
        let (child, port) = start_gslb(&dir, &geo_path, mc).await?;
        let pid = child.id().context("GSLB pid")?;
        for ecs in [false, true] {
            let (qps, lost, latency_ms, cpu) = dnsperf(&dir, port, args.seconds, pid, ecs).await?;
            let server = if ecs { "livesky gslb, with Client Subnet" } else { "livesky gslb" };
            rows.push(Row { server: server.into(), qps, lost, latency_ms, cpu });
        }
        drop(child);
    }
    match (args.no_nsd, which("nsd")) {
        (true, _) => {}
        (false, None) => eprintln!("nsd not found (apt-get install nsd): GSLB only"),
        (false, Some(nsd)) => {
            eprintln!("NSD: {} s of dnsperf…", args.seconds);
            let (child, port) = start_nsd(&dir, &nsd).await?;
            let pid = child.id().context("nsd pid")?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let pids = family(&dir.join("nsd.conf"));
            let cpu0 = cpu_seconds(&pids);
            let (qps, lost, latency_ms, _) = dnsperf(&dir, port, args.seconds, pid, false).await?;
            let cpu = (cpu_seconds(&pids) - cpu0) / args.seconds as f64;
            rows.push(Row { server: "NSD 4 (static zone, same names)".into(), qps, lost, latency_ms, cpu });
            drop(child);
        }
    }
    mc_task.abort();
    let _ = std::fs::remove_dir_all(&dir);
    let mut t = String::from("## GSLB (`livesky bench gslb`)\n\n");
    t.push_str("Prefix database (one thread):\n\n| prefixes | ranges after flattening | load (ms) | lookup (ns) | addresses found |\n|---|---|---|---|---|\n");
    t.push_str(&format!(
        "| {} | {} | {:.0} | {:.0} | {:.0} % |\n\n",
        g.prefixes,
        g.ranges,
        g.load_ms,
        g.lookup_ns,
        g.hit_share * 100.0
    ));
    t.push_str(&format!(
        "DNS over UDP, server pinned to core 0, dnsperf (4 clients, 200 outstanding, {} s) on core 1; \
         queries: 70 % channel A, 10 % another channel, 10 % AAAA (NODATA), 10 % NXDOMAIN:\n\n\
         | server | queries/s | lost | mean latency (ms) | server CPU (cores) | queries/s per core |\n|---|---|---|---|---|---|\n",
        args.seconds
    ));
    for r in &rows {
        t.push_str(&format!(
            "| {} | {:.0} | {} | {:.3} | {:.2} | {:.0} |\n",
            r.server,
            r.qps,
            r.lost,
            r.latency_ms,
            r.cpu,
            r.qps / r.cpu.max(0.01)
        ));
    }
    super::emit(&t, args.out.as_deref())
}
