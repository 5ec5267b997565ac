//! `livesky bench fanout`: edge HTTP-TS fan-out to many concurrent viewers on loopback, side by side
//! with nginx serving the same bytes at the same per-client rate.
//!
//! The edge runs in a child process (`livesky demo` on a generated two-node topology) so its CPU
//! time can be read from /proc apart from the load generator's. nginx serves a recording of the
//! edge's own stream as a static file with `limit_rate` set to the stream's measured rate, so both
//! servers push the same bytes at the same pace to the same number of clients.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sn_core::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::procfs::{process_tree, rss_mib, run_seconds};
use super::soak::{self, Soak};
use crate::launch::loopback_node;

#[derive(clap::Args, Clone)]
pub struct FanoutArgs {
    /// Concurrent viewers.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Measured seconds per run (after a warm-up).
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Source speed multipliers to run (1 = the clip's ~400 kbit/s; 10 = ~4 Mbit/s per viewer).
    #[arg(long, value_delimiter = ',', default_value = "1,5")]
    pub speeds: Vec<f64>,
    /// The edge's `viewer_coalesce_ms`: its flush clock (and the floor's write period).
    #[arg(long, default_value_t = 100)]
    pub coalesce_ms: u64,
    /// The edge's `viewer_start_lead_ms` (default: the edge's own, 2000).
    #[arg(long)]
    pub start_lead_ms: Option<u64>,
    /// The edge's `viewer_max_hold_ms`; 0 writes every viewer on every tick (default: the
    /// edge's own, 3000).
    #[arg(long)]
    pub max_hold_ms: Option<u64>,
    /// The edge's `ts_spool_dir`, where HTTP-TS viewers are sent from by `sendfile` (default:
    /// the edge's own, the system's temp dir). `/dev/shm` keeps the spool on tmpfs, to compare.
    #[arg(long)]
    pub ts_spool_dir: Option<std::path::PathBuf>,
    /// What viewers fetch: `ts` (HTTP-TS streams at the stream's rate), `hls` (one segment over
    /// and over on kept-alive connections, with wrk) or `ll-hls` (players following the live
    /// edge part by part: blocking playlist reload, then the part). `--speeds` applies to `ts`.
    #[arg(long, value_enum, default_value_t = Mode::Ts)]
    pub mode: Mode,
    /// HTTP workers on each side: the edge's connection threads (`http_threads`) and nginx's
    /// worker processes. 0: one per core on both. One each leaves the load generator a core
    /// of its own on a 2-core machine.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Rounds, alternating edge and nginx (both stay up), with the median ratio (HTTP-TS: of
    /// serving CPU; HLS: of requests per CPU-second).
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Skip the nginx runs.
    #[arg(long)]
    pub no_nginx: bool,
    /// nginx's `tcp_nopush` (`TCP_CORK` under `sendfile`). With it on, the kernel sends the tail
    /// of each `sendfile` from a timer softirq that nginx's own CPU figure does not show
    /// (`--server-core` and `perf record -a` do).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub nginx_tcp_nopush: bool,
    /// HTTP-TS: also read all the time the server's CPU is busy, whoever the kernel charges it
    /// to. The server under test runs alone on CPU 0 and the load generator on the others; a
    /// `SCHED_IDLE` thread on CPU 0 counts the time taken from it. Noisy on a shared VM: other
    /// kernel work on that CPU moves it by about a point of a core between readings.
    #[arg(long)]
    pub server_core: bool,
    /// Skip the HTTP-TS floor run: one bare thread writing every viewer once per tick (what
    /// live delivery at that cadence costs the kernel, whatever the server).
    #[arg(long)]
    pub no_floor: bool,
    /// Also write the table (markdown) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ts,
    Hls,
    LlHls,
}

struct Row {
    server: String,
    speed: f64,
    clients: usize,
    rate_kbps: f64,
    delivered_mbps: f64,
    kept_up: usize,
    cpu_pct: f64,
    /// CPU with no viewer (before they connect).
    baseline_pct: f64,
    /// All the CPU the server's core was busy with ([`soak`]), whoever was charged: with
    /// viewers, less without.
    core_serving_pct: Option<f64>,
    rss_mib: f64,
}

/// What every measured run of one speed shares.
struct Ctx<'a> {
    args: &'a FanoutArgs,
    rate_bps: f64,
    speed: f64,
    soak: Option<&'a Soak>,
}

