//! SRT ingest on Tier 0: broadcasters push MPEG-TS over SRT (Secure Reliable Transport, UDP with
//! retransmission and optional AES), as `ffmpeg … -f mpegts 'srt://HOST:PORT?streamid=CHANNEL'` does.
//!
//! Listener mode ([`bind_srt`] + [`serve_srt`], or [`run_srt_listener`]): one UDP port per node;
//! the stream id names the channel and its key ([`parse_stream_id`]); each connection is one
//! [`Publisher`] session on a `push` channel. Caller mode ([`run_srt_caller`], the `srt_call`
//! source): Tier 0 calls an encoder that waits in SRT listener mode and reconnects as a pull does.
//! The protocol itself is srt-tokio's; this module only admits, feeds and contains it.

use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use proto::ChannelId;
use srt_protocol::packet::{CoreRejectReason, RejectReason, ServerRejectReason};
use srt_protocol::settings::KeySettings;
use srt_tokio::options::{KeySize, Passphrase};
use srt_tokio::{ConnectionRequest, SrtIncoming, SrtListener, SrtSocket};
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::ingest::source::{ClaimError, Publisher, PushRefusal, resolve_push};
use crate::node::Node;
use crate::ts::TsError;

/// How long an accepted handshake may take to complete before the channel is released again.
const ACCEPT_WITHIN: Duration = Duration::from_secs(5);
/// Kernel receive buffer asked for the listener's UDP socket: one socket carries every
/// broadcaster, and a burst beyond the buffer costs SRT retransmissions (the kernel may cap it).
const UDP_RECV_BUFFER: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SrtIngestError {
    #[error("cannot bind SRT ingest on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("SRT passphrase is {0} bytes long; SRT needs 10 to 79")]
    Passphrase(usize),
    #[error("no stream id: connect with srt://HOST:PORT?streamid=CHANNEL")]
    NoStreamId,
    #[error("stream id names no channel: use CHANNEL, CHANNEL?key=KEY or #!::r=CHANNEL,key=KEY")]
    NoChannel,
    #[error("stream id names a channel or key of {0} bytes, over the limit of 512")]
    NameTooLong(usize),
    #[error("stream id asks for mode {0:?}; this port only takes broadcasts (m=publish)")]
    NotPublish(String),
    #[error("the broadcaster encrypts but this SRT port has no passphrase")]
    Unencrypted,
    #[error(transparent)]
    Refused(#[from] PushRefusal),
    #[error(transparent)]
    Claim(#[from] ClaimError),
    #[error("SRT handshake did not complete (wrong passphrase?): {0}")]
    Handshake(String),
    #[error("SRT call to {addr} failed: {source}")]
    Call { addr: SocketAddr, source: io::Error },
    #[error(transparent)]
    Ts(#[from] TsError),
}

impl SrtIngestError {
    /// The code the broadcaster's SRT library reports for a refused connection.
    fn reject_reason(&self) -> RejectReason {
        use ServerRejectReason as S;
        RejectReason::Server(match self {
            SrtIngestError::NoStreamId | SrtIngestError::NoChannel | SrtIngestError::NameTooLong(_) => S::BadRequest,
            SrtIngestError::NotPublish(_) => S::BadMode,
            SrtIngestError::Unencrypted => return RejectReason::Core(CoreRejectReason::BadSecret),
            SrtIngestError::Refused(PushRefusal::NotHere(_) | PushRefusal::Unknown)
            | SrtIngestError::Claim(ClaimError::NotHere(_)) => S::Notfound,
            SrtIngestError::Refused(PushRefusal::NotPush(_)) => S::BadMode,
            SrtIngestError::Refused(PushRefusal::KeyMissing(_)) => S::Unauthorized,
            SrtIngestError::Refused(PushRefusal::KeyWrong(_)) => S::Forbidden,
            SrtIngestError::Claim(ClaimError::Busy(_)) => S::Conflict,
            _ => S::InternalServerError,
        })
    }
}

/// Longest channel name or stream key a stream id may carry.
const MAX_NAME: usize = 512;

/// What a broadcaster's stream id asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTarget {
    /// A channel, or a channel's stream key alone (see [`crate::ingest::source::resolve_push`]).
    pub name: String,
    pub key: Option<String>,
}

/// Reads a stream id in one of three forms: `CHANNEL`, `CHANNEL?key=KEY` (the HTTP ingest's
/// spelling), or SRT's access-control form `#!::r=CHANNEL,key=KEY[,m=publish]`. Pure: no I/O.
pub fn parse_stream_id(sid: &str) -> Result<StreamTarget, SrtIngestError> {
    let (name, key, mode) = if let Some(acl) = sid.strip_prefix("#!::") {
        let (mut name, mut key, mut mode) = (None, None, None);
        for (k, v) in acl.split(',').filter_map(|e| e.split_once('=')) {
            match k {
                "r" => name = Some(v),
                "key" => key = Some(v),
                "m" => mode = Some(v),
                // u (user), s (session), h (host), t (type): nothing to check here.
                _ => {}
            }
        }
        (name.ok_or(SrtIngestError::NoChannel)?, key, mode)
    } else {
        let (name, query) = sid.split_once('?').unwrap_or((sid, ""));
        let key = query.split('&').find_map(|p| p.strip_prefix("key="));
        (name, key, None)
    };
    if let Some(m) = mode
        && m != "publish"
    {
        return Err(SrtIngestError::NotPublish(m.chars().take(16).collect()));
    }
    if name.is_empty() {
        return Err(SrtIngestError::NoChannel);
    }
    if name.len() > MAX_NAME {
        return Err(SrtIngestError::NameTooLong(name.len()));
    }
    Ok(StreamTarget { name: name.to_string(), key: key.map(str::to_string) })
}

fn passphrase(p: Option<String>) -> Result<Option<Passphrase>, SrtIngestError> {
    p.map(|p| {
        let len = p.len();
        Passphrase::try_from(p).map_err(|_| SrtIngestError::Passphrase(len))
    })
    .transpose()
}

/// An SRT listener bound (port 0 resolved) but not yet serving.
pub struct BoundSrt {
    addr: SocketAddr,
    /// A duplicate of the UDP socket, kept to start srt-tokio again on the same port (see
    /// [`serve_srt`]).
    spare: std::net::UdpSocket,
    passphrase: Option<Passphrase>,
    listener: PortTask,
    incoming: SrtIncoming,
}

/// srt-tokio's task serving the port. Its own `Drop` leaves the task running, so this one closes
/// it (a bound port that is dropped unserved, or a serve task that is aborted, frees the port).
struct PortTask(Option<SrtListener>);

impl PortTask {
    /// Forgets a task that has already ended (closing it would unwrap its panic once more).
    fn ended(mut self) {
        self.0 = None;
    }
}

impl Drop for PortTask {
    fn drop(&mut self) {
        if let (Some(mut listener), Ok(rt)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(async move { listener.close().await });
        }
    }
}

impl BoundSrt {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Binds the SRT ingest port; `passphrase` (10 to 79 characters) makes every session encrypted.
pub async fn bind_srt(listen: SocketAddr, passphrase: Option<String>) -> Result<BoundSrt, SrtIngestError> {
    let passphrase = self::passphrase(passphrase)?;
    let bind_err = |source| SrtIngestError::Bind { addr: listen, source };
    let socket =
        socket2::Socket::new(socket2::Domain::for_address(listen), socket2::Type::DGRAM, None).map_err(bind_err)?;
    // Best effort: the kernel caps the size at its own limit.
    let _ = socket.set_recv_buffer_size(UDP_RECV_BUFFER);
    socket.set_nonblocking(true).map_err(bind_err)?;
    if let Err(e) = crate::ingest::srt_guard::attach(&socket, passphrase.is_some()) {
        warn!(%listen, error = %e, "no SRT handshake filter: a malformed handshake can end every session on the port (it restarts)");
    }
    socket.bind(&listen.into()).map_err(bind_err)?;
    let spare: std::net::UdpSocket = socket.into();
    let addr = spare.local_addr().map_err(bind_err)?;
    let (listener, incoming) = start_listener(&spare, addr, &passphrase).await.map_err(bind_err)?;
    Ok(BoundSrt { addr, spare, passphrase, listener, incoming })
}

async fn start_listener(
    spare: &std::net::UdpSocket,
    addr: SocketAddr,
    passphrase: &Option<Passphrase>,
) -> io::Result<(PortTask, SrtIncoming)> {
    let socket = tokio::net::UdpSocket::from_std(spare.try_clone()?)?;
    let pass = passphrase.clone();
    let (listener, incoming) =
        SrtListener::builder().set(|o| o.encryption.passphrase = pass).socket(socket).bind(addr).await?;
    Ok((PortTask(Some(listener)), incoming))
}

/// Binds and serves until `stop`; a bind failure is logged (the node runs on without SRT).
pub async fn run_srt_listener(node: Node, listen: SocketAddr, passphrase: Option<String>, stop: CancellationToken) {
    match bind_srt(listen, passphrase).await {
        Ok(bound) => serve_srt(node, bound, stop).await,
        Err(e) => warn!(error = %e, "SRT ingest disabled"),
    }
}

/// Admits broadcasters until `stop`. srt-tokio runs the port in one task, and srt-protocol 0.4.4
/// panics there on handshakes we cannot screen first (an admitted caller that encrypts, on a port
/// without passphrase: `unimplemented!("expected no secrets")`), which ends every session on the
/// port. The panic stays in that task, and the port is served again from the kept socket.
pub async fn serve_srt(node: Node, bound: BoundSrt, stop: CancellationToken) {
    let BoundSrt { addr, spare, passphrase, listener, incoming } = bound;
    info!(%addr, encrypted = passphrase.is_some(), "SRT ingest listening");
    let mut current = Some((listener, incoming));
    let mut backoff = proto::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let Some((_, incoming)) = current.as_mut() else {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = sleep(backoff.next_delay()) => {}
            }
            match start_listener(&spare, addr, &passphrase).await {
                Ok(l) => {
                    info!(%addr, "SRT ingest listening again");
                    current = Some(l);
                }
                Err(e) => {
                    warn!(%addr, error = %e, retry_in = ?backoff.peek(), "restarting SRT ingest failed");
                }
            }
            continue;
        };
        let request = tokio::select! {
            _ = stop.cancelled() => return,
            r = incoming.incoming().next() => r,
        };
        match request {
            Some(request) => {
                backoff.reset();
                node.spawn(admit(node.clone(), request, passphrase.clone(), stop.clone()));
            }
            None => {
                warn!(%addr, "SRT listener task died (srt-tokio); its sessions ended; restarting it");
                node.metrics().srt_port_restarts.with_label_values(&[] as &[&str]).inc();
                if let Some((port, _)) = current.take() {
                    port.ended();
                }
            }
        }
    }
}

/// One connection request: refuse it with a reason, or accept it and run the session.
async fn admit(node: Node, request: ConnectionRequest, passphrase: Option<Passphrase>, stop: CancellationToken) {
    let peer = request.remote();
    let (publisher, keys) = match claim(&node, &request, passphrase) {
        Ok(x) => x,
        Err(e) => {
            // The stream id may hold the key: it is never logged.
            info!(%peer, error = %e, "refusing SRT broadcaster");
            node.metrics().ingest_refused.with_label_values(&["srt"]).inc();
            let _ = timeout(ACCEPT_WITHIN, request.reject(e.reject_reason())).await;
            return;
        }
    };
    let channel = publisher.channel().clone();
    let socket = match timeout(ACCEPT_WITHIN, request.accept(keys)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            // srt-protocol rejects a passphrase mismatch itself, after our accept.
            let e = SrtIngestError::Handshake(e.to_string());
            info!(%channel, %peer, error = %e, "SRT broadcaster refused");
            node.metrics().ingest_refused.with_label_values(&["srt"]).inc();
            return;
        }
        Err(_) => {
            info!(%channel, %peer, "SRT handshake not completed in time");
            return;
        }
    };
    info!(%channel, %peer, "SRT broadcaster connected");
    let _ = run_session(publisher, socket, peer, &stop).await;
}

