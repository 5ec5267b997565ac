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
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Response, Uri};
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
    pub method: Method,
    /// As sent (path and query), sharing `head`'s bytes.
    pub uri: Uri,
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
            // Room for a small head in one read, not the last few bytes of the buffer (kept-alive
            // connections read head after head into it).
            if buf.capacity() - buf.len() < 256 {
                buf.reserve(1024);
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

/// A whole head at the start of `buf` (split off it), `None` if it is not all there yet. The
/// URI and header values share the head's bytes: reading a request allocates no copy of them.
fn parse_head(buf: &mut BytesMut, peer: SocketAddr) -> Result<Option<RawRequest>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(len)) => len,
        Err(_) => return Err(()),
    };
    let (Some(method), Some(uri), Some(minor)) = (req.method, req.path, req.version) else { return Err(()) };
    let method = Method::from_bytes(method.as_bytes()).map_err(drop)?;
    // Where the URI and each value lie in the head: the head keeps its place in memory when it
    // is split off, so these index the frozen head too.
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let uri_at = at(uri.as_bytes());
    let mut fields = [((0, 0), (0, 0)); MAX_HEADERS];
    let count = req.headers.len();
    for (f, h) in fields.iter_mut().zip(req.headers.iter()) {
        *f = (at(h.name.as_bytes()), at(h.value));
    }
    let head = buf.split_to(len).freeze();
    let slice = |(from, n): (usize, usize)| head.slice(from..from + n);
    let Ok(uri) = Uri::from_maybe_shared(slice(uri_at)) else {
        // Put back whole, for hyper to answer.
        *buf = BytesMut::from(&join(&head, buf)[..]);
        return Err(());
    };
    let mut map = HeaderMap::with_capacity(count);
    for &(name, value) in &fields[..count] {
        // One hyper's parser would not take is left out, as before this parser.
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(&slice(name)), HeaderValue::from_maybe_shared(slice(value))) {
            map.append(n, v);
        }
    }
    Ok(Some(RawRequest { head, method, uri, minor, headers: map, peer }))
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
        Head::Request(req) if takeover.wants(req.method.as_str(), req.uri.path()) => Sniffed::Raw(req, buf),
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
    head.push_str(&format!("content-length: {}\r\n{connection}", body.len()));
    let body = if req.method == Method::HEAD { &[][..] } else { &body[..] };
    let end = date_end();
    let mut bufs = [io::IoSlice::new(head.as_bytes()), io::IoSlice::new(end.as_bytes()), io::IoSlice::new(body)];
    write_all_vectored(stream, &mut bufs).await
}

/// What a write put on the socket and how long its write calls took.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    pub bytes: usize,
    /// Time inside the (non-blocking) write calls, not waiting for room: the serving path's CPU.
    pub busy: Duration,
}

/// One non-blocking vectored write, as `sendmsg(2)`: on a socket that is the same as
/// `writev(2)` without the file layer's checks on the way in, which cost about a fifth of the
/// system call's own time on this path (measured: `vfs_writev` was 7 % of an edge serving 5,000
/// HTTP-TS viewers).
pub fn try_send_vectored(stream: &TcpStream, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    stream.try_io(tokio::io::Interest::WRITABLE, || send_vectored_unwatched(stream, bufs))
}

/// [`try_send_vectored`] without telling tokio's readiness tracking what happened: for a writer
/// that never waits for the socket to become writable, but tries again on its own clock (the
/// HTTP-TS fan-out). Reading the readiness state cost 2 % of an edge serving 5,000 viewers: a
/// cache miss per socket per tick.
pub fn send_vectored_unwatched(stream: &impl std::os::fd::AsFd, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    socket2::SockRef::from(stream).send_vectored(bufs)
}

