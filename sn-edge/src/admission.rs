//! The admission controller (LiveSky §3.1): one per edge per channel, deciding for every joining
//! LiveSky client whether the edge serves it directly (a push peer), hands it to P2P with parents
//! assigned, or redirects it to another edge — from the stage the edge is in. P0 and Nc come from
//! live sessions; clients that vanish without leaving are aged out. Each edge decides alone (the
//! paper's "fate isolation").
//!
//! Sans-IO: time is passed in, changes to feeds are drained from the tracker by the driver.

use proto::DetMap;
use std::time::{Duration, Instant};

use crate::model::{ModelParams, Stage, Thresholds};
use crate::tree::{Change, PeerId, Tracker, TreeConfig, TreeStats};

#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// N1c: clients served directly before P2P starts (paper: 100).
    pub n1c: u32,
    /// N*c: the edge's capacity in streams (bandwidth / media rate; paper: 500).
    pub nc_star: u32,
    /// α, K', λ, μ of the model; K' is also the depth bound of the trees.
    pub model: ModelParams,
    /// Bounds are set this much above the analytical ones (≥ 1).
    pub margin: f64,
    /// K: substreams of the channel.
    pub substreams: u16,
    /// Media rate, for upload budgets.
    pub media_kbps: u32,
    /// Upload cap as a multiple of the media rate (paper: 1.5); a client reporting less gets less.
    pub upload_cap_factor: f64,
    /// M: mesh neighbours per client.
    pub mesh: usize,
    /// A client not heard from for this long is taken as gone.
    pub session_timeout: Duration,
    /// Clients per edge and channel; beyond it joins are redirected (or refused).
    pub max_clients: usize,
    pub seed: u64,
}

impl AdmissionConfig {
    /// The paper's deployment for a 400 kbit/s stream on a 200 Mbit/s edge.
    pub fn paper() -> Self {
        Self {
            n1c: 100,
            nc_star: 500,
            model: ModelParams::paper(),
            margin: 1.0,
            substreams: 4,
            media_kbps: 400,
            upload_cap_factor: 1.5,
            mesh: 8,
            session_timeout: Duration::from_secs(15),
            max_clients: 20_000,
            seed: 1,
        }
    }
}

/// What a joining client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Served directly: the edge pushes every substream.
    Push(PeerId),
    /// Fed by peers (parents in the drained changes); some substreams may wait for a parent.
    P2p(PeerId),
    /// Go to another edge.
    Redirect,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionStats {
    pub joins: u64,
    pub push_admits: u64,
    pub p2p_admits: u64,
    pub redirects: u64,
    pub leaves: u64,
    pub aged_out: u64,
}

/// A view for metrics, reports and the dashboard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    pub stage: Stage,
    pub p0: u32,
    pub nc: u32,
    pub thresholds: Thresholds,
    pub tree: TreeStats,
    pub stats: AdmissionStats,
}

pub struct Admission {
    cfg: AdmissionConfig,
    thresholds: Thresholds,
    tracker: Tracker,
    last_seen: DetMap<PeerId, Instant>,
    next_id: PeerId,
    /// Stage 3 alternates direct and P2P admissions.
    stage3_direct_next: bool,
    stats: AdmissionStats,
}

impl Admission {
    pub fn new(cfg: AdmissionConfig) -> Self {
        let thresholds = Thresholds::new(cfg.n1c, cfg.nc_star, cfg.model, cfg.margin);
        let tracker = Tracker::new(TreeConfig {
            substreams: cfg.substreams,
            k_prime: cfg.model.k_prime.clamp(1, 16) as u8,
            mesh: cfg.mesh,
            edge_substreams: cfg.nc_star as usize * usize::from(cfg.substreams.max(1)),
            seed: cfg.seed,
        });
        Self {
            cfg,
            thresholds,
            tracker,
            last_seen: DetMap::default(),
            next_id: 1,
            stage3_direct_next: true,
            stats: Default::default(),
        }
    }

    pub fn config(&self) -> &AdmissionConfig {
        &self.cfg
    }

    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    pub fn tracker_mut(&mut self) -> &mut Tracker {
        &mut self.tracker
    }

    pub fn p0(&self) -> u32 {
        self.last_seen.len() as u32
    }

    pub fn nc(&self) -> u32 {
        self.tracker.stats().push as u32
    }

    pub fn snapshot(&self) -> Snapshot {
        let tree = self.tracker.stats();
        Snapshot {
            stage: self.thresholds.stage(self.p0()),
            p0: self.p0(),
            nc: tree.push as u32,
            thresholds: self.thresholds,
            tree,
            stats: self.stats,
        }
    }

