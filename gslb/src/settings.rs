//! The GSLB's settings file (`configs/gslb.toml`, table `[gslb]`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// What is wrong with a settings file: the same errors, worded the same, as every role's.
pub type SettingsError = proto::config::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    gslb: GslbSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GslbSettings {
    /// The CDN zone this server is authoritative for, e.g. `live.example`.
    pub zone: String,
    /// DNS over UDP and TCP.
    pub dns_listen: SocketAddr,
    /// The 302 fallback, `/edges` and `/metrics`.
    pub http_listen: SocketAddr,
    /// The management center's HTTP API, e.g. `http://127.0.0.1:7780`.
    pub mc: String,
    /// The prefix database (`cidr,region,isp` lines); relative to this file. Reloaded when it
    /// changes.
    pub geo: PathBuf,
    /// TTL of answers, seconds: short, so clients move when loads change.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// Edges per answer.
    #[serde(default = "default_answers")]
    pub answers: usize,
    /// Loads (fractions of N*c) this close to the least loaded edge's count as ties.
    #[serde(default = "default_tie_band")]
    pub tie_band: f64,
    /// How often the MC is asked for edges and loads.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// How often the prefix database file is checked for changes.
    #[serde(default = "default_watch_ms")]
    pub watch_ms: u64,
    /// Answer any single label under the zone as a channel, even one the MC does not list.
    #[serde(default)]
    pub wildcard: bool,
    /// This server's own addresses: `ns1.ZONE` (the zone's NS) resolves to them.
    #[serde(default)]
    pub ns_addrs: Vec<IpAddr>,
    /// Proxies whose `X-Forwarded-For` the HTTP fallback believes.
    #[serde(default)]
    pub trusted_proxies: Vec<IpAddr>,
    /// Rate assumed for channels the MC does not list (N*c = capacity / rate).
    #[serde(default = "default_bitrate")]
    pub default_bitrate_kbps: u32,
    /// Timeouts and connection caps of the HTTP fallback (`[gslb.limits]`; the `http_*` keys apply).
    #[serde(default)]
    pub limits: livesky_net::limits::Limits,
}

fn default_ttl() -> u32 {
    20
}
fn default_answers() -> usize {
    2
}
fn default_tie_band() -> f64 {
    0.05
}
fn default_poll_ms() -> u64 {
    1000
}
fn default_watch_ms() -> u64 {
    1000
}
fn default_bitrate() -> u32 {
    400
}

impl GslbSettings {
    pub fn load(path: &Path) -> Result<GslbSettings, SettingsError> {
        let shown = path.display().to_string();
        let file: File = proto::config::parse_toml(&proto::config::read_file(path)?, &shown, "GSLB settings file")?;
        let mut s = file.gslb;
        if let Some(dir) = path.parent()
            && s.geo.is_relative()
        {
            s.geo = dir.join(&s.geo);
        }
        s.validate(&shown)?;
        Ok(s)
    }

    /// Defaults for everything but where to listen, the zone, the MC and the database.
    pub fn new(zone: &str, dns_listen: SocketAddr, http_listen: SocketAddr, mc: String, geo: PathBuf) -> Self {
        GslbSettings {
            zone: zone.to_string(),
            dns_listen,
            http_listen,
            mc,
            geo,
            ttl: default_ttl(),
            answers: default_answers(),
            tie_band: default_tie_band(),
            poll_ms: default_poll_ms(),
            watch_ms: default_watch_ms(),
            wildcard: false,
            ns_addrs: Vec::new(),
            trusted_proxies: Vec::new(),
            default_bitrate_kbps: default_bitrate(),
            limits: Default::default(),
        }
    }

    pub fn validate(&self, path: &str) -> Result<(), SettingsError> {
        let invalid = |key: &str, message: &str| SettingsError::Invalid {
            path: path.to_string(),
            key: format!("gslb.{key}"),
            message: message.to_string(),
        };
        if crate::zone::zone_name(&self.zone).is_err() {
            return Err(invalid("zone", "not a DNS name (e.g. `live.example`)"));
        }
        if !(self.mc.starts_with("http://")) {
            return Err(invalid("mc", "the MC's API as http://HOST:PORT"));
        }
        if self.answers == 0 || self.answers > 8 {
            return Err(invalid("answers", "between 1 and 8"));
        }
        if self.poll_ms == 0 || self.poll_ms > 2000 {
            return Err(invalid("poll_ms", "between 1 and 2000: loads must be at most 2 s old"));
        }
        if !(0.0..=1.0).contains(&self.tie_band) {
            return Err(invalid("tie_band", "between 0 and 1"));
        }
        if self.default_bitrate_kbps == 0 {
            return Err(invalid("default_bitrate_kbps", "must be at least 1"));
        }
        if let Err((key, why)) = self.limits.check() {
            return Err(invalid(&format!("limits.{key}"), &why));
        }
        Ok(())
    }

    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms)
    }
}