/// Checks the request against the channel's rules and claims the channel.
fn claim(
    node: &Node,
    request: &ConnectionRequest,
    passphrase: Option<Passphrase>,
) -> Result<(Publisher, Option<KeySettings>), SrtIngestError> {
    let sid = request.stream_id().ok_or(SrtIngestError::NoStreamId)?;
    let target = parse_stream_id(sid)?;
    let channel = resolve_push(node, &target.name, target.key.as_deref())?;
    let keys = match passphrase {
        // Answer with the caller's own key size: srt-protocol panics on a mismatch.
        Some(p) => Some(KeySettings { key_size: request.key_size(), passphrase: p }),
        // A caller that announces a key size would send keying material we have no passphrase
        // for, which srt-protocol also panics on: refuse it first.
        None if request.key_size() != KeySize::Unspecified => return Err(SrtIngestError::Unencrypted),
        None => None,
    };
    Ok((Publisher::claim(node, &channel, "srt")?, keys))
}

/// Feeds every payload into the publisher until the broadcaster leaves; returns the bytes fed.
async fn run_session(
    mut publisher: Publisher,
    mut socket: SrtSocket,
    peer: SocketAddr,
    stop: &CancellationToken,
) -> Result<u64, SrtIngestError> {
    let channel = publisher.channel().clone();
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => {
                publisher.count_session("shutdown");
                return Ok(publisher.bytes);
            }
            _ = publisher.taken_over() => {
                info!(%channel, %peer, "SRT broadcaster cut off: another publisher took the channel over");
                publisher.count_session("taken_over");
                return Ok(publisher.bytes);
            }
            n = socket.next() => n,
        };
        match next {
            // srt-tokio ends the stream on shutdown and on peer timeout alike.
            None => break,
            Some(Err(e)) => {
                info!(%channel, %peer, error = %e, bytes = publisher.bytes, "SRT broadcaster connection failed");
                let bytes = publisher.bytes;
                publisher.finish("aborted");
                return Ok(bytes);
            }
            Some(Ok((_, data))) => {
                if let Err(e) = publisher.feed(&data) {
                    warn!(%channel, %peer, error = %e, "dropping SRT broadcaster");
                    publisher.count_error(&e);
                    publisher.count_session("error");
                    // Tell the broadcaster now rather than leave it to time out.
                    let _ = timeout(Duration::from_secs(1), socket.close()).await;
                    return Err(e.into());
                }
            }
        }
    }
    let (bytes, chunks) = (publisher.bytes, publisher.chunks);
    info!(%channel, %peer, bytes, chunks, "SRT broadcaster finished");
    publisher.finish("ok");
    Ok(bytes)
}

