//! The edge SN (LiveSky §2.2): a relay node in the last tier that serves viewers. Legacy clients
//! get continuous HTTP-TS from a keyframe ([`ts_viewer`]) and live HLS ([`hls`], [`hls_http`])
//! from the node's shared ring, with no per-viewer copies and bounded memory per viewer. LiveSky
//! clients connect to the client port ([`clients`]), where one task per channel
//! ([`channel_task`]) drives the sans-IO tracker, seed and admission controller of
//! `livesky-edge-core` ([`service`], [`feeder`]); [`stun`] answers their address probes and
//! [`report`] sends the per-minute rows to the management center.

// Handlers return `Result<_, Response>` so an error is answered where it is found; the size of
// `Response` is irrelevant on this path.
#![allow(clippy::result_large_err)]

pub mod channel_task;
pub mod clients;
mod error;
pub mod hls;
pub mod hls_http;
mod hls_raw;
mod metrics;
pub mod report;
pub mod stun;
mod ts_fanout;
mod ts_pending;
mod ts_spool;
pub mod ts_viewer;
pub mod viewers;
pub mod web;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use livesky_net::http::text_error;
use proto::ChannelId;
use sn_core::Node;
use sn_core::http::base_router;
use std::net::SocketAddr;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

pub use error::EdgeError;
pub use livesky_edge_core::{admission, feeder, model, service, tree};
pub use metrics::EdgeMetrics;

/// Shared state of one edge: legacy viewers (HTTP) and LiveSky clients (the client port).
pub struct Edge {
    pub node: Node,
    pub metrics: EdgeMetrics,
    hls: Mutex<HashMap<ChannelId, Arc<hls_http::HlsChannel>>>,
    clients: channel_task::Services,
    channels: std::sync::RwLock<HashMap<ChannelId, channel_task::ChannelInfo>>,
    /// Who may watch each channel (open, or token holders).
    viewers: std::sync::RwLock<HashMap<ChannelId, viewers::ViewerPolicy>>,
    /// Admission parameters: from the file, then as the management center pushes them.
    admission: std::sync::RwLock<sn_core::AdmissionSettings>,
    stun: Mutex<Option<SocketAddr>>,
    /// Ticks every `viewer_coalesce_ms`: caught-up viewers all wake on the same tick, so the
    /// edge works in short bursts instead of being woken by thousands of scattered timers.
    flush_clock: Option<watch::Receiver<u64>>,
    /// HTTP-TS viewers, by channel, in the groups that serve them.
    ts_groups: ts_fanout::Groups,
}

