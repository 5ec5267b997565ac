//! SN↔SN links: the child side (one task per connection attempt, fed into the upstream core by a
//! per-channel driver) and the parent side (one task per subscribed child, reading the ring through
//! a cursor). Policy lives in [`crate::upstream`]; this file moves messages and runs the link's
//! mutual authentication (each side signs the other's nonce with its identity key, checked
//! against the key the [`crate::book::AddressBook`] holds; a parent takes only children the
//! topology names).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use proto::{Chunk, Hello, LinkSide, NodeId, PROTOCOL_VERSION, RefuseCode, SnCodec, SnMessage, Subscribe, WireMessage};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, interval, timeout};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::hub::{ChannelHub, CursorEnd, CursorEvent, HubState};
use crate::node::{Node, OpenError, Origin};
use crate::upstream::{AttemptId, Input, Output, Upstream, Verdict};
use livesky_net::limits::ConnLimiter;

const KEEPALIVE: Duration = Duration::from_secs(1);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const CHILD_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const BATCH: usize = 64;

enum LinkMsg {
    Input(Input),
    Chunk(AttemptId, Chunk),
    /// The channel key the parent announced with its SubscribeOk.
    Key(Option<[u8; 32]>),
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// Drives one channel's [`Upstream`] core until the channel is dropped or not found.
pub(crate) async fn run_upstream(
    node: Node,
    hub: Arc<ChannelHub>,
    mut core: Upstream,
    path: Vec<NodeId>,
    cancel: CancellationToken,
) {
    let channel = hub.id.clone();
    let label = [channel.as_str()];
    let (tx, mut rx) = mpsc::channel::<LinkMsg>(256);
    let mut links: Vec<(AttemptId, CancellationToken)> = Vec::new();
    let mut last_stats = core.stats();
    core.start(now());
    loop {
        while let Some(action) = core.poll_output() {
            match action {
                Output::Connect { attempt, candidate, start } => {
                    let token = cancel.child_token();
                    links.push((attempt, token.clone()));
                    let sub = Subscribe { channel: channel.clone(), start, path: path.clone() };
                    debug!(node = %node.id(), %channel, parent = %candidate, ?start, "subscribing upstream");
                    let (n, tx) = (node.clone(), tx.clone());
                    node.spawn(async move {
                        let addr = n.resolve(&candidate).await;
                        run_link(&n, attempt, candidate, addr, sub, tx, token).await;
                    });
                }
                Output::Close { attempt, reason } => {
                    debug!(%channel, ?attempt, ?reason, "closing upstream link");
                    links.retain(|(a, t)| {
                        if *a == attempt {
                            t.cancel();
                        }
                        *a != attempt
                    });
                }
                Output::Active { candidate } => {
                    info!(node = %node.id(), %channel, parent = %candidate, next_seq = ?core.next_seq(), "upstream subscription active");
                    hub.set_state(HubState::Ready);
                }
                Output::NotFound => {
                    info!(node = %node.id(), %channel, "no parent knows this channel");
                    hub.set_state(HubState::NotFound);
                    node.forget(&hub);
                    return;
                }
                Output::Source(source) => hub.set_source(source),
            }
        }
        let stats = core.stats();
        node.metrics().relay_failovers.with_label_values(&label).inc_by(stats.failovers - last_stats.failovers);
        node.metrics().relay_stalls.with_label_values(&label).inc_by(stats.stalls - last_stats.stalls);
        node.metrics().relay_duplicates.with_label_values(&label).inc_by(stats.duplicates - last_stats.duplicates);
        node.metrics().relay_missing.with_label_values(&label).inc_by(stats.missing_chunks - last_stats.missing_chunks);
        last_stats = stats;

        let deadline = core.poll_timeout().map(Instant::from_std);
        tokio::select! {
            _ = cancel.cancelled() => {
                core.stop();
                for (_, t) in links.drain(..) {
                    t.cancel();
                }
                return;
            }
            msg = rx.recv() => match msg {
                Some(LinkMsg::Chunk(attempt, chunk)) => match core.on_chunk(now(), attempt, chunk.seq()) {
                    Verdict::Accept => {
                        node.metrics().relay_chunks.with_label_values(&label).inc();
                        hub.publish(chunk);
                    }
                    Verdict::AcceptAfterGap { missing_from } => {
                        warn!(node = %node.id(), %channel, missing_from, seq = chunk.seq(), "gap: parent no longer had these chunks");
                        node.metrics().relay_chunks.with_label_values(&label).inc();
                        hub.publish(chunk);
                    }
                    Verdict::Duplicate | Verdict::Stale => {}
                },
                Some(LinkMsg::Input(input)) => core.handle(now(), input),
                Some(LinkMsg::Key(key)) => {
                    if key.is_some() && hub.verify_key() != key {
                        hub.set_verify_key(key);
                    }
                }
                None => return,
            },
            _ = sleep_until_opt(deadline) => core.handle_timeout(now()),
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// One connection attempt to a parent: handshake, then pass everything to the driver.
async fn run_link(
    node: &Node,
    attempt: AttemptId,
    parent: NodeId,
    addr: Option<SocketAddr>,
    sub: Subscribe,
    tx: mpsc::Sender<LinkMsg>,
    cancel: CancellationToken,
) {
    let input = |i: Input| LinkMsg::Input(i);
    let Some(addr) = addr else {
        let reason = format!("no address known for node {parent}");
        let _ = tx.send(input(Input::ConnectFailed { attempt, reason })).await;
        return;
    };
    let stream = tokio::select! {
        _ = cancel.cancelled() => return,
        r = timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr)) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let _ = tx.send(input(Input::ConnectFailed { attempt, reason: format!("{addr}: {e}") })).await;
                return;
            }
            Err(_) => {
                let _ = tx.send(input(Input::ConnectFailed { attempt, reason: format!("{addr}: connect timed out") })).await;
                return;
            }
        }
    };
    let _ = stream.set_nodelay(true);
    livesky_net::limits::keepalive(&stream);
    let mut framed = Framed::new(stream, SnCodec::default());
    let channel = sub.channel.clone();
    let handshake = tokio::select! {
        _ = cancel.cancelled() => return,
        r = timeout(HANDSHAKE_TIMEOUT, prove_to_parent(node, &parent, &mut framed, sub)) => {
            r.unwrap_or_else(|_| Err(format!("parent {parent} did not answer the handshake")))
        }
    };
    if let Err(reason) = handshake {
        warn!(node = %node.id(), %parent, %reason, "SN link handshake failed");
        let _ = tx.send(input(Input::ConnectFailed { attempt, reason })).await;
        return;
    }
    let mut ka = interval(KEEPALIVE);
    let closed = |reason: String| input(Input::Closed { attempt, reason });
    // The channel key the parent named: every chunk is checked against it before the hub (and so
    // any child, edge viewer or peer) sees it.
    let mut verifier: Option<proto::ChannelVerifier> = None;
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ka.tick() => {
                if let Err(e) = framed.send(SnMessage::Keepalive).await {
                    let _ = tx.send(closed(e.to_string())).await;
                    return;
                }
                continue;
            }
            m = framed.next() => m,
        };
        let out = match msg {
            Some(Ok(SnMessage::Chunk(c))) if c.header.channel == channel => {
                match verifier.as_ref().map(|v| v.verify(&c)) {
                    Some(Err(e)) => {
                        warn!(%parent, %channel, seq = c.seq(), error = %e, "parent sent a chunk that fails its signature check; dropping the link");
                        closed(format!("parent sent chunk {} failing its signature check", c.seq()))
                    }
                    _ => LinkMsg::Chunk(attempt, c),
                }
            }
            Some(Ok(SnMessage::Chunk(c))) => closed(format!("parent sent a chunk of channel {}", c.header.channel)),
            Some(Ok(SnMessage::SubscribeOk { source, verify_key, .. })) => {
                verifier = verify_key.and_then(|k| proto::ChannelVerifier::from_bytes(&k).ok());
                // The key first, so whoever wakes on the channel becoming ready already has it.
                if tx.send(LinkMsg::Key(verify_key)).await.is_err() {
                    return;
                }
                input(Input::Accepted { attempt, source })
            }
            Some(Ok(SnMessage::SubscribeErr { code, reason, .. })) => {
                debug!(%parent, ?code, %reason, "parent refused subscription");
                input(Input::Refused { attempt, code, reason })
            }
            Some(Ok(SnMessage::SourceState { source, .. })) => input(Input::SourceState { attempt, source }),
            Some(Ok(SnMessage::Keepalive | SnMessage::Hello(_))) => input(Input::Alive { attempt }),
            Some(Ok(other)) => closed(format!("unexpected {} from parent", other.kind())),
            Some(Err(e)) => closed(format!("bad data from parent {parent}: {e}")),
            None => closed(format!("parent {parent} closed the connection")),
        };
        let done = matches!(out, LinkMsg::Input(Input::Closed { .. } | Input::Refused { .. }));
        if tx.send(out).await.is_err() || done {
            return;
        }
    }
}

