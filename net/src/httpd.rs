//! The HTTP server every role runs (edge, Tier 0 and relay SNs, MC, GSLB): hyper's HTTP/1
//! connection with a header-read timeout, behind a [`ConnLimiter`]. `axum::serve` has neither:
//! a partial header or an idle keep-alive socket held its connection (and a file descriptor)
//! forever, and with the descriptors gone a new viewer waited unanswered in the backlog.
//!
//! - A connection must send a whole request header within `http_header_timeout_seconds` of
//!   connecting or of its previous response (hyper starts the timer whenever it waits for a
//!   head): slow headers and idle keep-alive connections are both closed. A response in flight
//!   (an HTTP-TS viewer's stream) is not affected.
//! - Past the global or per-address cap a connection gets `503` with `Retry-After` and is closed.
//! - On shutdown each connection finishes its response in flight (at most [`DRAIN`]) and closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use tracing::{debug, warn};

use crate::limits::{ConnLimiter, ConnPermit, Limits, Refusal};
use crate::takeover::{HandBack, RawConn, Rewind, Served, Sniffed, Takeover, sniff};
use crate::workers::ConnThreads;

/// How long connections get to finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(2);

/// What a refused connection is told before it is closed.
fn refusal_response(r: Refusal) -> String {
    let body = format!("{r}; retry shortly\n");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 5\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The limiter for a role's HTTP listener, from its `limits`.
pub fn http_limiter(limits: &Limits, metrics: crate::limits::ConnMetrics) -> ConnLimiter {
    ConnLimiter::new("http", limits.http_max_connections, limits.http_max_per_ip).with_metrics(metrics)
}

/// How [`serve`] treats each connection.
pub struct ServeOptions<T> {
    /// How long a connection has to send a request head (see the module's doc).
    pub header_timeout: Duration,
    /// Sees each accepted socket first (send buffer, nodelay).
    pub tune: T,
    /// Connections whose first request it wants are handed to it (see [`crate::takeover`]).
    pub takeover: Option<Arc<dyn Takeover>>,
    /// Connection threads to serve on ([`ConnThreads`]); 0 serves on the caller's runtime.
    pub threads: usize,
    /// They are named `{thread_name}-{i}` (what `top -H` shows; Linux keeps 15 bytes).
    pub thread_name: String,
}

impl ServeOptions<fn(&TcpStream)> {
    /// hyper only, on the caller's runtime: the control-plane servers.
    pub fn plain(header_timeout: Duration) -> Self {
        ServeOptions { header_timeout, tune: |_| {}, takeover: None, threads: 0, thread_name: "http".into() }
    }
}

/// Serves `router` on `listener` until `cancel`. Handlers get the client's address as
/// `ConnectInfo<SocketAddr>`.
pub async fn serve<T: Fn(&TcpStream) + Send + 'static>(
    listener: TcpListener,
    router: Router,
    limiter: ConnLimiter,
    cancel: CancellationToken,
    opts: ServeOptions<T>,
) {
    let ServeOptions { header_timeout, tune, takeover, threads, thread_name } = opts;
    let threads = match threads {
        0 => None,
        n => match ConnThreads::start(&thread_name, n) {
            Ok(t) => Some(t),
            Err(e) => {
                warn!(error = %e, "could not start connection threads; serving on the shared runtime");
                None
            }
        },
    };
    let mut make = router.into_make_service_with_connect_info::<SocketAddr>();
    let conns = TaskTracker::new();
    while let Some((mut stream, peer, permit)) = crate::limits::accept_capped(&listener, &limiter, &cancel).await {
        let permit = match permit {
            Ok(p) => p,
            Err(r) => {
                // Best effort and without waiting: a refused client must not hold us up.
                let _ = stream.try_write(refusal_response(r).as_bytes());
                conns.spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_millis(100), stream.shutdown()).await;
                });
                continue;
            }
        };
        tune(&stream);
        // axum's make-service is always ready; asking keeps to the tower contract all the same.
        let ready = std::future::poll_fn(|cx| Service::<SocketAddr>::poll_ready(&mut make, cx)).await;
        let svc = match ready.map(|()| make.call(peer)) {
            Ok(fut) => match fut.await {
                Ok(s) => TowerToHyperService::new(s),
                Err(never) => match never {},
            },
            Err(never) => match never {},
        };
        let (cancel, limiter, takeover) = (cancel.clone(), limiter.clone(), takeover.clone());
        let hyper_limiter = limiter.clone();
        let hyper = move |prefix: Bytes, stream: TcpStream, permit: ConnPermit| -> Served {
            Box::pin(async move {
                let _permit = permit;
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(TokioIo::new(Rewind::new(prefix, stream)), svc)
                    .with_upgrades();
                tokio::pin!(conn);
                let result = tokio::select! {
                    r = conn.as_mut() => r,
                    _ = cancel.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        tokio::time::timeout(DRAIN, conn.as_mut()).await.unwrap_or(Ok(()))
                    }
                };
                if let Err(e) = result {
                    if e.is_timeout() {
                        hyper_limiter.count("timeout");
                    }
                    debug!(%peer, error = %e, "HTTP connection ended");
                }
            })
        };
        let run = move |mut stream: TcpStream| async move {
            let Some(t) = takeover else { return hyper(Bytes::new(), stream, permit).await };
            match sniff(&mut stream, peer, t.as_ref(), header_timeout).await {
                Sniffed::Raw(req, rest) => {
                    let back = HandBack(Box::new(hyper));
                    t.serve(RawConn { req, stream, permit, rest, back, header_timeout, limiter }).await
                }
                Sniffed::Hyper(prefix) => hyper(prefix, stream, permit).await,
                Sniffed::Gone { timed_out } => {
                    if timed_out {
                        limiter.count("timeout");
                    }
                }
            }
        };
        let Some(threads) = &threads else {
            conns.spawn(run(stream));
            continue;
        };
        // The socket leaves this runtime's reactor and joins the connection thread's.
        match stream.into_std() {
            Ok(std) => {
                conns.spawn_on(
                    async move {
                        match TcpStream::from_std(std) {
                            Ok(stream) => run(stream).await,
                            Err(e) => debug!(%peer, error = %e, "could not move a connection to its thread"),
                        }
                    },
                    threads.pick(),
                );
            }
            Err(e) => debug!(%peer, error = %e, "could not move a connection to its thread"),
        }
    }
    conns.close();
    let _ = tokio::time::timeout(DRAIN + Duration::from_millis(500), conns.wait()).await;
}
