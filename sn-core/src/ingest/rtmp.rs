//! RTMP ingest on Tier 0, the way OBS and hardware encoders send by default:
//! `rtmp://HOST:PORT/live` with the stream name `CHANNEL` (or `CHANNEL?key=STREAM_KEY`). The RTMP
//! handshake and message layer are rml_rtmp's; each published FLV tag is remuxed to MPEG-TS
//! ([`crate::ingest::flv`]) and fed to the channel's [`Publisher`], so everything after ingest is the same
//! as for an HTTP push. One connection is one task: a broken or hostile client ends only itself.
//! Bytes reach rml_rtmp only through [`guard`] (message sizes, AMF nesting, the shapes that crash
//! it) inside the sans-IO [`session`], which also turns any panic of the library into the end of
//! that one session; per-address caps and a short handshake timeout keep idle sockets from
//! taking every slot.

use std::net::SocketAddr;
use std::time::Duration;

use rml_rtmp::sessions::ServerSessionEvent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tracing::{debug, info, warn};

use crate::ingest::flv::{FlvError, FlvToTs};
use crate::ingest::source::{Publisher, resolve_push};
use crate::node::Node;
use crate::ts::TsError;
use livesky_net::limits::ConnLimiter;

pub mod craft;
pub mod guard;
pub mod session;

pub use session::{RtmpSession, RtmpSessionError};

/// The RTMP application publishers connect to.
pub const APP: &str = "live";
/// A client that has not sent its publish request this long after connecting is dropped.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RtmpIngestError {
    #[error("RTMP handshake not done within {0:?}")]
    HandshakeTimeout(Duration),
    #[error(transparent)]
    Session(#[from] RtmpSessionError),
    #[error("{0}")]
    Refused(String),
    #[error("unusable media: {0}")]
    Media(#[from] FlvError),
    #[error("remuxed stream rejected: {0}")]
    Ts(#[from] TsError),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("no data for {0:?}; closing")]
    Idle(Duration),
}

impl RtmpIngestError {
    /// What `livesky_ingest_protocol_errors_total{protocol="rtmp",kind}` calls it, for the
    /// errors that are the client's fault at the protocol level.
    fn kind(&self) -> Option<&'static str> {
        match self {
            RtmpIngestError::HandshakeTimeout(_) | RtmpIngestError::Idle(_) => Some("timeout"),
            RtmpIngestError::Session(RtmpSessionError::Guard(_)) => Some("malformed"),
            RtmpIngestError::Session(RtmpSessionError::Panicked(_)) => Some("panic"),
            RtmpIngestError::Session(_) => Some("bad_message"),
            _ => None,
        }
    }
}

/// Accepts RTMP publishers until the node stops. Connections beyond `rtmp_max_connections`,
/// or `rtmp_max_per_ip` from one address, are closed at once.
pub async fn run_rtmp_listener(node: Node, listener: TcpListener) {
    info!(node = %node.id(), addr = ?listener.local_addr().ok(), "RTMP ingest listening (rtmp://HOST:PORT/{APP}/CHANNEL)");
    let limits = node.config().limits.clone();
    let slots = ConnLimiter::new("rtmp", limits.rtmp_max_connections, limits.rtmp_max_per_ip)
        .with_metrics(node.metrics().conns.clone());
    let cancel = node.cancel_token();
    while let Some((stream, peer, permit)) = livesky_net::limits::accept_capped(&listener, &slots, &cancel).await {
        let Ok(permit) = permit else { continue };
        let _ = stream.set_nodelay(true);
        let node2 = node.clone();
        node.spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = node2.cancelled() => {}
                r = session(&node2, stream, peer) => match r {
                    Ok(()) => debug!(%peer, "RTMP connection closed"),
                    Err(e) => {
                        if let Some(kind) = e.kind() {
                            node2.metrics().ingest_protocol_errors.with_label_values(&["rtmp", kind]).inc();
                        }
                        warn!(%peer, error = %e, "RTMP connection ended");
                    }
                },
            }
        });
    }
}

/// The channel a publisher is feeding, once its publish request was accepted.
struct Live {
    publisher: Publisher,
    remux: FlvToTs,
    ts: Vec<u8>,
    /// The stream name it published, to tell its data from anything else on the connection.
    stream_key: String,
}

/// One RTMP connection. Every way [`serve`] ends a live publish counts it; an error that ends the
/// connection mid-broadcast counts it here as `error` (after its last chunk is flushed).
async fn session(node: &Node, stream: TcpStream, peer: SocketAddr) -> Result<(), RtmpIngestError> {
    let mut live = None;
    let res = serve(node, stream, peer, &mut live).await;
    if let (Some(l), Err(e)) = (live.take(), &res) {
        info!(channel = %l.publisher.channel(), %peer, error = %e, "RTMP publisher's connection failed");
        l.publisher.finish("error");
    }
    res
}

