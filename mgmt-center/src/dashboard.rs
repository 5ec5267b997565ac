//! The NOC dashboard: one page embedded in the binary (no scripts from elsewhere), fed by
//! `GET /api/overview` (now and the last 10 minutes), `GET /api/sns` (SNs by tier) and live
//! updates on `GET /api/events` (server-sent events, every 2 s).

use proto::config::Role;
use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use serde::Serialize;

use crate::server::McServer;

const PAGE: &str = include_str!("../assets/dashboard.html");

pub fn routes() -> Router<McServer> {
    Router::new()
        .route("/", get(page_overview))
        .route("/edge/{id}", get(page_edge))
        .route("/channel/{id}", get(page_channel))
        .route("/api/overview", get(overview))
        .route("/api/sns", get(sns))
        .route("/api/events", get(events))
        .route("/api/edge/{id}", get(edge))
        .route("/api/channel/{id}", get(channel))
        .route("/api/reload", axum::routing::post(crate::http::reload))
        .route("/api/edges/{id}/{action}", axum::routing::post(edge_action))
        .route("/api/channels/{id}/{action}", axum::routing::post(channel_action))
}

/// An operator action: the token checked, `verb` one of `verbs` (each with the flag it means),
/// then `run(flag)`.
fn act(
    mc: &McServer,
    headers: &axum::http::HeaderMap,
    verb: &str,
    verbs: [(&str, bool); 2],
    run: impl FnOnce(bool) -> Result<serde_json::Value, String>,
) -> Response {
    if let Some(refused) = crate::http::refuse_action(mc, headers) {
        return refused;
    }
    let Some(&(_, flag)) = verbs.iter().find(|(v, _)| *v == verb) else {
        return not_found(format!("no action `{verb}` ({} or {})", verbs[0].0, verbs[1].0));
    };
    match run(flag) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => not_found(e),
    }
}

async fn edge_action(
    State(mc): State<McServer>,
    axum::extract::Path((id, verb)): axum::extract::Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Response {
    act(&mc, &headers, &verb, [("drain", true), ("undrain", false)], |on| {
        mc.set_drained(&id, on).map(|()| serde_json::json!({ "edge": id, "draining": on }))
    })
}

async fn channel_action(
    State(mc): State<McServer>,
    axum::extract::Path((id, verb)): axum::extract::Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Response {
    act(&mc, &headers, &verb, [("offline", true), ("online", false)], |offline| {
        mc.set_offline(&id, offline).map(|v| serde_json::json!({ "channel": id, "offline": offline, "version": v }))
    })
}

/// GET `http://{addr}{path}` as JSON, within 2 s.
async fn node_json(addr: std::net::SocketAddr, path: &str) -> Result<serde_json::Value, String> {
    let client = livesky_net::http::json_client();
    livesky_net::http::get_json(&client, &format!("http://{addr}{path}"), Duration::from_secs(2)).await
}

fn not_found(what: String) -> Response {
    (axum::http::StatusCode::NOT_FOUND, what + "\n").into_response()
}

/// An edge's own view of its LiveSky clients (stage, P0, Nc, bounds, trees, NAT share), as
/// its `/p2p` page says, and what the MC knows of it.
async fn edge_data(mc: &McServer, id: &str) -> Result<serde_json::Value, String> {
    let member = {
        let st = mc.shared.state();
        st.registry
            .loads()
            .find(|(m, _)| m.id.as_str() == id && m.role == Role::Edge)
            .map(|(m, l)| (m.clone(), l.users))
    };
    let Some((m, users)) = member else { return Err(format!("no live edge `{id}`")) };
    let p2p = node_json(m.http, "/p2p").await.unwrap_or_else(|e| serde_json::json!({ "error": e }));
    Ok(serde_json::json!({
        "id": m.id.as_str(), "http": m.http.to_string(), "users": users,
        "capacity_kbps": m.capacity_kbps, "p2p": p2p,
    }))
}

async fn edge(State(mc): State<McServer>, axum::extract::Path(id): axum::extract::Path<String>) -> Response {
    match edge_data(&mc, &id).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => not_found(e),
    }
}

/// A channel: viewers and bandwidth per edge (from heartbeats), and its ingest as the origin
/// node's `/status` shows it.
async fn channel(State(mc): State<McServer>, axum::extract::Path(id): axum::extract::Path<String>) -> Response {
    match channel_data(&mc, &id).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => not_found(e),
    }
}

async fn channel_data(mc: &McServer, id: &str) -> Result<serde_json::Value, String> {
    let (origin, per_edge) = {
        let st = mc.shared.state();
        let topo = st.store.topology();
        let Some(c) = topo.channels.iter().find(|c| c.id.as_str() == id) else {
            return Err(format!("no channel `{id}`"));
        };
        let origin = topo.origin_of(c).and_then(|o| st.registry.get(o)).map(|m| (m.id.to_string(), m.http));
        (origin, st.noc.channel(id))
    };
    let ingest = match origin {
        Some((node, http)) => {
            let status = node_json(http, "/status").await;
            let entry = status.map(|s| {
                s["channels"].as_array().and_then(|l| l.iter().find(|c| c["id"] == id).cloned()).unwrap_or_default()
            });
            serde_json::json!({ "node": node, "status": entry.unwrap_or_else(|e| serde_json::json!({ "error": e })) })
        }
        None => serde_json::json!({ "error": "the channel's origin is not registered" }),
    };
    Ok(serde_json::json!({ "id": id, "ingest": ingest, "edges": per_edge }))
}