pub async fn fanout(args: FanoutArgs) -> anyhow::Result<()> {
    match args.mode {
        Mode::Hls => return super::fanout_hls::run(args).await,
        Mode::LlHls => return super::fanout_llhls::run(args).await,
        Mode::Ts => {}
    }
    check_fd_limit(args.clients)?;
    let nginx = if args.no_nginx { None } else { which("nginx") };
    if !args.no_nginx && nginx.is_none() {
        eprintln!("nginx not found (apt-get install nginx); running the edge only");
    }
    let dir = std::env::temp_dir().join(format!("livesky-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (mut rows, mut notes) = (Vec::new(), Vec::new());
    let soak = if args.server_core { soak::server_core() } else { None };
    // The server under test runs alone on the soaked CPU.
    let place = |pids: &[u32]| -> anyhow::Result<()> {
        if soak.is_some() {
            for &p in pids {
                soak::pin(Some(p), &[soak::SERVER_CPU])?;
            }
        }
        Ok(())
    };
    for &speed in &args.speeds {
        eprintln!("== speed {speed}× : starting edge");
        let (child, edge_url) = start_edge(&dir, speed, &args).await?;
        let url = format!("{edge_url}/live/demo.ts");
        // Measure the stream's real rate with one viewer, and record its bytes for nginx.
        let sample = dir.join("stream.ts");
        // One whole loop of the clip (16 s of media) gives the stream's exact average rate.
        let rate_bps = record(&url, &sample, Duration::from_secs_f64(CLIP_SECS / speed), args.seconds + 20).await?;
        eprintln!(
            "   stream rate {:.0} kbit/s; {} clients for {} s",
            rate_bps * 8.0 / 1000.0,
            args.clients,
            args.seconds
        );
        let spool = args.ts_spool_dir.as_ref().map_or(String::new(), |d| format!(", spool in {}", d.display()));
        let label = format!(
            "livesky edge (tick {} ms, {}, {}{spool})",
            args.coalesce_ms,
            pacing_label(&args),
            count_of(args.workers, "connection thread")
        );
        let clip = Duration::from_secs_f64(CLIP_SECS / speed).max(BASELINE);
        let edge_pid = child.id().context("the edge process has no pid")?;
        place(&[edge_pid])?;
        // One viewer for the whole run keeps the channel open at the edge (it would close it
        // `linger_seconds` after its last viewer, in some rounds' baselines): what is measured
        // is what the viewers cost, on top of a channel the edge relays anyway.
        let holder = {
            let (host, path) = split_url(&url)?;
            let far = Instant::now() + Duration::from_secs(24 * 3600);
            tokio::spawn(viewer(host, path, Arc::new(AtomicU64::new(0)), far))
        };
        // Both servers stay up and the rounds alternate between them: one run of each moved
        // ±30 % between invocations on a shared 2-core VM.
        let ngx = match &nginx {
            Some(n) => Some((n, start_nginx(n, &dir, &sample, Some(rate_bps), &args).await?)),
            None => None,
        };
        if let Some((_, (_, _, master))) = &ngx {
            place(&process_tree(*master))?;
        }
        let ctx = Ctx { args: &args, rate_bps, speed, soak: soak.as_ref() };
        let (mut ratios, mut core_ratios) = (Vec::new(), Vec::new());
        // The servers are stopped whatever a round returns.
        let result: anyhow::Result<()> = async {
            for round in 1..=args.repeat.max(1) {
                if args.repeat > 1 {
                    eprintln!("== speed {speed}× : round {round} of {}", args.repeat);
                }
                let e = measure(label.clone(), &[edge_pid], &url, &ctx, clip).await?;
                if let Some((_, (_, base, master))) = &ngx {
                    let n = measure(
                        format!("nginx ({}, static file, sendfile, limit_rate)", count_of(args.workers, "worker")),
                        &process_tree(*master),
                        &format!("{base}/stream.ts"),
                        &ctx,
                        BASELINE,
                    )
                    .await?;
                    ratios.push(e.serving() / n.serving().max(0.05));
                    if let (Some(em), Some(nm)) = (e.core_serving_pct, n.core_serving_pct) {
                        core_ratios.push(em / nm.max(0.05));
                    }
                    rows.push(e);
                    rows.push(n);
                } else {
                    rows.push(e);
                }
            }
            Ok(())
        }
        .await;
        holder.abort();
        drop(child);
        if let Some((n, (ng, _, _))) = ngx {
            stop_nginx(n, &dir, ng).await;
        }
        result?;
        for (what, ratios) in [("serving CPU", &mut ratios), ("server core busy for serving", &mut core_ratios)] {
            if ratios.len() > 1 {
                let line = super::fanout_hls::median_line(&format!("edge ÷ nginx, {what}"), ratios);
                notes.push(format!("speed {speed}×, {} clients: {line}", args.clients));
            }
        }
        if !args.no_floor {
            eprintln!("== speed {speed}× : the floor (bare write loop)");
            let (floor, url) = super::floor::start(&sample, rate_bps, args.coalesce_ms).await?;
            place(floor.id().as_slice())?;
            let label = format!("floor: bare write loop, one write per viewer per {} ms", args.coalesce_ms.max(1));
            rows.push(measure_process(floor, label, &url, &ctx, BASELINE).await?);
        }
    }
    let mut table = render(&rows);
    for n in notes {
        table.push_str(&format!("\n{n}\n"));
    }
    super::emit(&table, args.out.as_deref())?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn render(rows: &[Row]) -> String {
    // The server-core column only when it was read (`--server-core`).
    let core = rows.iter().any(|r| r.core_serving_pct.is_some());
    let mut s = String::from(
        "| server | source speed | clients | per-client rate (kbit/s) | delivered (Mbit/s) | clients ≥ 95 % of rate (one 3 s batch allowed) | server CPU (% of one core) | of it with no viewer | serving CPU | cores per Gbit/s (serving) |",
    );
    s.push_str(if core { " server core busy for serving (all of it, whoever was charged) |" } else { "" });
    s.push_str(" server RSS (MiB) |\n");
    s.push_str(&"|---".repeat(11 + usize::from(core)));
    s.push_str("|\n");
    for r in rows {
        let serving = r.serving();
        s.push_str(&format!(
            "| {} | {}× | {} | {:.0} | {:.1} | {} | {:.1} | {:.1} | {:.1} | {:.3} |",
            r.server,
            r.speed,
            r.clients,
            r.rate_kbps,
            r.delivered_mbps,
            r.kept_up,
            r.cpu_pct,
            r.baseline_pct,
            serving,
            serving / 100.0 / (r.delivered_mbps / 1000.0).max(1e-9),
        ));
        if core {
            s.push_str(&r.core_serving_pct.map_or(" — |".to_string(), |m| format!(" {m:.1} |")));
        }
        s.push_str(&format!(" {:.1} |\n", r.rss_mib));
    }
    s
}

/// The edge's pacing, as the bench sets it.
fn pacing_label(args: &FanoutArgs) -> String {
    let d = sn_core::EdgeSettings::default();
    let hold = args.max_hold_ms.unwrap_or(d.viewer_max_hold_ms);
    if hold == 0 {
        return "written every tick".into();
    }
    let lead = args.start_lead_ms.unwrap_or(d.viewer_start_lead_ms);
    format!("paced: start lead {lead} ms, holds ≤ {hold} ms")
}

impl Row {
    /// The server's CPU for serving: with viewers, less without (% of one core).
    fn serving(&self) -> f64 {
        (self.cpu_pct - self.baseline_pct).max(0.0)
    }
}

/// How long viewers take to join: more than a keyframe interval of the clip (2 s).
const JOIN_SPREAD: Duration = Duration::from_secs(3);
/// Stream time a client may be short at the end of a window, waiting for its next batch (the
/// edge's longest hold by default).
const BATCH_ALLOWANCE: Duration = Duration::from_secs(3);
/// How long the no-viewer CPU is read before the viewers connect, at least. The edge's process
/// is read over a whole loop of the clip (its Tier 0 signs and chunks every frame, and frames
/// differ), which moved its figure by ±0.7 % of a core between 5 s readings.
const BASELINE: Duration = Duration::from_secs(5);
/// The clip loops every 16 s of media.
const CLIP_SECS: f64 = 16.0;

/// `n` of `what` ("worker", "connection thread") for a row's label; 0 is one per core.
pub(super) fn count_of(n: usize, what: &str) -> String {
    match n {
        0 => format!("a {what} per core"),
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}

pub(super) fn check_fd_limit(clients: usize) -> anyhow::Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    match soft {
        Some(n) if n < clients + 256 => {
            bail!("open-file limit is {n}; {clients} clients need more: run `ulimit -n {}` first", clients + 1024)
        }
        _ => Ok(()),
    }
}

pub(super) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]).map(|d| d.join(name)).find(|p| p.is_file())
}

