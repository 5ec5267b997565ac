//! The SN↔MC control link (LiveSky §2 "System Management"): XML messages, one per length-prefixed
//! frame, and the per-SN configuration document the management center pushes.
//!
//! An SN connects and is challenged; it answers with *alive* (who it is, where it listens, what
//! config version it holds) signed with its Ed25519 key, and the MC answers *welcome* signed with
//! its own key, so neither side trusts a stranger. The MC then sends the membership and the SN's
//! config: a full snapshot, or an update holding only the elements that changed since the version
//! the SN acknowledged. The SN applies a document whole or not at all and acknowledges it.
//!
//! Schema of a config document (`<config>`; `base` absent means a full snapshot):
//! ```xml
//! <config node="edge1" version="7" base="6">
//!   <node>…the node's settings, one element per key of its `[[node]]` table…</node>
//!   <channel id="demo" source="loop" path="builtin:demo" substreams="4" bitrate-kbps="500"/>
//!   <remove-channel id="old"/>
//! </config>
//! ```
//! `<node>` appears when the node's settings changed; `<channel>` for each added or changed
//! channel (stream and signing keys only in the document of the channel's origin);
//! `<remove-channel>` for each removed one.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::codec::FrameCodec;
use crate::{ChannelId, NodeId, WireError, WireMessage};
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::config::{ChannelConfig, LegacyFormat, NodeConfig, SourceConfig, Topology};

mod list;
pub use list::SpaceList;

/// Control frames are small; a snapshot of a few thousand channels still fits.
pub const MC_MAX_FRAME: usize = 8 << 20;
const XML_TYPE: u8 = b'<';

/// The control link carries [`McMessage`] both ways.
pub type McCodec = FrameCodec<McMessage, McMessage>;

pub fn mc_codec() -> McCodec {
    McCodec::new(MC_MAX_FRAME)
}

