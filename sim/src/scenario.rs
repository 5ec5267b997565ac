//! Scenarios (TOML, `configs/scenarios/`): the event's audience curve, the CDN's edges and their
//! admission parameters, the clients' upload, NAT and leave behaviour, and the network's latency
//! and loss. Every field has the paper's value as its default where the paper gives one.

use std::path::Path;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Unreadable, or not a scenario's TOML: worded as every settings file's errors are.
    #[error(transparent)]
    File(#[from] proto::config::ConfigError),
    #[error("scenario {path}: `{key}` {problem}")]
    Invalid { path: String, key: &'static str, problem: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// Length of the replay.
    pub minutes: u32,
    #[serde(default)]
    pub stream: Stream,
    #[serde(default)]
    pub edges: Edges,
    pub clients: Clients,
    #[serde(default)]
    pub latency: Latency,
    /// LiveSky itself, or one of the baselines it is compared with.
    #[serde(default)]
    pub mode: Mode,
}

/// What system the scenario runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// LiveSky: edges admit in four stages, trees with mesh repair, the edge as fallback.
    #[default]
    Hybrid,
    /// Pure CDN: every client served by its edge; past the edge's capacity a client is refused.
    Cdn,
    /// Pure mesh P2P (CoolStreaming-like): the edge seeds a few clients, everyone else pulls
    /// chunks from neighbours' buffer maps; no start burst, no trees, no edge fallback.
    Mesh,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Hybrid => "LiveSky (hybrid)",
            Mode::Cdn => "pure CDN",
            Mode::Mesh => "pure mesh",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Stream {
    pub kbps: u32,
    /// K.
    pub substreams: u16,
    /// Media time one simulated chunk stands for. Real chunks are single frames (40 ms); an
    /// event of 145,000 viewers is only affordable with coarser ones. Peers' timing thresholds
    /// scale with it (a substream is late only after K chunks of silence).
    pub chunk_ms: u32,
    /// Chunks between keyframes.
    pub keyframe_every: u32,
}

impl Default for Stream {
    fn default() -> Self {
        Self { kbps: 400, substreams: 4, chunk_ms: 500, keyframe_every: 4 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Edges {
    pub districts: u16,
    pub isps: u8,
    /// Edges in each district for each ISP.
    pub per_district_isp: u32,
    pub capacity_mbps: u32,
    pub n1c: u32,
    pub k_prime: u32,
    pub alpha: f64,
    pub lambda: f64,
    pub mu: f64,
    pub upload_cap_factor: f64,
    /// Share of clients the GSLB sends to an edge of their own ISP.
    pub same_isp_share: f64,
    /// Audience weight of each district (hotspots first); missing entries weigh 1.
    pub district_weights: Vec<f64>,
    /// Zipf exponent of popularity among the edges of one district and ISP.
    pub skew: f64,
}

impl Default for Edges {
    /// The admission parameters default to a real edge's (the paper's deployment).
    fn default() -> Self {
        let a = proto::config::AdmissionSettings::default();
        Self {
            districts: 8,
            isps: 2,
            per_district_isp: 25,
            capacity_mbps: (a.capacity_kbps / 1000) as u32,
            n1c: a.n1c,
            k_prime: a.k_prime,
            alpha: a.alpha,
            lambda: a.lambda,
            mu: a.mu,
            upload_cap_factor: a.upload_cap_factor,
            same_isp_share: 0.8,
            district_weights: Vec::new(),
            skew: 0.8,
        }
    }
}

/// One class of client uplinks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadClass {
    pub share: f64,
    pub kbps: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clients {
    /// Arrivals per minute over the whole CDN at given minutes: `[[minute, rate], …]`,
    /// linearly interpolated (the flash crowd of Fig. 6 is a steep first segment).
    pub arrivals: Vec<(f64, f64)>,
    #[serde(default = "d_session")]
    pub session_mean_min: f64,
    #[serde(default = "d_buffer")]
    pub buffer_s: u32,
    pub upload: Vec<UploadClass>,
    /// Downlinks, same form (default: everyone 2 Mbit/s).
    #[serde(default = "d_download")]
    pub download: Vec<UploadClass>,
    /// Behind a NAT (the paper: over 90 %).
    #[serde(default = "d_nat")]
    pub nat_share: f64,
    /// Cannot accept peer connections at all (the paper: 37 % contributed nothing).
    #[serde(default = "d_unreachable")]
    pub unreachable_share: f64,
    /// Leave without a word (the paper: < 5 %).
    #[serde(default = "d_abrupt")]
    pub abrupt_share: f64,
    /// Players in low-latency mode (`livesky peer play --low-latency`): `buffer_s` is the
    /// target, playback catches up at a keyframe when it falls behind it.
    #[serde(default)]
    pub low_latency: bool,
}

impl Scenario {
    /// The P2P share the clients' uploads allow at most: what reachable clients can send (each
    /// capped at `upload_cap_factor` × the stream, as the edges cap it) over what every client
    /// plays. Unreachable clients accept no links, so they feed nobody.
    pub fn upload_ceiling(&self) -> f64 {
        let (stream, c) = (f64::from(self.stream.kbps), &self.clients);
        let cap = stream * self.edges.upload_cap_factor;
        let total: f64 = c.upload.iter().map(|u| u.share).sum();
        if total <= 0.0 || stream <= 0.0 {
            return 0.0;
        }
        let mean: f64 = c.upload.iter().map(|u| u.share / total * f64::from(u.kbps).min(cap)).sum();
        ((1.0 - c.unreachable_share) * mean / stream).min(1.0)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Latency {
    /// One-way delay between a client and an edge of its own ISP, and of the other ISP.
    pub edge_same_isp_ms: u32,
    pub edge_other_isp_ms: u32,
    pub peer_same_isp_ms: u32,
    pub peer_other_isp_ms: u32,
    /// Chunks lost on peer links.
    pub loss: f64,
    /// How long a peer takes to notice a neighbour that vanished.
    pub dead_link_ms: u32,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            edge_same_isp_ms: 15,
            edge_other_isp_ms: 45,
            peer_same_isp_ms: 25,
            peer_other_isp_ms: 70,
            loss: 0.005,
            dead_link_ms: 5_000,
        }
    }
}

fn d_seed() -> u64 {
    1
}
fn d_session() -> f64 {
    13.5
}
fn d_buffer() -> u32 {
    15
}
fn d_download() -> Vec<UploadClass> {
    vec![UploadClass { share: 1.0, kbps: 2_000 }]
}
fn d_nat() -> f64 {
    0.9
}
fn d_unreachable() -> f64 {
    0.37
}
fn d_abrupt() -> f64 {
    0.05
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let p = path.display().to_string();
        Self::parse(&proto::config::read_file(path)?, &p)
    }

    pub fn parse(text: &str, path: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = proto::config::parse_toml(text, path, "simulator scenario (TOML)")?;
        s.validate(path)?;
        Ok(s)
    }

    fn validate(&self, path: &str) -> Result<(), ScenarioError> {
        let bad = |key, problem: &str| Err(ScenarioError::Invalid { path: path.into(), key, problem: problem.into() });
        let share = |x: f64| (0.0..=1.0).contains(&x);
        if self.minutes == 0 || self.minutes > 24 * 60 {
            return bad("minutes", "must be 1..=1440");
        }
        if self.stream.kbps == 0 || !(1..=64).contains(&self.stream.substreams) {
            return bad("stream", "needs kbps > 0 and substreams 1..=64");
        }
        if !(40..=4_000).contains(&self.stream.chunk_ms) || self.stream.keyframe_every == 0 {
            return bad("stream.chunk_ms", "must be 40..=4000 ms, with keyframe_every ≥ 1");
        }
        if self.edges.districts == 0 || self.edges.isps == 0 || self.edges.per_district_isp == 0 {
            return bad("edges", "needs at least one district, ISP and edge");
        }
        if self.edges.k_prime == 0 || self.edges.alpha <= 0.0 || self.edges.capacity_mbps == 0 {
            return bad("edges", "needs k_prime ≥ 1, alpha > 0 and capacity_mbps > 0");
        }
        if !share(self.edges.same_isp_share) || self.edges.skew < 0.0 {
            return bad("edges.same_isp_share", "must be a share in [0, 1] (and skew ≥ 0)");
        }
        if self.clients.arrivals.is_empty() || self.clients.arrivals.iter().any(|&(m, r)| m < 0.0 || r < 0.0) {
            return bad("clients.arrivals", "needs [minute, rate] points with no negative values");
        }
        if self.clients.session_mean_min <= 0.0 {
            return bad("clients.session_mean_min", "must be > 0");
        }
        for (key, classes) in [("clients.upload", &self.clients.upload), ("clients.download", &self.clients.download)] {
            if classes.is_empty() || classes.iter().any(|u| u.share < 0.0 || u.kbps == 0) {
                return bad(key, "needs at least one class, each with share ≥ 0 and kbps > 0");
            }
        }
        let c = &self.clients;
        if !(share(c.nat_share) && share(c.unreachable_share) && share(c.abrupt_share) && share(self.latency.loss)) {
            return bad("clients", "nat_share, unreachable_share, abrupt_share and latency.loss are shares in [0, 1]");
        }
        Ok(())
    }

    /// A smaller event with the same per-edge load: fewer edges, proportionally fewer arrivals.
    pub fn scaled(mut self, scale: f64) -> Scenario {
        let before = f64::from(self.edges.per_district_isp);
        let kept = (before * scale).round().max(1.0);
        self.edges.per_district_isp = kept as u32;
        for a in &mut self.clients.arrivals {
            a.1 *= kept / before;
        }
        self
    }

    /// System-wide arrivals per minute at `minute`.
    pub fn arrival_rate(&self, minute: f64) -> f64 {
        let pts = &self.clients.arrivals;
        match pts.iter().position(|&(m, _)| m > minute) {
            Some(0) => pts[0].1,
            Some(i) => {
                let ((m0, r0), (m1, r1)) = (pts[i - 1], pts[i]);
                r0 + (r1 - r0) * (minute - m0) / (m1 - m0).max(1e-9)
            }
            None => pts.last().map_or(0.0, |p| p.1),
        }
    }

    /// Virtual time at which the run ends.
    pub fn end(&self) -> crate::engine::Micros {
        u64::from(self.minutes) * 60 * crate::engine::SECOND
    }

    /// N*c: streams an edge can serve (bandwidth / media rate).
    pub fn nc_star(&self) -> u32 {
        livesky_edge_core::model::Thresholds::nc_star_for(u64::from(self.edges.capacity_mbps) * 1000, self.stream.kbps)
    }

    pub fn edge_count(&self) -> usize {
        usize::from(self.edges.districts) * usize::from(self.edges.isps) * self.edges.per_district_isp as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "name = \"t\"\nminutes = 5\n[clients]\narrivals = [[0, 0], [2, 100], [5, 50]]\nupload = [{ share = 1.0, kbps = 600 }]\n";

    #[test]
    fn defaults_are_the_papers_and_arrivals_interpolate() {
        let s = Scenario::parse(MIN, "t.toml").unwrap();
        assert_eq!((s.edges.n1c, s.edges.k_prime, s.edges.capacity_mbps, s.stream.kbps), (100, 2, 200, 400));
        assert_eq!(s.clients.session_mean_min, 13.5);
        assert_eq!(s.arrival_rate(1.0), 50.0);
        assert_eq!(s.arrival_rate(3.5), 75.0);
        assert_eq!(s.arrival_rate(9.0), 50.0);
        assert_eq!(s.edge_count(), 400);
    }

    #[test]
    fn bad_scenarios_name_the_key() {
        let e = Scenario::parse(&MIN.replace("minutes = 5", "minutes = 0"), "t.toml").unwrap_err();
        assert!(e.to_string().contains("`minutes`"), "{e}");
        let e = Scenario::parse(&MIN.replace("share = 1.0", "share = -1.0"), "t.toml").unwrap_err();
        assert!(e.to_string().contains("clients.upload"), "{e}");
        let e = Scenario::parse(&format!("{MIN}bogus = 1\n"), "t.toml").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn scaling_keeps_the_load_per_edge() {
        let s = Scenario::parse(MIN, "t.toml").unwrap().scaled(0.1);
        assert_eq!(s.edges.per_district_isp, 3);
        // 3 edges instead of 25 per group: arrivals scale by 3/25.
        assert!((s.arrival_rate(2.0) - 100.0 * 3.0 / 25.0).abs() < 1e-9);
    }
}
