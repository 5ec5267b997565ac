//! Tier-0 sources: every way a feed enters (HTTP push in [`crate::http`], raw TCP, origin pull, a
//! looped clip) ends in a [`Publisher`], which resyncs, chunks, signs and publishes. One publisher per
//! channel at a time; a broken feed ends only its own session.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use proto::{ChannelId, ChannelSigner, Chunk, ChunkFlags, ChunkHeader};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::chunker::{ChunkDraft, Chunker, ChunkerConfig};
use crate::hub::ChannelHub;
use crate::ingest::looper::Looper;
use crate::node::Node;
use crate::ts::{Resync, TsError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("channel {0} is not fed from this node")]
    NotHere(ChannelId),
    #[error("channel {0} already has a live publisher; stop it first (or set takeover = true in the node's [ingest])")]
    Busy(ChannelId),
}

/// Why a broadcaster may not push to a channel on this node (HTTP, RTMP and SRT alike).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushRefusal {
    #[error("channel {0} is not ingested on this node")]
    NotHere(ChannelId),
    #[error("channel {0} takes its feed from another source, not a broadcaster push")]
    NotPush(ChannelId),
    #[error("channel {0} needs a stream key: add ?key=YOUR_KEY to the stream name or URL")]
    KeyMissing(ChannelId),
    #[error("wrong stream key for channel {0}")]
    KeyWrong(ChannelId),
    /// Not echoed: the name may be a mistyped stream key.
    #[error("no channel is ingested here under that stream name, and none has it as its stream key")]
    Unknown,
}

/// Which channel a broadcaster's stream name asks for (RTMP and SRT): `CHANNEL` with its `key`
/// checked, or the channel's stream key alone, as OBS sends it with server `rtmp://HOST/live`.
pub fn resolve_push(node: &Node, name: &str, key: Option<&str>) -> Result<ChannelId, PushRefusal> {
    if let Ok(channel) = ChannelId::new(name)
        && node.source(&channel).is_some()
    {
        check_push(node, &channel, key)?;
        return Ok(channel);
    }
    if key.is_none() {
        // Every push channel is compared, so timing does not tell which key nearly matched.
        let mut found = None;
        for src in node.sources() {
            let push = src.cfg.source == proto::config::SourceConfig::Push;
            if push && src.cfg.stream_key.as_deref().is_some_and(|k| same_key(name, k)) {
                found = Some(src.hub.id.clone());
            }
        }
        if let Some(channel) = found {
            return Ok(channel);
        }
    }
    Err(PushRefusal::Unknown)
}

/// Checks that `channel` takes pushes here and that `key` is its stream key (if it has one).
pub fn check_push(node: &Node, channel: &ChannelId, key: Option<&str>) -> Result<(), PushRefusal> {
    let src = node.source(channel).ok_or_else(|| PushRefusal::NotHere(channel.clone()))?;
    if src.cfg.source != proto::config::SourceConfig::Push {
        return Err(PushRefusal::NotPush(channel.clone()));
    }
    match (&src.cfg.stream_key, key) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(PushRefusal::KeyMissing(channel.clone())),
        (Some(want), Some(k)) if same_key(k, want) => Ok(()),
        (Some(_), Some(_)) => Err(PushRefusal::KeyWrong(channel.clone())),
    }
}