/// The child's side of the handshake: Hello, check the parent's Challenge, then Auth and Subscribe.
async fn prove_to_parent(
    node: &Node,
    parent: &NodeId,
    framed: &mut Framed<TcpStream, SnCodec>,
    sub: Subscribe,
) -> Result<(), String> {
    let me = node.id().clone();
    let my_nonce = nonce()?;
    let hello = Hello { version: PROTOCOL_VERSION, node: me.clone(), tier: node.config().tier, nonce: my_nonce };
    framed.send(SnMessage::Hello(hello)).await.map_err(|e| e.to_string())?;
    let (their_nonce, proof) = match framed.next().await {
        Some(Ok(SnMessage::Challenge { nonce, proof })) => (nonce, proof),
        Some(Ok(SnMessage::SubscribeErr { reason, .. })) => return Err(format!("parent {parent} refused: {reason}")),
        Some(Ok(other)) => return Err(format!("parent {parent} answered {} to hello", other.kind())),
        Some(Err(e)) => return Err(format!("bad data from parent {parent}: {e}")),
        None => return Err(format!("parent {parent} closed the connection during the handshake")),
    };
    let mut answer = [0u8; 64];
    if let Some(key) = node.identity() {
        let Some(theirs) = node.book().key(parent) else {
            node.metrics().sn_link_refused.with_label_values(&["no_key"]).inc();
            return Err(format!(
                "no identity key known for parent {parent} (the MC's membership or the topology's identity_key)"
            ));
        };
        let signed = proto::link_proof(LinkSide::Parent, parent, &me, &my_nonce, &their_nonce);
        if theirs.verify(&signed, &proof).is_err() {
            node.metrics().sn_link_refused.with_label_values(&["bad_proof"]).inc();
            return Err(format!("the node at {parent}'s address failed to prove it is {parent}"));
        }
        answer = key.sign(&proto::link_proof(LinkSide::Child, &me, parent, &their_nonce, &my_nonce));
    }
    send_all(framed, [SnMessage::Auth { proof: answer }, SnMessage::Subscribe(sub)]).await.map_err(|e| e.to_string())
}

