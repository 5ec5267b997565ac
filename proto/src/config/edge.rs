//! The edge's settings (`[node.edge]`): legacy viewers (HLS, LL-HLS, HTTP-TS pacing), the
//! client port and STUN, where the GSLB places the edge, and admission (LiveSky §3.1).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeSettings {
    /// HLS segments are cut at the first keyframe at least this long after the segment start.
    pub hls_segment_seconds: f64,
    /// Segments listed in the live playlist.
    pub hls_window: usize,
    /// Low-latency HLS (RFC 8216bis): segments are also published in parts of at most this
    /// long, cut at chunk boundaries, with blocking playlist reload and preload hints, so players
    /// sit about three parts behind live. Players that do not know LL-HLS read the same playlist
    /// as plain HLS. 0 turns it off.
    pub hls_part_seconds: f64,
    /// An HTTP-TS viewer further behind live than this skips ahead to the newest keyframe.
    pub max_viewer_lag_seconds: f64,
    /// A viewer whose connection accepts nothing for this long is dropped.
    pub stuck_viewer_seconds: f64,
    /// Concurrent HTTP-TS viewers served before new ones get 503.
    pub max_viewers: usize,
    /// How long a request waits for a channel that is not live yet before answering 503.
    pub wait_for_live_seconds: f64,
    /// Kernel send buffer per viewer connection (0: kernel autotuning). Bounded, it caps kernel
    /// memory per viewer and lets the edge see a slow viewer fall behind instead of hiding it in
    /// megabytes of socket buffer.
    pub viewer_send_buffer_kb: usize,
    /// A caught-up viewer collects chunks for this long before the next write: fewer wake-ups and
    /// larger writes for a little added latency (0 = write every chunk as it arrives).
    pub viewer_coalesce_ms: u64,
    /// HTTP-TS viewers start at the newest keyframe at least this far behind live: the player
    /// has this much buffered from its first second, and the edge can then write it about once
    /// a second instead of on every tick (0: the newest keyframe, as little delay as possible).
    pub viewer_start_lead_ms: u64,
    /// The least a viewer's player is left with buffered (counted as if it had started playing
    /// on its first byte) while the edge holds its bytes for a larger write.
    pub viewer_margin_ms: u64,
    /// The longest the edge holds a viewer's bytes for one larger write (0: write every viewer
    /// on every tick).
    pub viewer_max_hold_ms: u64,
    /// Where the edge keeps the last ~50 s of each channel's HTTP-TS stream for viewers'
    /// sockets to take by `sendfile`, as nginx serves a file: unnamed files (`O_TMPFILE`), gone
    /// with the edge. Empty: the system's temporary directory. On a filesystem with large
    /// folios (ext4, XFS) a byte costs about a quarter less to send than on tmpfs (`/dev/shm`,
    /// which keeps the stream in memory only); a block that outlives the kernel's dirty expiry
    /// (~30 s) is written back to that disk once. Where no file can be made there, memory files
    /// (memfd) are used. The fan-out writes each chunk there as it arrives, so it belongs on a
    /// local disk or tmpfs, not a network filesystem.
    pub ts_spool_dir: std::path::PathBuf,
    /// LiveSky clients' control port (TCP). Absent: the edge serves legacy viewers only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_listen: Option<SocketAddr>,
    /// STUN binding server (UDP) that helps clients learn their public address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stun_listen: Option<SocketAddr>,
    /// The STUN server's second port, where players test their NAT (RFC 5780). Absent: the port
    /// after `stun_listen`'s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stun_other_listen: Option<SocketAddr>,
    /// Other edges' client ports (`host:port`) where a full or draining edge redirects clients.
    pub siblings: Vec<String>,
    /// Where the edge is, for the GSLB: the same names as in its prefix database.
    pub region: String,
    pub isp: String,
    /// Addresses the GSLB hands out for this edge (A and AAAA). Empty: the client and HTTP
    /// listen addresses, when they are specific (not 0.0.0.0 or ::).
    pub advertise: Vec<std::net::IpAddr>,
    /// The adaptive-scaling parameters (LiveSky §3.1).
    pub admission: AdmissionSettings,
}

