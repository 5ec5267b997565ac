//! HTTP: the 302 fallback for clients that cannot use the CDN's DNS (`GET /CHANNEL` →
//! the chosen edge's URL), what the GSLB currently believes (`GET /edges`), and `/metrics`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hickory_proto::rr::{LowerName, Name};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::choose::{Ask, Policy, Want, client_key, load};
use crate::server::Shared;

pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let cancel = shared.cancel.clone();
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/edges", get(edges))
        .route("/{channel}", get(redirect))
        .with_state(shared.clone());
    let limits = &shared.settings.limits;
    let limiter = livesky_net::httpd::http_limiter(limits, shared.metrics.conns.clone());
    let opts = livesky_net::httpd::ServeOptions::plain(limits.http_header_timeout());
    livesky_net::httpd::serve(listener, app, limiter, cancel, opts).await;
}

#[derive(Deserialize)]
struct Params {
    /// `ts` (default), `hls`, or `livesky` (the edge's client port, for peer players).
    format: Option<String>,
}

fn text(code: StatusCode, msg: String) -> Response {
    (code, [(header::CACHE_CONTROL, "no-store")], msg + "\n").into_response()
}

/// The client: the connection's address, or the nearest untrusted hop of `X-Forwarded-For`
/// when the connection comes from a trusted proxy.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|h| h.trim().parse().ok())
        .collect();
    hops.into_iter().rev().find(|h| !trusted.contains(h)).unwrap_or(peer)
}

async fn redirect(
    State(sh): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(channel): Path<String>,
    Query(p): Query<Params>,
    headers: HeaderMap,
) -> Response {
    let fail = |result: &str, code: StatusCode, msg: String| {
        sh.metrics.redirects.with_label_values(&[result]).inc();
        text(code, msg)
    };
    let format = p.format.as_deref().unwrap_or("ts");
    if !matches!(format, "ts" | "hls" | "livesky") {
        return fail("bad_request", StatusCode::BAD_REQUEST, format!("unknown format `{format}`: ts, hls or livesky"));
    }
    // The same names the DNS answers: CHANNEL.ZONE.
    let name = Name::from_ascii(&channel).and_then(|n| n.append_domain(sh.zone.origin()));
    let view = sh.view();
    let Some((id, rate)) = name.ok().and_then(|n| sh.zone.channel(&LowerName::new(&n), &view)) else {
        return fail("unknown_channel", StatusCode::NOT_FOUND, format!("no channel `{channel}`"));
    };
    let ip = client_addr(peer.ip(), &headers, &sh.settings.trusted_proxies);
    let geo = sh.geo();
    let want = if format == "livesky" { Want::Livesky } else { Want::Http };
    let ask = Ask { client: geo.lookup(ip), channel: &id, bitrate_kbps: rate, key: client_key(ip), want };
    let policy = Policy { answers: 1, tie_band: sh.settings.tie_band };
    let choice = crate::choose::choose(&view.edges, &ask, &policy);
    let Some(edge) = choice.edges.first() else {
        return fail(
            "no_edge",
            StatusCode::SERVICE_UNAVAILABLE,
            "no live edge can serve this channel; retry shortly".into(),
        );
    };
    let location = match (format, edge.http, edge.clients) {
        ("livesky", _, Some(c)) => format!("livesky://{c}/{channel}"),
        ("hls", Some(h), _) => format!("http://{h}/live/{channel}/index.m3u8"),
        (_, Some(h), _) => format!("http://{h}/live/{channel}.ts"),
        _ => return fail("no_edge", StatusCode::SERVICE_UNAVAILABLE, "no edge with that port".into()),
    };
    sh.metrics.redirects.with_label_values(&["ok"]).inc();
    sh.metrics.chosen.with_label_values(&[edge.id.as_str()]).inc();
    sh.metrics.matched.with_label_values(&[choice.level.label()]).inc();
    (StatusCode::FOUND, [(header::LOCATION, location), (header::CACHE_CONTROL, "no-store".to_string())]).into_response()
}

async fn edges(State(sh): State<Arc<Shared>>) -> Response {
    let view = sh.view();
    let list: Vec<serde_json::Value> = view
        .edges
        .list()
        .iter()
        .map(|e| {
            serde_json::json!({
                "id": e.id, "region": e.region, "isp": e.isp, "addrs": e.addrs,
                "users": e.users, "capacity_kbps": e.capacity_kbps,
                "load": load(e, sh.settings.default_bitrate_kbps), "full": e.full,
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "feed_age_seconds": sh.feed_age(), "edges": list })).into_response()
}

async fn metrics(State(sh): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], sh.metrics.render()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 198.51.100.7, 10.0.0.2".parse().expect("header"));
        let trusted = [ip("10.0.0.1"), ip("10.0.0.2")];
        assert_eq!(client_addr(ip("192.0.2.1"), &h, &trusted), ip("192.0.2.1"));
        // The client can forge the left of the list; the right-most untrusted hop is what our
        // proxy saw.
        assert_eq!(client_addr(ip("10.0.0.1"), &h, &trusted), ip("198.51.100.7"));
        assert_eq!(client_addr(ip("10.0.0.1"), &HeaderMap::new(), &trusted), ip("10.0.0.1"));
    }
}
