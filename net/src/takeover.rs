//! Requests served off hyper, on the raw socket. An endless stream (an HTTP-TS viewer) costs
//! hyper a task, a body channel and a frame per chunk; a role that batches its own writes (one
//! vectored write per viewer per flush tick, many viewers per task) takes the socket instead.
//!
//! The server reads a connection's first request head itself ([`sniff`], bounded in size and by
//! the header timeout). A request the role's [`Takeover`] wants gets the socket; any other (or
//! one this parser cannot read) goes to hyper with the bytes already read put back in front
//! ([`Rewind`]), so hyper answers it, and the connection's later requests, as before.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Response};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::limits::{ConnLimiter, ConnPermit};

/// The largest request head read here; a bigger one goes to hyper, which answers 431.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// How long writing an error answer on a taken socket may take.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// A request head, as read off the socket.
#[derive(Debug)]
pub struct RawRequest {
    /// The head's bytes as sent (to give the request to hyper after all).
    pub head: Bytes,
    pub method: String,
    /// Path and query, as sent.
    pub uri: String,
    /// HTTP/1.`minor`.
    pub minor: u8,
    pub headers: HeaderMap,
    pub peer: SocketAddr,
}

impl RawRequest {
    /// The status line's start for an answer in this request's HTTP version.
    pub fn version(&self) -> &'static str {
        if self.minor == 0 { "HTTP/1.0" } else { "HTTP/1.1" }
    }
}

pub type Served = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Which requests a role serves on the raw socket, and how.
pub trait Takeover: Send + Sync + 'static {
    /// Whether a request with this method and path (no query) is served raw.
    fn wants(&self, method: &str, path: &str) -> bool;
    /// Serves it; the socket and its place under the connection cap are the role's from now on
    /// (or hyper's again, through [`RawConn::back`]).
    fn serve(self: Arc<Self>, conn: RawConn) -> Served;
}

/// A connection taken off hyper, at its request `req`.
pub struct RawConn {
    pub req: RawRequest,
    pub stream: TcpStream,
    pub permit: ConnPermit,
    /// Bytes read past `req`'s head: the start of a pipelined next request.
    pub rest: BytesMut,
    /// Gives the connection back to hyper.
    pub back: HandBack,
    /// The server's header timeout: how long a kept-alive connection has to send its next head.
    pub header_timeout: Duration,
    /// The listener's limiter, to count a connection cut for that timeout as hyper's are.
    pub limiter: ConnLimiter,
}

/// Serves a connection with hyper (and the role's router), `prefix` read first: what a taken
/// connection falls back to for a request its role does not serve raw.
pub struct HandBack(pub(crate) Box<dyn FnOnce(Bytes, TcpStream, ConnPermit) -> Served + Send>);

impl HandBack {
    pub fn serve(self, prefix: Bytes, stream: TcpStream, permit: ConnPermit) -> Served {
        (self.0)(prefix, stream, permit)
    }
}

/// What reading a request head gave.
// Made once per request and matched at once: boxing the big variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Head {
    Request(RawRequest),
    /// Not a head this parser reads (malformed, too big): hyper's to answer, from the bytes read.
    Unreadable,
    /// The client closed, or sent no whole head in time (as hyper would have timed out).
    Gone {
        timed_out: bool,
    },
}

/// Reads one request head from `stream` (after what `buf` holds already) within `limit`; the
/// bytes past the head stay in `buf`.
pub async fn read_head(stream: &mut TcpStream, buf: &mut BytesMut, peer: SocketAddr, limit: Duration) -> Head {
    let read = async {
        loop {
            if !buf.is_empty() {
                match parse_head(buf, peer) {
                    Ok(Some(req)) => return Head::Request(req),
                    Ok(None) if buf.len() < MAX_HEAD => {}
                    // Not ours to judge: hyper answers a malformed or huge head with its error.
                    Ok(None) | Err(()) => return Head::Unreadable,
                }
            }
            match stream.read_buf(buf).await {
                Ok(0) | Err(_) if buf.is_empty() => return Head::Gone { timed_out: false },
                Ok(0) | Err(_) => return Head::Unreadable,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read).await.unwrap_or(Head::Gone { timed_out: true })
}

/// A whole head at the start of `buf` (split off it), `None` if it is not all there yet.
fn parse_head(buf: &mut BytesMut, peer: SocketAddr) -> Result<Option<RawRequest>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(len)) => len,
        Err(_) => return Err(()),
    };
    let (Some(method), Some(uri), Some(minor)) = (req.method, req.path, req.version) else { return Err(()) };
    let mut map = HeaderMap::new();
    for h in req.headers.iter() {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_bytes(h.value)) {
            map.append(n, v);
        }
    }
    let (method, uri) = (method.to_string(), uri.to_string());
    Ok(Some(RawRequest { head: buf.split_to(len).freeze(), method, uri, minor, headers: map, peer }))
}

/// What the first request head turned out to be.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Sniffed {
    /// The takeover's: the socket is handed over, with the bytes read past the head.
    Raw(RawRequest, BytesMut),
    /// hyper's, with the bytes read so far.
    Hyper(Bytes),
    Gone {
        timed_out: bool,
    },
}

/// Reads the first request head and decides whose it is.
pub(crate) async fn sniff(
    stream: &mut TcpStream,
    peer: SocketAddr,
    takeover: &dyn Takeover,
    limit: Duration,
) -> Sniffed {
    let mut buf = BytesMut::with_capacity(1024);
    match read_head(stream, &mut buf, peer, limit).await {
        Head::Request(req) if takeover.wants(&req.method, req.uri.split('?').next().unwrap_or("")) => {
            Sniffed::Raw(req, buf)
        }
        Head::Request(req) => Sniffed::Hyper(join(&req.head, &buf)),
        Head::Unreadable => Sniffed::Hyper(buf.freeze()),
        Head::Gone { timed_out } => Sniffed::Gone { timed_out },
    }
}

