//! The topology file: channels (with their sources on Tier 0) and service nodes (tier, role,
//! listeners, parent and same-tier peer candidates). One file describes the whole CDN; each process
//! picks its node with `--node`. Until the management center pushes configuration, this file is
//! also where nodes find each other's addresses.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;

use crate::{ChannelId, NodeId};
use serde::{Deserialize, Serialize};

mod edge;
pub use edge::{AdmissionSettings, EdgeSettings};

/// The identity seeds shipped in `configs/` (the demo's four nodes, and the management center's
/// in `configs/mc.toml`). They are public: a deployment that loads one protects nothing, so the
/// binaries refuse them outside `--insecure-dev`.
pub const EXAMPLE_SEEDS: [&str; 5] = [
    include_str!("../../configs/keys/tier0.key").trim_ascii(),
    include_str!("../../configs/keys/core1.key").trim_ascii(),
    include_str!("../../configs/keys/edge1.key").trim_ascii(),
    include_str!("../../configs/keys/edge2.key").trim_ascii(),
    "2e9fcc86959034d07096e79c674408abf634435406b63e2b1444fa68c0f40d4d",
];
/// The API token of the example `configs/mc.toml`.
pub const EXAMPLE_API_TOKEN: &str = "change-me";

/// Whether `secret` is one of the published examples ([`EXAMPLE_SEEDS`], [`EXAMPLE_API_TOKEN`]).
pub fn is_example_secret(secret: &str) -> bool {
    let s = secret.trim();
    s == EXAMPLE_API_TOKEN || EXAMPLE_SEEDS.contains(&s)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path} is not a valid {what}: {message}")]
    Parse { path: String, what: &'static str, message: String },
    #[error("config file {path}: `{key}`: {message}")]
    Invalid { path: String, key: String, message: String },
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    #[serde(default, rename = "channel")]
    pub channels: Vec<ChannelConfig>,
    #[serde(rename = "node")]
    pub nodes: Vec<NodeConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub id: ChannelId,
    /// The Tier-0 node that runs this channel's source; may be omitted when there is one Tier 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<NodeId>,
    pub source: SourceConfig,
    /// K: chunks are split round-robin into this many substreams (§2.3).
    #[serde(default = "default_substreams")]
    pub substreams: u16,
    /// Nominal media rate, used for capacity figures (N*c = edge bandwidth / media rate).
    #[serde(default = "default_bitrate")]
    pub bitrate_kbps: u32,
    /// If set, HTTP push must present it (`?key=…`, `X-Stream-Key`, or `Authorization: Bearer …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_key: Option<String>,
    /// What legacy (non-LiveSky) players may get from the edges: `ts` (HTTP-TS), `hls`, both
    /// (the default), or none (`[]`: LiveSky clients only).
    #[serde(default = "default_legacy")]
    pub legacy: Vec<LegacyFormat>,
    /// 64 hex digits: Ed25519 seed of the channel key. Absent: a fresh key per run (logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
    /// Edges serve this channel only to viewers with a valid token (legacy players: `?token=`;
    /// LiveSky players: their join).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_token: bool,
    /// Public key (64 hex digits) that signs the channel's viewer tokens. Absent: the management
    /// center's own, filled in when it pushes the config (tokens from its `POST /api/tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_key: Option<String>,
    /// Glass-to-glass target for LiveSky players, ms (1,000–60,000): the edge sends a start burst
    /// no longer than this and tells players, which then run in low-latency mode (a buffer of
    /// this much, a catch-up at a keyframe when they fall behind it). Absent: each player's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_latency_ms: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LegacyFormat {
    Ts,
    Hls,
}

impl LegacyFormat {
    pub fn name(self) -> &'static str {
        match self {
            LegacyFormat::Ts => "ts",
            LegacyFormat::Hls => "hls",
        }
    }
}

fn default_legacy() -> Vec<LegacyFormat> {
    vec![LegacyFormat::Ts, LegacyFormat::Hls]
}