/// Compares without an early exit, so response time does not reveal how much of a key matched.
fn same_key(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

use livesky_net::clock::unix_ms as wall_ms;

/// One broadcaster session on a channel.
pub struct Publisher {
    node: Node,
    hub: Arc<ChannelHub>,
    signer: Arc<ChannelSigner>,
    resync: Resync,
    chunker: Chunker,
    next_seq: u64,
    drafts: Vec<ChunkDraft>,
    skipped_reported: u64,
    /// This session's number at the hub, and the token cancelled when another takes over.
    session: u64,
    kicked: CancellationToken,
    /// When the health gauges were last set (at most once a second).
    health_at: Option<Instant>,
    /// A broadcaster's push (not our own pull or loop): its broadcast ends if it does not come
    /// back within the reconnect grace.
    pushed: bool,
    pub bytes: u64,
    pub chunks: u64,
}

impl Publisher {
    /// `protocol`: how the broadcast arrives (`rtmp`, `srt`, `http`…), shown to operators.
    pub fn claim(node: &Node, channel: &ChannelId, protocol: &'static str) -> Result<Publisher, ClaimError> {
        let src = node.source(channel).ok_or_else(|| ClaimError::NotHere(channel.clone()))?;
        let pushed = src.cfg.source == proto::config::SourceConfig::Push;
        let take_over = node.config().ingest.takeover;
        let Some((session, kicked)) = src.hub.claim_publisher(take_over) else {
            return Err(ClaimError::Busy(channel.clone()));
        };
        if take_over && session > 1 {
            info!(%channel, "a new publisher takes the channel over");
        }
        src.hub.set_ingest(crate::hub::IngestInfo { protocol: Some(protocol), av_drift_ms: None });
        let (next_seq, continue_after) = {
            let ring = src.hub.ring();
            (ring.last_seq().map_or(0, |s| s + 1), ring.newest().map(|c| c.header.media_ts))
        };
        Ok(Publisher {
            node: node.clone(),
            hub: src.hub.clone(),
            signer: src.signer.clone(),
            resync: Resync::default(),
            chunker: Chunker::new(ChunkerConfig::default(), continue_after),
            next_seq,
            drafts: Vec::new(),
            skipped_reported: 0,
            session,
            kicked,
            health_at: None,
            pushed,
            bytes: 0,
            chunks: 0,
        })
    }

    pub fn channel(&self) -> &ChannelId {
        &self.hub.id
    }

    /// Resolves when another publisher took the channel over: the session should end.
    pub fn taken_over(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.kicked.cancelled()
    }

    /// Sets the ingest health gauges from the ring (once a second at most).
    fn update_health(&mut self) {
        let now = Instant::now();
        if self.health_at.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            return;
        }
        self.health_at = Some(now);
        let label = [self.hub.id.as_str()];
        let m = self.node.metrics();
        let health = self.hub.ring().health();
        if let Some(k) = health.kbps {
            m.ingest_bitrate.with_label_values(&label).set(k);
        }
        if let Some(k) = health.keyframe_interval_ms {
            m.ingest_keyframe_interval.with_label_values(&label).set(k as f64 / 1000.0);
        }
        if let Some(f) = health.frame_rate {
            m.ingest_frame_rate.with_label_values(&label).set(f);
        }
        if let Some(d) = self.chunker.av_drift_ms() {
            let info = self.hub.ingest();
            self.hub.set_ingest(crate::hub::IngestInfo { av_drift_ms: Some(d), ..info });
            m.ingest_av_drift.with_label_values(&label).set(d as f64 / 1000.0);
        }
    }

    /// Feeds broadcaster bytes; an error ends the session (not TS, or sync lost for good).
    pub fn feed(&mut self, data: &[u8]) -> Result<(), TsError> {
        let label = [self.hub.id.as_str()];
        let m = self.node.metrics();
        m.ingest_bytes.with_label_values(&label).inc_by(data.len() as u64);
        self.bytes += data.len() as u64;
        let chunker = &mut self.chunker;
        let drafts = &mut self.drafts;
        let res = self.resync.feed(data, |p| drafts.extend(chunker.push(p)));
        let skipped = self.resync.stats().skipped_bytes;
        if skipped > self.skipped_reported {
            m.ingest_skipped_bytes.with_label_values(&label).inc_by(skipped - self.skipped_reported);
            self.skipped_reported = skipped;
        }
        self.publish_drafts();
        res
    }

    fn publish_drafts(&mut self) {
        if self.drafts.is_empty() {
            return;
        }
        let label = [self.hub.id.as_str()];
        let m = self.node.metrics();
        let ingest_ms = wall_ms();
        for d in std::mem::take(&mut self.drafts) {
            let mut flags = ChunkFlags::empty();
            if d.keyframe {
                flags.insert(ChunkFlags::KEYFRAME);
                m.ingest_keyframes.with_label_values(&label).inc();
            }
            if d.discontinuity {
                flags.insert(ChunkFlags::DISCONTINUITY);
            }
            let header = ChunkHeader {
                channel: self.hub.id.clone(),
                seq: self.next_seq,
                ingest_ms,
                media_ts: d.media_ts,
                flags,
            };
            let mut chunk = Chunk { header, payload: d.payload, signature: None };
            self.signer.sign(&mut chunk);
            self.next_seq += 1;
            self.chunks += 1;
            m.ingest_chunks.with_label_values(&label).inc();
            if !self.hub.publish_from(self.session, chunk) {
                // Taken over: the new publisher numbers on from the ring; we stop here.
                self.drafts.clear();
                return;
            }
        }
        self.hub.set_source(proto::SourceStatus::Live);
        self.update_health();
    }

    /// End of feed: counts the session under `outcome` (ok, aborted…), flushes the last chunk and
    /// releases the channel.
    pub fn finish(mut self, outcome: &str) {
        self.count_session(outcome);
        let chunker = &mut self.chunker;
        let drafts = &mut self.drafts;
        self.resync.finish(|p| drafts.extend(chunker.push(p)));
        drafts.extend(chunker.finish());
        self.publish_drafts();
    }

    pub(crate) fn count_session(&self, outcome: &str) {
        self.node.metrics().ingest_sessions.with_label_values(&[self.hub.id.as_str(), outcome]).inc();
    }

    pub(crate) fn count_error(&self, e: &TsError) {
        let kind = match e {
            TsError::NotMpegTs { .. } => "not_ts",
            TsError::SyncLost { .. } => "sync_lost",
        };
        self.node.metrics().ingest_errors.with_label_values(&[self.hub.id.as_str(), kind]).inc();
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let released = self.hub.release_publisher(self.session);
        if released && self.pushed && tokio::runtime::Handle::try_current().is_ok() {
            let grace = Duration::from_secs(self.node.config().ingest.reconnect_grace_seconds);
            let sessions = self.hub.publisher_sessions();
            self.node.spawn(end_after_grace(self.node.clone(), self.hub.clone(), sessions, grace));
        }
    }
}