/// `head` then `rest`: a request given to hyper after it was read here.
pub fn join(head: &Bytes, rest: &BytesMut) -> Bytes {
    let mut all = BytesMut::with_capacity(head.len() + rest.len());
    all.extend_from_slice(head);
    all.extend_from_slice(rest);
    all.freeze()
}

/// Writes `resp` (an error, a redirect: a small body) on a taken socket and closes it.
pub async fn answer(mut stream: TcpStream, req: &RawRequest, resp: Response<Body>) {
    let write = async {
        write_response(&mut stream, req, resp, false).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(ANSWER_WAIT, write).await;
}

/// The largest response body [`write_response`] writes (playlists, errors).
const MAX_BODY: usize = 1024 * 1024;

/// Writes `resp` (its body whole, at most 1 MiB) on a taken socket: `keep_alive` or with
/// `connection: close`. Returns what [`write_all_vectored`] does.
pub async fn write_response(
    stream: &mut TcpStream,
    req: &RawRequest,
    resp: Response<Body>,
    keep_alive: bool,
) -> io::Result<Written> {
    let (parts, body) = resp.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(io::Error::other)?;
    let reason = parts.status.canonical_reason().unwrap_or("");
    let mut head = format!("{} {} {reason}\r\n", req.version(), parts.status.as_u16());
    for (name, value) in &parts.headers {
        if let Ok(v) = value.to_str() {
            head.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    let connection = if keep_alive { "" } else { "connection: close\r\n" };
    head.push_str(&format!("content-length: {}\r\n{connection}date: {}\r\n\r\n", body.len(), date()));
    let body = if req.method == "HEAD" { &[][..] } else { &body[..] };
    write_all_vectored(stream, &mut [io::IoSlice::new(head.as_bytes()), io::IoSlice::new(body)]).await
}

/// What a write put on the socket and how long its write calls took.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    pub bytes: usize,
    /// Time inside the (non-blocking) write calls, not waiting for room: the serving path's CPU.
    pub busy: Duration,
}

/// Writes all of `bufs`, in as few vectored writes as the socket takes.
pub async fn write_all_vectored(stream: &mut TcpStream, mut bufs: &mut [io::IoSlice<'_>]) -> io::Result<Written> {
    let mut done = Written::default();
    while !bufs.is_empty() {
        let started = std::time::Instant::now();
        let wrote = stream.try_write_vectored(bufs);
        done.busy += started.elapsed();
        match wrote {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                done.bytes += n;
                io::IoSlice::advance_slices(&mut bufs, n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The `Date` header's value now (RFC 9110 asks origin servers with a clock for one).
pub fn date() -> String {
    httpdate::fmt_http_date(std::time::SystemTime::now())
}

/// A socket with bytes already read from it put back in front.
pub(crate) struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
}

impl Rewind {
    pub(crate) fn new(prefix: Bytes, inner: TcpStream) -> Self {
        Self { prefix, inner }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::ConnLimiter;
    use axum::routing::get;
    use tokio::io::AsyncReadExt;
    use tokio_util::sync::CancellationToken;

    /// Takes `GET /raw…`: answers "raw" and closes.
    struct Raw;
    impl Takeover for Raw {
        fn wants(&self, method: &str, path: &str) -> bool {
            method == "GET" && path.starts_with("/raw")
        }
        fn serve(self: Arc<Self>, conn: RawConn) -> Served {
            let RawConn { req, mut stream, .. } = conn;
            Box::pin(async move {
                let body =
                    format!("raw {} {}", req.uri, req.headers.get("x-a").map_or("", |v| v.to_str().unwrap_or("")));
                let head = format!("{} 200 OK\r\nconnection: close\r\n\r\n{body}", req.version());
                let _ = stream.write_all(head.as_bytes()).await;
            })
        }
    }

    async fn server() -> (SocketAddr, CancellationToken) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new().route("/other", get(|| async { "hyper" }));
        let cancel = CancellationToken::new();
        let limiter = ConnLimiter::new("http", 100, 100);
        let t: Arc<dyn Takeover> = Arc::new(Raw);
        let c = cancel.clone();
        tokio::spawn(crate::httpd::serve(listener, router, limiter, Duration::from_secs(2), c, |_| {}, Some(t)));
        (addr, cancel)
    }

    /// Sends `parts` (with a pause between them) and reads until the server closes.
    async fn exchange(addr: SocketAddr, parts: &[&str]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        for p in parts {
            s.write_all(p.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let mut out = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await;
        out
    }

    #[tokio::test]
    async fn a_wanted_first_request_gets_the_socket_and_others_go_to_hyper_intact() {
        let (addr, cancel) = server().await;
        // A head split over writes is still read whole, headers and query included.
        let raw = exchange(addr, &["GET /raw?x=1 HTT", "P/1.0\r\nX-A: b\r\n\r\n"]).await;
        assert!(raw.starts_with("HTTP/1.0 200 OK") && raw.ends_with("raw /raw?x=1 b"), "{raw}");
        // Not wanted: hyper answers from the bytes already read, and keeps the connection for
        // the next request, which hyper serves too (only a first request is taken).
        let two = "GET /other HTTP/1.1\r\nHost: x\r\n\r\nGET /raw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let out = exchange(addr, &[two]).await;
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 1, "{out}");
        assert!(out.contains("hyper") && out.contains("404"), "the second went to the router: {out}");
        // Garbage is hyper's to answer.
        let bad = exchange(addr, &["\x00\x01 nonsense\r\n\r\n"]).await;
        assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
        cancel.cancel();
    }
}
