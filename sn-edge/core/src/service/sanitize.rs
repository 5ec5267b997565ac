//! What a client reports is clamped to what its interval could hold before anything is summed:
//! the interval to the time the edge itself saw pass since the client's last report, playing
//! and stalled time to the interval, byte counts to a generous multiple of the stream rate
//! (and of the upload cap) over it, startup to ten minutes. One client once wrapped
//! `bytes_from_edge` and showed `stalls_per_min: 21818280424.9` on the NOC; now the worst a
//! client can do is report an implausible-but-bounded interval, and the edge counts it.

use std::time::{Duration, Instant};

use proto::peer::{PeerId, PeerReport};

use super::Service;

/// Longest interval believed in one report (clients report every 10 s by default).
pub(super) const MAX_INTERVAL_MS: u32 = 600_000;
/// Added to the edge's own clock: the client's timer and the network disagree a little.
const CLOCK_SLACK_MS: u64 = 2_000;
/// Longest startup delay believed.
const MAX_STARTUP_MS: u32 = 600_000;
/// Largest feed delay believed.
const MAX_DELAY_MS: u32 = 60_000;

/// What bounds a report: the stream's rate and the largest start burst.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    pub media_kbps: u32,
    pub upload_cap_factor: f64,
    pub max_burst_ms: u32,
}

impl Bounds {
    /// Most bytes a client can take in `interval_ms` from one source: four times the stream's
    /// rate (catch-up after a stall or a move) plus twice the start burst (`max_burst_ms` is 0
    /// after a client's first report: the burst comes once).
    fn down(&self, interval_ms: u64) -> u64 {
        let rate = u64::from(self.media_kbps) * 125;
        rate * interval_ms * 4 / 1000 + rate * u64::from(self.max_burst_ms) * 2 / 1000
    }

    /// Most bytes a client can send in `interval_ms`: twice its upload cap, plus 1 MiB.
    fn up(&self, interval_ms: u64) -> u64 {
        let cap = u64::from(self.media_kbps) as f64 * 125.0 * self.upload_cap_factor.max(1.0);
        (cap * interval_ms as f64 * 2.0 / 1000.0) as u64 + (1 << 20)
    }
}

/// Clamps `r` in place; the fields that had to be cut (empty for an honest report). `seen` is
/// the time since the client's previous report (or its join) on the edge's clock.
pub(super) fn clamp(r: &mut PeerReport, seen: Duration, b: Bounds) -> Vec<&'static str> {
    let before = r.clone();
    let seen_ms = (seen.as_millis() as u64).saturating_add(CLOCK_SLACK_MS);
    r.interval_ms = r.interval_ms.min(MAX_INTERVAL_MS).min(seen_ms.min(u64::from(u32::MAX)) as u32);
    let interval = r.interval_ms;
    r.stalled_ms = r.stalled_ms.min(interval);
    r.played_ms = r.played_ms.min(interval - r.stalled_ms);
    // A stall lasts until the buffer refills: no more than one a second.
    r.stalls = r.stalls.min(interval / 1000 + 1);
    let (down, up) = (b.down(u64::from(interval)), b.up(u64::from(interval)));
    r.bytes_from_edge = r.bytes_from_edge.min(down);
    r.bytes_from_peers = r.bytes_from_peers.min(down);
    r.bytes_up = r.bytes_up.min(up);
    for (_, bytes) in &mut r.from_peers {
        *bytes = (*bytes).min(down);
    }
    r.startup_ms = r.startup_ms.map(|s| s.min(MAX_STARTUP_MS));
    // A feed a minute late is as late as the tracker needs to know.
    r.delay_ms = r.delay_ms.map(|d| d.min(MAX_DELAY_MS));
    // Latency counts are played chunks: no more than 100 a second (60 fps with room to spare).
    let most = u64::from(interval) / 10 + 1;
    let total = r.latency.total();
    if total > most {
        for c in &mut r.latency.counts {
            *c = (u128::from(*c) * u128::from(most) / u128::from(total)) as u64;
        }
    }
    let mut cut = Vec::new();
    let fields: [(&'static str, bool); 11] = [
        ("interval_ms", r.interval_ms != before.interval_ms),
        ("stalled_ms", r.stalled_ms != before.stalled_ms),
        ("played_ms", r.played_ms != before.played_ms),
        ("stalls", r.stalls != before.stalls),
        ("bytes_from_edge", r.bytes_from_edge != before.bytes_from_edge),
        ("bytes_from_peers", r.bytes_from_peers != before.bytes_from_peers),
        ("bytes_up", r.bytes_up != before.bytes_up),
        ("from_peers", r.from_peers != before.from_peers),
        ("startup_ms", r.startup_ms != before.startup_ms),
        ("latency", r.latency != before.latency),
        ("delay_ms", r.delay_ms != before.delay_ms),
    ];
    cut.extend(fields.iter().filter(|(_, changed)| *changed).map(|(name, _)| *name));
    cut
}