/// Admission parameters; the defaults are the paper's deployment.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionSettings {
    /// N1c: clients served directly before P2P starts.
    pub n1c: u32,
    /// The edge's bandwidth for clients; N*c = this / the channel's bitrate.
    pub capacity_kbps: u64,
    /// α: mean upload of a supplying peer as a fraction of the stream rate.
    pub alpha: f64,
    /// Take α from the clients' upload offers when they offer less (unreachable clients count 0).
    pub alpha_from_clients: bool,
    /// K': deepest P2P level (the delay bound); may exceed 2.
    pub k_prime: u32,
    /// λ, μ: joins and leaves per minute as fractions of current peers.
    pub lambda: f64,
    pub mu: f64,
    /// Stage bounds this much above the analytical ones (≥ 1).
    pub margin: f64,
    /// Upload cap per client as a multiple of the stream rate.
    pub upload_cap_factor: f64,
    /// M: mesh neighbours per client.
    pub mesh: usize,
    /// A client silent this long is taken as gone.
    pub session_timeout_seconds: u64,
    pub max_clients: usize,
    pub joins_per_ip_per_sec: f64,
    pub join_burst_per_ip: f64,
    /// Longest start burst sent to a joining client.
    pub max_burst_ms: u32,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        Self {
            n1c: 100,
            capacity_kbps: 200_000,
            alpha: 1.5,
            alpha_from_clients: true,
            k_prime: 2,
            lambda: 0.036,
            mu: 0.024,
            margin: 1.0,
            upload_cap_factor: 1.5,
            mesh: 8,
            session_timeout_seconds: 15,
            max_clients: 20_000,
            joins_per_ip_per_sec: 5.0,
            join_burst_per_ip: 20.0,
            max_burst_ms: 15_000,
        }
    }
}

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            hls_segment_seconds: 2.0,
            hls_window: 6,
            hls_part_seconds: 0.5,
            max_viewer_lag_seconds: 10.0,
            stuck_viewer_seconds: 15.0,
            max_viewers: 20_000,
            wait_for_live_seconds: 10.0,
            viewer_send_buffer_kb: 256,
            viewer_coalesce_ms: 100,
            viewer_start_lead_ms: 2000,
            viewer_margin_ms: 500,
            viewer_max_hold_ms: 3000,
            ts_spool_dir: std::path::PathBuf::new(),
            client_listen: None,
            stun_listen: None,
            stun_other_listen: None,
            siblings: Vec::new(),
            region: String::new(),
            isp: String::new(),
            advertise: Vec::new(),
            admission: AdmissionSettings::default(),
        }
    }
}

impl EdgeSettings {
    /// The first setting out of range: its key below `edge.` and what is wrong.
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        let e = self;
        let positive = [
            ("hls_segment_seconds", e.hls_segment_seconds),
            ("max_viewer_lag_seconds", e.max_viewer_lag_seconds),
            ("stuck_viewer_seconds", e.stuck_viewer_seconds),
            ("wait_for_live_seconds", e.wait_for_live_seconds),
        ];
        for (field, v) in positive {
            if !(v > 0.0 && v <= 3600.0) {
                return Err((field.into(), format!("{v} must be above 0 and at most 3600")));
            }
        }
        let a = &e.admission;
        let bad = |f: &str, why: String| Err((format!("admission.{f}"), why));
        if a.k_prime == 0 || a.k_prime > 16 {
            return bad("k_prime", format!("{} is outside 1..=16", a.k_prime));
        }
        if !(a.alpha > 0.0 && a.alpha <= 100.0) {
            return bad("alpha", format!("{} must be above 0", a.alpha));
        }
        if !(0.0..1.0).contains(&a.lambda) || !(0.0..1.0).contains(&a.mu) {
            return bad("lambda", "λ and μ are fractions in [0, 1)".into());
        }
        if a.margin < 1.0 || a.upload_cap_factor < 0.0 || a.capacity_kbps == 0 {
            return bad("margin", "margin ≥ 1, upload_cap_factor ≥ 0 and capacity_kbps > 0 are required".into());
        }
        let pacing = [
            ("viewer_coalesce_ms", e.viewer_coalesce_ms, 1000),
            ("viewer_start_lead_ms", e.viewer_start_lead_ms, 10_000),
            ("viewer_margin_ms", e.viewer_margin_ms, 10_000),
            ("viewer_max_hold_ms", e.viewer_max_hold_ms, 10_000),
        ];
        for (field, v, max) in pacing {
            if v > max {
                return Err((field.into(), format!("{v} is above {max}")));
            }
        }
        if e.viewer_start_lead_ms as f64 >= e.max_viewer_lag_seconds * 1000.0 {
            return Err((
                "viewer_start_lead_ms".into(),
                format!(
                    "{} would start viewers further behind live than max_viewer_lag_seconds ({}) lets them be",
                    e.viewer_start_lead_ms, e.max_viewer_lag_seconds
                ),
            ));
        }
        if e.hls_part_seconds != 0.0 && !(0.1..=e.hls_segment_seconds / 2.0).contains(&e.hls_part_seconds) {
            return Err((
                "hls_part_seconds".into(),
                format!(
                    "{} must be 0 (off) or from 0.1 to half of hls_segment_seconds ({})",
                    e.hls_part_seconds, e.hls_segment_seconds
                ),
            ));
        }
        if e.hls_window < 2 || e.hls_window > 100 {
            return Err(("hls_window".into(), format!("{} is outside 2..=100", e.hls_window)));
        }
        Ok(())
    }
}