async fn wait_for_file(path: &Path, limit: Duration) -> anyhow::Result<String> {
    let t0 = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            return Ok(s);
        }
        if t0.elapsed() > limit {
            bail!("{} did not appear within {limit:?}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(super) async fn start_edge(dir: &Path, speed: f64, args: &FanoutArgs) -> anyhow::Result<(Child, String)> {
    let (coalesce_ms, threads) = (args.coalesce_ms, args.workers);
    let mut set = String::new();
    if let Some(ms) = args.start_lead_ms {
        set.push_str(&format!("viewer_start_lead_ms = {ms}\n"));
    }
    if let Some(ms) = args.max_hold_ms {
        set.push_str(&format!("viewer_max_hold_ms = {ms}\n"));
    }
    if let Some(dir) = &args.ts_spool_dir {
        // A TOML basic string: Rust's escapes of a path are TOML's.
        set.push_str(&format!("ts_spool_dir = {:?}\n", dir.display().to_string()));
    }
    let topo = format!(
        "[[channel]]\nid = \"demo\"\nsource = {{ kind = \"loop\", path = \"builtin:demo\", speed = {speed} }}\n{}{}",
        loopback_node("tier0", 0, Role::Relay, &[], ""),
        loopback_node(
            "edge1",
            1,
            Role::Edge,
            &["tier0"],
            // Every client runs on this host: no per-address cap applies. A long HLS window keeps
            // the benched segment served for the whole run.
            &format!(
                "http_threads = {threads}\n\
                 limits = {{ http_max_per_ip = 1000000, http_max_connections = 1000000 }}\n\
                 [node.edge]\nmax_viewers = 100000\nviewer_coalesce_ms = {coalesce_ms}\n{set}\
                 hls_window = 30"
            ),
        ),
    );
    let (child, v) = spawn_demo(dir, &topo).await?;
    let http = v["edges"][0]["http"].as_str().context("endpoints file lists no edge")?.to_string();
    Ok((child, http))
}

/// Runs `livesky demo` on `topology` in a child process; returns it and its endpoints.
pub(super) async fn spawn_demo(dir: &Path, topology: &str) -> anyhow::Result<(Child, serde_json::Value)> {
    let cfg = dir.join("bench.toml");
    let ep = dir.join("endpoints.json");
    let _ = std::fs::remove_file(&ep);
    std::fs::write(&cfg, topology)?;
    let child = Command::new(std::env::current_exe()?)
        .args(["demo", "--ephemeral-ports", "--config"])
        .arg(&cfg)
        .arg("--endpoints-file")
        .arg(&ep)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the edge process")?;
    let text = wait_for_file(&ep, Duration::from_secs(20)).await?;
    Ok((child, serde_json::from_str(&text)?))
}

/// nginx serving `file`'s directory statically (sendfile), at `rate_bps` per connection if
/// given, with `args.workers` worker processes; its base URL and master pid.
pub(super) async fn start_nginx(
    nginx: &Path,
    dir: &Path,
    file: &Path,
    rate_bps: Option<f64>,
    args: &FanoutArgs,
) -> anyhow::Result<(Child, String, u32)> {
    let workers = if args.workers == 0 { "auto".to_string() } else { args.workers.to_string() };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let root = file.parent().context("sample file has no directory")?;
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes {workers};\npid {pid};\nerror_log {err} warn;\nworker_rlimit_nofile 65536;\n\
         events {{ worker_connections 16384; }}\n\
         http {{ access_log off; sendfile on; tcp_nopush {nopush}; keepalive_timeout {keepalive}; keepalive_requests 1000000;\n\
           client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
           types {{ video/mp2t ts; }}\n\
           server {{ listen 127.0.0.1:{port} backlog=4096; root {root}; limit_rate {rate}; }} }}\n",
        // Streams: one request per connection; segments: kept alive, as players fetch them.
        keepalive = if rate_bps.is_some() { 0 } else { 60 },
        nopush = if args.nginx_tcp_nopush { "on" } else { "off" },
        pid = dir.join("nginx.pid").display(),
        err = dir.join("nginx.err").display(),
        d = dir.display(),
        root = root.display(),
        rate = rate_bps.map_or(0, |r| r.round() as u64),
    );
    std::fs::create_dir_all(dir.join("tmp"))?;
    std::fs::write(dir.join("nginx.conf"), conf)?;
    let _ = std::fs::remove_file(dir.join("nginx.pid"));
    let child = Command::new(nginx)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .kill_on_drop(true)
        .spawn()
        .context("starting nginx")?;
    let pid = wait_for_file(&dir.join("nginx.pid"), Duration::from_secs(10)).await?;
    let master: u32 = pid.trim().parse().context("nginx pid file")?;
    let base = format!("http://127.0.0.1:{port}");
    // Wait until it answers.
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("nginx did not start listening");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((child, base, master))
}

