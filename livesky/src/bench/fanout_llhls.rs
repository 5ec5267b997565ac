//! `livesky bench fanout --mode ll-hls`: LL-HLS players at the live edge, as hls.js follows it in
//! low-latency mode: each asks for the playlist that lists the next part (`_HLS_msn`/`_HLS_part`,
//! held by the edge until the part is made), then fetches that part, on one kept-alive
//! connection. Side by side: nginx (one worker, sendfile) serving a recording of the same playlist
//! and parts as static files to the same number of clients, each making the same two requests
//! per part at the parts' own pace (nginx has no blocking reload; this is its cost for the same
//! requests and bytes).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::fanout::{FanoutArgs, count_of, start_edge, start_nginx, stop_nginx, which};
use super::http1::Conn;
use super::procfs::{process_tree, run_seconds};

const PLAYLIST: &str = "/live/demo/index.m3u8";
const WARM_UP: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    parts: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

struct Row {
    server: String,
    clients: usize,
    requests_per_s: f64,
    parts_per_client_s: f64,
    delivered_mbps: f64,
    errors: u64,
    cpu_pct: f64,
}

pub async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    super::fanout::check_fd_limit(args.clients)?;
    let nginx = if args.no_nginx { None } else { which("nginx") };
    let dir = std::env::temp_dir().join(format!("livesky-bench-llhls-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("ll"))?;
    eprintln!("== LL-HLS: starting edge");
    let (mut child, edge) = start_edge(&dir, 1.0, &args).await?;
    let recording = record(&edge, &dir.join("ll")).await?;
    let pid = child.id().context("edge process has no pid")?;
    let counts = Arc::new(Counts::default());
    let window = measure(&[pid], &args, &counts, |_| {
        let (edge, counts) = (edge.clone(), counts.clone());
        async move { follow_live_edge(&edge, &counts).await }
    })
    .await?;
    let label = format!("livesky edge (blocking reload, {})", count_of(args.workers, "connection thread"));
    let mut rows = vec![row(&label, &args, &counts, window)];
    let _ = child.start_kill();
    let _ = child.wait().await;
    if let Some(nginx) = &nginx {
        eprintln!("== LL-HLS: nginx");
        let (ng, base, master) = start_nginx(nginx, &dir, &dir.join("ll/index.m3u8"), None, &args).await?;
        let counts = Arc::new(Counts::default());
        let recording = Arc::new(recording);
        let t0 = Instant::now() + Duration::from_millis(200);
        let r = measure(&process_tree(master), &args, &counts, |_| {
            let (base, counts, rec) = (base.clone(), counts.clone(), recording.clone());
            async move { replay(&base, &counts, &rec, t0).await }
        })
        .await;
        stop_nginx(nginx, &dir, ng).await;
        let label = format!("nginx ({}, sendfile, static copy)", count_of(args.workers, "worker"));
        rows.push(row(&label, &args, &counts, r?));
    }
    super::emit(&render(&rows), args.out.as_deref())?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Runs `client` `--clients` times at once and returns the edge's (or nginx's) CPU over the
/// measured window, after a warm-up: `(seconds, cpu seconds)`.
async fn measure<F, Fut>(pids: &[u32], args: &FanoutArgs, counts: &Arc<Counts>, client: F) -> anyhow::Result<(f64, f64)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    eprintln!("   {} clients for {} s (after {} s warm-up)", args.clients, args.seconds, WARM_UP.as_secs());
    let tasks: Vec<_> = (0..args.clients).map(|i| tokio::spawn(client(i))).collect();
    tokio::time::sleep(WARM_UP).await;
    for c in [&counts.requests, &counts.parts, &counts.bytes, &counts.errors] {
        c.store(0, Ordering::Relaxed);
    }
    let (cpu0, t0) = (run_seconds(pids), Instant::now());
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let window = (t0.elapsed().as_secs_f64(), run_seconds(pids) - cpu0);
    for t in tasks {
        t.abort();
    }
    Ok(window)
}

fn row(server: &str, args: &FanoutArgs, counts: &Counts, (secs, cpu): (f64, f64)) -> Row {
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
    Row {
        server: server.to_string(),
        clients: args.clients,
        requests_per_s: n(&counts.requests) / secs,
        parts_per_client_s: n(&counts.parts) / secs / args.clients as f64,
        delivered_mbps: n(&counts.bytes) * 8.0 / secs / 1e6,
        errors: counts.errors.load(Ordering::Relaxed),
        cpu_pct: cpu / secs * 100.0,
    }
}

