//! Peer links over WebRTC data channels (webrtc-rs 0.21): how peers behind NATs reach each other
//! (LiveSky §3.2). The child offers, the parent answers; offers and answers travel through the
//! edge's signalling relay (`ToEdge::Signal` / `FromEdge::Signal`), ICE uses the edge's STUN.
//! Gathering completes before an offer or answer is sent (no trickle), so each side sends one
//! message. A signal payload is `TOKEN\nSDP`; the token matches an answer to its offer.
//!
//! One ordered, reliable data channel per link carries [`PeerLink`] frames, cut into pieces
//! ([`crate::pieces`], shared with the browser's driver).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proto::WireMessage;
use proto::peer::PeerLink;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCIceServer, RTCPeerConnectionState, RTCSessionDescription, Registry,
    register_default_interceptors,
};
use webrtc::runtime::{Runtime, default_runtime};

use crate::core::LinkId;
use crate::pieces::{Reassembly, pieces};

const GATHER_TIMEOUT: Duration = Duration::from_secs(3);
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
const SEND_BUFFER_LIMIT: usize = 2 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RtcError {
    #[error("WebRTC: {0}")]
    WebRtc(String),
    #[error("malformed signalling payload")]
    BadSignal,
    #[error("no offer is waiting for answer token {0}")]
    UnknownToken(u64),
}

fn err(e: impl std::fmt::Display) -> RtcError {
    RtcError::WebRtc(e.to_string())
}

/// What a link task reports to the driver (the driver's own events wrap these).
pub enum LinkEvent {
    /// The data channel is open (which side offered is in the driver's link numbering).
    Open {
        link: LinkId,
        tx: mpsc::Sender<PeerLink>,
        close: CancellationToken,
    },
    Message {
        link: LinkId,
        msg: PeerLink,
    },
    /// Closed after it was open.
    Closed {
        link: LinkId,
    },
    /// Never opened.
    Failed {
        link: LinkId,
    },
}

struct Handler {
    gathered: CancellationToken,
    failed: CancellationToken,
    incoming: Option<mpsc::Sender<Arc<dyn DataChannel>>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.cancel();
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if matches!(state, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) {
            self.failed.cancel();
        }
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        if let Some(tx) = &self.incoming {
            // Never await the link here: returning unblocks the connection's driver.
            let _ = tx.try_send(dc);
        }
    }
}

/// Creates WebRTC links for one peer.
pub struct Rtc {
    runtime: Arc<dyn Runtime>,
    ice: Vec<RTCIceServer>,
    bind_ip: IpAddr,
    /// Offers waiting for their answer, by the offering link's number (the signalling token).
    pending: Mutex<HashMap<u64, Arc<dyn PeerConnection>>>,
}

impl Rtc {
    /// `stun`: the edge's STUN server; `bind_ip`: the address ICE binds its UDP sockets to.
    pub fn new(stun: Option<SocketAddr>, bind_ip: IpAddr) -> Result<Rtc, RtcError> {
        let runtime = default_runtime().ok_or_else(|| RtcError::WebRtc("no async runtime for WebRTC".into()))?;
        let ice =
            stun.map(|a| RTCIceServer { urls: vec![format!("stun:{a}")], ..Default::default() }).into_iter().collect();
        Ok(Rtc { runtime, ice, bind_ip, pending: Mutex::new(HashMap::new()) })
    }

