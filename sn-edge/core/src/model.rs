//! The adaptive scaling model of LiveSky §3.1: the fraction S = Nc/P0 of an edge's clients that must
//! be served directly when the P2P overlay may be at most K' levels deep, peers upload α of the
//! stream rate on average, and λ / μ of the peers join / leave per interval; and the four stage
//! thresholds an edge derives from it.

/// Parameters of eq. (4) and (7).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelParams {
    /// α: mean fraction of the full stream rate a supplying peer uploads.
    pub alpha: f64,
    /// K': maximum number of P2P levels (the delay bound).
    pub k_prime: u32,
    /// λ: joins per interval as a fraction of current peers.
    pub lambda: f64,
    /// μ: leaves per interval as a fraction of current peers.
    pub mu: f64,
}

impl ModelParams {
    /// The paper's deployment, which the admission settings default to: α = 1.5 (the 150 %
    /// upload cap), K' = 2, λ = 3.6 %, μ = 2.4 % per minute.
    pub fn paper() -> Self {
        Self::from(&proto::config::AdmissionSettings::default())
    }
}

impl From<&proto::config::AdmissionSettings> for ModelParams {
    fn from(a: &proto::config::AdmissionSettings) -> Self {
        Self { alpha: a.alpha, k_prime: a.k_prime, lambda: a.lambda, mu: a.mu }
    }
}

/// α^K' − 1 over α − 1, i.e. 1 + α + … + α^(K'−1); equals K' at α = 1. Written as a sum so that α
/// close to 1 does not lose precision in the division.
fn geometric(alpha: f64, k: u32) -> f64 {
    (0..k).map(|i| alpha.powi(i as i32)).sum()
}

/// S without churn, eq. (4): (1 − α)/(1 − α^K'), and 1/K' at α = 1.
pub fn scaling_factor(alpha: f64, k_prime: u32) -> f64 {
    1.0 / geometric(alpha, k_prime.max(1))
}

/// S with churn, eq. (7): the no-churn S times (1 + λ − μ)^K' / (1 − μ)^(K'−1).
pub fn scaling_factor_with_churn(p: ModelParams) -> f64 {
    let k = p.k_prime.max(1);
    let churn = (1.0 + p.lambda - p.mu).powi(k as i32) / (1.0 - p.mu).powi(k as i32 - 1);
    scaling_factor(p.alpha, k) * churn
}

/// The four stages of an edge (§3.1, Fig. 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// P0 ≤ N1c: every client is served directly.
    One = 1,
    /// N1c < P0 ≤ N1c/S: new clients are served by the first N1c peers (K' = 1 → 2).
    Two = 2,
    /// N1c/S < P0 ≤ N*c/S: half the new clients are served directly, the rest by peers.
    Three = 3,
    /// P0 > N*c/S: the edge is at capacity N*c; new clients go to peers, past the bound to other edges.
    Four = 4,
}

/// Stage boundaries for one edge and channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// N1c: clients served directly before P2P starts.
    pub n1c: u32,
    /// N*c: the edge's capacity in streams (edge bandwidth / media rate).
    pub nc_star: u32,
    /// α the bounds were computed with.
    pub alpha: f64,
    /// S used for the bounds (clamped to (0, 1]).
    pub s: f64,
    /// Stage 3 starts above this P0 (N1c/S × margin).
    pub stage3_above: f64,
    /// Stage 4 starts above this P0 (N*c/S × margin).
    pub stage4_above: f64,
}

impl Thresholds {
    /// `margin` ≥ 1 sets the bounds slightly above the analytical ones, as the paper does to
    /// absorb the extra load of rebuffering peers.
    pub fn new(n1c: u32, nc_star: u32, params: ModelParams, margin: f64) -> Self {
        let s = scaling_factor_with_churn(params).clamp(1e-6, 1.0);
        Self {
            n1c,
            nc_star,
            alpha: params.alpha,
            s,
            stage3_above: f64::from(n1c) / s * margin,
            stage4_above: f64::from(nc_star) / s * margin,
        }
    }

