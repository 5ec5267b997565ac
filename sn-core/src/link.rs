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

mod children;
pub(crate) use children::serve_children;

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