    async fn peer_connection(&self, handler: Handler) -> Result<Arc<dyn PeerConnection>, RtcError> {
        let mut media = MediaEngine::default();
        media.register_default_codecs().map_err(err)?;
        let registry = register_default_interceptors(Registry::new(), &mut media).map_err(err)?;
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().with_ice_servers(self.ice.clone()).build())
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(handler))
            .with_runtime(self.runtime.clone())
            .with_udp_addrs(vec![SocketAddr::new(self.bind_ip, 0).to_string()])
            .with_data_channel_send_buffer_limit(SEND_BUFFER_LIMIT)
            .build()
            .await
            .map_err(err)?;
        Ok(Arc::new(pc))
    }

    /// Child side: opens a link to a parent or neighbour; returns the offer payload to signal.
    pub async fn offer(
        &self,
        link: LinkId,
        events: mpsc::Sender<LinkEvent>,
        cancel: CancellationToken,
    ) -> Result<String, RtcError> {
        let (gathered, failed) = (CancellationToken::new(), CancellationToken::new());
        let failed_rx = failed.clone();
        let gathered_rx = gathered.clone();
        let pc = self.peer_connection(Handler { gathered, failed, incoming: None }).await?;
        let init = RTCDataChannelInit { ordered: true, ..Default::default() };
        let dc = pc.create_data_channel("livesky", Some(init)).await.map_err(err)?;
        tokio::spawn(run_link(dc, pc.clone(), link, events, failed_rx, cancel));
        let offer = pc.create_offer(None).await.map_err(err)?;
        pc.set_local_description(offer).await.map_err(err)?;
        let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered_rx.cancelled()).await;
        let desc = pc.local_description().await.ok_or_else(|| RtcError::WebRtc("no local description".into()))?;
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(link.number(), pc);
        Ok(format!("{}\n{}", link.number(), desc.sdp))
    }

    /// Child side: the parent's answer to our offer.
    pub async fn answered(&self, payload: &str) -> Result<(), RtcError> {
        let (token, sdp) = split(payload)?;
        let pc = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token)
            .ok_or(RtcError::UnknownToken(token))?;
        let desc = RTCSessionDescription::answer(sdp.to_string()).map_err(err)?;
        pc.set_remote_description(desc).await.map_err(err)
    }

    /// Parent side: answers an offer; the link appears once it opens.
    pub async fn answer(
        &self,
        payload: &str,
        link: LinkId,
        events: mpsc::Sender<LinkEvent>,
        cancel: CancellationToken,
    ) -> Result<String, RtcError> {
        let (token, sdp) = split(payload)?;
        let (gathered, failed) = (CancellationToken::new(), CancellationToken::new());
        let failed_rx = failed.clone();
        let gathered_rx = gathered.clone();
        let (dc_tx, mut dc_rx) = mpsc::channel(1);
        let pc = self.peer_connection(Handler { gathered, failed, incoming: Some(dc_tx) }).await?;
        pc.set_remote_description(RTCSessionDescription::offer(sdp.to_string()).map_err(err)?).await.map_err(err)?;
        let answer = pc.create_answer(None).await.map_err(err)?;
        pc.set_local_description(answer).await.map_err(err)?;
        let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered_rx.cancelled()).await;
        let desc = pc.local_description().await.ok_or_else(|| RtcError::WebRtc("no local description".into()))?;
        let pc2 = pc.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(OPEN_TIMEOUT, dc_rx.recv()).await {
                Ok(Some(dc)) => run_link(dc, pc2, link, events, failed_rx, cancel).await,
                _ => {
                    let _ = pc2.close().await;
                }
            }
        });
        Ok(format!("{token}\n{}", desc.sdp))
    }

    /// Forgets an offer that will never be answered.
    pub async fn abandon(&self, link: LinkId) {
        let pc = self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&link.number());
        if let Some(pc) = pc {
            let _ = pc.close().await;
        }
    }
}

fn split(payload: &str) -> Result<(u64, &str), RtcError> {
    let (token, sdp) = payload.split_once('\n').ok_or(RtcError::BadSignal)?;
    Ok((token.trim().parse().map_err(|_| RtcError::BadSignal)?, sdp))
}

/// Sends one frame's pieces; an error leaves the frame half sent, so the link must close.
async fn send_frame(dc: &dyn DataChannel, frame: Bytes) -> Result<(), ()> {
    for piece in pieces(&frame) {
        dc.send(piece).await.map_err(drop)?;
    }
    Ok(())
}

async fn run_link(
    dc: Arc<dyn DataChannel>,
    pc: Arc<dyn PeerConnection>,
    link: LinkId,
    events: mpsc::Sender<LinkEvent>,
    failed: CancellationToken,
    cancel: CancellationToken,
) {
    let close = cancel.child_token();
    let (tx, mut rx) = mpsc::channel::<PeerLink>(512);
    let mut handle = Some((tx, close.clone()));
    let mut open = false;
    let mut reasm = Reassembly::default();
    let deadline = tokio::time::sleep(OPEN_TIMEOUT);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = close.cancelled() => break,
            _ = &mut deadline, if !open => break,
            _ = failed.cancelled() => break,
            ev = dc.poll() => match ev {
                Some(DataChannelEvent::OnOpen) => {
                    if let Some((tx, close)) = handle.take() {
                        open = true;
                        if events.send(LinkEvent::Open { link, tx, close }).await.is_err() {
                            break;
                        }
                    }
                }
                Some(DataChannelEvent::OnMessage(m)) => match reasm.push(&m.data) {
                    Some(Some(frame)) => match PeerLink::decode_body(frame) {
                        Ok(msg) => {
                            if events.send(LinkEvent::Message { link, msg }).await.is_err() {
                                break;
                            }
                        }
                        Err(_) => break,
                    },
                    Some(None) => {}
                    None => break,
                },
                Some(DataChannelEvent::OnClose) | None => break,
                _ => {}
            },
            msg = rx.recv(), if open => match msg {
                Some(msg) => {
                    let mut body = BytesMut::new();
                    msg.encode_body(&mut body);
                    // Whole frames or none: a frame the send buffer has no room for is dropped
                    // (the child repairs or asks its edge); one cut off half way would glue its
                    // head to the next frame at the other end.
                    let backlog = dc.outstanding_bytes().await.unwrap_or(0);
                    if backlog + body.len() > SEND_BUFFER_LIMIT {
                        continue;
                    }
                    if send_frame(&*dc, body.freeze()).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    let _ = events.send(if open { LinkEvent::Closed { link } } else { LinkEvent::Failed { link } }).await;
    let _ = dc.close().await;
    let _ = pc.close().await;
}