impl Edge {
    /// `channels`: the topology's channels, for their bitrates and substream counts.
    pub fn new(node: Node, channels: &[sn_core::ChannelConfig]) -> Arc<Edge> {
        let metrics = EdgeMetrics::new(&node.metrics().registry);
        let period = Duration::from_millis(node.config().edge.viewer_coalesce_ms);
        let flush_clock = (!period.is_zero()).then(|| {
            let (tx, rx) = watch::channel(0u64);
            let n = node.clone();
            node.spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = n.cancelled() => return,
                        _ = tick.tick() => tx.send_modify(|t| *t += 1),
                    }
                }
            });
            rx
        });
        let viewers = std::sync::RwLock::new(viewer_table(channels.iter()));
        let channels = std::sync::RwLock::new(channel_table(channels.iter()));
        let admission = std::sync::RwLock::new(node.config().edge.admission.clone());
        Arc::new(Edge {
            admission,
            node,
            metrics,
            hls: Mutex::new(HashMap::new()),
            clients: channel_task::Services::default(),
            channels,
            viewers,
            stun: Mutex::new(None),
            flush_clock,
            ts_groups: ts_fanout::Groups::default(),
        })
    }

    /// Bitrate and substreams of a channel (defaults when the topology does not list it).
    pub fn channel_info(&self, channel: &ChannelId) -> channel_task::ChannelInfo {
        let table = self.channels.read().unwrap_or_else(|e| e.into_inner());
        table.get(channel).copied().unwrap_or_default()
    }

    /// The channels as the management center pushed them last.
    /// Running channels take what changed for them (latency target, bitrate) at once.
    pub fn set_channels<'a>(&self, channels: impl Iterator<Item = &'a sn_core::ChannelConfig> + Clone) {
        *self.viewers.write().unwrap_or_else(|e| e.into_inner()) = viewer_table(channels.clone());
        let table = channel_table(channels);
        let changed = {
            let mut cur = self.channels.write().unwrap_or_else(|e| e.into_inner());
            let changed = *cur != table;
            *cur = table;
            changed
        };
        if changed {
            self.clients.reconfigure(self);
        }
    }

    /// Whether a viewer with `token` may watch `channel` now (with the token's claims when the
    /// channel requires one and it is valid); the reason when not.
    pub fn admit_viewer(
        &self,
        channel: &ChannelId,
        token: &str,
    ) -> Result<Option<proto::token::TokenClaims>, proto::token::TokenError> {
        let table = self.viewers.read().unwrap_or_else(|e| e.into_inner());
        let policy = table.get(channel).cloned().unwrap_or_default();
        drop(table);
        let r = policy.check(channel, token, viewers::unix_now_s());
        if let Err(e) = &r {
            use proto::token::TokenError as E;
            let reason = match e {
                E::Missing => "missing",
                E::Expired { .. } => "expired",
                _ => "invalid",
            };
            self.metrics.viewers_refused.with_label_values(&[channel.as_str(), reason]).inc();
        }
        r
    }

    pub fn admission_settings(&self) -> sn_core::AdmissionSettings {
        self.admission.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// New admission parameters (α, λ, μ, K', N1c, edge bandwidth, limits): running channels
    /// take them at once.
    pub fn set_admission(&self, settings: &sn_core::AdmissionSettings) {
        {
            let mut cur = self.admission.write().unwrap_or_else(|e| e.into_inner());
            if *cur == *settings {
                return;
            }
            *cur = settings.clone();
        }
        self.clients.reconfigure(self);
    }

    /// An operator drains this edge (or ends the drain): its LiveSky clients are sent to
    /// siblings and new ones too.
    pub fn set_draining(&self, on: bool) {
        self.clients.set_draining(on);
    }

    pub fn stun_addr(&self) -> Option<SocketAddr> {
        *self.stun.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Binds and starts the client port and STUN server configured for this edge; returns the
    /// client port's address.
    pub async fn start_client_service(self: &Arc<Self>) -> Result<Option<SocketAddr>, sn_core::NodeError> {
        let s = self.settings().clone();
        if let Some(addr) = s.stun_listen {
            let bind = |addr: SocketAddr| async move {
                UdpSocket::bind(addr).await.map_err(|source| sn_core::NodeError::Bind {
                    what: "STUN".into(),
                    addr,
                    source,
                })
            };
            let sock = bind(addr).await?;
            // The second port players test their NAT against (RFC 5780): the next one, unless
            // the first was picked by the system.
            let other_addr = s.stun_other_listen.unwrap_or_else(|| {
                SocketAddr::new(addr.ip(), if addr.port() == 0 { 0 } else { addr.port().wrapping_add(1) })
            });
            let other = bind(other_addr).await?;
            *self.stun.lock().unwrap_or_else(|e| e.into_inner()) = sock.local_addr().ok();
            stun::start_stun(self.clone(), sock, other);
        }
        let Some(addr) = s.client_listen else { return Ok(None) };
        let listener = TcpListener::bind(addr).await.map_err(|source| sn_core::NodeError::Bind {
            what: "LiveSky clients".into(),
            addr,
            source,
        })?;
        let bound = listener.local_addr().ok();
        clients::start(self.clone(), listener);
        tracing::info!(node = %self.node.id(), addr = ?bound, stun = ?self.stun_addr(), "LiveSky client port listening");
        Ok(bound)
    }

    fn settings(&self) -> &sn_core::EdgeSettings {
        &self.node.config().edge
    }

    fn secs(v: f64) -> Duration {
        Duration::from_secs_f64(v)
    }
}

fn viewer_table<'a>(
    channels: impl Iterator<Item = &'a sn_core::ChannelConfig>,
) -> HashMap<ChannelId, viewers::ViewerPolicy> {
    channels.map(|c| (c.id.clone(), viewers::ViewerPolicy::of(c))).collect()
}

fn channel_table<'a>(
    channels: impl Iterator<Item = &'a sn_core::ChannelConfig>,
) -> HashMap<ChannelId, channel_task::ChannelInfo> {
    channels
        .map(|c| {
            let info = channel_task::ChannelInfo {
                bitrate_kbps: c.bitrate_kbps,
                substreams: c.substreams,
                ts: c.legacy.contains(&proto::config::LegacyFormat::Ts),
                hls: c.legacy.contains(&proto::config::LegacyFormat::Hls),
                target_latency_ms: c.target_latency_ms,
            };
            (c.id.clone(), info)
        })
        .collect()
}