/// Caller mode: calls the encoder at `addr` (waiting in SRT listener mode) and ingests what it
/// sends, reconnecting with backoff as an origin pull does.
pub(crate) async fn run_srt_caller(
    node: Node,
    channel: ChannelId,
    addr: SocketAddr,
    stream_id: Option<String>,
    passphrase: Option<String>,
    stop: CancellationToken,
) {
    let passphrase = match self::passphrase(passphrase) {
        Ok(p) => p,
        Err(e) => {
            warn!(%channel, %addr, error = %e, "SRT caller source disabled");
            return;
        }
    };
    let from = addr.to_string();
    super::reconnect_forever("SRT call", &channel, &from, &stop, || {
        call_once(&node, &channel, addr, stream_id.as_deref(), &passphrase, &stop)
    })
    .await;
}

async fn call_once(
    node: &Node,
    channel: &ChannelId,
    addr: SocketAddr,
    stream_id: Option<&str>,
    passphrase: &Option<Passphrase>,
    stop: &CancellationToken,
) -> Result<u64, SrtIngestError> {
    let pass = passphrase.clone();
    let mut builder = SrtSocket::builder().set(|o| o.encryption.passphrase = pass);
    if addr.is_ipv6() {
        // srt-tokio binds 0.0.0.0 unless told otherwise.
        builder = builder.local_ip(Ipv6Addr::UNSPECIFIED.into());
    }
    // srt-tokio gives up after its connect timeout (3 s).
    let socket = tokio::select! {
        _ = stop.cancelled() => return Ok(0),
        s = builder.call(addr, stream_id) => s.map_err(|source| SrtIngestError::Call { addr, source })?,
    };
    let publisher = Publisher::claim(node, channel, "srt")?;
    info!(%channel, %addr, "SRT encoder connected (caller mode)");
    run_session(publisher, socket, addr, stop).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(sid: &str) -> Result<(String, Option<String>), String> {
        parse_stream_id(sid).map(|t| (t.name, t.key)).map_err(|e| e.to_string())
    }

    #[test]
    fn stream_ids_name_channel_and_key_in_three_spellings() {
        assert_eq!(target("live"), Ok(("live".into(), None)));
        assert_eq!(target("live?key=s3cret"), Ok(("live".into(), Some("s3cret".into()))));
        assert_eq!(target("live?x=1&key=s3cret"), Ok(("live".into(), Some("s3cret".into()))));
        assert_eq!(target("#!::r=live,key=s3cret"), Ok(("live".into(), Some("s3cret".into()))));
        assert_eq!(target("#!::u=bob,r=live,m=publish"), Ok(("live".into(), None)));
    }

    #[test]
    fn bad_stream_ids_are_errors_not_panics() {
        assert!(target("").is_err());
        assert!(target("?key=k").is_err());
        assert!(target("#!::").is_err());
        assert!(target("#!::key=k").is_err());
        assert!(target("#!::r=live,m=request").unwrap_err().contains("only takes broadcasts"));
        assert!(target(&"x".repeat(513)).unwrap_err().contains("limit"));
        assert!(target("#!::r=,,=,==,r").is_err());
        // Read as is: no channel has such a name or key, so the claim refuses it.
        assert_eq!(target("\u{0}é?key=\u{ffff}"), Ok(("\u{0}é".into(), Some("\u{ffff}".into()))));
    }

    #[test]
    fn srt_call_sources_survive_the_topology_file_and_the_mc_xml() {
        let topo = crate::Topology::parse(
            r#"
            [[channel]]
            id = "cam"
            source = { kind = "srt_call", addr = "10.0.0.5:9000", stream_id = "cam1", passphrase = "0123456789" }
            [[node]]
            id = "t0"
            tier = 0
            sn_listen = "127.0.0.1:7000"
            http_listen = "127.0.0.1:8000"
            "#,
            "test",
        )
        .unwrap();
        let c = &topo.channels[0];
        let want = crate::SourceConfig::SrtCall {
            addr: "10.0.0.5:9000".parse().unwrap(),
            stream_id: Some("cam1".into()),
            passphrase: Some("0123456789".into()),
        };
        assert_eq!(c.source, want);
        let xml = proto::mc::XmlChannel::from(c);
        assert_eq!(crate::ChannelConfig::try_from(xml).unwrap(), *c);
    }

    #[test]
    fn passphrases_outside_srt_limits_are_refused_before_srt_sees_them() {
        assert!(matches!(passphrase(Some("short".into())), Err(SrtIngestError::Passphrase(5))));
        assert!(passphrase(Some("x".repeat(80))).is_err());
        assert!(passphrase(Some("0123456789".into())).is_ok_and(|p| p.is_some()));
        assert!(passphrase(None).is_ok_and(|p| p.is_none()));
    }
}