pub(super) async fn stop_nginx(nginx: &Path, dir: &Path, mut child: Child) {
    let conf = dir.join("nginx.conf");
    let _ = Command::new(nginx).arg("-p").arg(dir).arg("-c").arg(conf).arg("-s").arg("stop").status().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
}

fn split_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url.strip_prefix("http://").context("bench URLs are http://")?;
    let (host, path) = rest.split_once('/').context("URL has no path")?;
    Ok((host.to_string(), format!("/{path}")))
}

/// One viewer: GET, then count body bytes until the deadline. Returns false if the server refused.
async fn viewer(host: String, path: String, counter: Arc<AtomicU64>, until: Instant) -> bool {
    let Ok(mut s) = TcpStream::connect(&host).await else { return false };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let mut in_body = false;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        let n = match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return in_body,
            Ok(Ok(n)) => n,
            Err(_) => return true,
        };
        if in_body {
            counter.fetch_add(n as u64, Ordering::Relaxed);
            continue;
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            if !head.starts_with(b"HTTP/1.1 200") {
                return false;
            }
            in_body = true;
            counter.fetch_add((head.len() - end - 4) as u64, Ordering::Relaxed);
        } else if head.len() > 16 * 1024 {
            return false;
        }
    }
}

/// Records `warm` seconds of the stream to `file` after a short settle, returning its rate
/// (bytes/s) measured over the recording; the file is made long enough for a whole run.
async fn record(url: &str, file: &Path, warm: Duration, total_secs: u64) -> anyhow::Result<f64> {
    let (host, path) = split_url(url)?;
    let mut s = TcpStream::connect(&host).await.with_context(|| format!("connecting to {host}"))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut data = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // Skip the start burst (the edge sends from the newest keyframe at once).
    let settle = Instant::now() + Duration::from_secs(2);
    let mut measure_from: Option<(Instant, usize)> = None;
    let end = settle + warm;
    while Instant::now() < end {
        let n =
            tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.context("edge stream stalled")??;
        if n == 0 {
            bail!("edge closed the stream");
        }
        data.extend_from_slice(&buf[..n]);
        if measure_from.is_none() && Instant::now() >= settle {
            measure_from = Some((Instant::now(), data.len()));
        }
    }
    let (t0, b0) = measure_from.context("no data after settling")?;
    let rate = (data.len() - b0) as f64 / t0.elapsed().as_secs_f64();
    // nginx serves this file at `rate`; make it last the whole run by repeating the body.
    let body_start = data.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |p| p + 4);
    let body = &data[body_start..];
    let mut out = Vec::with_capacity((rate * total_secs as f64) as usize + body.len());
    while (out.len() as f64) < rate * total_secs as f64 {
        out.extend_from_slice(body);
    }
    std::fs::write(file, out)?;
    Ok(rate)
}

