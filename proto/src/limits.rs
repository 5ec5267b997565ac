//! Timeouts and connection caps of a role's listeners, as the operators' files set them. The
//! listeners that apply them are in `livesky-net`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Timeouts and caps of a role's listeners (`[node.limits]`, `[mc.limits]`, `[limits]` of the
/// GSLB). The defaults suit a production edge; tests and small deployments lower them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// A connection must deliver a request's whole header within this many seconds of connecting
    /// or of its previous response: bounds slow headers and idle keep-alive connections alike.
    pub http_header_timeout_seconds: f64,
    /// Open HTTP connections at once (also capped at ¾ of the open-file limit).
    pub http_max_connections: usize,
    /// Open HTTP connections from one address.
    pub http_max_per_ip: usize,
    /// A broadcaster's HTTP push or raw-TCP feed silent this long has ended (RTMP's is the same).
    pub ingest_idle_timeout_seconds: f64,
    /// RTMP: connections at once, from one address, and how long the handshake may take.
    pub rtmp_max_connections: usize,
    pub rtmp_max_per_ip: usize,
    pub rtmp_handshake_timeout_seconds: f64,
    /// SN links and LiveSky client connections from one address (all at once: the global caps
    /// are the ones above and the edge's `max_clients`).
    pub sn_max_per_ip: usize,
    pub clients_max_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            http_header_timeout_seconds: 10.0,
            http_max_connections: 20_000,
            http_max_per_ip: 256,
            ingest_idle_timeout_seconds: 30.0,
            rtmp_max_connections: 64,
            rtmp_max_per_ip: 4,
            rtmp_handshake_timeout_seconds: 5.0,
            sn_max_per_ip: 64,
            clients_max_per_ip: 256,
        }
    }
}

impl Limits {
    /// The first key whose value makes no sense, and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let secs = [
            ("http_header_timeout_seconds", self.http_header_timeout_seconds),
            ("ingest_idle_timeout_seconds", self.ingest_idle_timeout_seconds),
            ("rtmp_handshake_timeout_seconds", self.rtmp_handshake_timeout_seconds),
        ];
        for (key, v) in secs {
            if !(0.05..=3600.0).contains(&v) {
                return Err((key, format!("{v} is outside 0.05..=3600 seconds")));
            }
        }
        let caps = [
            ("http_max_connections", self.http_max_connections),
            ("http_max_per_ip", self.http_max_per_ip),
            ("rtmp_max_connections", self.rtmp_max_connections),
            ("rtmp_max_per_ip", self.rtmp_max_per_ip),
            ("sn_max_per_ip", self.sn_max_per_ip),
            ("clients_max_per_ip", self.clients_max_per_ip),
        ];
        for (key, v) in caps {
            if v == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        Ok(())
    }

    pub fn http_header_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.http_header_timeout_seconds)
    }
    pub fn ingest_idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.ingest_idle_timeout_seconds)
    }
    pub fn rtmp_handshake_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.rtmp_handshake_timeout_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_by_key() {
        assert!(Limits::default().check().is_ok());
        let bad = Limits { http_max_per_ip: 0, ..Limits::default() };
        assert_eq!(bad.check().unwrap_err().0, "http_max_per_ip");
        let bad = Limits { http_header_timeout_seconds: 0.0, ..Limits::default() };
        assert_eq!(bad.check().unwrap_err().0, "http_header_timeout_seconds");
    }
}
