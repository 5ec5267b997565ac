//! RTMP ingest on Tier 0, the way OBS and hardware encoders send by default:
//! `rtmp://HOST:PORT/live` with the stream name `CHANNEL` (or `CHANNEL?key=STREAM_KEY`). The RTMP
//! handshake and message layer are rml_rtmp's; each published FLV tag is remuxed to MPEG-TS
//! ([`crate::flv`]) and fed to the channel's [`Publisher`], so everything after ingest is the same
//! as for an HTTP push. One connection is one task: a broken or hostile client ends only itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tracing::{debug, info, warn};

use crate::flv::{FlvError, FlvToTs};
use crate::node::Node;
use crate::source::{Publisher, resolve_push};
use crate::ts::TsError;

/// The RTMP application publishers connect to.
pub const APP: &str = "live";
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;
/// A client that has not finished the handshake and its publish request by then is dropped.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// A publisher that sends nothing for this long is gone (encoders send many packets a second).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RtmpIngestError {
    #[error("RTMP handshake failed: {0}")]
    Handshake(String),
    #[error("bad RTMP message: {0}")]
    Session(String),
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

/// Accepts RTMP publishers until the node stops.
pub async fn run_rtmp_listener(node: Node, listener: TcpListener) {
    info!(node = %node.id(), addr = ?listener.local_addr().ok(), "RTMP ingest listening (rtmp://HOST:PORT/{APP}/CHANNEL)");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = node.cancelled() => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = node.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "RTMP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let node2 = node.clone();
        node.spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = node2.cancelled() => {}
                r = session(&node2, stream, peer) => match r {
                    Ok(()) => debug!(%peer, "RTMP connection closed"),
                    Err(e) => warn!(%peer, error = %e, "RTMP connection ended"),
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
    let mut buf = vec![0u8; 64 * 1024];
    let leftover = timeout(SETUP_TIMEOUT, handshake(&mut stream, &mut buf))
        .await
        .map_err(|_| RtmpIngestError::Handshake(format!("not done within {SETUP_TIMEOUT:?}")))??;
    let (mut rtmp, first) =
        ServerSession::new(ServerSessionConfig::new()).map_err(|e| RtmpIngestError::Session(e.to_string()))?;
    let mut out = Vec::new();
    let mut pending = first;
    let mut input = leftover;
    let setup_deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
    loop {
        if !input.is_empty() {
            pending.extend(rtmp.handle_input(&input).map_err(|e| RtmpIngestError::Session(e.to_string()))?);
        }
        // Results can raise more results (an accepted request answers with packets).
        while !pending.is_empty() {
            for r in std::mem::take(&mut pending) {
                match r {
                    ServerSessionResult::OutboundResponse(p) => out.extend_from_slice(&p.bytes),
                    ServerSessionResult::RaisedEvent(e) => {
                        pending.extend(on_event(node, &mut rtmp, live, e, peer)?);
                    }
                    ServerSessionResult::UnhandleableMessageReceived(_) => {}
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
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
            Some(_) => IDLE_TIMEOUT,
            None => setup_deadline.saturating_duration_since(tokio::time::Instant::now()),
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
                }
                return Err(RtmpIngestError::Idle(wait));
            }
        };
        if n == 0 {
            if let Some(l) = live.take() {
                info!(channel = %l.publisher.channel(), %peer, bytes = l.publisher.bytes, "RTMP publisher disconnected");
                l.publisher.finish("ok");
            }
            return Ok(());
        }
        input = buf[..n].to_vec();
    }
}

/// Runs the server side of the handshake; returns the bytes that followed it.
async fn handshake(stream: &mut TcpStream, buf: &mut [u8]) -> Result<Vec<u8>, RtmpIngestError> {
    let mut hs = Handshake::new(PeerType::Server);
    loop {
        let n = stream.read(buf).await?;
        if n == 0 {
            return Err(RtmpIngestError::Handshake("the client closed the connection".into()));
        }
        match hs.process_bytes(&buf[..n]).map_err(|e| RtmpIngestError::Handshake(format!("{e:?}")))? {
            HandshakeProcessResult::InProgress { response_bytes } => stream.write_all(&response_bytes).await?,
            HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                stream.write_all(&response_bytes).await?;
                return Ok(remaining_bytes);
            }
        }
    }
}

fn on_event(
    node: &Node,
    rtmp: &mut ServerSession,
    live: &mut Option<Live>,
    e: ServerSessionEvent,
    peer: SocketAddr,
) -> Result<Vec<ServerSessionResult>, RtmpIngestError> {
    let session_err = |e: rml_rtmp::sessions::ServerSessionError| RtmpIngestError::Session(e.to_string());
    match e {
        ServerSessionEvent::ConnectionRequested { request_id, app_name } => {
            if app_name.trim_end_matches('/') == APP {
                rtmp.accept_request(request_id).map_err(session_err)
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
                    rtmp.accept_request(request_id).map_err(session_err)
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
            Ok(Vec::new())
        }
        ServerSessionEvent::AudioDataReceived { stream_key, data, timestamp, .. } => {
            if let Some(l) = live.as_mut().filter(|l| l.stream_key == stream_key) {
                l.remux.audio(timestamp.value, &data, &mut l.ts)?;
            }
            Ok(Vec::new())
        }
        ServerSessionEvent::PublishStreamFinished { .. } => {
            if let Some(l) = live.take() {
                info!(channel = %l.publisher.channel(), %peer, "RTMP publisher finished");
                l.publisher.finish("ok");
            }
            Ok(Vec::new())
        }
        _ => Ok(Vec::new()),
    }
}

/// The publisher for stream name `CHANNEL[?key=KEY]` or `STREAM_KEY`, or why not.
fn claim(node: &Node, stream_name: &str) -> Result<Publisher, String> {
    let (name, query) = stream_name.split_once('?').unwrap_or((stream_name, ""));
    let key = query.split('&').find_map(|kv| kv.strip_prefix("key="));
    let channel = resolve_push(node, name, key).map_err(|e| e.to_string())?;
    Publisher::claim(node, &channel, "rtmp").map_err(|e| e.to_string())
}