fn default_substreams() -> u16 {
    4
}
fn default_bitrate() -> u32 {
    400
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// Broadcaster pushes MPEG-TS over HTTP `PUT`/`POST /ingest/{channel}` on the origin's HTTP port.
    Push,
    /// Broadcaster sends raw MPEG-TS over TCP to this address (trusted networks only: no key).
    Tcp { listen: SocketAddr },
    /// Tier 0 pulls HTTP-TS from the broadcaster's origin, reconnecting as needed.
    Pull { url: String },
    /// Loops a TS file forever with continuous timestamps; `builtin:demo` is the bundled clip.
    Loop {
        path: String,
        #[serde(default = "default_speed")]
        speed: f64,
    },
    /// Tier 0 calls an encoder waiting in SRT listener mode (`srt://…?mode=listener`) and takes
    /// the MPEG-TS it sends, reconnecting as needed. `passphrase`: 10 to 79 characters.
    SrtCall {
        addr: SocketAddr,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passphrase: Option<String>,
    },
}

fn default_speed() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Tier 0 or a middle tier: relays to other SNs (`role = "relay"`; the older name `core` is
    /// still read).
    #[default]
    #[serde(alias = "core")]
    Relay,
    /// The last tier: serves viewers; never relays to other SNs.
    Edge,
}

impl Role {
    /// The role's name in configs, metrics labels and the MC's views.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Relay => "relay",
            Role::Edge => "edge",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: NodeId,
    pub tier: u8,
    #[serde(default)]
    pub role: Role,
    /// SN↔SN listener (core roles only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sn_listen: Option<SocketAddr>,
    /// HTTP: ingest (Tier 0), viewers (edges), `/metrics` and `/status` (all).
    pub http_listen: SocketAddr,
    /// Parent candidates in lower tiers, most preferred first.
    #[serde(default)]
    pub parents: Vec<NodeId>,
    /// Same-tier peers tried after the parents (relay tiers only; never between edges).
    #[serde(default)]
    pub peers: Vec<NodeId>,
    /// Media kept in each channel's ring buffer.
    #[serde(default = "default_ring_seconds")]
    pub ring_seconds: u32,
    /// How long a channel nobody asks for is kept subscribed upstream.
    #[serde(default = "default_linger_seconds")]
    pub linger_seconds: u32,
    /// Edges subscribe with this much backlog so viewers and HLS can start at once.
    #[serde(default = "default_backlog_ms")]
    pub start_backlog_ms: u32,
    /// Threads that serve the HTTP listener's connections, each keeping a connection for its
    /// whole life as an nginx worker does (0: one per core). Control work stays on the shared
    /// runtime.
    #[serde(default)]
    pub http_threads: usize,
    /// Viewer-facing settings (edges only).
    #[serde(default)]
    pub edge: EdgeSettings,
    /// Broadcaster ingest listeners (Tier 0).
    #[serde(default)]
    pub ingest: IngestSettings,
    /// Timeouts and connection caps of the node's listeners.
    #[serde(default)]
    pub limits: crate::limits::Limits,
    /// The node's identity public key (64 hex digits), for SN links between nodes that run
    /// without a management center (the MC hands out the keys it knows otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_key: Option<String>,
}

/// Where broadcasters connect with RTMP and SRT; HTTP push is always on the node's HTTP port.
/// Every channel with `source = { kind = "push" }` on this node takes any of them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// `rtmp://HOST:PORT/live/CHANNEL` (stream key as `CHANNEL?key=KEY`), as OBS sends it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtmp_listen: Option<SocketAddr>,
    /// SRT listener mode: `srt://HOST:PORT?streamid=CHANNEL` carrying MPEG-TS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srt_listen: Option<SocketAddr>,
    /// SRT encryption passphrase (10 to 79 characters); without it SRT is unencrypted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srt_passphrase: Option<String>,
    /// A second publisher on a live channel takes it over (the first is cut off) instead of
    /// being refused.
    pub takeover: bool,
    /// A broadcaster that drops and reconnects within this many seconds resumes its broadcast:
    /// viewers stay connected and see one discontinuity. After it the broadcast is over: edges
    /// end their viewers' streams, HLS playlists get `#EXT-X-ENDLIST`, peers are told.
    pub reconnect_grace_seconds: u64,
}