async fn serve(
    node: &Node,
    mut stream: TcpStream,
    peer: SocketAddr,
    live: &mut Option<Live>,
) -> Result<(), RtmpIngestError> {
    let limits = &node.config().limits;
    let (handshake_within, idle) = (limits.rtmp_handshake_timeout(), limits.ingest_idle_timeout());
    let mut buf = vec![0u8; 64 * 1024];
    let mut rtmp = RtmpSession::new();
    let start = tokio::time::Instant::now();
    loop {
        // Flush what the session has to say, act on its events, feed the channel.
        loop {
            let out = rtmp.take_transmit();
            if !out.is_empty() {
                stream.write_all(&out).await?;
            }
            let Some(e) = rtmp.poll_event() else { break };
            on_event(node, &mut rtmp, live, e, peer)?;
        }
        if let Some(l) = live.as_mut()
            && !l.ts.is_empty()
        {
            let fed = l.publisher.feed(&l.ts);
            l.ts.clear();
            if let Err(e) = fed {
                if let Some(l) = live.take() {
                    l.publisher.count_error(&e);
                    l.publisher.count_session("error");
                }
                return Err(e.into());
            }
        }
        let wait = match live {
            Some(_) => idle,
            None if rtmp.is_open() => (start + SETUP_TIMEOUT).saturating_duration_since(tokio::time::Instant::now()),
            None => (start + handshake_within).saturating_duration_since(tokio::time::Instant::now()),
        };
        let read = async {
            match live {
                Some(l) => tokio::select! {
                    _ = l.publisher.taken_over() => None,
                    r = timeout(wait, stream.read(&mut buf)) => Some(r),
                },
                None => Some(timeout(wait, stream.read(&mut buf)).await),
            }
        };
        let Some(read) = read.await else {
            if let Some(l) = live.take() {
                info!(channel = %l.publisher.channel(), %peer, "RTMP publisher cut off: another took the channel over");
                l.publisher.count_session("taken_over");
            }
            return Ok(());
        };
        let n = match read {
            Ok(r) => r?,
            Err(_) => {
                if let Some(l) = live.take() {
                    l.publisher.finish("aborted");
                    return Err(RtmpIngestError::Idle(wait));
                }
                if !rtmp.is_open() {
                    return Err(RtmpIngestError::HandshakeTimeout(handshake_within));
                }
                return Err(RtmpIngestError::Refused(format!("no publish request within {SETUP_TIMEOUT:?}")));
            }
        };
        if n == 0 {
            if let Some(l) = live.take() {
                info!(channel = %l.publisher.channel(), %peer, bytes = l.publisher.bytes, "RTMP publisher disconnected");
                l.publisher.finish("ok");
            }
            return Ok(());
        }
        rtmp.handle_input(&buf[..n])?;
    }
}

fn on_event(
    node: &Node,
    rtmp: &mut RtmpSession,
    live: &mut Option<Live>,
    e: ServerSessionEvent,
    peer: SocketAddr,
) -> Result<(), RtmpIngestError> {
    match e {
        ServerSessionEvent::ConnectionRequested { request_id, app_name } => {
            if app_name.trim_end_matches('/') == APP {
                Ok(rtmp.accept_request(request_id)?)
            } else {
                let why = format!("unknown RTMP application `{app_name}`: publish to rtmp://HOST:PORT/{APP}/CHANNEL");
                let _ = rtmp.reject_request(request_id, "NetConnection.Connect.Rejected", &why);
                Err(RtmpIngestError::Refused(why))
            }
        }
        ServerSessionEvent::PublishStreamRequested { request_id, stream_key, .. } => {
            if live.is_some() {
                let why = "one stream per connection".to_string();
                let _ = rtmp.reject_request(request_id, "NetStream.Publish.BadName", &why);
                return Err(RtmpIngestError::Refused(why));
            }
            match claim(node, &stream_key) {
                Ok(publisher) => {
                    info!(channel = %publisher.channel(), %peer, "broadcaster connected (RTMP)");
                    *live = Some(Live { publisher, remux: FlvToTs::new(), ts: Vec::new(), stream_key });
                    Ok(rtmp.accept_request(request_id)?)
                }
                Err(why) => {
                    node.metrics().ingest_refused.with_label_values(&["rtmp"]).inc();
                    let _ = rtmp.reject_request(request_id, "NetStream.Publish.BadName", &why);
                    Err(RtmpIngestError::Refused(why))
                }
            }
        }
        ServerSessionEvent::VideoDataReceived { stream_key, data, timestamp, .. } => {
            if let Some(l) = live.as_mut().filter(|l| l.stream_key == stream_key) {
                l.remux.video(timestamp.value, &data, &mut l.ts)?;
            }
            Ok(())
        }
        ServerSessionEvent::AudioDataReceived { stream_key, data, timestamp, .. } => {
            if let Some(l) = live.as_mut().filter(|l| l.stream_key == stream_key) {
                l.remux.audio(timestamp.value, &data, &mut l.ts)?;
            }
            Ok(())
        }
        ServerSessionEvent::PublishStreamFinished { .. } => {
            if let Some(l) = live.take() {
                info!(channel = %l.publisher.channel(), %peer, "RTMP publisher finished");
                l.publisher.finish("ok");
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The publisher for stream name `CHANNEL[?key=KEY]` or `STREAM_KEY`, or why not.
fn claim(node: &Node, stream_name: &str) -> Result<Publisher, String> {
    let (name, query) = stream_name.split_once('?').unwrap_or((stream_name, ""));
    let key = query.split('&').find_map(|kv| kv.strip_prefix("key="));
    let channel = resolve_push(node, name, key).map_err(|e| e.to_string())?;
    Publisher::claim(node, &channel, "rtmp").map_err(|e| e.to_string())
}
