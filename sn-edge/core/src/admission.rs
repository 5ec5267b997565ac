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
use crate::tree::{Change, NatClass, PeerId, Reach, Tracker, TreeConfig, TreeStats};

/// The share of a client's reported upload its slots may fill. A parent whose uplink is full
/// delays its children's chunks by however long its queue is: the stream's peaks (keyframes)
/// run above its mean, the links' own framing adds to every chunk, and repairs and a new
/// child's catch-up take their turn too. In the testbed a parent offering all its 500 kbit/s
/// as four 112 kbit/s substreams left its children stalling for a second at a time.
pub const UPLOAD_SHARE: f64 = 0.8;
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
    /// Use the clients' own upload offers for α when they add up to less than `model.alpha`:
    /// unreachable clients and slow uplinks make the trees smaller than the configured α says,
    /// and an edge believing that α keeps clients past what its peers can carry. The stage bounds
    /// are then §3.1's model with the α the edge actually has.
    pub alpha_from_clients: bool,
    pub seed: u64,
    /// How long a client that has not measured its NAT waits to be placed (zero: placed at once,
    /// as if its NAT were the worst).
    pub nat_wait: Duration,
}

impl AdmissionConfig {
    /// The controller for a channel of `media_kbps` in `substreams`, from an edge's admission
    /// settings (the TOML `[node.edge.admission]`, or what the management center pushed).
    pub fn from_settings(a: &proto::config::AdmissionSettings, media_kbps: u32, substreams: u16) -> Self {
        Self {
            n1c: a.n1c,
            nc_star: Thresholds::nc_star_for(a.capacity_kbps, media_kbps),
            model: ModelParams::from(a),
            margin: a.margin,
            substreams,
            media_kbps,
            upload_cap_factor: a.upload_cap_factor,
            mesh: a.mesh,
            session_timeout: Duration::from_secs(a.session_timeout_seconds),
            max_clients: a.max_clients,
            alpha_from_clients: a.alpha_from_clients,
            seed: 0x5eed,
            nat_wait: NAT_WAIT,
        }
    }

