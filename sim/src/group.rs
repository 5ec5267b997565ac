//! The edges of one district and ISP, stepped together. Each edge keeps its own event queue (its
//! clients' state stays warm in the cache); every two seconds of virtual time the group hands
//! clients redirected by full edges to the sibling they were sent to and tells every edge which
//! siblings are full — what the management center does for real edges.

use crate::domain::{Domain, DomainResult, EdgeSpec, Transfer};
use crate::engine::{Clock, Micros, SECOND};
use crate::scenario::Scenario;
use livesky_edge_core::service::Input as EdgeInput;

/// How far edges run ahead of each other: a redirected client reaches its sibling up to this
/// much later than the round trip alone would take (1 s on average, about what resolving and
/// connecting to another edge costs a real player). Shorter steps cost time: every step pulls
/// each edge's clients back into the cache (0.5 s made the full event 1.7× slower).
const STEP: Micros = 2 * SECOND;

/// Runs the group `specs`; `progress(edges)` after every simulated minute of any edge.
pub fn run(sc: &Scenario, specs: Vec<EdgeSpec>, clock: Clock, mut progress: impl FnMut(usize)) -> DomainResult {
    let names: Vec<String> = specs.iter().map(|s| format!("edge-{}", s.index)).collect();
    let mut edges: Vec<Domain> =
        specs.into_iter().enumerate().map(|(j, spec)| Domain::new(sc, spec, j, &names, clock)).collect();
    let end = sc.end();
    let mut moved: Vec<Transfer> = Vec::new();
    let mut t = 0;
    loop {
        for d in &mut edges {
            let minutes = d.run_until(t, &mut moved);
            for _ in 0..minutes {
                progress(1);
            }
        }
        if t >= end {
            break;
        }
        for m in moved.drain(..) {
            if let Some(j) = names.iter().position(|n| *n == m.to) {
                edges[j].accept(t + 1, m);
            }
        }
        let full: Vec<bool> = edges.iter().map(|d| d.edge.full()).collect();
        for d in &mut edges {
            let now = clock.at(t);
            for (name, f) in names.iter().zip(&full) {
                let input = EdgeInput::SiblingFull { sibling: name.clone(), full: *f };
                d.edge.service.handle(now, input);
            }
        }
        t = (t + STEP).min(end);
    }
    let mut out = DomainResult::default();
    for d in edges {
        let r = d.finish_all();
        out.minutes.extend(r.minutes);
        out.sessions.extend(r.sessions);
    }
    out
}