impl Service {
    /// Clamps a report to what its interval could hold (on the edge's clock), and keeps only
    /// confirmations of senders the client was introduced to.
    pub(super) fn sanitize_report(&mut self, now: Instant, peer: PeerId, r: &mut PeerReport) {
        let Some(c) = self.clients.get_mut(&peer) else { return };
        let seen = now.saturating_duration_since(c.last_report);
        c.last_report = now;
        let bounds = Bounds {
            media_kbps: self.cfg.admission.media_kbps,
            upload_cap_factor: self.cfg.admission.upload_cap_factor,
            max_burst_ms: if c.reported { 0 } else { self.cfg.max_burst_ms },
        };
        c.reported = true;
        let cut = clamp(r, seen, bounds);
        if !cut.is_empty() {
            self.stats.reports_clamped += 1;
            tracing::debug!(channel = %self.cfg.channel, %peer, ?cut, "report beyond what its interval holds; clamped");
        }
        let before = r.from_peers.len();
        let links = &self.links;
        r.from_peers.retain(|(sender, _)| links.linked(peer, *sender));
        self.stats.confirmations_refused += (before - r.from_peers.len()) as u64;
    }

    pub(super) fn add_report(&mut self, peer: PeerId, r: PeerReport) {
        if self.clients.get(&peer).is_some_and(|c| !c.page) {
            let from_pages: u64 = r
                .from_peers
                .iter()
                .filter(|(sender, _)| self.clients.get(sender).is_some_and(|c| c.page))
                .map(|(_, bytes)| *bytes)
                .sum();
            self.stats.page_to_native_bytes = self.stats.page_to_native_bytes.saturating_add(from_pages);
        }
        let t = &mut self.stats.reported;
        // Q2 per client-minute, whatever the report interval: a minute counts once filled.
        if let Some(c) = self.clients.get_mut(&peer) {
            c.minute_ms = c.minute_ms.saturating_add(r.interval_ms);
            c.minute_stalled |= r.stalls > 0;
            let rate = r.bytes_from_peers.saturating_mul(1000) / u64::from(r.interval_ms.max(1));
            self.stats.p2p_bytes_per_sec = self.stats.p2p_bytes_per_sec.saturating_sub(c.p2p_rate) + rate;
            c.p2p_rate = rate;
            if c.minute_ms >= 60_000 {
                t.reports += 1;
                t.stalled_reports += u64::from(c.minute_stalled);
                c.minute_ms = (c.minute_ms - 60_000).min(59_999);
                c.minute_stalled = false;
            }
        }
        t.played_ms = t.played_ms.saturating_add(u64::from(r.played_ms));
        t.stalled_ms = t.stalled_ms.saturating_add(u64::from(r.stalled_ms));
        t.stalls = t.stalls.saturating_add(u64::from(r.stalls));
        t.bytes_from_edge = t.bytes_from_edge.saturating_add(r.bytes_from_edge);
        t.bytes_from_peers = t.bytes_from_peers.saturating_add(r.bytes_from_peers);
        t.bytes_up = t.bytes_up.saturating_add(r.bytes_up);
        t.latency.merge(&r.latency);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Bounds = Bounds { media_kbps: 400, upload_cap_factor: 1.5, max_burst_ms: 15_000 };

    #[test]
    fn an_honest_minute_passes_untouched() {
        let mut r = PeerReport {
            interval_ms: 60_000,
            played_ms: 59_000,
            stalled_ms: 1_000,
            stalls: 1,
            bytes_from_edge: 1_000_000,
            bytes_from_peers: 2_000_000,
            bytes_up: 3_000_000,
            startup_ms: Some(800),
            from_peers: vec![(PeerId(7), 2_000_000)],
            latency: proto::quality::LatencyHistogram::from_counts(&[0, 0, 1_400]).unwrap_or_default(),
            delay_ms: Some(900),
        };
        let honest = r.clone();
        assert!(clamp(&mut r, Duration::from_millis(60_100), B).is_empty());
        assert_eq!(r, honest);
    }

    #[test]
    fn wrapped_and_inflated_fields_are_cut_to_what_the_interval_holds() {
        let mut r = PeerReport {
            interval_ms: u32::MAX,
            played_ms: u32::MAX,
            stalled_ms: u32::MAX,
            stalls: u32::MAX,
            bytes_from_edge: u64::MAX,
            bytes_from_peers: u64::MAX,
            bytes_up: 60 << 30,
            startup_ms: Some(u32::MAX - 1),
            from_peers: vec![(PeerId(7), u64::MAX)],
            latency: proto::quality::LatencyHistogram::from_counts(&[u64::from(u32::MAX); 2]).unwrap_or_default(),
            delay_ms: Some(u32::MAX - 1),
        };
        assert_eq!(
            clamp(&mut r, Duration::from_secs(10), B),
            [
                "interval_ms",
                "stalled_ms",
                "played_ms",
                "stalls",
                "bytes_from_edge",
                "bytes_from_peers",
                "bytes_up",
                "from_peers",
                "startup_ms",
                "latency",
                "delay_ms"
            ]
        );
        assert_eq!(r.interval_ms, 12_000, "the edge saw 10 s pass (+2 s slack)");
        assert_eq!((r.stalled_ms, r.played_ms), (12_000, 0));
        assert_eq!(r.stalls, 13);
        // 400 kbit/s = 50 kB/s: 4 × 12 s + 2 × 15 s burst.
        assert_eq!(r.bytes_from_edge, 50_000 * 48 + 50_000 * 30);
        assert_eq!(r.from_peers[0].1, r.bytes_from_peers);
        assert!(r.bytes_up < 3 << 20, "{}", r.bytes_up);
        assert_eq!(r.startup_ms, Some(MAX_STARTUP_MS));
        assert_eq!(r.delay_ms, Some(MAX_DELAY_MS));
        assert!(r.latency.total() <= 1_201, "12 s hold at most 1,200 chunks: {}", r.latency.total());
        assert_eq!(r.latency.counts[0], r.latency.counts[1], "cut in proportion");
    }
}