/// A fresh nonce for a handshake.
fn nonce() -> Result<[u8; 32], String> {
    let mut n = [0u8; 32];
    getrandom::fill(&mut n).map_err(|e| format!("no randomness for a nonce: {e}"))?;
    Ok(n)
}

async fn send_all<const N: usize>(
    framed: &mut Framed<TcpStream, SnCodec>,
    msgs: [SnMessage; N],
) -> Result<(), proto::CodecError> {
    for m in msgs {
        framed.feed(m).await?;
    }
    SinkExt::<SnMessage>::flush(framed).await
}

/// Accepts child SNs until the node stops.
pub(crate) async fn serve_children(node: Node, listener: TcpListener) {
    // Children are a handful of SNs; the cap only keeps strangers from piling up sockets.
    let slots =
        ConnLimiter::new("sn", 4096, node.config().limits.sn_max_per_ip).with_metrics(node.metrics().conns.clone());
    let cancel = node.cancel_token();
    while let Some((stream, peer, permit)) = livesky_net::limits::accept_capped(&listener, &slots, &cancel).await {
        let Ok(permit) = permit else { continue };
        let _ = stream.set_nodelay(true);
        livesky_net::limits::keepalive(&stream);
        let node2 = node.clone();
        node.spawn(async move {
            let _permit = permit;
            serve_child(node2, stream, peer).await;
        });
    }
}