/// [`measure`] for a server running as the child process `child`, which is stopped after.
async fn measure_process(
    mut child: Child,
    server: String,
    url: &str,
    ctx: &Ctx<'_>,
    baseline: Duration,
) -> anyhow::Result<Row> {
    let pid = child.id().with_context(|| format!("{server}: the process has no pid"))?;
    let r = measure(server, &[pid], url, ctx, baseline).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    r
}

async fn measure(server: String, pids: &[u32], url: &str, ctx: &Ctx<'_>, baseline: Duration) -> anyhow::Result<Row> {
    let Ctx { args, rate_bps, speed, soak } = *ctx;
    let (host, path) = split_url(url)?;
    // What the process uses with no viewer (but the edge's holder): the edge's process also
    // runs Tier 0 (the loop source, chunking, signing), its link and the channel, none of which
    // is serving.
    let from = CpuMark::new(pids, soak);
    tokio::time::sleep(baseline).await;
    let (baseline_pct, core_baseline) = from.pct(pids, soak);
    let warmup = Duration::from_secs(3);
    let window = Duration::from_secs(args.seconds);
    let until = Instant::now() + warmup + window + Duration::from_secs(30);
    let counters: Vec<Arc<AtomicU64>> = (0..args.clients).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut tasks = Vec::with_capacity(args.clients);
    for (i, c) in counters.iter().enumerate() {
        tasks.push(tokio::spawn(viewer(host.clone(), path.clone(), c.clone(), until)));
        // Viewers join over a few seconds, at least 20 ms per hundred: at every point of the
        // keyframe cycle, as real ones do. (All in the same instant, they would all start the
        // same distance behind live, and a paced edge would write them all on the same cadence.)
        if i % 100 == 99 {
            tokio::time::sleep(JOIN_SPREAD.div_f64(args.clients as f64 / 100.0).max(Duration::from_millis(20))).await;
        }
    }
    tokio::time::sleep(warmup).await;
    let start_bytes: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let from = CpuMark::new(pids, soak);
    let t0 = Instant::now();
    let mut last_report = Instant::now();
    while t0.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if last_report.elapsed() >= Duration::from_secs(5) {
            eprintln!("   {server}: {:.0}/{} s", t0.elapsed().as_secs_f64(), args.seconds);
            last_report = Instant::now();
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let (cpu_pct, core) = from.pct(pids, soak);
    let rss = rss_mib(pids);
    let got: Vec<u64> = counters.iter().zip(&start_bytes).map(|(c, s)| c.load(Ordering::Relaxed) - s).collect();
    for t in tasks {
        t.abort();
    }
    let total: u64 = got.iter().sum();
    // Both servers write in batches (nginx seconds ahead, the paced edge up to its hold): a
    // window can end just before a client's next batch.
    let due = 0.95 * rate_bps * (secs - BATCH_ALLOWANCE.as_secs_f64());
    let kept_up = got.iter().filter(|&&b| b as f64 >= due).count();
    Ok(Row {
        server,
        speed,
        clients: args.clients,
        rate_kbps: rate_bps * 8.0 / 1000.0,
        delivered_mbps: total as f64 * 8.0 / secs / 1e6,
        kept_up,
        cpu_pct,
        baseline_pct,
        core_serving_pct: core.zip(core_baseline).map(|(c, b)| (c - b).max(0.0)),
        rss_mib: rss,
    })
}

/// The start of a CPU reading: the processes' run time and, with `--server-core`, the server
/// core's busy time.
struct CpuMark {
    run: f64,
    at: Instant,
    core: Option<soak::Mark>,
}

impl CpuMark {
    fn new(pids: &[u32], soak: Option<&Soak>) -> Self {
        Self { run: run_seconds(pids), at: Instant::now(), core: soak.map(Soak::mark) }
    }

    /// Since the mark, in % of one core: the processes' CPU and the server core's busy time.
    fn pct(&self, pids: &[u32], soak: Option<&Soak>) -> (f64, Option<f64>) {
        let run = (run_seconds(pids) - self.run) / self.at.elapsed().as_secs_f64().max(1e-9) * 100.0;
        (run, soak.zip(self.core).map(|(s, m)| s.busy_pct_since(m)))
    }
}
