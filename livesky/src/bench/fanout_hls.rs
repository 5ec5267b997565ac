//! `livesky bench fanout --mode hls`: HLS segment requests per CPU-second of the edge, side by
//! side with nginx (one worker, sendfile) serving the same segment as a static file. `wrk` is
//! the load: `--clients` kept-alive connections fetching one segment over and over, as a crowd
//! of players fetches the newest segment.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::Command;

use super::fanout::{FanoutArgs, count_of, start_edge, start_nginx, stop_nginx, which};
use super::procfs::{process_tree, run_seconds};

struct Row {
    server: String,
    clients: usize,
    segment_kb: f64,
    requests_per_s: f64,
    cpu_pct: f64,
    delivered_gbps: f64,
}

impl Row {
    fn requests_per_cpu_second(&self) -> f64 {
        self.requests_per_s / (self.cpu_pct / 100.0).max(1e-9)
    }
    /// CPU (in cores) per delivered Gbit/s.
    fn cores_per_gbps(&self) -> f64 {
        (self.cpu_pct / 100.0) / self.delivered_gbps.max(1e-9)
    }
}

pub async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    super::fanout::check_fd_limit(args.clients)?;
    let wrk = which("wrk").context("the HLS mode drives load with wrk: apt-get install -y wrk")?;
    let nginx = if args.no_nginx { None } else { which("nginx") };
    let dir = std::env::temp_dir().join(format!("livesky-bench-hls-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    eprintln!("== HLS: starting edge");
    let (mut child, edge) = start_edge(&dir, 1.0, &args).await?;
    // nginx needs its file before it starts; each round then takes the newest segment again
    // (a long run outlives the window), and nginx serves the same bytes.
    let segment = dir.join("segment.ts");
    std::fs::write(&segment, newest_segment(&edge).await?.1)?;
    let pid = child.id().context("edge process has no pid")?;
    // Both servers stay up and the rounds alternate between them, so a drift of the machine
    // (this one moves ±10 % from run to run) falls on both sides alike.
    let ng = match &nginx {
        Some(n) => Some((n, start_nginx(n, &dir, &segment, None, &args).await?)),
        None => None,
    };
    let servers =
        Servers { wrk: &wrk, edge: &edge, edge_pid: pid, segment: &segment, nginx: ng.as_ref().map(|n| &n.1) };
    let result = rounds(&servers, &args).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    if let Some((n, (ng, _, _))) = ng {
        stop_nginx(n, &dir, ng).await;
    }
    let (rows, mut ratios) = result?;
    let mut table = render(&rows);
    if ratios.len() > 1 {
        table.push_str(&format!("\n{}\n", median_line("edge ÷ nginx, requests per CPU-second", &mut ratios)));
    }
    super::emit(&table, args.out.as_deref())?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

struct Servers<'a> {
    wrk: &'a Path,
    edge: &'a str,
    edge_pid: u32,
    /// The file nginx serves.
    segment: &'a Path,
    /// nginx's base URL and master pid.
    nginx: Option<&'a (tokio::process::Child, String, u32)>,
}

/// `--repeat` rounds of the edge, then nginx on the same bytes: the rows, and each round's
/// edge ÷ nginx.
async fn rounds(s: &Servers<'_>, args: &FanoutArgs) -> anyhow::Result<(Vec<Row>, Vec<f64>)> {
    let (mut rows, mut ratios) = (Vec::new(), Vec::new());
    let edge_label = format!("livesky edge ({})", count_of(args.workers, "connection thread"));
    for round in 1..=args.repeat.max(1) {
        eprintln!("== HLS: round {round}");
        let (path, body) = newest_segment(s.edge).await?;
        std::fs::write(s.segment, &body)?;
        let e =
            measure(edge_label.clone(), &[s.edge_pid], s.wrk, &format!("{}{path}", s.edge), body.len(), args).await?;
        if let Some((_, base, master)) = s.nginx {
            let label = format!("nginx ({}, sendfile)", count_of(args.workers, "worker"));
            let url = format!("{base}/segment.ts");
            let n = measure(label, &process_tree(*master), s.wrk, &url, body.len(), args).await?;
            ratios.push(e.requests_per_cpu_second() / n.requests_per_cpu_second().max(1e-9));
            rows.push(e);
            rows.push(n);
        } else {
            rows.push(e);
        }
    }
    Ok((rows, ratios))
}

/// The newest segment the edge lists: its path and bytes.
async fn newest_segment(edge: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let t0 = std::time::Instant::now();
    loop {
        if let Ok((200, pl)) = get(edge, "/live/demo/index.m3u8").await {
            let pl = String::from_utf8_lossy(&pl).into_owned();
            if let Some(seg) = pl.lines().rfind(|l| l.ends_with(".ts")) {
                let path = format!("/live/demo/{seg}");
                let (status, body) = get(edge, &path).await?;
                if status != 200 {
                    bail!("the edge answered {status} for {path}");
                }
                return Ok((path, body));
            }
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("the edge listed no segment within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// GET on a connection of its own.
async fn get(base: &str, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    super::http1::Conn::connect(base).await?.get(path).await
}

async fn measure(
    server: String,
    pids: &[u32],
    wrk: &Path,
    url: &str,
    size: usize,
    args: &FanoutArgs,
) -> anyhow::Result<Row> {
    eprintln!("   {server}: wrk -c {} for {} s on {url}", args.clients, args.seconds);
    let cpu0 = run_seconds(pids);
    let t0 = std::time::Instant::now();
    // One wrk thread: the other core is the server's.
    let out = Command::new(wrk)
        .args(["-t1", &format!("-c{}", args.clients), &format!("-d{}s", args.seconds), "--timeout", "10s", url])
        .output()
        .await
        .context("running wrk")?;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = run_seconds(pids) - cpu0;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {}{}", text, String::from_utf8_lossy(&out.stderr));
    }
    if let Some(bad) = text.lines().find(|l| l.contains("Non-2xx")) {
        bail!("{server} answered errors under load: {bad}");
    }
    let requests: f64 = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no request count in wrk's output: {text}"))?;
    let requests_per_s = requests / secs;
    Ok(Row {
        server,
        clients: args.clients,
        segment_kb: size as f64 / 1000.0,
        requests_per_s,
        cpu_pct: cpu / secs * 100.0,
        delivered_gbps: requests_per_s * size as f64 * 8.0 / 1e9,
    })
}

fn render(rows: &[Row]) -> String {
    let mut s = String::from(
        "| server | connections | segment (kB) | requests/s | server CPU (% of one core) | requests per CPU-second | delivered (Gbit/s) | cores per Gbit/s |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.1} | {:.0} | {:.2} | {:.3} |\n",
            r.server,
            r.clients,
            r.segment_kb,
            r.requests_per_s,
            r.cpu_pct,
            r.requests_per_cpu_second(),
            r.delivered_gbps,
            r.cores_per_gbps()
        ));
    }
    s
}

/// "{what}, by round: …; median …".
pub(super) fn median_line(what: &str, ratios: &mut [f64]) -> String {
    let rounds: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    let median = if n % 2 == 1 { ratios[n / 2] } else { (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0 };
    format!("{what}, by round: {}; median {median:.2}", rounds.join(", "))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_median_of_the_rounds_is_reported_with_every_round_in_order() {
        assert_eq!(
            super::median_line("edge ÷ nginx, requests per CPU-second", &mut [1.2, 0.9, 1.0]),
            "edge ÷ nginx, requests per CPU-second, by round: 1.20, 0.90, 1.00; median 1.00"
        );
        assert!(super::median_line("x", &mut [1.0, 1.2]).ends_with("median 1.10"));
    }
}