    /// Upload slots (substreams a client may forward) for a reported upload capacity.
    pub fn slots_for(&self, reported_kbps: Option<u32>) -> u16 {
        let k = f64::from(self.cfg.substreams.max(1));
        let cap = self.cfg.upload_cap_factor * f64::from(self.cfg.media_kbps);
        let kbps = reported_kbps.map_or(cap, |r| cap.min(f64::from(r)));
        (kbps / (f64::from(self.cfg.media_kbps.max(1)) / k)).floor().clamp(0.0, 1024.0) as u16
    }

    /// Decides for a joining client. `sibling` says whether another edge could take it.
    pub fn join(&mut self, now: Instant, reported_kbps: Option<u32>, sibling: bool) -> Admit {
        self.stats.joins += 1;
        let p0 = self.p0() + 1;
        if self.last_seen.len() >= self.cfg.max_clients {
            // Full: redirect; without a sibling the driver refuses the client.
            self.stats.redirects += 1;
            return Admit::Redirect;
        }
        let stage = self.thresholds.stage(p0);
        if stage == Stage::Four && sibling {
            // §3.1 stage 4: past N*c/S the trees cannot keep the delay bound; another edge can.
            self.stats.redirects += 1;
            return Admit::Redirect;
        }
        let direct_room = self.nc() < self.cfg.nc_star;
        let want_direct = match stage {
            Stage::One => true,
            Stage::Two | Stage::Four => false,
            Stage::Three => {
                self.stage3_direct_next = !self.stage3_direct_next;
                !self.stage3_direct_next
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        let slots = self.slots_for(reported_kbps);
        let admit = if want_direct && direct_room {
            self.tracker.add_push(id, slots);
            Admit::Push(id)
        } else if self.tracker.add_p2p(id, slots) {
            Admit::P2p(id)
        } else if direct_room {
            // No parent has room yet (e.g. all NAT-ed): serve it directly rather than not at all.
            self.tracker.add_push(id, slots);
            Admit::Push(id)
        } else if sibling {
            self.stats.redirects += 1;
            return Admit::Redirect;
        } else {
            // Nowhere better to go: join the trees and wait for parents (or refocus room).
            self.tracker.add_waiting(id, slots);
            Admit::P2p(id)
        };
        match admit {
            Admit::Push(_) => self.stats.push_admits += 1,
            Admit::P2p(_) => self.stats.p2p_admits += 1,
            Admit::Redirect => {}
        }
        self.last_seen.insert(id, now);
        admit
    }

    /// Any message from the client proves it is there.
    pub fn heard(&mut self, now: Instant, id: PeerId) {
        if let Some(t) = self.last_seen.get_mut(&id) {
            *t = now;
        }
    }

    pub fn leave(&mut self, id: PeerId) {
        if self.last_seen.remove(&id).is_some() {
            self.stats.leaves += 1;
            self.tracker.remove(id);
        }
    }

    /// Ages out silent clients and lets the trees heal; returns the clients dropped.
    pub fn tick(&mut self, now: Instant) -> Vec<PeerId> {
        let timeout = self.cfg.session_timeout;
        let gone: Vec<PeerId> = self
            .last_seen
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) > timeout)
            .map(|(&id, _)| id)
            .collect();
        for &id in &gone {
            self.last_seen.remove(&id);
            self.tracker.remove(id);
            self.stats.aged_out += 1;
        }
        self.tracker.tick();
        gone
    }

