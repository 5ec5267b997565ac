//! The discrete-event simulator (LiveSky §4): replays an event at internet scale by driving the
//! same sans-IO edge client service (admission, tracker, trees) and peer cores the network runs,
//! on virtual time with a seeded network model ([`engine`], [`domain`]). Edges decide in isolation
//! (§4.2) and only redirect to siblings of their own district and ISP, so each such group and its
//! clients is simulated on its own, on as many threads as there are cores, with a seed of its own:
//! the output does not depend on the thread count.

pub mod domain;
mod edge;
pub mod engine;
mod group;
pub mod plots;
pub mod report;
pub mod scenario;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use domain::{DomainResult, EdgeSpec, MinuteRow, Session};
use engine::Clock;
use scenario::Scenario;

/// The edges of a scenario with their share of the audience: districts by weight, ISPs evenly,
/// edges inside a district and ISP by a Zipf law (some edges are hotspots).
pub fn edge_specs(sc: &Scenario) -> Vec<EdgeSpec> {
    let e = &sc.edges;
    let zipf: Vec<f64> = (1..=e.per_district_isp).map(|r| 1.0 / f64::from(r).powf(e.skew)).collect();
    let zsum: f64 = zipf.iter().sum();
    let dw: Vec<f64> =
        (0..e.districts).map(|d| e.district_weights.get(usize::from(d)).copied().unwrap_or(1.0)).collect();
    let dsum: f64 = dw.iter().sum();
    let mut specs = Vec::new();
    for d in 0..e.districts {
        for isp in 0..e.isps {
            for z in &zipf {
                let weight = dw[usize::from(d)] / dsum / f64::from(e.isps) * z / zsum;
                specs.push(EdgeSpec { index: specs.len(), district: d, isp, weight });
            }
        }
    }
    specs
}

/// Everything a run produced, in edge order.
pub struct RunOutput {
    pub minutes: Vec<MinuteRow>,
    pub sessions: Vec<Session>,
    pub summary: report::Summary,
}

/// Runs `sc` on `threads` threads; `progress(done, total)` counts simulated edge-minutes.
pub fn run(sc: &Scenario, threads: usize, progress: &(dyn Fn(u64, u64) + Sync)) -> RunOutput {
    let specs = edge_specs(sc);
    let total = specs.len() as u64 * u64::from(sc.minutes);
    // Groups of sibling edges: one district and ISP each (specs come in that order).
    let mut groups: Vec<Vec<EdgeSpec>> = Vec::new();
    for s in &specs {
        match groups.last_mut() {
            Some(g) if g[0].district == s.district && g[0].isp == s.isp => g.push(s.clone()),
            _ => groups.push(vec![s.clone()]),
        }
    }
    let done = AtomicU64::new(0);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<DomainResult>>> = Mutex::new((0..groups.len()).map(|_| None).collect());
    let clock = Clock::new(Instant::now());
    // Heaviest groups first (longest-processing-time order): the last group to start is a light
    // one, so no core idles at the end while another finishes a big group alone. The output order
    // stays by edge.
    let mut order: Vec<usize> = (0..groups.len()).collect();
    let load = |g: usize| groups[g].iter().map(|s| s.weight).sum::<f64>();
    order.sort_by(|&a, &b| load(b).total_cmp(&load(a)).then(a.cmp(&b)));
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&idx) = order.get(n) else { return };
                    let r = group::run(sc, groups[idx].clone(), clock, |edges| {
                        progress(done.fetch_add(edges as u64, Ordering::Relaxed) + edges as u64, total);
                    });
                    results.lock().unwrap_or_else(|e| e.into_inner())[idx] = Some(r);
                }
            });
        }
    });
    let mut minutes = Vec::new();
    let mut sessions = Vec::new();
    for r in results.into_inner().unwrap_or_else(|e| e.into_inner()).into_iter().flatten() {
        minutes.extend(r.minutes);
        sessions.extend(r.sessions);
    }
    let summary = report::summarize(specs.len(), &minutes, &sessions, sc.upload_ceiling());
    RunOutput { minutes, sessions, summary }
}

#[cfg(test)]
mod tests;
