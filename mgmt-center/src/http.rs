//! The MC's HTTP API: membership and config for operators and the GSLB, `POST /reload` behind a
//! bearer token, and `/metrics`.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use proto::config::Role;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::server::McServer;

#[derive(Serialize)]
struct MemberView {
    id: String,
    tier: u8,
    role: String,
    http: String,
    sn: Option<String>,
    clients: Option<String>,
    capacity_kbps: u64,
    users: u64,
    config_version: Option<u64>,
}

pub fn router(mc: McServer) -> Router {
    Router::new()
        .route("/members", get(members))
        .route("/edges", get(edges))
        .route("/config", get(config))
        .route("/config/{node}", get(node_config))
        .route("/reload", post(reload))
        .route("/api/tokens", post(crate::tokens::issue))
        .route("/metrics", get(metrics))
        .merge(crate::dashboard::routes())
        .with_state(mc)
}

pub(crate) async fn serve(mc: McServer, listener: TcpListener) {
    let token = mc.shared_cancel();
    let limits = &mc.shared.settings.limits;
    let limiter = livesky_net::httpd::http_limiter(limits, mc.shared.metrics.conns.clone());
    let header_timeout = limits.http_header_timeout();
    livesky_net::httpd::serve(
        listener,
        router(mc),
        limiter,
        token,
        livesky_net::httpd::ServeOptions::plain(header_timeout),
    )
    .await;
}

async fn members(State(mc): State<McServer>) -> Response {
    let st = mc.shared.state();
    let list: Vec<MemberView> = st
        .registry
        .members()
        .map(|m| MemberView {
            id: m.id.to_string(),
            tier: m.tier,
            role: m.role.as_str().to_string(),
            http: m.http.to_string(),
            sn: m.sn.map(|a| a.to_string()),
            clients: m.clients.map(|a| a.to_string()),
            capacity_kbps: m.capacity_kbps,
            users: st.registry.users(&m.id).unwrap_or(0),
            config_version: st.store.acked(&m.id),
        })
        .collect();
    axum::Json(list).into_response()
}

/// The GSLB's feed: live edges with their place (from the topology) and load (from heartbeats).
async fn edges(State(mc): State<McServer>) -> Response {
    use proto::mc_api::{ChannelRate, EdgeView, EdgesView, advertised};
    let st = mc.shared.state();
    let topo = st.store.topology();
    let edges = st
        .registry
        .loads()
        .filter(|(m, _)| m.role == Role::Edge && !st.drained.contains(&m.id))
        .map(|(m, load)| {
            let cfg = topo.nodes.iter().find(|n| n.id == m.id).map(|n| &n.edge);
            let listening: Vec<std::net::SocketAddr> = m.clients.into_iter().chain([m.http]).collect();
            EdgeView {
                id: m.id.to_string(),
                region: cfg.map(|c| c.region.clone()).unwrap_or_default(),
                isp: cfg.map(|c| c.isp.clone()).unwrap_or_default(),
                addrs: advertised(cfg.map_or(&[][..], |c| &c.advertise), &listening),
                http: m.http,
                clients: m.clients,
                users: load.users,
                capacity_kbps: m.capacity_kbps,
                full: load.full.iter().map(|c| c.to_string()).collect(),
            }
        })
        .collect();
    let channels =
        topo.channels.iter().map(|c| ChannelRate { id: c.id.to_string(), bitrate_kbps: c.bitrate_kbps }).collect();
    axum::Json(EdgesView { version: st.registry.version(), edges, channels }).into_response()
}

async fn config(State(mc): State<McServer>) -> Response {
    let st = mc.shared.state();
    axum::Json(serde_json::json!({
        "version": st.store.version(),
        "topology": mc.shared.settings.topology.display().to_string(),
        "last_reload_error": st.last_reload_error,
    }))
    .into_response()
}

/// A node's config snapshot, for operators: behind the API token, and with every secret
/// redacted (the SN itself gets them over its authenticated control link, never over HTTP).
async fn node_config(State(mc): State<McServer>, Path(node): Path<String>, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse_action(&mc, &headers) {
        mc.shared.metrics.api_refused.with_label_values(&["config"]).inc();
        return refused;
    }
    let Ok(id) = proto::NodeId::new(&node) else {
        return (StatusCode::BAD_REQUEST, "not a node id\n").into_response();
    };
    match mc.shared.state().store.snapshot_for(&id) {
        Some(doc) => ([(header::CONTENT_TYPE, "application/xml")], doc.redacted().to_xml()).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no node `{node}` in the topology\n")).into_response(),
    }
}

/// Operator actions need the configured bearer token: the refusal to send when they may not run.
pub(crate) fn refuse_action(mc: &McServer, headers: &HeaderMap) -> Option<Response> {
    let Some(want) = mc.shared.settings.api_token.as_deref() else {
        return Some((StatusCode::FORBIDDEN, "no api_token is configured: actions are disabled\n").into_response());
    };
    let got = livesky_net::http::bearer(headers);
    // Compared without an early exit, so timing does not reveal how much matched.
    let same = got.is_some_and(|g| {
        g.len() == want.len() && g.bytes().zip(want.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    });
    (!same).then(|| (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response())
}

pub(crate) async fn reload(State(mc): State<McServer>, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse_action(&mc, &headers) {
        return refused;
    }
    match mc.reload() {
        Ok(v) => axum::Json(serde_json::json!({ "version": v })).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({ "error": e }))).into_response(),
    }
}

async fn metrics(State(mc): State<McServer>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], mc.shared.metrics.render()).into_response()
}
