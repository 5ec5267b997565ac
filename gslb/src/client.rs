//! The client side: finding an edge for `livesky://DOMAIN[:PORT]/CHANNEL`. The player asks the
//! CDN's DNS for `CHANNEL.DOMAIN` (hickory-resolver, pointed at the GSLB or any resolver that
//! reaches it); when that fails it asks the GSLB's HTTP fallback, which answers with a 302 to
//! `livesky://EDGE:PORT/CHANNEL`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no way to find an edge: give a nameserver (the GSLB's DNS) or the GSLB's HTTP fallback")]
    NoMethod,
    #[error("DNS lookup of {name} failed: {dns}{}", http.as_ref().map(|h| format!("; HTTP fallback failed: {h}")).unwrap_or_default())]
    Failed { name: String, dns: String, http: Option<String> },
    #[error("HTTP fallback failed: {0}")]
    Http(String),
}

/// How the client looks edges up.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// The nameserver to ask (e.g. the GSLB, `127.0.0.1:5353`).
    pub nameserver: Option<SocketAddr>,
    /// The GSLB's HTTP fallback, e.g. `http://127.0.0.1:8053`.
    pub http: Option<String>,
    /// Per attempt.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Dns,
    Http,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Best first.
    pub edges: Vec<SocketAddr>,
    pub via: Via,
}

/// The edge(s) for `channel` under `domain`; `port` is the edges' client port (DNS answers
/// carry addresses only: every edge listens on the same port, as in any CDN).
pub async fn resolve_edge(domain: &str, port: u16, channel: &str, how: &Lookup) -> Result<Resolved, ResolveError> {
    let name = format!("{channel}.{}.", domain.trim_end_matches('.'));
    let dns = match how.nameserver {
        Some(ns) => match lookup(ns, &name, how.timeout).await {
            Ok(ips) if !ips.is_empty() => {
                return Ok(Resolved {
                    edges: ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect(),
                    via: Via::Dns,
                });
            }
            Ok(_) => "no addresses".to_string(),
            Err(e) => e,
        },
        None => match &how.http {
            Some(_) => "no nameserver given".to_string(),
            None => return Err(ResolveError::NoMethod),
        },
    };
    let Some(base) = &how.http else {
        return Err(ResolveError::Failed { name, dns, http: None });
    };
    match http_fallback(base, channel, how.timeout).await {
        Ok(edge) => Ok(Resolved { edges: vec![edge], via: Via::Http }),
        Err(e) if how.nameserver.is_none() => Err(ResolveError::Http(e)),
        Err(e) => Err(ResolveError::Failed { name, dns, http: Some(e) }),
    }
}

fn resolver(ns: SocketAddr, timeout: Duration) -> Result<TokioResolver, String> {
    let mut server = NameServerConfig::udp_and_tcp(ns.ip());
    for c in &mut server.connections {
        c.port = ns.port();
    }
    let mut b =
        Resolver::builder_with_config(ResolverConfig::from_name_servers(vec![server]), TokioRuntimeProvider::default());
    let o = b.options_mut();
    o.timeout = timeout;
    o.attempts = 2;
    // Answers live 20 s and loads change: a player asks when it starts, and then not again.
    o.cache_size = 0;
    o.use_hosts_file = ResolveHosts::Never;
    b.build().map_err(|e| e.to_string())
}

/// A and AAAA of `name` from `ns`.
pub async fn lookup(ns: SocketAddr, name: &str, timeout: Duration) -> Result<Vec<IpAddr>, String> {
    let r = resolver(ns, timeout)?;
    let ips = r.lookup_ip(name).await.map_err(|e| e.to_string())?;
    Ok(ips.iter().collect())
}

/// `GET BASE/CHANNEL?format=livesky` → the edge in the 302's `Location`.
async fn http_fallback(base: &str, channel: &str, timeout: Duration) -> Result<SocketAddr, String> {
    let url = format!("{}/{channel}?format=livesky", base.trim_end_matches('/'));
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let resp = tokio::time::timeout(timeout, client.get(uri))
        .await
        .map_err(|_| format!("{url}: no answer"))?
        .map_err(|e| format!("{url}: {e}"))?;
    if resp.status() != hyper::StatusCode::FOUND {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    let loc = resp
        .headers()
        .get(hyper::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| format!("{url}: 302 without a Location"))?;
    let rest = loc.strip_prefix("livesky://").ok_or_else(|| format!("{url}: unexpected Location {loc}"))?;
    let host = rest.split('/').next().unwrap_or_default();
    host.parse().map_err(|_| format!("{url}: Location {loc} does not name an edge address"))
}