/// The `(msn, part)` named by `URI="N.P.ts"` on the playlist's preload hint.
fn hint(playlist: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(playlist).ok()?;
    let line = text.lines().rfind(|l| l.starts_with("#EXT-X-PRELOAD-HINT:"))?;
    let uri = line.split("URI=\"").nth(1)?.split('"').next()?;
    let (m, p) = uri.strip_suffix(".ts")?.split_once('.')?;
    Some((m.parse().ok()?, p.parse().ok()?))
}

fn count(counts: &Counts, status: u16, len: usize, part: bool) {
    counts.requests.fetch_add(1, Ordering::Relaxed);
    counts.bytes.fetch_add(len as u64, Ordering::Relaxed);
    if status != 200 {
        counts.errors.fetch_add(1, Ordering::Relaxed);
    } else if part {
        counts.parts.fetch_add(1, Ordering::Relaxed);
    }
}

/// One LL-HLS player: blocking reload for the next part, then the part; again.
async fn follow_live_edge(edge: &str, counts: &Counts) {
    let Ok(mut conn) = Conn::connect(edge).await else {
        counts.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut next = match conn.get(PLAYLIST).await {
        Ok((200, pl)) => hint(&pl),
        _ => None,
    };
    while let Some((msn, part)) = next {
        let Ok((status, pl)) = conn.get(&format!("{PLAYLIST}?_HLS_msn={msn}&_HLS_part={part}")).await else { break };
        count(counts, status, pl.len(), false);
        let Ok((status, body)) = conn.get(&format!("/live/demo/{msn}.{part}.ts")).await else { break };
        count(counts, status, body.len(), true);
        next = hint(&pl);
    }
    counts.errors.fetch_add(1, Ordering::Relaxed);
}

/// What nginx serves: a playlist the edge answered and the parts it lists, with their durations.
struct Recording {
    parts: Vec<(String, Duration)>,
}

async fn record(edge: &str, dir: &Path) -> anyhow::Result<Recording> {
    let t0 = Instant::now();
    loop {
        let pl = Conn::connect(edge).await?.get(PLAYLIST).await?.1;
        let text = String::from_utf8_lossy(&pl).into_owned();
        // Three target durations of parts: the playlist has been live a while.
        let parts: Vec<(String, Duration)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("#EXT-X-PART:DURATION="))
            .filter_map(|l| {
                let (d, rest) = l.split_once(",URI=\"")?;
                Some((rest.split('"').next()?.to_string(), Duration::from_secs_f64(d.parse().ok()?)))
            })
            .collect();
        if parts.len() >= 12 {
            let mut conn = Conn::connect(edge).await?;
            for (name, _) in &parts {
                let (status, body) = conn.get(&format!("/live/demo/{name}")).await?;
                if status != 200 {
                    bail!("the edge answered {status} for part {name}");
                }
                std::fs::write(dir.join(name), body)?;
            }
            std::fs::write(dir.join("index.m3u8"), &pl)?;
            return Ok(Recording { parts });
        }
        if t0.elapsed() > Duration::from_secs(40) {
            bail!("the edge listed no 12 parts within 40 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One client of the static copy: at each part's time (all clients at once, as the edge's
/// blocked requests are all answered when a part is made), the playlist, then the part.
async fn replay(base: &str, counts: &Counts, rec: &Recording, t0: Instant) {
    let Ok(mut conn) = Conn::connect(base).await else {
        counts.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut at = t0;
    for (name, duration) in rec.parts.iter().cycle() {
        tokio::time::sleep_until(at.into()).await;
        at += *duration;
        let Ok((status, pl)) = conn.get("/index.m3u8").await else { break };
        count(counts, status, pl.len(), false);
        let Ok((status, body)) = conn.get(&format!("/{name}")).await else { break };
        count(counts, status, body.len(), true);
    }
    counts.errors.fetch_add(1, Ordering::Relaxed);
}

fn render(rows: &[Row]) -> String {
    let mut s = String::from(
        "| server | clients | requests/s | parts per client-second | delivered (Mbit/s) | errors | server CPU (% of one core) | requests per CPU-second | cores per Gbit/s |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let cpu = (r.cpu_pct / 100.0).max(1e-9);
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} | {:.1} | {} | {:.1} | {:.0} | {:.3} |\n",
            r.server,
            r.clients,
            r.requests_per_s,
            r.parts_per_client_s,
            r.delivered_mbps,
            r.errors,
            r.cpu_pct,
            r.requests_per_s / cpu,
            cpu / (r.delivered_mbps / 1000.0).max(1e-9),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preload_hint_names_the_next_part() {
        let pl = b"#EXTM3U\n#EXT-X-PART:DURATION=0.480,URI=\"7.2.ts\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"7.3.ts\"\n";
        assert_eq!(hint(pl), Some((7, 3)));
        assert_eq!(hint(b"#EXTM3U\n#EXT-X-ENDLIST\n"), None);
    }
}
