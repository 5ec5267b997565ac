//! What a running demo or cluster tells the outside where it listens (`--endpoints FILE`, JSON):
//! the edges, nodes, peers and the management center, written atomically so a reader never sees
//! half a file.

use std::path::Path;

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct EdgeEndpoint {
    pub id: String,
    pub http: String,
    pub metrics: String,
    /// LiveSky client port (`host:port`), when the edge runs the P2P service.
    pub clients: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct NodeEndpoint {
    pub id: String,
    pub tier: u8,
    pub role: &'static str,
    pub http: String,
    pub metrics: String,
    pub sn: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PeerEndpoint {
    /// The peer's local output: play `{http}/live.ts`.
    pub http: String,
    pub metrics: String,
}

/// What `--endpoints-file` holds: where to push, where to play, where to scrape.
#[derive(Debug, Serialize)]
pub struct Endpoints {
    /// Base URL for broadcaster pushes: append `/CHANNEL`.
    pub ingest: Option<String>,
    /// Raw-TCP MPEG-TS ingest address per channel.
    pub tcp_ingest: std::collections::BTreeMap<String, String>,
    /// RTMP ingest: append `/CHANNEL` (and `?key=KEY` when the channel has a stream key).
    pub rtmp: Option<String>,
    /// SRT ingest: add `?streamid=CHANNEL` (`CHANNEL?key=KEY` with a stream key).
    pub srt: Option<String>,
    pub edges: Vec<EdgeEndpoint>,
    pub nodes: Vec<NodeEndpoint>,
    pub channels: Vec<String>,
    pub play: Vec<String>,
    /// Peer players started by `livesky demo --peers N`.
    pub peers: Vec<PeerEndpoint>,
    /// The management center, when the demo runs one.
    pub mc: Option<McEndpoint>,
    /// The GSLB, when the demo runs one.
    pub gslb: Option<crate::gslb_cmd::GslbEndpoint>,
}

#[derive(Debug, Serialize)]
pub struct McEndpoint {
    /// The HTTP API: `/members`, `/config`, `POST /reload`.
    pub http: String,
    pub metrics: String,
    /// SN control links (`host:port`).
    pub control: String,
}

impl McEndpoint {
    pub fn of(mc: &livesky_mgmt_center::McServer) -> Self {
        McEndpoint {
            http: format!("http://{}", mc.http_addr),
            metrics: format!("http://{}/metrics", mc.http_addr),
            control: mc.control_addr.to_string(),
        }
    }
}

impl Endpoints {
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        write_atomic(path, &(json + "\n"))
    }
}

/// Writes a file through a temp file and a rename, so a reader (or the MC's file watch) never
/// sees half of it.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