/// Ends the broadcast on `hub` if no publisher claims it within `grace` (`sessions`: the hub's
/// publisher count when the last one left).
async fn end_after_grace(node: Node, hub: Arc<ChannelHub>, sessions: u64, grace: Duration) {
    tokio::select! {
        _ = node.cancelled() => return,
        _ = sleep(grace) => {}
    }
    if hub.end_broadcast_unless_claimed(sessions) {
        info!(channel = %hub.id, grace_s = grace.as_secs(), "broadcast ended: its publisher did not come back in time; viewers are told");
        node.metrics().broadcasts_ended.with_label_values(&[hub.id.as_str()]).inc();
    }
}

/// Plays a clip as a live feed, paced by its own clock (`speed` > 1 runs faster, for benchmarks).
pub(crate) async fn run_loop(node: Node, channel: ChannelId, mut looper: Looper, speed: f64, stop: CancellationToken) {
    let mut publisher = match Publisher::claim(&node, &channel, "loop") {
        Ok(p) => p,
        Err(e) => {
            warn!(%channel, error = %e, "loop source cannot start");
            return;
        }
    };
    info!(%channel, seconds = looper.duration_90k() / 90_000, speed, "looping clip as a live feed");
    let started = Instant::now();
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        let elapsed_90k = (started.elapsed().as_secs_f64() * 90_000.0 * speed) as u64;
        buf.clear();
        looper.take_due(elapsed_90k, &mut buf);
        if let Err(e) = publisher.feed(&buf) {
            warn!(%channel, error = %e, "loop clip became unreadable");
            return;
        }
        let next = looper.next_due_90k() as f64 / 90_000.0 / speed;
        // Wake at the next packet's time, but at least every 10 ms worth of work is batched.
        let at = started + Duration::from_secs_f64(next).max(started.elapsed() + Duration::from_millis(10));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(at) => {}
        }
    }
}

