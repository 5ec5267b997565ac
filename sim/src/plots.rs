//! The paper's figures redrawn from a run, as small self-contained SVG files (a hand-rolled chart:
//! axes, ticks, lines or points, a legend — no plotting crate, no fonts to ship).

use std::fmt::Write as _;
use std::path::Path;

use livesky_edge_core::model::{ModelParams, Thresholds, scaling_factor, scaling_factor_with_churn};

use crate::domain::{MinuteRow, Session};
use crate::report;
use crate::scenario::Scenario;

const W: f64 = 640.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;
const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

/// One series: a name, its points, and whether to draw it as a line (else as dots).
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub line: bool,
}

impl Series {
    fn line(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { name: name.into(), points, line: true }
    }
    fn dots(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { name: name.into(), points, line: false }
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A "nice" tick step for a range.
fn step(span: f64) -> f64 {
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    mag * if n < 1.5 {
        1.0
    } else if n < 3.5 {
        2.0
    } else if n < 7.5 {
        5.0
    } else {
        10.0
    }
}

pub fn chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let pts = series.iter().flat_map(|s| s.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, 0.0f64, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y1) = (0.0, 1.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        y1 = y0 + 1.0;
    }
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| TOP + ph - (y - y0) / (y1 - y0) * ph;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
         <text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">{}</text>\n",
        W / 2.0,
        esc(title),
        LEFT + pw / 2.0,
        H - 12.0,
        esc(x_label),
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        esc(y_label)
    );
    let _ =
        writeln!(s, "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#444\"/>");
    for (lo, hi, horizontal) in [(x0, x1, true), (y0, y1, false)] {
        let st = step(hi - lo);
        let mut v = (lo / st).ceil() * st;
        while v <= hi + st * 1e-9 {
            let label = if st >= 1.0 { format!("{v:.0}") } else { format!("{v:.2}") };
            if horizontal {
                let x = sx(v);
                let _ = writeln!(
                    s,
                    "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{TOP}\" stroke=\"#eee\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
                    TOP + ph,
                    TOP + ph + 16.0
                );
            } else {
                let y = sy(v);
                let _ = writeln!(
                    s,
                    "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
                    LEFT + pw,
                    LEFT - 6.0,
                    y + 4.0
                );
            }
            v += st;
        }
    }
    for (i, ser) in series.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let finite = ser.points.iter().filter(|(x, y)| x.is_finite() && y.is_finite());
        if ser.line {
            let path: Vec<String> = finite.map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
            let _ = writeln!(
                s,
                "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>",
                path.join(" ")
            );
        } else {
            // Thousands of edge-minutes: every n-th point keeps the picture and the file small.
            let every = (ser.points.len() / 1500).max(1);
            for &(x, y) in finite.step_by(every) {
                let _ = writeln!(
                    s,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{c}\" fill-opacity=\"0.6\"/>",
                    sx(x),
                    sy(y)
                );
            }
        }
        let ly = TOP + 14.0 + 16.0 * i as f64;
        let _ = writeln!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"12\" height=\"4\" fill=\"{c}\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            LEFT + 10.0,
            ly - 4.0,
            LEFT + 28.0,
            ly,
            esc(&ser.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Empirical CDF points of `v`.
fn cdf(mut v: Vec<f64>) -> Vec<(f64, f64)> {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    let n = v.len().max(1) as f64;
    // At most ~400 points: the SVG stays small.
    let every = (v.len() / 400).max(1);
    v.iter()
        .enumerate()
        .filter(|(i, _)| i % every == 0 || *i + 1 == v.len())
        .map(|(i, &x)| (x, (i + 1) as f64 / n))
        .collect()
}

/// Writes the figures into `dir`; returns their file names.
pub fn write_all(
    dir: &Path,
    sc: &Scenario,
    minutes: &[MinuteRow],
    sessions: &[Session],
) -> std::io::Result<Vec<String>> {
    let mut files = Vec::new();
    let mut put = |name: &str, svg: String| -> std::io::Result<()> {
        std::fs::write(dir.join(name), svg)?;
        files.push(name.to_string());
        Ok(())
    };
    let e = &sc.edges;
    let nc_star = sc.nc_star();

    // Fig. 7: Nc against P0 at the busiest edge, with the model's curves for K' = 1, 2, 3.
    let busiest = minutes.iter().max_by_key(|r| (r.p0, std::cmp::Reverse(r.edge))).map_or(0, |r| r.edge);
    let seen: Vec<(f64, f64)> =
        minutes.iter().filter(|r| r.edge == busiest).map(|r| (f64::from(r.p0), f64::from(r.nc))).collect();
    let p_max = seen.iter().map(|p| p.0).fold(f64::from(e.n1c) * 2.0, f64::max);
    let mut series = vec![Series::dots(format!("edge {busiest}, per minute"), seen)];
    for k in 1..=3 {
        let t = Thresholds::new(
            e.n1c,
            nc_star,
            ModelParams { alpha: e.alpha, k_prime: k, lambda: e.lambda, mu: e.mu },
            1.0,
        );
        let curve = (0..=100)
            .map(|i| {
                let p = p_max * f64::from(i) / 100.0;
                let nc = if p <= f64::from(e.n1c) {
                    p
                } else if p <= t.stage3_above {
                    f64::from(e.n1c)
                } else {
                    (p * t.s).min(f64::from(nc_star))
                };
                (p, nc)
            })
            .collect();
        series.push(Series::line(format!("model, K' = {k}"), curve));
    }
    put(
        "fig7_nc_vs_p0.svg",
        chart("Adaptive scale control at the busiest edge (Fig. 7)", "P0 (clients)", "Nc (push clients)", &series),
    )?;

    // Fig. 2: S against α for several K', and against K' for several α (no churn / with churn).
    let mut series = Vec::new();
    for k in [1u32, 2, 3, 4] {
        series.push(Series::line(
            format!("K' = {k}"),
            (1..=30)
                .map(|i| {
                    let a = f64::from(i) * 0.1;
                    (a, scaling_factor(a, k))
                })
                .collect(),
        ));
    }
    put("fig2_s_alpha.svg", chart("S(α) without churn (Fig. 2a)", "α (upload / stream rate)", "S = Nc / P0", &series))?;
    let mut series = Vec::new();
    for a in [1.0, 1.5, 2.0] {
        series.push(Series::line(
            format!("α = {a}, λ = {}, μ = {}", e.lambda, e.mu),
            (1..=6)
                .map(|k| {
                    (
                        f64::from(k),
                        scaling_factor_with_churn(ModelParams { alpha: a, k_prime: k, lambda: e.lambda, mu: e.mu }),
                    )
                })
                .collect(),
        ));
    }
    put("fig2_s_kprime.svg", chart("S(K') with churn (Fig. 2b)", "K' (P2P levels)", "S = Nc / P0", &series))?;

    // Fig. 8/9: rebuffering rate against join rate, per edge-minute.
    let pts: Vec<(f64, f64)> = minutes
        .iter()
        .filter(|r| r.active > 0 && r.p0 > 0)
        .map(|r| (f64::from(r.joins) / f64::from(r.p0), f64::from(r.stalled_clients) / f64::from(r.active)))
        .collect();
    put(
        "fig8_rebuffering_vs_joins.svg",
        chart(
            "Rebuffering rate against join rate (Fig. 8/9)",
            "joins per minute / P0",
            "clients stalling / clients",
            &[Series::dots("edge-minutes", pts)],
        ),
    )?;

    // Fig. 10: Q1 per session and Q2 per edge-minute.
    let (q1, q2) = (report::session_q1(sessions), report::minute_q2(minutes));
    put(
        "fig10_q1_q2_cdf.svg",
        chart(
            "Q1 (per session) and Q2 (per edge-minute) (Fig. 10)",
            "quality",
            "CDF",
            &[Series::line("Q1", cdf(q1)), Series::line("Q2", cdf(q2))],
        ),
    )?;

    // Startup delay.
    let st: Vec<f64> = sessions.iter().filter_map(|s| s.startup_ms).map(|m| m as f64 / 1000.0).collect();
    put(
        "startup_cdf.svg",
        chart("Startup delay (§4.4)", "seconds from request to playback", "CDF", &[Series::line("startup", cdf(st))]),
    )?;

    // P2P share per edge, edges sorted by their peak P0.
    let edges = minutes.iter().map(|r| r.edge).max().map_or(0, |m| m + 1);
    let mut per: Vec<(u32, f64)> = (0..edges)
        .map(|ed| {
            let rows = minutes.iter().filter(|r| r.edge == ed);
            let (p, c, peak) =
                rows.fold((0u64, 0u64, 0u32), |(p, c, m), r| (p + r.p2p_bytes, c + r.cdn_bytes, m.max(r.p0)));
            (peak, proto::quality::p2p_share(p as f64, c as f64))
        })
        .collect();
    per.sort_by_key(|x| x.0);
    let pts = per.iter().map(|&(peak, share)| (f64::from(peak), share)).collect();
    put(
        "p2p_share_per_edge.svg",
        chart("P2P share of delivered bytes per edge", "edge's peak P0", "P2P share", &[Series::dots("edges", pts)]),
    )?;

    // Fig. 13: upload of NAT-ed and public clients (kbit/s over their session).
    let rate = |s: &Session| s.up_bytes as f64 * 8.0 / 1000.0 / s.watched_s.max(1.0);
    let nat: Vec<f64> = sessions.iter().filter(|s| s.natted && s.watched_s >= 60.0).map(rate).collect();
    let public: Vec<f64> = sessions.iter().filter(|s| !s.natted && s.watched_s >= 60.0).map(rate).collect();
    put(
        "fig13_nat_upload_cdf.svg",
        chart(
            "Upload of NAT-ed and public clients (Fig. 13)",
            "upload, kbit/s",
            "CDF",
            &[Series::line("NAT-ed", cdf(nat)), Series::line("public", cdf(public))],
        ),
    )?;

    // Fig. 12: refocus events against leave rate, per edge-minute.
    let mut pts = Vec::new();
    let mut last: Vec<u64> = vec![0; edges];
    for r in minutes {
        let d = r.refocus.saturating_sub(last[r.edge]);
        last[r.edge] = r.refocus;
        if r.p0 > 0 {
            pts.push((f64::from(r.leaves) / f64::from(r.p0), d as f64 / f64::from(r.p0)));
        }
    }
    put(
        "fig12_refocus_vs_leaves.svg",
        chart(
            "Refocus on the edge against leave rate (Fig. 12)",
            "leaves per minute / P0",
            "refocus events per minute / P0",
            &[Series::dots("edge-minutes", pts)],
        ),
    )?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_well_formed_svg_with_every_series() {
        let svg = chart(
            "t <1>",
            "x",
            "y",
            &[Series::line("a", vec![(0.0, 0.0), (1.0, 2.0)]), Series::dots("b", vec![(0.5, f64::NAN), (0.5, 1.0)])],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("t &lt;1&gt;") && svg.contains("<polyline") && svg.matches("<circle").count() == 1);
        assert_eq!(step(10.0), 2.0);
        assert_eq!(cdf(vec![3.0, 1.0, 2.0]), [(1.0, 1.0 / 3.0), (2.0, 2.0 / 3.0), (3.0, 1.0)]);
    }
}
