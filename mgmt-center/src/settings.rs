//! The MC's own settings file (`configs/mc.toml`): where it listens, which topology file the
//! operators edit, its identity key and the public keys of the SNs allowed to register.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::NodeId;
use serde::Deserialize;

/// What is wrong with a settings file: the same errors, worded the same, as every role's.
pub type SettingsError = proto::config::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    mc: McSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McSettings {
    /// SN control links.
    pub control_listen: SocketAddr,
    /// HTTP API and `/metrics`.
    pub http_listen: SocketAddr,
    /// The topology the operators edit (channels, nodes, admission); relative to this file.
    pub topology: PathBuf,
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// How often the topology file is checked for changes.
    #[serde(default = "default_watch_ms")]
    pub watch_ms: u64,
    /// 64 hex digits: Ed25519 seed of the MC's identity (SNs may pin its public key).
    pub key: String,
    /// Bearer token for the HTTP API's actions (`POST /reload`); none: actions are refused.
    #[serde(default)]
    pub api_token: Option<String>,
    /// SQLite file of the SNs' reports (and the config version, so it never goes back); relative
    /// to this file.
    #[serde(default = "default_db")]
    pub db: PathBuf,
    /// Public key (64 hex digits) of every SN allowed to register, by node id.
    #[serde(default)]
    pub sn_keys: BTreeMap<NodeId, String>,
    /// Timeouts and connection caps of the HTTP API (`[mc.limits]`; the `http_*` keys apply).
    #[serde(default)]
    pub limits: livesky_net::limits::Limits,
}

fn default_db() -> PathBuf {
    PathBuf::from("mc.sqlite")
}
fn default_heartbeat_ms() -> u64 {
    1000
}
fn default_watch_ms() -> u64 {
    500
}

impl McSettings {
    pub fn load(path: &Path) -> Result<McSettings, SettingsError> {
        let shown = path.display().to_string();
        let file: File = proto::config::parse_toml(&proto::config::read_file(path)?, &shown, "MC settings file")?;
        let mut s = file.mc;
        if let Some(dir) = path.parent() {
            for p in [&mut s.topology, &mut s.db] {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            }
        }
        s.validate(&shown)?;
        Ok(s)
    }

    pub fn validate(&self, path: &str) -> Result<(), SettingsError> {
        let invalid = |key: String, message: String| SettingsError::Invalid { path: path.to_string(), key, message };
        proto::NodeKey::from_hex_seed(&self.key).map_err(|e| invalid("mc.key".into(), e.to_string()))?;
        for (id, k) in &self.sn_keys {
            proto::check_public_key(k).map_err(|e| invalid(format!("mc.sn_keys.{id}"), e.to_string()))?;
        }
        if let Err((key, why)) = self.limits.check() {
            return Err(invalid(format!("mc.limits.{key}"), why));
        }
        if self.heartbeat_ms == 0 {
            return Err(invalid("mc.heartbeat_ms".into(), "must be at least 1".into()));
        }
        Ok(())
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
}
