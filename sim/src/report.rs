//! What a run produced: per-edge-minute and per-session CSVs, the system-wide minute series, and
//! the summary that sets each figure beside the paper's (LiveSky §4).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use crate::domain::{MinuteRow, Session};

/// The headline numbers of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub edges: usize,
    pub sessions: usize,
    pub peak_clients: u64,
    pub peak_minute: u32,
    pub cdn_gbps: f64,
    pub p2p_gbps: f64,
    /// Clients served directly by edges at the peak minute.
    pub users_on_cdn: f64,
    pub started_under_15s: f64,
    pub startup_p50_ms: f64,
    pub startup_p95_ms: f64,
    /// Glass-to-glass latency of every chunk played, all sessions.
    pub latency_p50_ms: Option<u32>,
    pub latency_p95_ms: Option<u32>,
    pub q1_median: f64,
    pub q1_worst: f64,
    pub q2_median: f64,
    pub q2_worst: f64,
    pub p2p_share: f64,
    pub hotspot_edge: usize,
    pub hotspot_p2p_share: f64,
    pub natted_upload_share: f64,
    pub silent_clients: f64,
    /// Clients sent on to a sibling edge at least once.
    pub redirected: f64,
    pub refocus: u64,
    /// The P2P share the clients' uploads allow ([`crate::scenario::Scenario::upload_ceiling`]).
    pub upload_ceiling: f64,
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn share(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn p2p_share(p2p: u64, cdn: u64) -> f64 {
    proto::quality::p2p_share(p2p as f64, cdn as f64)
}

/// A minute's bytes as Gbit/s.
fn gbps(bytes: u64) -> f64 {
    bytes as f64 * 8.0 / 60.0 / 1e9
}

/// System-wide totals per minute (index = minute; minute 0 is empty: rows close a minute).
pub fn per_minute(minutes: &[MinuteRow]) -> Vec<MinuteRow> {
    let last = minutes.iter().map(|r| r.minute).max().unwrap_or(0);
    let mut total: Vec<MinuteRow> = (0..=last).map(|m| MinuteRow { minute: m, ..Default::default() }).collect();
    for r in minutes {
        total[r.minute as usize].add(r);
    }
    total
}

/// Q1 = played / (played + stalled) of every session watched for a minute or more.
pub fn session_q1(sessions: &[Session]) -> Vec<f64> {
    sessions
        .iter()
        .filter(|s| s.watched_s >= 60.0)
        .filter_map(|s| proto::quality::q1(s.played_ms, s.stalled_ms))
        .collect()
}

/// Q2 = 1 − NB/NT of every edge-minute with clients.
pub fn minute_q2(minutes: &[MinuteRow]) -> Vec<f64> {
    minutes.iter().filter_map(|r| proto::quality::q2(u64::from(r.stalled_clients), u64::from(r.active))).collect()
}

pub fn summarize(edges: usize, minutes: &[MinuteRow], sessions: &[Session], upload_ceiling: f64) -> Summary {
    let totals = per_minute(minutes);
    let peak = totals.iter().max_by_key(|m| m.p0).cloned().unwrap_or_default();
    // Sessions long enough to have had a chance to start and to be judged.
    let judged: Vec<&Session> = sessions.iter().filter(|s| s.watched_s >= 15.0).collect();
    let mut startups: Vec<f64> = judged.iter().filter_map(|s| s.startup_ms).map(|m| m as f64).collect();
    let started_fast = judged.iter().filter(|s| s.startup_ms.is_some_and(|m| m < 15_000)).count();
    let mut q1 = session_q1(sessions);
    let mut q2 = minute_q2(minutes);
    let hotspot = minutes.iter().max_by_key(|r| (r.p0, std::cmp::Reverse(r.edge))).map_or(0, |r| r.edge);
    let (hp, hc) =
        minutes.iter().filter(|r| r.edge == hotspot).fold((0, 0), |(p, c), r| (p + r.p2p_bytes, c + r.cdn_bytes));
    let (p2p, cdn) = minutes.iter().fold((0, 0), |(p, c), r| (p + r.p2p_bytes, c + r.cdn_bytes));
    let (nat_up, up) = minutes.iter().fold((0, 0), |(n, u), r| (n + r.natted_up_bytes, u + r.up_bytes));
    let silent = judged.iter().filter(|s| s.up_bytes == 0).count();
    let latency = sessions.iter().fold(proto::quality::LatencyHistogram::default(), |mut h, s| {
        h.merge(&s.latency);
        h
    });
    let refocus =
        (0..edges).map(|e| minutes.iter().filter(|r| r.edge == e).map(|r| r.refocus).max().unwrap_or(0)).sum();
    Summary {
        edges,
        sessions: sessions.len(),
        peak_clients: u64::from(peak.p0),
        peak_minute: peak.minute,
        cdn_gbps: gbps(peak.cdn_bytes),
        p2p_gbps: gbps(peak.p2p_bytes),
        users_on_cdn: share(u64::from(peak.nc), u64::from(peak.p0)),
        started_under_15s: share(started_fast as u64, judged.len() as u64),
        startup_p50_ms: quantile(&mut startups, 0.5),
        startup_p95_ms: quantile(&mut startups, 0.95),
        latency_p50_ms: latency.quantile_ms(0.5),
        latency_p95_ms: latency.quantile_ms(0.95),
        q1_median: quantile(&mut q1, 0.5),
        q1_worst: quantile(&mut q1, 0.0),
        q2_median: quantile(&mut q2, 0.5),
        q2_worst: quantile(&mut q2, 0.0),
        p2p_share: p2p_share(p2p, cdn),
        hotspot_edge: hotspot,
        hotspot_p2p_share: p2p_share(hp, hc),
        natted_upload_share: share(nat_up, up),
        silent_clients: share(silent as u64, judged.len() as u64),
        redirected: share(sessions.iter().filter(|s| s.redirects > 0).count() as u64, sessions.len() as u64),
        refocus,
        upload_ceiling,
    }
}

impl Summary {
    /// (what, paper, this run) rows.
    pub fn rows(&self) -> Vec<(&'static str, String, String)> {
        let pct = |x: f64| format!("{:.1} %", x * 100.0);
        vec![
            ("peak clients", "> 145,000".into(), format!("{} (minute {})", self.peak_clients, self.peak_minute)),
            ("CDN bandwidth at peak", "~34 Gbit/s".into(), format!("{:.2} Gbit/s", self.cdn_gbps)),
            ("P2P bandwidth at peak", "~17 Gbit/s".into(), format!("{:.2} Gbit/s", self.p2p_gbps)),
            ("users served by the CDN at peak", "58.6 %".into(), pct(self.users_on_cdn)),
            ("clients starting in < 15 s", "85 %".into(), pct(self.started_under_15s)),
            ("startup p50 / p95", "—".into(), format!("{:.0} / {:.0} ms", self.startup_p50_ms, self.startup_p95_ms)),
            (
                "glass-to-glass latency p50 / p95",
                "—".into(),
                match (self.latency_p50_ms, self.latency_p95_ms) {
                    (Some(a), Some(b)) => format!("{:.1} / {:.1} s", f64::from(a) / 1e3, f64::from(b) / 1e3),
                    _ => "–".into(),
                },
            ),
            ("Q1 median / worst", "0.99 / > 0.95".into(), format!("{:.4} / {:.4}", self.q1_median, self.q1_worst)),
            ("Q2 median / worst", "0.9998 / —".into(), format!("{:.4} / {:.4}", self.q2_median, self.q2_worst)),
            ("P2P share of delivered bytes", "~40 % of users".into(), pct(self.p2p_share)),
            ("upload ceiling (P2P share the uploads allow)", "—".into(), pct(self.upload_ceiling)),
            (
                "P2P share achieved / ceiling",
                "—".into(),
                if self.upload_ceiling > 0.0 { pct(self.p2p_share / self.upload_ceiling) } else { "–".into() },
            ),
            (
                "hotspot edge P2P share",
                "> 60 %".into(),
                format!("{} (edge {})", pct(self.hotspot_p2p_share), self.hotspot_edge),
            ),
            ("upload from NAT-ed clients", "(Fig. 13)".into(), pct(self.natted_upload_share)),
            ("clients uploading nothing", "37 %".into(), pct(self.silent_clients)),
            ("clients redirected to a sibling edge", "—".into(), pct(self.redirected)),
            ("refocus events", "(Fig. 12)".into(), self.refocus.to_string()),
        ]
    }

    pub fn markdown(&self, name: &str) -> String {
        markdown(name, &[("this run", self)])
    }
}

/// The paper beside one column per run (LiveSky and any baselines, same scenario and seed).
pub fn markdown(name: &str, runs: &[(&str, &Summary)]) -> String {
    let first = runs.first().map(|r| r.1);
    let mut s = format!(
        "# Simulation `{name}`: {} edges, {} sessions\n\n| what | LiveSky (paper) |",
        first.map_or(0, |f| f.edges),
        first.map_or(0, |f| f.sessions)
    );
    for (label, _) in runs {
        let _ = write!(s, " {label} |");
    }
    s.push_str("\n|---|---|");
    s.push_str(&"---|".repeat(runs.len()));
    s.push('\n');
    for (i, (what, paper, _)) in first.map(Summary::rows).unwrap_or_default().into_iter().enumerate() {
        let _ = write!(s, "| {what} | {paper} |");
        for (_, r) in runs {
            let _ = write!(s, " {} |", r.rows()[i].2);
        }
        s.push('\n');
    }
    s
}

/// The same table as CSV.
pub fn csv(runs: &[(&str, &Summary)]) -> String {
    let mut s = String::from("what,paper");
    for (label, _) in runs {
        let _ = write!(s, ",\"{label}\"");
    }
    s.push('\n');
    let rows = runs.first().map(|r| r.1.rows()).unwrap_or_default();
    for (i, (what, paper, _)) in rows.into_iter().enumerate() {
        let _ = write!(s, "\"{what}\",\"{paper}\"");
        for (_, r) in runs {
            let _ = write!(s, ",\"{}\"", r.rows()[i].2);
        }
        s.push('\n');
    }
    s
}

/// Writes `minutes.csv`, `sessions.csv` and `overall.csv` in `dir`.
pub fn write_csvs(dir: &Path, minutes: &[MinuteRow], sessions: &[Session]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("minutes.csv"))?);
    writeln!(
        f,
        "edge,minute,stage,p0,nc,joins,leaves,active,stalled_clients,played_ms,stalled_ms,cdn_bytes,p2p_bytes,refocus_total,natted_up_bytes,up_bytes"
    )?;
    for r in minutes {
        writeln!(
            f,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.edge,
            r.minute,
            r.stage,
            r.p0,
            r.nc,
            r.joins,
            r.leaves,
            r.active,
            r.stalled_clients,
            r.played_ms,
            r.stalled_ms,
            r.cdn_bytes,
            r.p2p_bytes,
            r.refocus,
            r.natted_up_bytes,
            r.up_bytes
        )?;
    }
    f.flush()?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("sessions.csv"))?);
    writeln!(
        f,
        "edge,joined_s,watched_s,startup_ms,played_ms,stalled_ms,stalls,push,redirects,natted,reachable,up_kbps,down_kbps,up_bytes,from_edge,from_peers,latency_p50_ms,latency_p95_ms"
    )?;
    for s in sessions {
        writeln!(
            f,
            "{},{:.3},{:.3},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            s.edge,
            s.joined_s,
            s.watched_s,
            s.startup_ms.map_or(String::new(), |m| m.to_string()),
            s.played_ms,
            s.stalled_ms,
            s.stalls,
            u8::from(s.push),
            s.redirects,
            u8::from(s.natted),
            u8::from(s.reachable),
            s.up_kbps,
            s.down_kbps,
            s.up_bytes,
            s.from_edge,
            s.from_peers,
            s.latency.quantile_ms(0.5).map_or(String::new(), |v| v.to_string()),
            s.latency.quantile_ms(0.95).map_or(String::new(), |v| v.to_string())
        )?;
    }
    f.flush()?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("overall.csv"))?);
    writeln!(f, "minute,clients,push_clients,cdn_gbps,p2p_gbps,joins,leaves,rebuffering_rate,q2")?;
    for t in per_minute(minutes).iter().skip(1) {
        let rebuffering = share(u64::from(t.stalled_clients), u64::from(t.active));
        writeln!(
            f,
            "{},{},{},{:.4},{:.4},{},{},{:.5},{:.5}",
            t.minute,
            t.p0,
            t.nc,
            gbps(t.cdn_bytes),
            gbps(t.p2p_bytes),
            t.joins,
            t.leaves,
            rebuffering,
            1.0 - rebuffering
        )?;
    }
    f.flush()?;
    Ok(())
}

/// Writes `summary.md` and `summary.csv` in `dir`.
pub fn write_summary(dir: &Path, name: &str, runs: &[(&str, &Summary)]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("summary.md"), markdown(name, runs))?;
    std::fs::write(dir.join("summary.csv"), csv(runs))
}
