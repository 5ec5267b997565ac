//! The parent side of SN↔SN links: one task per subscribed child, which proves itself and names
//! a channel, then reads the ring through a cursor and streams it (with keepalives) until the
//! child leaves or falls too far behind.

use super::*;

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
