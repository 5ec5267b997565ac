//! HTTP pieces every role shares: plain-text errors with their status, the bearer token of a
//! request, and the pooled JSON client the control plane polls with.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A plain-text error with the status it deserves.
pub fn text_error(code: StatusCode, msg: impl Into<String>) -> Response {
    let mut msg = msg.into();
    msg.push('\n');
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg).into_response()
}

/// The token of an `Authorization: Bearer …` header, if there is one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
}

/// The plain-HTTP client the control plane polls with (pooled: keep one per poller).
pub type JsonClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

pub fn json_client() -> JsonClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// GET `url` and parse its body as JSON, all within `within`; the error says which step failed.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    client: &JsonClient,
    url: &str,
    within: std::time::Duration,
) -> Result<T, String> {
    use http_body_util::BodyExt;
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    let work = async {
        let resp = client.get(uri).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("not the JSON expected: {e}"))
    };
    tokio::time::timeout(within, work).await.map_err(|_| format!("no answer within {within:?}"))?
}