    /// N*c from the edge's bandwidth and the media rate.
    pub fn nc_star_for(edge_kbps: u64, media_kbps: u32) -> u32 {
        (edge_kbps / u64::from(media_kbps.max(1))).min(u64::from(u32::MAX)) as u32
    }

    pub fn stage(&self, p0: u32) -> Stage {
        let p = f64::from(p0);
        if p0 <= self.n1c {
            Stage::One
        } else if p <= self.stage3_above {
            Stage::Two
        } else if p <= self.stage4_above {
            Stage::Three
        } else {
            Stage::Four
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 5e-5
    }

    #[test]
    fn pins_the_papers_worked_values() {
        assert!(close(scaling_factor(1.0, 2), 0.5));
        let churn = ModelParams { alpha: 1.0, k_prime: 2, lambda: 0.036, mu: 0.024 };
        assert!(close(scaling_factor_with_churn(churn), 0.5247), "{}", scaling_factor_with_churn(churn));
        assert!(close(scaling_factor(1.5, 2), 0.4));
        // Eq. (4) in its closed form for α ≠ 1.
        for (a, k) in [(0.5, 3), (1.5, 4), (2.0, 2), (0.999, 5)] {
            let closed = (1.0 - a) / (1.0 - f64::powi(a, k as i32));
            assert!((scaling_factor(a, k) - closed).abs() < 1e-9, "α={a} K'={k}");
        }
        // Without churn, eq. (7) is eq. (4).
        let p = ModelParams { alpha: 1.5, k_prime: 3, lambda: 0.0, mu: 0.0 };
        assert!(close(scaling_factor_with_churn(p), scaling_factor(1.5, 3)));
    }

    #[test]
    fn figure_2_shapes() {
        let with =
            |alpha: f64, k| scaling_factor_with_churn(ModelParams { alpha, k_prime: k, lambda: 0.036, mu: 0.024 });
        // Fig. 2(a): more upload, fewer clients served by the CDN.
        for k in 1..=4 {
            let s: Vec<f64> = [0.5, 1.0, 1.5, 2.0].iter().map(|&a| with(a, k)).collect();
            assert!(s.windows(2).all(|w| w[1] < w[0]) || k == 1, "K'={k}: {s:?}");
        }
        // Fig. 2(b): for α < 1, S first falls then rises as K' grows.
        let s: Vec<f64> = (1..=10).map(|k| with(0.5, k)).collect();
        let min = s.iter().copied().enumerate().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap().0;
        assert!(min > 0 && min < s.len() - 1, "minimum inside the range: {s:?}");
        assert!(s[..=min].windows(2).all(|w| w[1] < w[0]) && s[min..].windows(2).all(|w| w[1] > w[0]), "{s:?}");
        // For α > 1, deeper trees keep reducing S.
        let s: Vec<f64> = (1..=8).map(|k| with(2.0, k)).collect();
        assert!(s.windows(2).all(|w| w[1] < w[0]), "{s:?}");
        // Churn raises the share the CDN must serve.
        assert!(with(1.0, 2) > scaling_factor(1.0, 2));
    }

    #[test]
    fn stages_of_the_paper_deployment() {
        // N1c = 100, 200 Mbit/s at 400 kbit/s → N*c = 500; α = 1, K' = 2 without churn: S = 0.5.
        let nc_star = Thresholds::nc_star_for(200_000, 400);
        assert_eq!(nc_star, 500);
        let t = Thresholds::new(100, nc_star, ModelParams { alpha: 1.0, k_prime: 2, lambda: 0.0, mu: 0.0 }, 1.0);
        assert_eq!(t.stage(1), Stage::One);
        assert_eq!(t.stage(100), Stage::One);
        assert_eq!(t.stage(101), Stage::Two);
        assert_eq!(t.stage(200), Stage::Two);
        assert_eq!(t.stage(201), Stage::Three);
        assert_eq!(t.stage(1000), Stage::Three);
        assert_eq!(t.stage(1001), Stage::Four);
        // A margin moves the bounds up.
        let m = Thresholds::new(100, 500, ModelParams { alpha: 1.0, k_prime: 2, lambda: 0.0, mu: 0.0 }, 1.1);
        assert_eq!(m.stage(215), Stage::Two);
    }
}