impl Default for IngestSettings {
    fn default() -> Self {
        // OBS retries after 2 to 10 s; 30 s covers a few of its attempts.
        Self { rtmp_listen: None, srt_listen: None, srt_passphrase: None, takeover: false, reconnect_grace_seconds: 30 }
    }
}

fn default_ring_seconds() -> u32 {
    30
}
fn default_linger_seconds() -> u32 {
    30
}
/// More connection threads than this would only compete for the same cores.
const MAX_HTTP_THREADS: usize = 256;

fn default_backlog_ms() -> u32 {
    15_000
}

/// The text of settings file `path`; the error names the file.
pub fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })
}

/// Parses the TOML of a settings file (`origin` names it and `what` says what it should hold, in
/// errors). Every role's settings load through here and [`read_file`].
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
    what: &'static str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse { path: origin.to_string(), what, message: e.to_string() })
}

impl Topology {
    pub fn load(path: &Path) -> Result<Topology, ConfigError> {
        let shown = path.display().to_string();
        Self::parse(&read_file(path)?, &shown)
    }

    /// Parses and validates; `origin` names the file in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Topology, ConfigError> {
        let topo: Topology = parse_toml(text, origin, "LiveSky topology (TOML)")?;
        topo.validate(origin)?;
        Ok(topo)
    }

    pub fn node(&self, id: &NodeId) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| &n.id == id)
    }

    /// The Tier-0 node that hosts `channel`'s source.
    pub fn origin_of<'a>(&'a self, channel: &'a ChannelConfig) -> Option<&'a NodeId> {
        channel.origin.as_ref().or_else(|| {
            let mut t0 = self.nodes.iter().filter(|n| n.tier == 0);
            match (t0.next(), t0.next()) {
                (Some(only), None) => Some(&only.id),
                _ => None,
            }
        })
    }

    /// Channels whose source runs on `node`.
    pub fn channels_of<'a>(&'a self, node: &'a NodeId) -> impl Iterator<Item = &'a ChannelConfig> + 'a {
        self.channels.iter().filter(move |c| self.origin_of(c) == Some(node))
    }

    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let err = |key: String, message: String| Err(ConfigError::Invalid { path: path.to_string(), key, message });
        if self.nodes.is_empty() {
            return err("node".into(), "at least one [[node]] is required".into());
        }
        let mut by_id: HashMap<&NodeId, &NodeConfig> = HashMap::new();
        let mut addrs: HashSet<SocketAddr> = HashSet::new();
        let mut check_addr = |key: String, a: SocketAddr| {
            if a.port() != 0 && !addrs.insert(a) {
                return Err(ConfigError::Invalid {
                    path: path.to_string(),
                    key,
                    message: format!("address {a} is used twice"),
                });
            }
            Ok(())
        };
        for n in &self.nodes {
            if by_id.insert(&n.id, n).is_some() {
                return err(format!("node[{}].id", n.id), "node ids must be unique".into());
            }
            check_addr(format!("node[{}].http_listen", n.id), n.http_listen)?;
            if let Some(a) = n.sn_listen {
                check_addr(format!("node[{}].sn_listen", n.id), a)?;
            }
        }
        for n in &self.nodes {
            let key = |field: &str| format!("node[{}].{field}", n.id);
            match n.role {
                Role::Edge if n.sn_listen.is_some() => {
                    return err(key("sn_listen"), "edges do not serve other SNs; remove sn_listen".into());
                }
                Role::Edge if !n.peers.is_empty() => {
                    return err(key("peers"), "edges never peer with each other (§2.1); remove peers".into());
                }
                Role::Edge if n.parents.is_empty() => {
                    return err(key("parents"), "an edge needs at least one parent".into());
                }
                Role::Relay if n.sn_listen.is_none() => {
                    return err(key("sn_listen"), "relay nodes need an SN listener address".into());
                }
                _ => {}
            }
            if n.http_threads > MAX_HTTP_THREADS {
                return err(key("http_threads"), format!("{} is above {MAX_HTTP_THREADS}", n.http_threads));
            }
            if let Err((field, why)) = n.edge.check() {
                return err(key(&format!("edge.{field}")), why);
            }
            if let Some(k) = &n.identity_key
                && let Err(e) = crate::check_public_key(k)
            {
                return err(key("identity_key"), e.to_string());
            }
            if let Err((field, why)) = n.limits.check() {
                return err(key(&format!("limits.{field}")), why);
            }
            if n.ring_seconds < 5 || n.ring_seconds > 600 {
                return err(key("ring_seconds"), format!("{} is outside 5..=600", n.ring_seconds));
            }
            for (field, list) in [("parents", &n.parents), ("peers", &n.peers)] {
                for p in list {
                    let Some(other) = by_id.get(p) else {
                        return err(key(field), format!("unknown node `{p}`"));
                    };
                    if other.role == Role::Edge {
                        return err(key(field), format!("`{p}` is an edge; edges serve no SNs"));
                    }
                    let ok = if field == "parents" { other.tier < n.tier } else { other.tier == n.tier && p != &n.id };
                    if !ok {
                        let want = if field == "parents" { "a lower tier" } else { "the same tier (and not itself)" };
                        return err(key(field), format!("`{p}` is in tier {}, must be in {want}", other.tier));
                    }
                }
            }
        }
        let mut seen = HashSet::new();
        for c in &self.channels {
            let key = |field: &str| format!("channel[{}].{field}", c.id);
            if !seen.insert(&c.id) {
                return err(key("id"), "channel ids must be unique".into());
            }
            let Some(origin) = self.origin_of(c) else {
                return err(
                    key("origin"),
                    "name the Tier-0 node that hosts this channel (there is not exactly one Tier 0)".into(),
                );
            };
            match by_id.get(origin) {
                Some(o) if o.role == Role::Relay && o.parents.is_empty() => {}
                Some(_) => {
                    return err(key("origin"), format!("`{origin}` must be a relay node without parents (Tier 0)"));
                }
                None => return err(key("origin"), format!("unknown node `{origin}`")),
            }
            if c.substreams == 0 || c.substreams > 64 {
                return err(key("substreams"), format!("{} is outside 1..=64", c.substreams));
            }
            if let Some(ms) = c.target_latency_ms
                && !(1_000..=60_000).contains(&ms)
            {
                return err(key("target_latency_ms"), format!("{ms} is outside 1000..=60000 (ms)"));
            }
            if let Some(k) = &c.signing_key
                && let Err(e) = crate::ChannelSigner::from_hex_seed(k)
            {
                return err(key("signing_key"), e.to_string());
            }
            if let Some(k) = &c.token_key
                && let Err(e) = crate::check_public_key(k)
            {
                return err(key("token_key"), e.to_string());
            }
            match &c.source {
                SourceConfig::Tcp { listen } => check_addr(key("source.listen"), *listen)?,
                SourceConfig::Pull { url } if !url.starts_with("http://") => {
                    return err(key("source.url"), "only http:// origins are supported".into());
                }
                SourceConfig::Loop { speed, .. } if !(0.1..=100.0).contains(speed) => {
                    return err(key("source.speed"), format!("{speed} is outside 0.1..=100"));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
        [[channel]]
        id = "demo"
        source = { kind = "loop", path = "builtin:demo" }
        [[channel]]
        id = "live"
        stream_key = "k"
        source = { kind = "push" }
        [[node]]
        id = "t0"
        tier = 0
        sn_listen = "127.0.0.1:7000"
        http_listen = "127.0.0.1:8000"
        [[node]]
        id = "c1"
        tier = 1
        sn_listen = "127.0.0.1:7001"
        http_listen = "127.0.0.1:8001"
        parents = ["t0"]
        peers = ["c2"]
        [[node]]
        id = "c2"
        tier = 1
        sn_listen = "127.0.0.1:7002"
        http_listen = "127.0.0.1:8002"
        parents = ["t0"]
        [[node]]
        id = "e1"
        tier = 2
        role = "edge"
        http_listen = "127.0.0.1:8080"
        parents = ["c1", "c2"]
    "#;

    #[test]
    fn parses_a_topology_with_defaults() {
        let t = Topology::parse(OK, "test.toml").unwrap();
        assert_eq!(t.nodes.len(), 4);
        let t0 = NodeId::new("t0").unwrap();
        assert_eq!(t.channels_of(&t0).count(), 2);
        assert_eq!(t.channels[0].substreams, 4);
        assert_eq!(t.nodes[3].start_backlog_ms, 15_000);
    }

    fn invalid(text: &str) -> String {
        Topology::parse(text, "bad.toml").unwrap_err().to_string()
    }

    #[test]
    fn the_example_secrets_are_the_ones_in_configs() {
        let mc = include_str!("../../configs/mc.toml");
        assert!(mc.contains(&format!("key = \"{}\"", EXAMPLE_SEEDS[4])));
        assert!(mc.contains(&format!("api_token = \"{EXAMPLE_API_TOKEN}\"")));
        assert!(is_example_secret(EXAMPLE_SEEDS[0]) && !is_example_secret(&"ab".repeat(32)));
        // The demo topology's identity keys are the public halves of the example seeds.
        let demo = Topology::parse(include_str!("../../configs/demo.toml"), "demo.toml").unwrap();
        for (i, id) in ["tier0", "core1", "edge1", "edge2"].into_iter().enumerate() {
            let node = demo.node(&NodeId::new(id).unwrap()).unwrap();
            let public = crate::NodeKey::from_hex_seed(EXAMPLE_SEEDS[i]).unwrap().public_hex();
            assert_eq!(node.identity_key.as_deref(), Some(public.as_str()), "{id}");
            assert!(mc.contains(&format!("{id} = \"{public}\"")), "mc.toml's sn_keys.{id}");
        }
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let e = invalid(&OK.replace(r#"parents = ["c1", "c2"]"#, r#"parents = ["e1"]"#));
        assert!(e.contains("bad.toml") && e.contains("node[e1].parents") && e.contains("edge"), "{e}");
        let e = invalid(&OK.replace(r#"peers = ["c2"]"#, r#"peers = ["t0"]"#));
        assert!(e.contains("node[c1].peers") && e.contains("same tier"), "{e}");
        let e = invalid(&OK.replace(r#"role = "edge""#, "role = \"edge\"\npeers = [\"c1\"]"));
        assert!(e.contains("never peer"), "{e}");
        let e = invalid(&OK.replace("8002", "8001"));
        assert!(e.contains("used twice"), "{e}");
        let e = invalid(&OK.replace(r#"stream_key = "k""#, "stream_key = \"k\"\nsigning_key = \"12\""));
        assert!(e.contains("channel[live].signing_key"), "{e}");
        let e = invalid(&OK.replace(
            "tier = 1\n        sn_listen = \"127.0.0.1:7001\"",
            "tier = 1\n        sn_listen = \"127.0.0.1:7001\"\n        colour = 3",
        ));
        assert!(e.contains("colour"), "unknown keys are refused: {e}");
        let edge = |keys: &str| {
            OK.replace("parents = [\"c1\", \"c2\"]", &format!("parents = [\"c1\", \"c2\"]\n[node.edge]\n{keys}"))
        };
        let e = invalid(&edge("max_viewer_lag_seconds = 2.0"));
        assert!(e.contains("node[e1].edge.viewer_start_lead_ms") && e.contains("max_viewer_lag_seconds"), "{e}");
        assert!(Topology::parse(&edge("max_viewer_lag_seconds = 2.0\nviewer_start_lead_ms = 0"), "ok.toml").is_ok());
        let e = invalid(&edge("viewer_max_hold_ms = 60000"));
        assert!(e.contains("node[e1].edge.viewer_max_hold_ms") && e.contains("above 10000"), "{e}");
        let e = invalid("this is = not toml [");
        assert!(e.contains("not a valid LiveSky topology (TOML)"), "{e}");
    }
}