async fn serve_child(node: Node, stream: TcpStream, peer: SocketAddr) {
    let mut framed = Framed::new(stream, SnCodec::default());
    let (hello, sub) = match timeout(HANDSHAKE_TIMEOUT, child_handshake(&node, &mut framed)).await {
        Ok(Ok(x)) => x,
        Ok(Err(Refusal::Silent(why))) => {
            debug!(%peer, %why, "child handshake failed");
            return;
        }
        Ok(Err(Refusal::Tell { channel, label, reason })) => {
            node.metrics().sn_link_refused.with_label_values(&[label]).inc();
            warn!(%peer, %channel, %reason, "refusing an SN link");
            let _ = framed.send(SnMessage::SubscribeErr { channel, code: RefuseCode::Forbidden, reason }).await;
            return;
        }
        Err(_) => {
            node.metrics().sn_link_refused.with_label_values(&["timeout"]).inc();
            debug!(%peer, "child handshake timed out");
            return;
        }
    };
    let channel = sub.channel.clone();
    if !node.knows(&channel) {
        node.count_unknown_channel("sn");
        let reason = format!("channel {channel} is not in this CDN's topology");
        let _ = framed.send(SnMessage::SubscribeErr { channel, code: RefuseCode::NotFound, reason }).await;
        return;
    }
    let outcome = child_session(&node, &mut framed, &hello, sub).await;
    let label = match &outcome {
        Ok(()) => "ended",
        Err((code, _)) => refuse_label(*code),
    };
    node.metrics().child_sessions.with_label_values(&[channel.as_str(), label]).inc();
    if let Err((code, reason)) = outcome {
        info!(%peer, child = %hello.node, %channel, ?code, %reason, "refusing child subscription");
        let _ = framed.send(SnMessage::SubscribeErr { channel, code, reason }).await;
    }
}

/// Why a child's handshake ended: quietly (garbage, a closed socket) or with a refusal it is
/// told about.
enum Refusal {
    Silent(String),
    Tell { channel: proto::ChannelId, label: &'static str, reason: String },
}

/// The parent's side of the handshake: Hello, Challenge, then the child's Auth and Subscribe,
/// checked against the child's key and the topology.
async fn child_handshake(node: &Node, framed: &mut Framed<TcpStream, SnCodec>) -> Result<(Hello, Subscribe), Refusal> {
    let silent = |s: String| Refusal::Silent(s);
    let hello = match framed.next().await {
        Some(Ok(SnMessage::Hello(h))) if h.version == PROTOCOL_VERSION => h,
        Some(Ok(SnMessage::Hello(h))) => return Err(silent(format!("child speaks protocol {}", h.version))),
        Some(Ok(other)) => return Err(silent(format!("child did not start with hello but {}", other.kind()))),
        Some(Err(e)) => return Err(silent(e.to_string())),
        None => return Err(silent("closed during handshake".into())),
    };
    let me = node.id().clone();
    let my_nonce = nonce().map_err(silent)?;
    let proof = node
        .identity()
        .map_or([0u8; 64], |k| k.sign(&proto::link_proof(LinkSide::Parent, &me, &hello.node, &hello.nonce, &my_nonce)));
    framed.send(SnMessage::Challenge { nonce: my_nonce, proof }).await.map_err(|e| silent(e.to_string()))?;
    let mut next = async || match framed.next().await {
        Some(Ok(m)) => Ok(m),
        Some(Err(e)) => Err(silent(e.to_string())),
        None => Err(silent("closed during handshake".into())),
    };
    let auth = match next().await? {
        SnMessage::Auth { proof } => proof,
        other => return Err(silent(format!("expected auth, got {}", other.kind()))),
    };
    let sub = match next().await? {
        SnMessage::Subscribe(s) => s,
        other => return Err(silent(format!("expected subscribe, got {}", other.kind()))),
    };
    let child = &hello.node;
    let refuse = |label, reason| Err(Refusal::Tell { channel: sub.channel.clone(), label, reason });
    if node.identity().is_some() {
        let Some(key) = node.book().key(child) else {
            return refuse("no_key", format!("{me} knows no identity key for node {child}"));
        };
        let signed = proto::link_proof(LinkSide::Child, child, &me, &my_nonce, &hello.nonce);
        if key.verify(&signed, &auth).is_err() {
            return refuse("bad_proof", format!("the connecting node failed to prove it is {child}"));
        }
    }
    if !node.book().may_subscribe(child, &me) {
        return refuse("not_in_topology", format!("the topology does not name {me} as a parent or peer of {child}"));
    }
    Ok((hello, sub))
}

fn refuse_label(code: RefuseCode) -> &'static str {
    match code {
        RefuseCode::NotFound => "not_found",
        RefuseCode::Loop => "loop",
        RefuseCode::Overloaded => "overloaded",
        RefuseCode::Forbidden => "forbidden",
        RefuseCode::Unavailable => "unavailable",
    }
}