/// Writes all of `bufs`, in as few vectored writes as the socket takes.
pub async fn write_all_vectored(stream: &mut TcpStream, mut bufs: &mut [io::IoSlice<'_>]) -> io::Result<Written> {
    let mut done = Written::default();
    while !bufs.is_empty() {
        let started = std::time::Instant::now();
        let wrote = try_send_vectored(stream, bufs);
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

/// `date: …\r\n\r\n`: a response head's last line (RFC 9110 asks origin servers with a clock
/// for a `Date`) and its end, made once a second per thread rather than formatted for every
/// answer.
pub fn date_end() -> DateEnd {
    thread_local! {
        static LAST: std::cell::Cell<(u64, DateEnd)> = const { std::cell::Cell::new((u64::MAX, DateEnd([0; 40], 0))) };
    }
    let now = std::time::SystemTime::now();
    let second = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    LAST.with(|last| {
        let (at, line) = last.get();
        if at == second {
            return line;
        }
        let mut made = DateEnd([0; 40], 0);
        let text = format!("date: {}\r\n\r\n", httpdate::fmt_http_date(now));
        // An HTTP date is 29 bytes (years 1000 to 9999): the line is 39.
        if let Some(b) = made.0.get_mut(..text.len()) {
            b.copy_from_slice(text.as_bytes());
            made.1 = text.len() as u8;
        }
        last.set((second, made));
        made
    })
}

/// See [`date_end`].
#[derive(Clone, Copy)]
pub struct DateEnd([u8; 40], u8);

impl DateEnd {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0[..usize::from(self.1)]
    }
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
                let a = req.headers.get("x-a").map_or("", |v| v.to_str().unwrap_or(""));
                let body = format!("raw {} {a} on {}", req.uri, thread_name());
                let head = format!("{} 200 OK\r\nconnection: close\r\n\r\n{body}", req.version());
                let _ = stream.write_all(head.as_bytes()).await;
            })
        }
    }

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or("").to_string()
    }

    async fn server() -> (SocketAddr, CancellationToken) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new().route("/other", get(|| async { format!("hyper on {}", thread_name()) }));
        let cancel = CancellationToken::new();
        let limiter = ConnLimiter::new("http", 100, 100);
        let t: Arc<dyn Takeover> = Arc::new(Raw);
        let c = cancel.clone();
        let opts = crate::httpd::ServeOptions {
            takeover: Some(t),
            threads: 2,
            thread_name: "conn".into(),
            ..crate::httpd::ServeOptions::plain(Duration::from_secs(2))
        };
        tokio::spawn(crate::httpd::serve(listener, router, limiter, c, opts));
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

    #[test]
    fn a_head_is_split_off_its_buffer_with_uri_and_values_read_in_place() {
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let text: &[u8] = b"GET /live/a/1.ts?token=t HTTP/1.1\r\nHost: h\r\nX-Odd: \xff\r\n\r\nGET /next";
        let mut buf = BytesMut::from(text);
        let req = parse_head(&mut buf, peer).unwrap().unwrap();
        assert_eq!((req.method.as_str(), req.uri.path(), req.uri.query()), ("GET", "/live/a/1.ts", Some("token=t")));
        assert_eq!(req.headers.get("host").unwrap(), "h");
        assert_eq!(req.headers.get("x-odd").unwrap().as_bytes(), b"\xff");
        assert_eq!(&req.head[..], &text[..text.len() - 9]);
        assert_eq!(&buf[..], b"GET /next");
        // Not yet whole: nothing taken.
        assert!(parse_head(&mut buf, peer).unwrap().is_none());
        assert_eq!(&buf[..], b"GET /next");
        // A target the URI parser refuses is put back whole, for hyper to answer.
        let bad: &[u8] = b"GET http://[x/ HTTP/1.1\r\n\r\nrest";
        let mut buf = BytesMut::from(bad);
        assert!(parse_head(&mut buf, peer).is_err());
        assert_eq!(&buf[..], bad);
    }

    #[test]
    fn the_date_line_is_an_http_date_and_ends_the_head() {
        let end = date_end();
        let text = std::str::from_utf8(end.as_bytes()).unwrap();
        let date = text.strip_prefix("date: ").and_then(|t| t.strip_suffix("\r\n\r\n")).unwrap();
        let at = httpdate::parse_http_date(date).unwrap();
        let off = std::time::SystemTime::now().duration_since(at).unwrap();
        assert!(off < Duration::from_secs(2), "{text:?}");
        assert_eq!(date_end().as_bytes(), end.as_bytes(), "made once a second");
    }

    #[tokio::test]
    async fn a_wanted_first_request_gets_the_socket_and_others_go_to_hyper_intact() {
        let (addr, cancel) = server().await;
        // A head split over writes is still read whole, headers and query included.
        let raw = exchange(addr, &["GET /raw?x=1 HTT", "P/1.0\r\nX-A: b\r\n\r\n"]).await;
        assert!(raw.starts_with("HTTP/1.0 200 OK") && raw.contains("raw /raw?x=1 b on conn-"), "{raw}");
        // Not wanted: hyper answers from the bytes already read, and keeps the connection for
        // the next request, which hyper serves too (only a first request is taken).
        let two = "GET /other HTTP/1.1\r\nHost: x\r\n\r\nGET /raw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let out = exchange(addr, &[two]).await;
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 1, "{out}");
        assert!(out.contains("hyper on conn-") && out.contains("404"), "the second went to the router: {out}");
        // Garbage is hyper's to answer.
        let bad = exchange(addr, &["\x00\x01 nonsense\r\n\r\n"]).await;
        assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
        cancel.cancel();
    }
}