/// The page with what it shows first written into it, so it is complete the moment it loads
/// (live updates follow). `</` is escaped: the JSON cannot close the script element.
fn render(mc: &McServer, view: serde_json::Value) -> Response {
    let init = serde_json::json!({ "view": view, "overview": overview_data(mc), "sns": sns_data(mc) });
    let json = init.to_string().replace("</", "<\\/");
    let html = PAGE.replace("/*INITIAL*/null", &json);
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], html).into_response()
}

async fn page_overview(State(mc): State<McServer>) -> Response {
    render(&mc, serde_json::json!({ "kind": "overview" }))
}

async fn page_edge(State(mc): State<McServer>, axum::extract::Path(id): axum::extract::Path<String>) -> Response {
    let data = edge_data(&mc, &id).await;
    let data = data.unwrap_or_else(|e| serde_json::json!({ "error": e }));
    render(&mc, serde_json::json!({ "kind": "edge", "id": id, "data": data }))
}

async fn page_channel(State(mc): State<McServer>, axum::extract::Path(id): axum::extract::Path<String>) -> Response {
    let data = channel_data(&mc, &id).await.unwrap_or_else(|e| serde_json::json!({ "error": e }));
    render(&mc, serde_json::json!({ "kind": "channel", "id": id, "data": data }))
}

fn overview_data(mc: &McServer) -> serde_json::Value {
    let now = mc.shared.overview.borrow().clone();
    let history: Vec<crate::noc::Overview> = mc.shared.state().noc.history().cloned().collect();
    serde_json::json!({ "now": now, "history": history })
}

async fn overview(State(mc): State<McServer>) -> Response {
    axum::Json(overview_data(&mc)).into_response()
}

#[derive(Serialize)]
struct SnView {
    id: String,
    tier: u8,
    role: String,
    users: u64,
    capacity_kbps: u64,
    /// Edges: clients / N*c, with N*c at the channels' mean bitrate.
    load: Option<f64>,
    /// Channels in stage 4.
    full: Vec<String>,
    config_version: Option<u64>,
    /// Upstream failovers since the SN started.
    failovers: u64,
    alive: bool,
    /// An operator drained it: the GSLB sends it nobody, its clients were moved.
    draining: bool,
}

async fn sns(State(mc): State<McServer>) -> Response {
    axum::Json(sns_data(&mc)).into_response()
}

fn sns_data(mc: &McServer) -> serde_json::Value {
    let st = mc.shared.state();
    let topo = st.store.topology();
    let rates: Vec<u64> = topo.channels.iter().map(|c| u64::from(c.bitrate_kbps)).collect();
    let mean_kbps = (rates.iter().sum::<u64>() / (rates.len() as u64).max(1)).max(1);
    let mut list: Vec<SnView> = st
        .registry
        .loads()
        .map(|(m, load)| SnView {
            id: m.id.to_string(),
            tier: m.tier,
            role: m.role.as_str().to_string(),
            users: load.users,
            capacity_kbps: m.capacity_kbps,
            load: (m.role == Role::Edge && m.capacity_kbps > 0)
                .then(|| load.users as f64 / (m.capacity_kbps / mean_kbps).max(1) as f64),
            full: load.full.iter().map(|c| c.to_string()).collect(),
            config_version: st.store.acked(&m.id),
            failovers: load.failovers,
            alive: true,
            draining: st.drained.contains(&m.id),
        })
        .collect();
    // Nodes of the topology that are not registered: dead (or never started).
    for n in &topo.nodes {
        if st.registry.get(&n.id).is_none() {
            list.push(SnView {
                id: n.id.to_string(),
                tier: n.tier,
                role: n.role.as_str().into(),
                users: 0,
                capacity_kbps: 0,
                load: None,
                full: Vec::new(),
                config_version: None,
                failovers: 0,
                alive: false,
                draining: st.drained.contains(&n.id),
            });
        }
    }
    list.sort_by(|a, b| (a.tier, &a.id).cmp(&(b.tier, &b.id)));
    let channels: Vec<&str> = topo.channels.iter().map(|c| c.id.as_str()).collect();
    let offline: Vec<&String> = st.offline.iter().collect();
    serde_json::json!({
        "config_version": st.store.version(), "sns": list, "channels": channels, "offline": offline,
    })
}

/// One event per new overview (every 2 s); a slow dashboard skips to the newest, so nothing
/// queues up for it.
async fn events(State(mc): State<McServer>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = mc.shared.overview.subscribe();
    let cancel = mc.shared_cancel();
    let stream = futures_util::stream::unfold((rx, cancel), |(mut rx, cancel)| async move {
        tokio::select! {
            _ = cancel.cancelled() => None,
            changed = rx.changed() => {
                changed.ok()?;
                let o = rx.borrow_and_update().clone();
                let data = serde_json::to_string(&o).unwrap_or_else(|_| "{}".into());
                Some((Ok(Event::default().event("overview").data(data)), (rx, cancel)))
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