/// Runs an accepted child's subscription; `Err` is a refusal to send before closing.
async fn child_session(
    node: &Node,
    framed: &mut Framed<TcpStream, SnCodec>,
    hello: &Hello,
    sub: Subscribe,
) -> Result<(), (RefuseCode, String)> {
    let me = node.config();
    if sub.path.contains(&me.id) || hello.node == me.id {
        return Err((RefuseCode::Loop, format!("{} is already on this subscription's path", me.id)));
    }
    let same_tier = hello.tier == me.tier;
    if hello.tier < me.tier {
        return Err((RefuseCode::Forbidden, format!("tier {} may not subscribe to tier {}", hello.tier, me.tier)));
    }
    let mut path = sub.path.clone();
    path.push(hello.node.clone());
    let origin = Origin::Child { same_tier, path };
    let lease = match node.open(&sub.channel, sub.start, &origin, HANDSHAKE_TIMEOUT).await {
        Ok(l) => l,
        Err(OpenError::NotFound) => return Err((RefuseCode::NotFound, format!("channel {} is unknown", sub.channel))),
        Err(e @ (OpenError::Timeout | OpenError::ShuttingDown)) => {
            return Err((RefuseCode::Unavailable, e.to_string()));
        }
    };
    let hub = lease.hub().clone();
    let ok = SnMessage::SubscribeOk {
        channel: sub.channel.clone(),
        source: hub.status().source,
        verify_key: hub.verify_key(),
    };
    if framed.send(ok).await.is_err() {
        return Ok(());
    }
    info!(node = %me.id, child = %hello.node, channel = %sub.channel, start = ?sub.start, "child subscribed");
    let label = [sub.channel.as_str()];
    let m = node.metrics();
    m.children.with_label_values(&label).inc();
    let mut cursor = hub.cursor(sub.start);
    let mut batch = Vec::with_capacity(BATCH);
    let mut ka = interval(KEEPALIVE);
    loop {
        tokio::select! {
            _ = node.cancelled() => break,
            ev = cursor.next(&mut batch, BATCH) => match ev {
                Ok(CursorEvent::Chunks) => {
                    let bytes: usize = batch.iter().map(|c| c.payload.len()).sum();
                    let send = async {
                        for c in batch.drain(..) {
                            framed.feed(SnMessage::Chunk(c)).await?;
                        }
                        SinkExt::<SnMessage>::flush(framed).await
                    };
                    match timeout(CHILD_WRITE_TIMEOUT, send).await {
                        Ok(Ok(())) => m.child_bytes.with_label_values(&label).inc_by(bytes as u64),
                        Ok(Err(e)) => {
                            debug!(child = %hello.node, error = %e, "child link closed");
                            break;
                        }
                        Err(_) => {
                            warn!(child = %hello.node, "child stopped reading for 10 s; dropping it");
                            break;
                        }
                    }
                }
                Ok(CursorEvent::Source(source)) => {
                    if framed.send(SnMessage::SourceState { channel: sub.channel.clone(), source }).await.is_err() {
                        break;
                    }
                }
                Err(CursorEnd::Lagged { oldest }) => {
                    warn!(child = %hello.node, oldest, "child fell behind the ring; continuing from the oldest chunk held");
                    cursor.seek(oldest);
                }
                Err(CursorEnd::Closed | CursorEnd::NotFound) => break,
            },
            msg = framed.next() => match msg {
                Some(Ok(SnMessage::Keepalive)) => {}
                Some(Ok(other)) => {
                    warn!(child = %hello.node, got = other.kind(), "unexpected message from child; closing");
                    break;
                }
                Some(Err(e)) => {
                    warn!(child = %hello.node, error = %e, "bad data from child; closing");
                    break;
                }
                None => break,
            },
            _ = ka.tick() => {
                if framed.send(SnMessage::Keepalive).await.is_err() {
                    break;
                }
            }
        }
    }
    m.children.with_label_values(&label).dec();
    drop(lease);
    Ok(())
}