/// Frames read from an SN before it has proved its identity: an `alive` is a few hundred bytes,
/// so a stranger cannot make the MC parse megabytes of XML.
pub const MC_UNREGISTERED_FRAME: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum McMessage {
    /// MC → SN on connect: sign this.
    Challenge(Challenge),
    /// SN → MC: registration (and re-registration after a reconnect).
    Alive(Alive),
    /// MC → SN: registered.
    Welcome(Welcome),
    /// MC → SN, then the MC closes the link.
    Refused(Refused),
    /// SN → MC, every `heartbeat-ms`.
    Heartbeat(Heartbeat),
    /// MC → SN: who is alive (all of it, or what changed).
    Members(Members),
    /// MC → SN: configuration (snapshot or update).
    Config(Box<ConfigXml>),
    /// SN → MC: config version applied.
    Ack(Ack),
    /// SN → MC: an update could not be applied on top of what the SN holds; send a snapshot.
    Resync(Resync),
    /// SN → MC: where does this SN listen? Answered by `members` with just that SN (or empty).
    Lookup(Lookup),
    /// SN → MC: one period's summary (kept on the SN's disk until acknowledged).
    Report(Box<ReportXml>),
    /// MC → SN: that report is stored.
    ReportAck(ReportAck),
    /// MC → edge: an operator drains it (move its clients to siblings, take no new ones), or
    /// ends the drain. Sent on every registration while it lasts.
    Drain(Drain),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drain {
    #[serde(rename = "@on")]
    pub on: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Challenge {
    #[serde(rename = "@nonce")]
    pub nonce: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alive {
    pub member: Member,
    /// Config version the SN holds (0: none).
    #[serde(rename = "@have-version")]
    pub have_version: u64,
    /// The SN's own challenge for the MC.
    #[serde(rename = "@nonce")]
    pub nonce: String,
    /// Ed25519 signature (hex) over [`alive_proof`].
    #[serde(rename = "@signature")]
    pub signature: String,
}

/// What the registry knows of an SN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    #[serde(rename = "@id")]
    pub id: NodeId,
    #[serde(rename = "@tier")]
    pub tier: u8,
    #[serde(rename = "@role")]
    pub role: crate::config::Role,
    #[serde(rename = "@http")]
    pub http: SocketAddr,
    #[serde(rename = "@sn", default, skip_serializing_if = "Option::is_none")]
    pub sn: Option<SocketAddr>,
    /// LiveSky client port (edges).
    #[serde(rename = "@clients", default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<SocketAddr>,
    #[serde(rename = "@capacity-kbps", default)]
    pub capacity_kbps: u64,
    /// Its identity public key as the MC knows it (the MC sets it; what an SN says is ignored).
    #[serde(rename = "@key", default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The nodes the topology lets it subscribe to (parents and same-tier peers), set by the MC:
    /// a parent takes only such children.
    #[serde(rename = "@upstream", default, skip_serializing_if = "SpaceList::is_empty")]
    pub upstream: SpaceList<NodeId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    #[serde(rename = "@heartbeat-ms")]
    pub heartbeat_ms: u64,
    /// The MC's signature (hex) over [`welcome_proof`].
    #[serde(rename = "@signature")]
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refused {
    #[serde(rename = "@reason")]
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Clients the SN serves now (viewers and LiveSky clients).
    #[serde(rename = "@users", default)]
    pub users: u64,
    /// Channels on which the SN (an edge) sends new clients away: stage 4, past N*c/S. The GSLB
    /// stops sending it clients for them.
    #[serde(rename = "@full", default, skip_serializing_if = "SpaceList::is_empty")]
    pub full: SpaceList<ChannelId>,
    /// Upstream failovers since the SN started (all channels).
    #[serde(rename = "@failovers", default)]
    pub failovers: u64,
    /// Edges: per channel, the report figures as running totals since the SN started (users
    /// as now), so the MC can show rates a second old between the minute reports.
    #[serde(rename = "ch", default, skip_serializing_if = "Vec::is_empty")]
    pub live: Vec<ReportRow>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Members {
    #[serde(rename = "@version")]
    pub version: u64,
    /// True: this is everyone; false: only joins (`member`) and departures (`gone`).
    #[serde(rename = "@full")]
    pub full: bool,
    #[serde(rename = "member", default)]
    pub members: Vec<Member>,
    #[serde(rename = "gone", default)]
    pub gone: Vec<Gone>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gone {
    #[serde(rename = "@id")]
    pub id: NodeId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    #[serde(rename = "@version")]
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resync {
    #[serde(rename = "@have-version")]
    pub have_version: u64,
    #[serde(rename = "@reason")]
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lookup {
    #[serde(rename = "@id")]
    pub id: NodeId,
}

/// An edge's summary of one period (a minute in production), per channel (LiveSky §4.2's log
/// server). Its id is unique per SN: the MC stores it once however often it is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportXml {
    #[serde(rename = "@node")]
    pub node: NodeId,
    #[serde(rename = "@id")]
    pub id: String,
    /// Period start, ms since the Unix epoch.
    #[serde(rename = "@start-ms")]
    pub start_ms: u64,
    #[serde(rename = "@period-ms")]
    pub period_ms: u64,
    #[serde(rename = "row", default)]
    pub rows: Vec<ReportRow>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ReportRow {
    #[serde(rename = "@channel")]
    pub channel: String,
    /// Viewers and LiveSky clients at the end of the period.
    #[serde(rename = "@users")]
    pub users: u64,
    /// Of those, LiveSky clients (the rest are legacy viewers).
    #[serde(rename = "@livesky", default)]
    pub livesky: u64,
    #[serde(rename = "@joins")]
    pub joins: u64,
    #[serde(rename = "@leaves")]
    pub leaves: u64,
    /// Media bytes the edge sent (viewers and LiveSky clients).
    #[serde(rename = "@cdn-bytes")]
    pub cdn_bytes: u64,
    /// Media bytes LiveSky clients report having received from peers.
    #[serde(rename = "@p2p-bytes")]
    pub p2p_bytes: u64,
    /// What LiveSky clients receive from peers at the end of the period, bit/s (each client's
    /// latest report): live where `p2p_bytes` moves in lumps, one per client report.
    #[serde(rename = "@p2p-bps", default, skip_serializing_if = "is_zero")]
    pub p2p_bps: u64,
    #[serde(rename = "@stalls")]
    pub stalls: u64,
    #[serde(rename = "@played-ms")]
    pub played_ms: u64,
    #[serde(rename = "@stalled-ms")]
    pub stalled_ms: u64,
    /// LiveSky client reports received, and how many of them had a stall (Q2 = 1 − the ratio).
    #[serde(rename = "@reports", default)]
    pub reports: u64,
    #[serde(rename = "@stalled-reports", default)]
    pub stalled_reports: u64,
    /// LiveSky clients whose upload claims outran what their receivers confirmed (flagged;
    /// their claims are not in any figure), and the claimed bytes left out.
    #[serde(rename = "@inflated", default, skip_serializing_if = "is_zero")]
    pub inflated: u64,
    #[serde(rename = "@excluded-up-bytes", default, skip_serializing_if = "is_zero")]
    pub excluded_up_bytes: u64,
    /// Adaptive-scaling stage at the end of the period (0: no LiveSky clients).
    #[serde(rename = "@stage")]
    pub stage: u8,
    /// Startup delays (ms) of LiveSky clients that started in the period.
    #[serde(rename = "@startup-ms", default, skip_serializing_if = "SpaceList::is_empty")]
    pub startup_ms: SpaceList<u32>,
    /// Chunks LiveSky clients played, by glass-to-glass latency bucket
    /// ([`crate::quality::LATENCY_BOUNDS_MS`]; trailing empty buckets left off).
    #[serde(rename = "@latency", default, skip_serializing_if = "SpaceList::is_empty")]
    pub latency: SpaceList<u64>,
}

impl ReportRow {
    /// The row's latency counts as a histogram (extra buckets from a newer sender are dropped).
    pub fn latency(&self) -> crate::quality::LatencyHistogram {
        let n = self.latency.0.len().min(crate::quality::LATENCY_BOUNDS_MS.len());
        crate::quality::LatencyHistogram::from_counts(&self.latency.0[..n]).unwrap_or_default()
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportAck {
    #[serde(rename = "@id")]
    pub id: String,
}

/// A fresh challenge: 16 random bytes as hex. None if the OS has no randomness to give, in which
/// case the caller must not go on (a predictable challenge lets a recorded answer be replayed).
#[cfg(feature = "rand")]
pub fn nonce() -> Option<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).ok()?;
    Some(crate::sign::to_hex(&b))
}

/// What an SN signs: the MC's nonce bound to the SN's id.
pub fn alive_proof(id: &NodeId, mc_nonce: &str) -> Vec<u8> {
    format!("livesky-mc-alive\0{id}\0{mc_nonce}").into_bytes()
}

/// What the MC signs: the SN's nonce bound to the SN's id.
pub fn welcome_proof(id: &NodeId, sn_nonce: &str) -> Vec<u8> {
    format!("livesky-mc-welcome\0{id}\0{sn_nonce}").into_bytes()
}

impl WireMessage for McMessage {
    fn kind(&self) -> &'static str {
        match self {
            McMessage::Challenge(_) => "challenge",
            McMessage::Alive(_) => "alive",
            McMessage::Welcome(_) => "welcome",
            McMessage::Refused(_) => "refused",
            McMessage::Heartbeat(_) => "heartbeat",
            McMessage::Members(_) => "members",
            McMessage::Config(_) => "config",
            McMessage::Ack(_) => "ack",
            McMessage::Resync(_) => "resync",
            McMessage::Lookup(_) => "lookup",
            McMessage::Report(_) => "report",
            McMessage::ReportAck(_) => "report-ack",
            McMessage::Drain(_) => "drain",
        }
    }

    /// The body is the XML document itself (its `<` doubles as the type byte).
    fn encode_body(&self, out: &mut BytesMut) {
        match quick_xml::se::to_string(self) {
            Ok(xml) => out.put_slice(xml.as_bytes()),
            // Our own types always serialise; should one not, the peer gets a frame it refuses.
            Err(e) => out.put_slice(format!("<!-- {e} -->").as_bytes()),
        }
    }

    fn decode_body(body: Bytes) -> Result<Self, WireError> {
        if body.first() != Some(&XML_TYPE) {
            return Err(WireError::UnknownType(body.first().copied().unwrap_or(0)));
        }
        let text = std::str::from_utf8(&body).map_err(|_| WireError::BadUtf8 { what: "control message" })?;
        quick_xml::de::from_str(text)
            .map_err(|e| WireError::Malformed { what: "control message", message: e.to_string() })
    }
}

/// A channel as one XML element: every setting an attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct XmlChannel {
    #[serde(rename = "@id")]
    pub id: ChannelId,
    #[serde(rename = "@origin", default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<NodeId>,
    /// push, tcp, pull, loop or srt_call.
    #[serde(rename = "@source")]
    pub source: String,
    #[serde(rename = "@listen", default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(rename = "@url", default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(rename = "@path", default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(rename = "@speed", default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    /// The encoder an `srt_call` source calls, with its stream id and passphrase.
    #[serde(rename = "@addr", default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<SocketAddr>,
    #[serde(rename = "@stream-id", default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
    #[serde(rename = "@passphrase", default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<String>,
    #[serde(rename = "@substreams")]
    pub substreams: u16,
    #[serde(rename = "@bitrate-kbps")]
    pub bitrate_kbps: u32,
    /// Legacy formats offered, space-separated (`ts hls`; empty: LiveSky clients only).
    #[serde(rename = "@legacy")]
    pub legacy: String,
    #[serde(rename = "@stream-key", default, skip_serializing_if = "Option::is_none")]
    pub stream_key: Option<String>,
    #[serde(rename = "@signing-key", default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
    #[serde(rename = "@require-token", default, skip_serializing_if = "std::ops::Not::not")]
    pub require_token: bool,
    #[serde(rename = "@token-key", default, skip_serializing_if = "Option::is_none")]
    pub token_key: Option<String>,
    #[serde(rename = "@target-latency-ms", default, skip_serializing_if = "Option::is_none")]
    pub target_latency_ms: Option<u32>,
}

impl From<&ChannelConfig> for XmlChannel {
    fn from(c: &ChannelConfig) -> Self {
        let (mut listen, mut url, mut path, mut speed) = (None, None, None, None);
        let (mut addr, mut stream_id, mut passphrase) = (None, None, None);
        let source = match &c.source {
            SourceConfig::Push => "push",
            SourceConfig::Tcp { listen: l } => {
                listen = Some(*l);
                "tcp"
            }
            SourceConfig::Pull { url: u } => {
                url = Some(u.clone());
                "pull"
            }
            SourceConfig::Loop { path: p, speed: s } => {
                path = Some(p.clone());
                speed = Some(*s);
                "loop"
            }
            SourceConfig::SrtCall { addr: a, stream_id: i, passphrase: p } => {
                (addr, stream_id, passphrase) = (Some(*a), i.clone(), p.clone());
                "srt_call"
            }
        };
        XmlChannel {
            id: c.id.clone(),
            origin: c.origin.clone(),
            source: source.to_string(),
            listen,
            url,
            path,
            speed,
            addr,
            stream_id,
            passphrase,
            substreams: c.substreams,
            bitrate_kbps: c.bitrate_kbps,
            legacy: c.legacy.iter().map(|f| f.name()).collect::<Vec<_>>().join(" "),
            stream_key: c.stream_key.clone(),
            signing_key: c.signing_key.clone(),
            require_token: c.require_token,
            token_key: c.token_key.clone(),
            target_latency_ms: c.target_latency_ms,
        }
    }
}

impl TryFrom<XmlChannel> for ChannelConfig {
    type Error = DocError;

    fn try_from(x: XmlChannel) -> Result<Self, DocError> {
        let missing = |what: &str| DocError::Invalid(format!("channel {}: source {} needs `{what}`", x.id, x.source));
        let source = match x.source.as_str() {
            "push" => SourceConfig::Push,
            "tcp" => SourceConfig::Tcp { listen: x.listen.ok_or_else(|| missing("listen"))? },
            "pull" => SourceConfig::Pull { url: x.url.clone().ok_or_else(|| missing("url"))? },
            "loop" => SourceConfig::Loop {
                path: x.path.clone().ok_or_else(|| missing("path"))?,
                speed: x.speed.unwrap_or(1.0),
            },
            "srt_call" => SourceConfig::SrtCall {
                addr: x.addr.ok_or_else(|| missing("addr"))?,
                stream_id: x.stream_id.clone(),
                passphrase: x.passphrase.clone(),
            },
            other => return Err(DocError::Invalid(format!("channel {}: unknown source kind `{other}`", x.id))),
        };
        let mut legacy = Vec::new();
        for f in x.legacy.split_ascii_whitespace() {
            legacy.push(match f {
                "ts" => LegacyFormat::Ts,
                "hls" => LegacyFormat::Hls,
                other => return Err(DocError::Invalid(format!("channel {}: unknown legacy format `{other}`", x.id))),
            });
        }
        Ok(ChannelConfig {
            id: x.id,
            origin: x.origin,
            source,
            substreams: x.substreams,
            bitrate_kbps: x.bitrate_kbps,
            legacy,
            stream_key: x.stream_key,
            signing_key: x.signing_key,
            require_token: x.require_token,
            token_key: x.token_key,
            target_latency_ms: x.target_latency_ms,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoveChannel {
    #[serde(rename = "@id")]
    pub id: ChannelId,
}

/// The `<config>` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "config")]
pub struct ConfigXml {
    #[serde(rename = "@node")]
    pub node_id: NodeId,
    #[serde(rename = "@version")]
    pub version: u64,
    /// The version this update applies on top of; absent: a full snapshot.
    #[serde(rename = "@base", default, skip_serializing_if = "Option::is_none")]
    pub base: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeConfig>,
    #[serde(rename = "channel", default)]
    pub channels: Vec<XmlChannel>,
    #[serde(rename = "remove-channel", default)]
    pub removed: Vec<RemoveChannel>,
}

/// What secrets are replaced with when a document is shown to people.
pub const REDACTED: &str = "(redacted)";

impl ConfigXml {
    pub fn to_xml(&self) -> String {
        quick_xml::se::to_string(self).unwrap_or_else(|e| format!("<!-- {e} -->"))
    }

    /// The document with every secret replaced by [`REDACTED`] (stream keys, channel signing
    /// seeds, SRT passphrases): for operators' eyes. Secrets travel only on the SN control link.
    pub fn redacted(&self) -> ConfigXml {
        let hide = |v: &mut Option<String>| {
            if v.is_some() {
                *v = Some(REDACTED.to_string());
            }
        };
        let mut doc = self.clone();
        for c in &mut doc.channels {
            hide(&mut c.stream_key);
            hide(&mut c.signing_key);
            hide(&mut c.passphrase);
        }
        if let Some(n) = doc.node.as_mut() {
            hide(&mut n.ingest.srt_passphrase);
        }
        doc
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DocError {
    #[error("config document is for node {got}, this node is {want}")]
    WrongNode { want: NodeId, got: NodeId },
    #[error("update to version {version} applies on top of version {base}, this node holds {have}: needs a snapshot")]
    BaseMismatch { version: u64, base: u64, have: u64 },
    #[error("a snapshot must carry the node's settings")]
    NoNode,
    #[error("invalid config document: {0}")]
    Invalid(String),
}

/// One SN's configuration: its own settings and every channel, as of `version`.
#[derive(Debug, Clone)]
pub struct SnConfig {
    pub version: u64,
    pub node: NodeConfig,
    pub channels: BTreeMap<ChannelId, ChannelConfig>,
}

impl SnConfig {
    /// What node `id` gets from `topo` at `version`: channel secrets only where the channel is fed.
    pub fn derive(topo: &Topology, id: &NodeId, version: u64) -> Option<SnConfig> {
        let node = topo.node(id)?.clone();
        let channels = topo
            .channels
            .iter()
            .map(|c| {
                let mut c = c.clone();
                // Resolved here, so every SN knows where each channel is fed.
                c.origin = topo.origin_of(&c).cloned();
                if c.origin.as_ref() != Some(id) {
                    c.stream_key = None;
                    c.signing_key = None;
                    if let SourceConfig::SrtCall { passphrase, .. } = &mut c.source {
                        *passphrase = None;
                    }
                }
                (c.id.clone(), c)
            })
            .collect();
        Some(SnConfig { version, node, channels })
    }

    pub fn snapshot(&self) -> ConfigXml {
        ConfigXml {
            node_id: self.node.id.clone(),
            version: self.version,
            base: None,
            node: Some(self.node.clone()),
            channels: self.channels.values().map(XmlChannel::from).collect(),
            removed: Vec::new(),
        }
    }

    /// The update that turns `old` into `self`: only the elements that differ.
    pub fn diff_from(&self, old: &SnConfig) -> ConfigXml {
        let channels = self
            .channels
            .iter()
            .filter(|(id, c)| old.channels.get(*id) != Some(*c))
            .map(|(_, c)| XmlChannel::from(c))
            .collect();
        let removed = old
            .channels
            .keys()
            .filter(|id| !self.channels.contains_key(*id))
            .map(|id| RemoveChannel { id: id.clone() })
            .collect();
        ConfigXml {
            node_id: self.node.id.clone(),
            version: self.version,
            base: Some(old.version),
            node: (self.node != old.node).then(|| self.node.clone()),
            channels,
            removed,
        }
    }

    /// Builds a config from a snapshot.
    pub fn from_snapshot(doc: ConfigXml) -> Result<SnConfig, DocError> {
        if doc.base.is_some() {
            return Err(DocError::Invalid("an update cannot start a config".into()));
        }
        let node = doc.node.ok_or(DocError::NoNode)?;
        let mut channels = BTreeMap::new();
        for c in doc.channels {
            let c = ChannelConfig::try_from(c)?;
            channels.insert(c.id.clone(), c);
        }
        Ok(SnConfig { version: doc.version, node, channels })
    }

    /// Applies a snapshot or an update on top of `current` into a new config; `current` is left
    /// as it was if anything is wrong (all or nothing).
    pub fn apply(current: Option<&SnConfig>, id: &NodeId, doc: ConfigXml) -> Result<SnConfig, DocError> {
        if &doc.node_id != id {
            return Err(DocError::WrongNode { want: id.clone(), got: doc.node_id });
        }
        let Some(base) = doc.base else { return SnConfig::from_snapshot(doc) };
        let have = current.map_or(0, |c| c.version);
        let Some(cur) = current.filter(|c| c.version == base) else {
            return Err(DocError::BaseMismatch { version: doc.version, base, have });
        };
        let mut next = cur.clone();
        next.version = doc.version;
        if let Some(n) = doc.node {
            next.node = n;
        }
        for c in doc.channels {
            let c = ChannelConfig::try_from(c)?;
            next.channels.insert(c.id.clone(), c);
        }
        for r in doc.removed {
            next.channels.remove(&r.id);
        }
        Ok(next)
    }
}

#[cfg(all(test, feature = "codec"))]
mod tests;