/// The edge's whole HTTP surface: node endpoints plus viewer routes.
pub fn router(edge: Arc<Edge>) -> Router {
    let viewer = Router::new()
        .route("/live/{file}", get(live_file))
        .route("/live/{channel}/index.m3u8", get(playlist))
        .route("/live/{channel}/{segment}", get(segment))
        .route("/p2p", get(p2p_status))
        .route("/p2p/clients", get(p2p_clients))
        .route("/watch/{channel}", get(web::watch))
        .route("/livesky/ws", get(web::websocket))
        .route("/livesky/{asset}", get(web::asset))
        .with_state(edge.clone());
    base_router(edge.node.clone()).merge(viewer)
}

/// Stage, P0, Nc, bounds and counters of every channel with LiveSky clients.
async fn p2p_status(State(edge): State<Arc<Edge>>) -> axum::Json<serde_json::Value> {
    let channels: Vec<serde_json::Value> = edge
        .clients
        .views()
        .into_iter()
        .map(|(c, snap, st)| {
            let reported = serde_json::json!({
                "played_ms": st.reported.played_ms,
                "stalled_ms": st.reported.stalled_ms,
                "stalls": st.reported.stalls,
                "bytes_from_edge": st.reported.bytes_from_edge,
                "bytes_from_peers": st.reported.bytes_from_peers,
                "bytes_up": st.reported.bytes_up,
                "latency_p50_ms": st.reported.latency.quantile_ms(0.5),
                "latency_p95_ms": st.reported.latency.quantile_ms(0.95),
            });
            let mut v = serde_json::json!({
                "channel": c.as_str(),
                "stage": snap.stage as u8,
                "p0": snap.p0,
                "nc": snap.nc,
                "n1c": snap.thresholds.n1c,
                "nc_star": snap.thresholds.nc_star,
                "alpha": snap.thresholds.alpha,
                "s": snap.thresholds.s,
                "stage3_above": snap.thresholds.stage3_above,
                "stage4_above": snap.thresholds.stage4_above,
                "edge_substreams": snap.tree.edge_substreams,
                "unfed_substreams": snap.tree.unfed,
                "refocus_total": snap.tree.refocus_total,
                "swaps": snap.tree.swaps,
                "joins": snap.stats.joins,
                "push_admits": snap.stats.push_admits,
                "p2p_admits": snap.stats.p2p_admits,
                "redirects": st.redirected,
                "natted_clients": st.natted_clients,
                "bad_chunk_reports": st.bad_chunk_reports,
                "bans": st.bans,
                "refused_banned": st.refused_banned,
                "inflated_clients": st.inflated_clients,
                "browsers_promoted": st.browsers_promoted,
                "browsers_demoted": st.browsers_demoted,
                "page_to_native_bytes": st.page_to_native_bytes,
                "excluded_bytes_up": st.excluded_bytes_up,
                "duplicate_identities": st.duplicate_identities,
                "demoted": st.demoted,
                "fed_for_delay": st.fed_for_delay,
                "signals_relayed": st.signals_relayed,
                "signals_refused": st.signals_refused,
                "bad_chunk_refused": st.bad_chunk_refused,
                "confirmations_refused": st.confirmations_refused,
                "reports_clamped": st.reports_clamped,
                "natted_bytes_up": st.natted_bytes_up,
                "nat_classes": proto::nat::NatClass::ALL.iter().map(|c| (c.as_str(), st.nat_classes[service::nat_index(*c)])).collect::<std::collections::BTreeMap<_, _>>(),
                "nat_mismatches": st.nat_mismatches,
                "leaves": snap.stats.leaves,
                "aged_out": snap.stats.aged_out,
                "reported": reported,
            });
            // Apart: one more key in the literal above exceeds `json!`'s recursion limit.
            v["troubles_before_source"] = st.troubles_before_source.into();
            v
        })
        .collect();
    axum::Json(serde_json::json!({ "node": edge.node.id().as_str(), "channels": channels }))
}

#[derive(serde::Deserialize)]
struct ClientsQuery {
    limit: Option<usize>,
}

/// Every channel's clients as the tracker holds them: address, NAT, who feeds each substream
/// (`"edge"`, a peer id, or null) and upload slots. `?limit=N` (default 1000, at most 10000).
async fn p2p_clients(
    State(edge): State<Arc<Edge>>,
    axum::extract::Query(q): axum::extract::Query<ClientsQuery>,
) -> axum::Json<serde_json::Value> {
    let limit = q.limit.unwrap_or(1000).min(10_000);
    let channels: Vec<serde_json::Value> = edge
        .clients
        .clients(limit)
        .await
        .into_iter()
        .map(|(channel, views)| {
            let clients: Vec<serde_json::Value> = views
                .iter()
                .map(|v| {
                    let feeds: Vec<serde_json::Value> = v
                        .feeds
                        .iter()
                        .map(|f| match f {
                            tree::Feed::Edge => serde_json::json!("edge"),
                            tree::Feed::Peer(p) => serde_json::json!(p.0),
                            tree::Feed::None => serde_json::Value::Null,
                        })
                        .collect();
                    serde_json::json!({
                        "peer": v.peer.0, "from": v.from.to_string(), "nat": v.nat.as_str(),
                        "stun_addr": v.stun_addr.map(|a| a.to_string()), "push": v.push, "page": v.page,
                        "feeds": feeds, "used_slots": v.used_slots, "slots": v.slots,
                    })
                })
                .collect();
            serde_json::json!({ "channel": channel.as_str(), "clients": clients })
        })
        .collect();
    axum::Json(serde_json::json!({ "node": edge.node.id().as_str(), "channels": channels }))
}

