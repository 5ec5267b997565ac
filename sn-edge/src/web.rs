//! Web pages as peers (issue: browsers join the swarm): the player page `GET /watch/{channel}`,
//! the embeddable driver `GET /livesky/livesky.js` with the peer core built for WebAssembly and
//! mux.js, all embedded at build time (`web/build.sh` makes `web/dist/`), and the client
//! protocol over a WebSocket at `GET /livesky/ws`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use livesky_net::http::text_error;

use crate::Edge;
use crate::clients::{MAX_CLIENT_FRAME, serve_websocket};

struct Asset {
    name: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "livesky.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/src/livesky.js"),
    },
    Asset {
        name: "livesky_peer_web.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/dist/livesky_peer_web.js"),
    },
    Asset {
        name: "livesky_peer_web_bg.wasm",
        mime: "application/wasm",
        body: include_bytes!("../../web/dist/livesky_peer_web_bg.wasm"),
    },
    Asset {
        name: "mux.min.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/dist/mux.min.js"),
    },
];

const WATCH_PAGE: &str = include_str!("../../web/src/watch.html");

/// Size of the browser player's assets, bytes (for the benchmark table).
pub fn bundle_bytes() -> Vec<(&'static str, usize)> {
    ASSETS.iter().map(|a| (a.name, a.body.len())).collect()
}

/// `GET /livesky/{asset}`: readable from any origin, so content providers' pages can embed it.
pub async fn asset(Path(name): Path<String>) -> Response {
    let Some(a) = ASSETS.iter().find(|a| a.name == name) else {
        return text_error(StatusCode::NOT_FOUND, format!("no asset {name}; the player is /livesky/livesky.js"));
    };
    (
        [
            (header::CONTENT_TYPE, a.mime),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        a.body,
    )
        .into_response()
}

/// `GET /watch/{channel}`: the player page (the channel, `token`, `upload=false`, `ll=1` are read
/// by its script from the URL).
pub async fn watch(State(edge): State<Arc<Edge>>, Path(channel): Path<String>) -> Response {
    match proto::ChannelId::new(&channel) {
        Ok(c) if edge.node.knows(&c) => {}
        Ok(c) => return text_error(StatusCode::NOT_FOUND, format!("no channel {c} on this CDN")),
        Err(e) => return text_error(StatusCode::BAD_REQUEST, format!("bad channel name: {e}")),
    }
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], WATCH_PAGE)
        .into_response()
}

/// `GET /livesky/ws`: a web page's client connection, under the client port's caps.
pub async fn websocket(
    State(edge): State<Arc<Edge>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    let slots = edge.clients.slots.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let Some(slots) = slots else {
        return text_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this edge has no LiveSky client port (client_listen), so web pages cannot join it as peers",
        );
    };
    let permit = match slots.try_acquire(from.ip()) {
        Ok(p) => p,
        Err(r) => {
            let mut resp = text_error(StatusCode::SERVICE_UNAVAILABLE, format!("{r}; retry shortly"));
            resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            return resp;
        }
    };
    ws.max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| serve_websocket(edge, socket, from, permit))
}
