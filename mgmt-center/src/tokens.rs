//! Viewer tokens for content providers' backends: `POST /api/tokens` (behind the API bearer
//! token) signs one with the MC's identity key, and every channel that requires tokens is pushed
//! to the edges with that key's public half unless the topology names another issuer.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use proto::config::Topology;
use serde::Deserialize;

use crate::server::McServer;

/// Longest validity a token may be given: a day; players ask again for longer sessions.
pub const MAX_TTL_S: u64 = 24 * 3600;
const DEFAULT_TTL_S: u64 = 3600;

/// Names the MC as the token issuer of every channel that requires tokens and names none.
pub fn stamp_token_keys(topology: &mut Topology, mc_public_hex: &str) {
    for c in &mut topology.channels {
        if c.require_token && c.token_key.is_none() {
            c.token_key = Some(mc_public_hex.to_string());
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenRequest {
    channel: String,
    client: String,
    #[serde(default)]
    ttl_s: Option<u64>,
}

pub(crate) async fn issue(
    State(mc): State<McServer>,
    headers: HeaderMap,
    body: Result<axum::Json<TokenRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Some(refused) = crate::http::refuse_action(&mc, &headers) {
        return refused;
    }
    let bad = |msg: String| (StatusCode::BAD_REQUEST, msg).into_response();
    let req = match body {
        Ok(axum::Json(r)) => r,
        Err(e) => return bad(format!("expected JSON {{\"channel\", \"client\", \"ttl_s\"?}}: {e}\n")),
    };
    let Ok(channel) = proto::ChannelId::new(&req.channel) else {
        return bad(format!("`{}` is not a channel id\n", req.channel));
    };
    let ttl = req.ttl_s.unwrap_or(DEFAULT_TTL_S);
    if !(1..=MAX_TTL_S).contains(&ttl) {
        return bad(format!("ttl_s must be 1..={MAX_TTL_S}\n"));
    }
    let topo = mc.shared.state().store.topology();
    let Some(cfg) = topo.channels.iter().find(|c| c.id == channel) else {
        return (StatusCode::NOT_FOUND, format!("no channel `{channel}` in the topology\n")).into_response();
    };
    if cfg.token_key.as_deref() != Some(mc.shared.public_hex()) {
        // Edges would refuse an MC token here: say so rather than hand out a useless one.
        let why = if cfg.require_token { "names another token issuer" } else { "does not require tokens" };
        return (StatusCode::CONFLICT, format!("channel `{channel}` {why}\n")).into_response();
    }
    let expires = crate::server::unix_now_s() + ttl;
    match mc.shared.issue_token(&channel, &req.client, expires) {
        Ok(token) => axum::Json(serde_json::json!({
            "channel": channel.as_str(),
            "client": req.client,
            "expires": expires,
            "token": token,
        }))
        .into_response(),
        Err(e) => bad(format!("{e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_channels_requiring_tokens_without_an_issuer_get_the_mcs_key() {
        let own = proto::NodeKey::from_seed([2; 32]).public_hex();
        let mut t = Topology::parse(
            &r#"
[[channel]]
id = "open"
source = { kind = "push" }
[[channel]]
id = "paid"
source = { kind = "push" }
require_token = true
[[channel]]
id = "own"
source = { kind = "push" }
require_token = true
token_key = "OWN"
[[node]]
id = "t0"
tier = 0
sn_listen = "127.0.0.1:7400"
http_listen = "127.0.0.1:7480"
"#
            .replace("OWN", &own),
            "t.toml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        stamp_token_keys(&mut t, "mc");
        let keys: Vec<Option<&str>> = t.channels.iter().map(|c| c.token_key.as_deref()).collect();
        assert_eq!(keys, [None, Some("mc"), Some(own.as_str())]);
    }
}
