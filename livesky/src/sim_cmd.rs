//! `livesky sim SCENARIO --out DIR`: replays a scenario (e.g. `configs/scenarios/cpc2007.toml`)
//! in the simulator and writes its CSVs and the summary beside the paper's numbers, with a
//! progress bar and ETA on the terminal.

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use livesky_sim::report::{self, Summary};
use livesky_sim::scenario::{Mode, Scenario};

#[derive(clap::Args)]
pub struct SimArgs {
    /// Scenario file (TOML), e.g. configs/scenarios/cpc2007.toml.
    pub scenario: PathBuf,
    /// Directory for minutes.csv, sessions.csv, overall.csv, summary.md and summary.csv.
    #[arg(long)]
    pub out: PathBuf,
    /// Run a smaller event with the same load per edge (e.g. 0.1 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Seed instead of the scenario's.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Worker threads (default: one per core). The output does not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also run the pure-CDN and pure-mesh baselines (same scenario, same seed; results in
    /// DIR/cdn and DIR/mesh, and side by side in the summary).
    #[arg(long)]
    pub baselines: bool,
    /// Players in low-latency mode (a 3 s buffer target, or the scenario's if smaller),
    /// whatever the scenario says.
    #[arg(long)]
    pub low_latency: bool,
}

pub fn run(args: SimArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.scale > 0.0 && args.scale <= 1.0, "--scale must be in (0, 1]");
    let mut sc = Scenario::load(&args.scenario)?.scaled(args.scale);
    if let Some(seed) = args.seed {
        sc.seed = seed;
    }
    if args.low_latency {
        sc.clients.low_latency = true;
        sc.clients.buffer_s = sc.clients.buffer_s.min(3);
    }
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    eprintln!(
        "simulating `{}`: {} edges, {} minutes, seed {}, {threads} threads",
        sc.name,
        sc.edge_count(),
        sc.minutes,
        sc.seed
    );
    let modes: &[Mode] = if args.baselines { &[Mode::Hybrid, Mode::Cdn, Mode::Mesh] } else { &[Mode::Hybrid] };
    let mut summaries: Vec<(&str, Summary)> = Vec::new();
    for &mode in modes {
        let mut sc = sc.clone();
        sc.mode = mode;
        let dir =
            if mode == Mode::Hybrid { args.out.clone() } else { args.out.join(format!("{mode:?}").to_lowercase()) };
        eprintln!("{}:", mode.name());
        let out = simulate(&sc, threads);
        report::write_csvs(&dir, &out.minutes, &out.sessions)
            .with_context(|| format!("writing results to {}", dir.display()))?;
        if mode == Mode::Hybrid {
            let figs = livesky_sim::plots::write_all(&dir, &sc, &out.minutes, &out.sessions)
                .with_context(|| format!("writing plots to {}", dir.display()))?;
            eprintln!("plots: {}", figs.join(", "));
        }
        summaries.push((mode.name(), out.summary));
    }
    let runs: Vec<(&str, &Summary)> = summaries.iter().map(|(n, s)| (*n, s)).collect();
    report::write_summary(&args.out, &sc.name, &runs).with_context(|| format!("writing {}", args.out.display()))?;
    println!("{}", report::markdown(&sc.name, &runs));
    eprintln!("CSVs, plots and summary in {}", args.out.display());
    Ok(())
}

/// One run with a progress bar (redrawn on a terminal; a line every 10 % in a log).
fn simulate(sc: &Scenario, threads: usize) -> livesky_sim::RunOutput {
    let t0 = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let last = Mutex::new((Instant::now() - Duration::from_secs(1), 0u64));
    let progress = |done: u64, total: u64| {
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        let tenth = done * 10 / total.max(1);
        let due = if tty { last.0.elapsed() >= Duration::from_millis(250) } else { tenth > last.1 };
        if !due && done < total {
            return;
        }
        *last = (Instant::now(), tenth);
        let frac = done as f64 / total.max(1) as f64;
        let spent = t0.elapsed().as_secs_f64();
        let eta = if frac > 0.0 { spent / frac - spent } else { 0.0 };
        let bar = "#".repeat((frac * 30.0) as usize);
        let line = format!("[{bar:<30}] {:5.1} %  {spent:4.0} s elapsed, ETA {eta:4.0} s", frac * 100.0);
        if tty {
            eprint!("\r{line} ");
        } else {
            eprintln!("{line}");
        }
        let _ = std::io::stderr().flush();
    };
    let out = livesky_sim::run(sc, threads, &progress);
    eprintln!("\ndone in {:.1} s", t0.elapsed().as_secs_f64());
    out
}