    /// The paper's deployment (the settings' defaults) for a 400 kbit/s stream in 4 substreams.
    pub fn paper() -> Self {
        Self { seed: 1, ..Self::from_settings(&proto::config::AdmissionSettings::default(), 400, 4) }
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
    /// Admitted, to be placed when its NAT is known ([`Admission::measured`]).
    Pending(PeerId),
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

/// α is taken from the clients only once there are this many of them.
const ALPHA_SAMPLE: u32 = 20;

/// A player's NAT test takes a few round trips to the edge, at most ~1.2 s when answers are
/// filtered or lost; its start burst plays meanwhile.
pub const NAT_WAIT: Duration = Duration::from_millis(1500);

struct Seen {
    at: Instant,
    /// Upload slots it offers others (0 once nobody can connect to it).
    offered: u16,
}

/// What placing a joined client needs.
#[derive(Debug, Clone, Copy)]
struct Joining {
    since: Instant,
    slots: u16,
    reachable: bool,
    budget_ms: Option<u32>,
}

pub struct Admission {
    cfg: AdmissionConfig,
    tracker: Tracker,
    last_seen: DetMap<PeerId, Seen>,
    /// Sum of `offered` over `last_seen`.
    offered_slots: u64,
    next_id: PeerId,
    /// Stage 3 alternates direct and P2P admissions.
    stage3_direct_next: bool,
    stats: AdmissionStats,
    /// Joined clients waiting for their NAT test before they are placed.
    pending: DetMap<PeerId, Joining>,
}

impl Admission {
    pub fn new(cfg: AdmissionConfig) -> Self {
        let tracker = Tracker::new(TreeConfig {
            substreams: cfg.substreams,
            k_prime: cfg.model.k_prime.clamp(1, 16) as u8,
            mesh: cfg.mesh,
            edge_substreams: cfg.nc_star as usize * usize::from(cfg.substreams.max(1)),
            seed: cfg.seed,
        });
        Self {
            cfg,
            tracker,
            last_seen: DetMap::default(),
            offered_slots: 0,
            next_id: PeerId(1),
            stage3_direct_next: true,
            stats: Default::default(),
            pending: DetMap::default(),
        }
    }

    pub fn config(&self) -> &AdmissionConfig {
        &self.cfg
    }

    /// New model parameters, bounds and limits (pushed by the management center), applied to the
    /// running swarm: the stage and every later decision follow them at once. The tree's shape
    /// (substreams, mesh size) is kept: it changes when the channel is opened again.
    pub fn reconfigure(&mut self, cfg: AdmissionConfig) {
        let kept = AdmissionConfig { substreams: self.cfg.substreams, mesh: self.cfg.mesh, seed: self.cfg.seed, ..cfg };
        self.tracker.set_edge_substreams(kept.nc_star as usize * usize::from(kept.substreams.max(1)));
        self.cfg = kept;
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

    /// α now: the configured one, or what the clients offer if that is less.
    pub fn alpha(&self) -> f64 {
        self.alpha_with(0, self.p0())
    }

    fn alpha_with(&self, extra_slots: u16, p0: u32) -> f64 {
        let configured = self.cfg.model.alpha;
        if !self.cfg.alpha_from_clients || p0 < ALPHA_SAMPLE {
            return configured;
        }
        let k = f64::from(self.cfg.substreams.max(1));
        let offered = (self.offered_slots + u64::from(extra_slots)) as f64 / k / f64::from(p0);
        configured.min(offered)
    }

    fn thresholds_with(&self, alpha: f64) -> Thresholds {
        let model = ModelParams { alpha, ..self.cfg.model };
        Thresholds::new(self.cfg.n1c, self.cfg.nc_star, model, self.cfg.margin)
    }

    pub fn thresholds(&self) -> Thresholds {
        self.thresholds_with(self.alpha())
    }

    pub fn snapshot(&self) -> Snapshot {
        let tree = self.tracker.stats();
        let thresholds = self.thresholds();
        Snapshot {
            stage: thresholds.stage(self.p0()),
            p0: self.p0(),
            nc: tree.push as u32,
            thresholds,
            tree,
            stats: self.stats,
        }
    }

    /// Upload slots (substreams a client may forward) for a reported upload capacity: only
    /// [`UPLOAD_SHARE`] of it is given out.
    pub fn slots_for(&self, reported_kbps: Option<u32>) -> u16 {
        let k = f64::from(self.cfg.substreams.max(1));
        let cap = self.cfg.upload_cap_factor * f64::from(self.cfg.media_kbps);
        let kbps = reported_kbps.map_or(cap, |r| cap.min(UPLOAD_SHARE * f64::from(r)));
        (kbps / (f64::from(self.cfg.media_kbps.max(1)) / k)).floor().clamp(0.0, 1024.0) as u16
    }

    /// Decides for a joining client. `reachable` says whether others can connect to it;
    /// `sibling` whether another edge could take it.
    pub fn join(&mut self, now: Instant, reported_kbps: Option<u32>, reachable: bool, sibling: bool) -> Admit {
        self.join_within(now, reported_kbps, reachable, sibling, None, Reach::OPEN)
    }

    /// [`Admission::join`] for a client whose parents must receive their feeds within
    /// `parent_budget_ms` of ingest (its latency target leaves room for one more hop), and whose
    /// NAT lets in what `reach` says. A client that has not measured its NAT yet is admitted but
    /// not placed ([`Admit::Pending`]): the edge's start burst plays meanwhile, and
    /// [`Admission::measured`] places it once its result arrives, or [`Admission::overdue`] says
    /// it waited long enough — placed blind, it might take the edge's direct feed from someone
    /// no peer can feed, or a parent it cannot reach.
    pub fn join_within(
        &mut self,
        now: Instant,
        reported_kbps: Option<u32>,
        reachable: bool,
        sibling: bool,
        parent_budget_ms: Option<u32>,
        reach: Reach,
    ) -> Admit {
        self.stats.joins += 1;
        if self.last_seen.len() >= self.cfg.max_clients {
            // Full: redirect; without a sibling the driver refuses the client.
            self.stats.redirects += 1;
            return Admit::Redirect;
        }
        let slots = self.slots_for(reported_kbps);
        let offered = if reachable { slots } else { 0 };
        if self.stage_with(offered, 1) == Stage::Four && sibling {
            // §3.1 stage 4: past N*c/S the trees cannot keep the delay bound; another edge can.
            self.stats.redirects += 1;
            return Admit::Redirect;
        }
        let id = self.next_id;
        self.next_id = PeerId(self.next_id.0 + 1);
        self.last_seen.insert(id, Seen { at: now, offered });
        self.offered_slots += u64::from(offered);
        let joining = Joining { since: now, slots, reachable, budget_ms: parent_budget_ms };
        if reach.nat == NatClass::Unknown && !self.cfg.nat_wait.is_zero() {
            self.pending.insert(id, joining);
            return Admit::Pending(id);
        }
        self.place(id, joining, reach, sibling)
    }

    /// The stage with one more client offering `extra_slots` (`extra` 1), or as it is (0).
    fn stage_with(&self, extra_slots: u16, extra: u32) -> Stage {
        let p0 = self.p0() + extra;
        self.thresholds_with(self.alpha_with(extra_slots, p0)).stage(p0)
    }

    /// Push, P2P with parents, waiting in the trees, or (when only a sibling can feed it) away.
    fn place(&mut self, id: PeerId, j: Joining, reach: Reach, sibling: bool) -> Admit {
        let stage = self.stage_with(0, 0);
        let direct_room = self.nc() < self.cfg.nc_star;
        let want_direct = match stage {
            Stage::One => true,
            Stage::Two | Stage::Four => false,
            Stage::Three => {
                self.stage3_direct_next = !self.stage3_direct_next;
                !self.stage3_direct_next
            }
        };
        let (slots, budget) = (j.slots, j.budget_ms);
        let admit = if want_direct && direct_room {
            self.tracker.add_push(id, slots, budget, reach);
            Admit::Push(id)
        } else if self.tracker.add_p2p(id, slots, budget, reach) {
            Admit::P2p(id)
        } else if direct_room || self.tracker.free_edge_room(id) {
            // No parent it can link with has room (e.g. all NAT-ed): serve it directly rather
            // than not at all — in the place of a push peer that peers can feed, if need be.
            self.tracker.add_push(id, slots, budget, reach);
            Admit::Push(id)
        } else if sibling {
            self.stats.redirects += 1;
            if let Some(s) = self.last_seen.remove(&id) {
                self.offered_slots -= u64::from(s.offered);
            }
            return Admit::Redirect;
        } else {
            // Nowhere better to go: join the trees and wait for parents (or refocus room).
            self.tracker.add_waiting(id, slots, budget, reach);
            Admit::P2p(id)
        };
        match admit {
            Admit::Push(_) => self.stats.push_admits += 1,
            Admit::P2p(_) => self.stats.p2p_admits += 1,
            Admit::Redirect | Admit::Pending(_) => {}
        }
        if !j.reachable {
            // It can still be fed, but must never be chosen as a parent.
            self.tracker.mark_unreachable(id);
        }
        admit
    }

    /// `id` measured its NAT: a pending client is placed now (`Some`: where it went — a
    /// redirect means the caller sends it to a sibling); a placed one keeps its place, with only
    /// the feeds its NAT cannot take changed.
    pub fn measured(&mut self, id: PeerId, reach: Reach, sibling: bool) -> Option<Admit> {
        match self.pending.remove(&id) {
            Some(j) => Some(self.place(id, j, reach, sibling)),
            None => {
                self.tracker.set_reach(id, reach);
                None
            }
        }
    }

    /// Pending clients that waited [`AdmissionConfig::nat_wait`] for their NAT test at `now`
    /// (web pages cannot run one): the caller places them with what it knows.
    pub fn overdue(&self, now: Instant) -> Vec<PeerId> {
        let wait = self.cfg.nat_wait;
        self.pending.iter().filter(|(_, j)| now.saturating_duration_since(j.since) >= wait).map(|(&id, _)| id).collect()
    }

    /// Whether `id` waits for its NAT test before it is placed.
    pub fn is_pending(&self, id: PeerId) -> bool {
        self.pending.contains_key(&id)
    }

    /// A child could not connect to `id`: it parents nobody from now on, and offers nothing.
    pub fn mark_unreachable(&mut self, id: PeerId) {
        if let Some(s) = self.last_seen.get_mut(&id) {
            self.offered_slots -= u64::from(std::mem::take(&mut s.offered));
        }
        self.tracker.mark_unreachable(id);
    }

    /// Any message from the client proves it is there.
    pub fn heard(&mut self, now: Instant, id: PeerId) {
        if let Some(s) = self.last_seen.get_mut(&id) {
            s.at = now;
        }
    }

    fn forget(&mut self, id: PeerId) -> bool {
        self.pending.remove(&id);
        let Some(s) = self.last_seen.remove(&id) else { return false };
        self.offered_slots -= u64::from(s.offered);
        self.tracker.remove(id);
        true
    }

    pub fn leave(&mut self, id: PeerId) {
        if self.forget(id) {
            self.stats.leaves += 1;
        }
    }

    /// The clients silent too long at `now`, for [`Admission::age_out`].
    pub fn expiring(&self, now: Instant) -> Vec<PeerId> {
        let timeout = self.cfg.session_timeout;
        self.last_seen
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.at) > timeout)
            .map(|(&id, _)| id)
            .collect()
    }

    /// Drops `gone` (see [`Admission::expiring`]) and lets the trees heal.
    pub fn age_out(&mut self, gone: &[PeerId]) {
        for &id in gone {
            if self.forget(id) {
                self.stats.aged_out += 1;
            }
        }
        self.tracker.tick();
    }

    /// Ages out silent clients and lets the trees heal; returns the clients dropped.
    #[cfg(test)]
    pub fn tick(&mut self, now: Instant) -> Vec<PeerId> {
        let gone = self.expiring(now);
        self.age_out(&gone);
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
            let admit = a.join(t0, None, true, true);
            let snap = a.snapshot();
            if stages.last() != Some(&snap.stage) {
                stages.push(snap.stage);
            }
            let nc = snap.nc;
            match p0 {
                0..=100 => assert_eq!((admit, nc), (Admit::Push(PeerId(u64::from(p0))), p0), "stage 1 at {p0}"),
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
        assert_eq!(a.thresholds().stage(1001), Stage::Four);
        let st = a.snapshot();
        assert_eq!(st.tree.unfed, 0, "every P2P client got all its parents");
        assert_eq!((st.stats.push_admits, st.stats.p2p_admits, st.stats.redirects), (500, 500, 300));
    }

    #[test]
    fn new_parameters_apply_to_the_running_swarm() {
        let mut a = paper_edge();
        let t0 = Instant::now();
        for _ in 0..150 {
            a.join(t0, None, true, true);
        }
        assert_eq!(a.snapshot().stage, Stage::Two);
        assert!(matches!(a.join(t0, None, true, true), Admit::P2p(_)));
        // The operator raises N1c past P0 (and doubles the edge's bandwidth): stage 1 again.
        let cfg = AdmissionConfig { n1c: 400, nc_star: 1000, ..a.config().clone() };
        a.reconfigure(AdmissionConfig { substreams: 9, ..cfg });
        assert_eq!(a.snapshot().stage, Stage::One);
        assert!(matches!(a.join(t0, None, true, true), Admit::Push(_)));
        assert_eq!(a.config().substreams, paper_edge().config().substreams, "the tree's shape is kept");
        assert_eq!(a.tracker().edge_room(), 1000 * 4 - a.snapshot().tree.edge_substreams);
        // And down again: stage 4 starts at once.
        a.reconfigure(AdmissionConfig { n1c: 10, nc_star: 20, ..a.config().clone() });
        assert_eq!(a.join(t0, None, true, true), Admit::Redirect);
    }

    #[test]
    fn without_a_sibling_stage_four_stays_p2p_and_never_exceeds_nc_star() {
        let mut a = paper_edge();
        let t0 = Instant::now();
        for _ in 0..1100 {
            let admit = a.join(t0, None, true, false);
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
        let ids: Vec<Admit> = (0..6).map(|_| a.join(t0, None, true, false)).collect();
        assert!(matches!(ids[0], Admit::Push(_)) && matches!(ids[1], Admit::Push(_)));
        assert!(matches!(ids[2], Admit::P2p(_)));
        a.drain_changes();
        // Everyone but client 1 keeps talking.
        let later = t0 + Duration::from_secs(10);
        for id in [2, 3, 4, 5, 6].map(PeerId) {
            a.heard(later, id);
        }
        assert!(a.tick(later).is_empty());
        let gone = a.tick(t0 + Duration::from_secs(16));
        assert_eq!(gone, vec![PeerId(1)]);
        assert_eq!(a.p0(), 5);
        assert_eq!(a.snapshot().stats.aged_out, 1);
        assert!(a.drain_changes().iter().all(|c| c.client != PeerId(1)));
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
            assert!(matches!(a.join(t0, None, true, false), Admit::Push(_)));
        }
        assert_eq!(a.join(t0, None, true, false), Admit::Redirect);
        assert_eq!(a.p0(), 3);
    }

    /// The P0 at which the first client is redirected, and the stage then; `client(p0)` says
    /// what each joining client offers.
    fn first_redirect(cfg: AdmissionConfig, client: impl Fn(u32) -> (Option<u32>, bool)) -> (u32, Stage) {
        let mut a = Admission::new(cfg);
        let t0 = Instant::now();
        for p0 in 1..=2_000 {
            let (kbps, reachable) = client(p0);
            if a.join(t0, kbps, reachable, true) == Admit::Redirect {
                return (p0, a.thresholds().stage(p0));
            }
        }
        panic!("nobody was redirected");
    }

    #[test]
    fn stage_four_comes_earlier_when_clients_offer_less_than_alpha() {
        let cfg = || AdmissionConfig { model: no_churn(1.5), ..AdmissionConfig::paper() };
        // Clients offering the full cap: α = 1.5 as configured, N*c/S = 500 × 2.5.
        assert_eq!(first_redirect(cfg(), |_| (None, true)), (1_251, Stage::Four));
        // Half the stream each (250 reported, 80 % given out): α = 0.5, N*c/S = 750.
        assert_eq!(first_redirect(cfg(), |_| (Some(250), true)), (751, Stage::Four));
        // Nobody can be connected to: no P2P capacity at all, so past N*c.
        assert_eq!(first_redirect(cfg(), |_| (None, false)), (501, Stage::Four));
        // Every third client unreachable: α = 1.0, N*c/S = 1000.
        assert_eq!(first_redirect(cfg(), |p0| (None, p0 % 3 != 0)), (1_001, Stage::Four));
        // With the configured α kept, full trees still send clients away at the same P0, but the
        // edge believes it is in stage 3 (and without a sibling would keep admitting to P2P).
        let fixed = AdmissionConfig { alpha_from_clients: false, ..cfg() };
        assert_eq!(first_redirect(fixed, |_| (Some(250), true)), (751, Stage::Three));
    }

    #[test]
    fn offered_upload_follows_leaves_and_unreachable_parents() {
        let mut a = Admission::new(AdmissionConfig { model: no_churn(1.5), ..AdmissionConfig::paper() });
        let t0 = Instant::now();
        for _ in 0..40 {
            a.join(t0, None, true, false);
        }
        assert!((a.alpha() - 1.5).abs() < 1e-9);
        for id in (1..=20).map(PeerId) {
            a.mark_unreachable(id);
        }
        assert!((a.alpha() - 0.75).abs() < 1e-9, "{}", a.alpha());
        for id in (1..=10).map(PeerId) {
            a.leave(id);
        }
        assert!((a.alpha() - 1.0).abs() < 1e-9, "20 of 30 offer 1.5: {}", a.alpha());
        assert!((a.snapshot().thresholds.alpha - 1.0).abs() < 1e-9);
    }
}