fn channel_from(name: &str) -> Result<ChannelId, Response> {
    ChannelId::new(name).map_err(|e| text_error(StatusCode::BAD_REQUEST, e.to_string()))
}

/// A legacy player's viewer token: `?token=…` (what players can be handed in a URL) or
/// `Authorization: Bearer …`.
#[derive(serde::Deserialize, Default)]
struct ViewerQuery {
    token: Option<String>,
    /// LL-HLS blocking playlist reload (RFC 8216bis 6.2.5.2).
    #[serde(rename = "_HLS_msn")]
    hls_msn: Option<u64>,
    #[serde(rename = "_HLS_part")]
    hls_part: Option<usize>,
    /// HTTP-TS: `low` starts at the newest keyframe and is written on every tick (more CPU for
    /// the edge, about `viewer_start_lead_ms` less delay for the viewer).
    latency: Option<String>,
}

impl ViewerQuery {
    fn token<'a>(&'a self, headers: &'a axum::http::HeaderMap) -> &'a str {
        self.token.as_deref().or_else(|| livesky_net::http::bearer(headers)).unwrap_or("")
    }
}

/// The channel, if legacy players may have it in this format (`hls` or else HTTP-TS) and this
/// viewer may watch it.
fn legacy_channel(edge: &Edge, name: &str, hls: bool, token: &str) -> Result<ChannelId, Response> {
    let channel = channel_from(name)?;
    if !edge.node.knows(&channel) {
        edge.node.count_unknown_channel("http");
        return Err(text_error(StatusCode::NOT_FOUND, format!("no channel {channel} on this CDN")));
    }
    if let Err(e) = edge.admit_viewer(&channel, token) {
        return Err(text_error(StatusCode::FORBIDDEN, format!("channel {channel}: {e}")));
    }
    let info = edge.channel_info(&channel);
    if (hls && !info.hls) || (!hls && !info.ts) {
        let what = if hls { "HLS" } else { "HTTP-TS" };
        return Err(text_error(
            StatusCode::NOT_FOUND,
            format!("channel {channel} is not offered as {what} on this CDN"),
        ));
    }
    Ok(channel)
}

/// `/live/{channel}.ts` that reached hyper: a connection's first such request is served off it
/// (see [`ts_viewer::takeover`]), so this is a keep-alive connection's later one.
async fn live_file(
    State(edge): State<Arc<Edge>>,
    Path(file): Path<String>,
    Query(q): Query<ViewerQuery>,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let Some(name) = file.strip_suffix(".ts") else {
        return text_error(StatusCode::NOT_FOUND, "use /live/CHANNEL.ts or /live/CHANNEL/index.m3u8");
    };
    match legacy_channel(&edge, name, false, q.token(&headers)) {
        Ok(_) => ts_viewer::again_on_new_connection(&uri),
        Err(r) => r,
    }
}

async fn playlist(
    State(edge): State<Arc<Edge>>,
    Path(channel): Path<String>,
    Query(q): Query<ViewerQuery>,
    headers: axum::http::HeaderMap,
) -> Response {
    match legacy_channel(&edge, &channel, true, q.token(&headers)) {
        // Segment URIs carry the token on, as players fetch them without the playlist's query.
        Ok(channel) => {
            let block = hls_http::Blocking { msn: q.hls_msn, part: q.hls_part };
            hls_http::playlist(edge, channel, q.token.as_deref(), block).await
        }
        Err(r) => r,
    }
}

async fn segment(
    State(edge): State<Arc<Edge>>,
    Path((channel, segment)): Path<(String, String)>,
    Query(q): Query<ViewerQuery>,
    headers: axum::http::HeaderMap,
) -> Response {
    let channel = match legacy_channel(&edge, &channel, true, q.token(&headers)) {
        Ok(c) => c,
        Err(r) => return r,
    };
    hls_http::media(edge, channel, &segment, &headers).await
}