/// Raw MPEG-TS over TCP: one broadcaster connection at a time.
pub(crate) async fn run_tcp_ingest(node: Node, channel: ChannelId, listener: TcpListener, stop: CancellationToken) {
    info!(%channel, addr = ?listener.local_addr().ok(), "raw TCP ingest listening");
    // One publisher at a time; the cap only keeps strangers from piling up sockets.
    let slots = livesky_net::limits::ConnLimiter::new("tcp_ingest", 16, 4).with_metrics(node.metrics().conns.clone());
    while let Some((mut stream, peer, permit)) = livesky_net::limits::accept_capped(&listener, &slots, &stop).await {
        let Ok(permit) = permit else { continue };
        let mut publisher = match Publisher::claim(&node, &channel, "tcp") {
            Ok(p) => p,
            Err(e) => {
                warn!(%channel, %peer, error = %e, "refusing TCP broadcaster");
                continue;
            }
        };
        let node = node.clone();
        let channel = channel.clone();
        let stop = stop.clone();
        livesky_net::limits::keepalive(&stream);
        let idle = node.config().limits.ingest_idle_timeout();
        node.clone().spawn(async move {
            let _permit = permit;
            info!(%channel, %peer, "TCP broadcaster connected");
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = tokio::time::timeout(idle, stream.read(&mut buf)) => match r {
                        Ok(r) => r,
                        Err(_) => {
                            warn!(%channel, %peer, ?idle, "TCP broadcaster sent nothing; the channel is free again");
                            node.metrics().ingest_protocol_errors.with_label_values(&["tcp", "timeout"]).inc();
                            publisher.finish("aborted");
                            return;
                        }
                    },
                };
                match n {
                    Ok(0) => break,
                    Ok(n) => {
                        if let Err(e) = publisher.feed(&buf[..n]) {
                            warn!(%channel, %peer, error = %e, "dropping TCP broadcaster");
                            publisher.count_error(&e);
                            publisher.count_session("error");
                            return;
                        }
                    }
                    Err(e) => {
                        info!(%channel, %peer, error = %e, "TCP broadcaster connection failed");
                        break;
                    }
                }
            }
            info!(%channel, %peer, bytes = publisher.bytes, chunks = publisher.chunks, "TCP broadcaster finished");
            publisher.finish("ok");
        });
    }
}

/// Pulls HTTP-TS from the broadcaster's origin, reconnecting with backoff.
pub(crate) async fn run_pull(node: Node, channel: ChannelId, url: String, stop: CancellationToken) {
    let uri: hyper::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => {
            warn!(%channel, %url, error = %e, "origin URL is invalid; pull disabled");
            return;
        }
    };
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    super::reconnect_forever("origin pull", &channel, &url, &stop, || pull_once(&node, &channel, &client, uri.clone()))
        .await;
}

async fn pull_once(
    node: &Node,
    channel: &ChannelId,
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    uri: hyper::Uri,
) -> Result<u64, String> {
    let resp = timeout(Duration::from_secs(10), client.get(uri))
        .await
        .map_err(|_| "no response within 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("origin answered {}", resp.status()));
    }
    let mut publisher = Publisher::claim(node, channel, "pull").map_err(|e| e.to_string())?;
    let mut body = resp.into_body();
    loop {
        let frame = match timeout(Duration::from_secs(10), body.frame()).await {
            Err(_) => break Err("origin sent nothing for 10 s".to_string()),
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => break Err(e.to_string()),
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(data) = frame.into_data()
            && let Err(e) = publisher.feed(&data)
        {
            publisher.count_error(&e);
            break Err(e.to_string());
        }
    }?;
    let bytes = publisher.bytes;
    publisher.finish("ok");
    Ok(bytes)
}