    pub fn drain_changes(&mut self) -> Vec<Change> {
        self.tracker.drain_changes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_churn(alpha: f64) -> ModelParams {
        ModelParams { alpha, k_prime: 2, lambda: 0.0, mu: 0.0 }
    }

    /// Paper numbers with S = 0.5 (α = 1, K' = 2): stage bounds at 100, 200, 1000.
    fn paper_edge() -> Admission {
        // Peers upload one full stream (K slots): each push peer carries one P2P peer at K' = 2,
        // exactly what α = 1 promises.
        let cfg = AdmissionConfig { model: no_churn(1.0), upload_cap_factor: 1.0, ..AdmissionConfig::paper() };
        Admission::new(cfg)
    }

    #[test]
    fn p0_sweeps_all_four_stages_with_nc_on_the_fig7_curve() {
        let mut a = paper_edge();
        let t0 = Instant::now();
        let mut stages = Vec::new();
        for p0 in 1..=1300u32 {
            let admit = a.join(t0, None, true);
            let snap = a.snapshot();
            if stages.last() != Some(&snap.stage) {
                stages.push(snap.stage);
            }
            let nc = snap.nc;
            match p0 {
                0..=100 => assert_eq!((admit, nc), (Admit::Push(u64::from(p0)), p0), "stage 1 at {p0}"),
                101..=200 => {
                    assert!(matches!(admit, Admit::P2p(_)), "stage 2 at {p0}: {admit:?}");
                    assert_eq!(nc, 100);
                }
                201..=1000 => {
                    // Half the new clients are served directly: Nc = S × P0 (Fig. 7, K' = 2).
                    assert!(nc.abs_diff(p0 / 2) <= 1, "stage 3 at {p0}: Nc = {nc}");
                    assert!(matches!(admit, Admit::Push(_) | Admit::P2p(_)));
                }
                _ => {
                    assert_eq!(admit, Admit::Redirect, "stage 4 at {p0}");
                    assert_eq!(a.p0(), 1000, "redirected clients are not counted");
                    assert_eq!(nc, 500, "the edge holds at N*c");
                }
            }
        }
        assert_eq!(stages, [Stage::One, Stage::Two, Stage::Three]);
        assert_eq!(a.thresholds.stage(1001), Stage::Four);
        let st = a.snapshot();
        assert_eq!(st.tree.unfed, 0, "every P2P client got all its parents");
        assert_eq!((st.stats.push_admits, st.stats.p2p_admits, st.stats.redirects), (500, 500, 300));
    }

    #[test]
    fn without_a_sibling_stage_four_stays_p2p_and_never_exceeds_nc_star() {
        let mut a = paper_edge();
        let t0 = Instant::now();
        for _ in 0..1100 {
            let admit = a.join(t0, None, false);
            assert_ne!(admit, Admit::Redirect);
        }
        let snap = a.snapshot();
        assert_eq!(snap.stage, Stage::Four);
        assert_eq!(snap.nc, 500);
        assert_eq!(snap.p0, 1100);
        assert!(snap.tree.edge_substreams <= 500 * 4, "the edge never feeds more than N*c streams");
        assert_eq!(snap.tree.unfed, 100 * 4, "past capacity, clients wait for parents");
    }

    #[test]
    fn silent_clients_age_out_and_their_children_are_re_fed() {
        let cfg = AdmissionConfig { n1c: 2, nc_star: 4, model: no_churn(1.5), ..AdmissionConfig::paper() };
        let mut a = Admission::new(cfg);
        let t0 = Instant::now();
        let ids: Vec<Admit> = (0..6).map(|_| a.join(t0, None, false)).collect();
        assert!(matches!(ids[0], Admit::Push(_)) && matches!(ids[1], Admit::Push(_)));
        assert!(matches!(ids[2], Admit::P2p(_)));
        a.drain_changes();
        // Everyone but client 1 keeps talking.
        let later = t0 + Duration::from_secs(10);
        for id in [2, 3, 4, 5, 6] {
            a.heard(later, id);
        }
        assert!(a.tick(later).is_empty());
        let gone = a.tick(t0 + Duration::from_secs(16));
        assert_eq!(gone, vec![1]);
        assert_eq!(a.p0(), 5);
        assert_eq!(a.snapshot().stats.aged_out, 1);
        assert!(a.drain_changes().iter().all(|c| c.client != 1));
        assert_eq!(a.snapshot().tree.unfed, 0, "orphans of the silent push peer were re-fed");
    }

    #[test]
    fn upload_budget_follows_the_cap_and_what_clients_report() {
        let a = Admission::new(AdmissionConfig::paper());
        assert_eq!(a.slots_for(None), 6, "1.5 × 400 kbit/s in 100 kbit/s substreams");
        assert_eq!(a.slots_for(Some(250)), 2, "a client reporting less gets less");
        assert_eq!(a.slots_for(Some(10_000)), 6, "reporting more does not raise the cap");
        assert_eq!(a.slots_for(Some(0)), 0);
    }

    #[test]
    fn a_full_edge_redirects() {
        let cfg = AdmissionConfig { max_clients: 3, ..AdmissionConfig::paper() };
        let mut a = Admission::new(cfg);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(matches!(a.join(t0, None, false), Admit::Push(_)));
        }
        assert_eq!(a.join(t0, None, false), Admit::Redirect);
        assert_eq!(a.p0(), 3);
    }
}
