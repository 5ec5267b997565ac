//! The MC's side of the SN control links: TLS accept under the connection caps, the challenge
//! and signed registration, then per link the heartbeats, acks, resyncs, reports and lookups in,
//! and membership, drains and config pushes out. Registration and liveness are decided by the
//! [`crate::registry::Registry`] (through [`Shared::carry_out`]); config versions by the
//! [`crate::store::ConfigStore`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures_util::StreamExt;
use proto::mc::{self, Alive, Challenge, McMessage, Members, Refused, Welcome};
use proto::{NodeId, WireMessage};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::codec::Framed;
use tracing::{debug, info, warn};

use crate::registry::Input as RegistryIn;
use crate::server::{Notice, REGISTER_TIMEOUT, Shared, upstream_of};

pub(crate) async fn accept(shared: Arc<Shared>, listener: TcpListener) {
    let tls = match livesky_net::mc_tls::acceptor(&shared.key) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot set up TLS for SN control links; none will be served");
            return;
        }
    };
    let limits = &shared.settings.limits;
    let slots = livesky_net::limits::ConnLimiter::new("control", limits.http_max_connections, limits.http_max_per_ip)
        .with_metrics(shared.metrics.conns.clone());
    while let Some((stream, from, permit)) = livesky_net::limits::accept_capped(&listener, &slots, &shared.cancel).await
    {
        let Ok(permit) = permit else { continue };
        let _ = stream.set_nodelay(true);
        livesky_net::limits::keepalive(&stream);
        let (shared2, tls) = (shared.clone(), tls.clone());
        shared.tasks.spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(REGISTER_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(stream)) => serve_sn(shared2, Box::new(stream), from).await,
                Ok(Err(e)) => shared2.refusal_log(from, "tls", format!("TLS handshake failed: {e}")),
                Err(_) => shared2.refusal_log(from, "tls", "no TLS handshake in time".into()),
            }
        });
    }
}

/// Why `alive` is refused, if it is.
fn check(shared: &Shared, alive: &Alive, challenge: &str) -> Result<(), (&'static str, String)> {
    let id = &alive.member.id;
    let Some(public) = shared.settings.sn_keys.get(id) else {
        return Err(("unknown_node", format!("no key is configured for SN `{id}` (mc.sn_keys)")));
    };
    if proto::verify_node_signature(public, &mc::alive_proof(id, challenge), &alive.signature).is_err() {
        return Err(("bad_signature", format!("SN `{id}` did not prove it holds its key")));
    }
    if shared.state().store.topology().node(id).is_none() {
        return Err(("unknown_node", format!("SN `{id}` is not in the topology")));
    }
    Ok(())
}

type Link = livesky_net::mclink::McLink;

async fn send(link: &mut Link, msg: McMessage) -> bool {
    match livesky_net::mclink::send(link, msg).await {
        Ok(()) => true,
        Err(e) => {
            debug!(error = %e, "closing an SN control link");
            false
        }
    }
}

async fn serve_sn(shared: Arc<Shared>, stream: Box<dyn livesky_net::mclink::LinkIo>, from: SocketAddr) {
    // Small frames until the SN has proved who it is.
    let mut link = Framed::new(stream, mc::McCodec::with_decode_limit(mc::MC_UNREGISTERED_FRAME));
    let Some(challenge) = mc::nonce() else {
        warn!(%from, "no randomness for a challenge; closing the link");
        return;
    };
    if !send(&mut link, McMessage::Challenge(Challenge { nonce: challenge.clone() })).await {
        return;
    }
    let alive = match tokio::time::timeout(REGISTER_TIMEOUT, link.next()).await {
        Ok(Some(Ok(McMessage::Alive(a)))) => a,
        Ok(Some(Ok(other))) => {
            return refuse(&shared, &mut link, from, "protocol", format!("expected alive, got {}", other.kind())).await;
        }
        Ok(Some(Err(e))) => return refuse(&shared, &mut link, from, "protocol", e.to_string()).await,
        Ok(None) | Err(_) => return,
    };
    if let Err((label, reason)) = check(&shared, &alive, &challenge) {
        return refuse(&shared, &mut link, from, label, reason).await;
    }
    let id = alive.member.id.clone();
    let session = shared.sessions.fetch_add(1, Ordering::Relaxed) + 1;
    // Subscribed before registering: no change after our snapshot is missed.
    let mut notices = shared.notices.subscribe();
    let (members, first_doc) = {
        let mut st = shared.state();
        // What the other SNs learn of it comes from the MC's own books, not from what it said.
        let mut member = alive.member.clone();
        member.key = shared.settings.sn_keys.get(&id).cloned();
        member.upstream = upstream_of(&st.store.topology(), &id);
        st.registry.handle(Instant::now(), RegistryIn::Alive { member, session });
        shared.carry_out(&mut st);
        (st.registry.full(), st.store.doc_for(&id, alive.have_version))
    };
    shared.metrics.registrations.inc();
    link.codec_mut().set_decode_limit(mc::MC_MAX_FRAME);
    info!(node = %id, %from, have = alive.have_version, "SN registered");
    let welcome = Welcome {
        heartbeat_ms: shared.settings.heartbeat_ms,
        signature: shared.key.sign_hex(&mc::welcome_proof(&id, &alive.nonce)),
    };
    let mut sent = alive.have_version;
    let drained = shared.state().drained.contains(&id);
    let mut ok =
        send(&mut link, McMessage::Welcome(welcome)).await && send(&mut link, McMessage::Members(members)).await;
    if drained {
        ok = ok && send(&mut link, McMessage::Drain(mc::Drain { on: true })).await;
    }
    if let Some(doc) = first_doc {
        sent = doc.version;
        ok = ok && push(&shared, &mut link, doc).await;
    }
    let silence = shared.settings.heartbeat() * crate::registry::MISSED_HEARTBEATS;
    while ok {
        ok = tokio::select! {
            _ = shared.cancel.cancelled() => false,
            msg = tokio::time::timeout(silence, link.next()) => match msg {
                Ok(Some(Ok(m))) => on_message(&shared, &mut link, &id, session, &mut sent, m).await,
                // A link the SN dropped (it stopped, or the network cut it) is not a bad frame:
                // "SN left" follows either way.
                Ok(Some(Err(proto::codec::CodecError::Io(e)))) if dropped(&e) => {
                    info!(node = %id, error = %e, "SN control link closed by the SN's side");
                    false
                }
                Ok(Some(Err(e))) => {
                    warn!(node = %id, error = %e, "bad frame on an SN control link; closing it");
                    false
                }
                Ok(None) => false,
                Err(_) => {
                    warn!(node = %id, "SN control link silent for three heartbeats; closing it");
                    false
                }
            },
            n = notices.recv() => match n {
                Ok(Notice::Members(m)) => send(&mut link, McMessage::Members(m)).await,
                Ok(Notice::Config) => resend(&shared, &mut link, &id, &mut sent).await,
                Ok(Notice::Dead(dead)) => dead != id,
                Ok(Notice::Drain(edge, on)) if edge == id => send(&mut link, McMessage::Drain(mc::Drain { on })).await,
                Ok(Notice::Drain(..)) => true,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let full = shared.state().registry.full();
                    send(&mut link, McMessage::Members(full)).await && resend(&shared, &mut link, &id, &mut sent).await
                }
                Err(broadcast::error::RecvError::Closed) => false,
            },
        };
    }
    let mut st = shared.state();
    let before = st.registry.version();
    st.registry.handle(Instant::now(), RegistryIn::Disconnected { id: id.clone(), session });
    if st.registry.version() != before {
        info!(node = %id, "SN left");
    }
    shared.carry_out(&mut st);
}

async fn refuse(shared: &Shared, link: &mut Link, from: SocketAddr, label: &'static str, reason: String) {
    shared.refusal_log(from, label, reason.clone());
    let _ = send(link, McMessage::Refused(Refused { reason })).await;
}

async fn push(shared: &Shared, link: &mut Link, doc: mc::ConfigXml) -> bool {
    let kind = if doc.base.is_some() { "update" } else { "snapshot" };
    shared.metrics.pushes.with_label_values(&[kind]).inc();
    let bytes = doc.to_xml().len() as u64;
    shared.metrics.push_bytes.with_label_values(&[kind]).inc_by(bytes);
    send(link, McMessage::Config(Box::new(doc))).await
}

/// Sends what the SN lacks since the version last sent to it (in order on one link, so an
/// update on top of an unacknowledged one is fine; if it fails there, the SN asks to resync).
async fn resend(shared: &Shared, link: &mut Link, id: &NodeId, sent: &mut u64) -> bool {
    let view = shared.state().store.view(*sent);
    match view.doc_for(id, *sent) {
        Some(doc) => {
            *sent = doc.version;
            push(shared, link, doc).await
        }
        None => true,
    }
}

async fn on_message(shared: &Shared, link: &mut Link, id: &NodeId, session: u64, sent: &mut u64, m: McMessage) -> bool {
    match m {
        McMessage::Heartbeat(mut h) => {
            // The running totals go to the NOC only: the registry keeps the rest, and would
            // otherwise copy the rows on every heartbeat (they change every time).
            let live = std::mem::take(&mut h.live);
            let now = Instant::now();
            let mut st = shared.state();
            st.registry.handle(now, RegistryIn::Heartbeat { id: id.clone(), session, load: h });
            let current = shared.carry_out(&mut st).is_empty();
            if current && !live.is_empty() {
                st.noc.sample(now, id, live);
            }
            current
        }
        McMessage::Ack(a) => {
            shared.state().store.ack(id, a.version);
            shared.metrics.sn_config_version.with_label_values(&[id.as_str()]).set(a.version as i64);
            debug!(node = %id, version = a.version, "config acknowledged");
            true
        }
        McMessage::Resync(r) => {
            warn!(node = %id, have = r.have_version, reason = %r.reason, "SN asks for a snapshot");
            let doc = shared.state().store.snapshot_for(id);
            match doc {
                Some(doc) => {
                    *sent = doc.version;
                    push(shared, link, doc).await
                }
                None => false,
            }
        }
        McMessage::Report(r) => {
            if r.node != *id {
                warn!(node = %id, claimed = %r.node, "report for another SN; closing the link");
                return false;
            }
            let (store, node) = (shared.reports.clone(), id.clone());
            let report_id = r.id.clone();
            let delays: Vec<u32> = r.rows.iter().flat_map(|row| row.startup_ms.iter().copied()).collect();
            shared.state().noc.startups(Instant::now(), delays);
            let stored = tokio::task::spawn_blocking(move || store.store(&node, &r)).await;
            match stored {
                Ok(Ok(added)) => {
                    shared.metrics.report_rows.inc_by(added as u64);
                    send(link, McMessage::ReportAck(mc::ReportAck { id: report_id })).await
                }
                // Not acknowledged: the SN keeps it and sends it again on its next link.
                Ok(Err(e)) => {
                    warn!(node = %id, error = %e, "cannot store a report; closing the link so it is resent");
                    false
                }
                Err(e) => {
                    warn!(node = %id, error = %e, "report store task failed");
                    false
                }
            }
        }
        McMessage::Lookup(l) => {
            let reply = {
                let st = shared.state();
                let members = st.registry.get(&l.id).cloned().into_iter().collect();
                Members { version: st.registry.version(), full: false, members, gone: Vec::new() }
            };
            send(link, McMessage::Members(reply)).await
        }
        other => {
            warn!(node = %id, kind = other.kind(), "unexpected message from an SN; closing its link");
            false
        }
    }
}

/// The peer went away, as opposed to sending something wrong (a TLS record that does not
/// decode is an `io::Error` too, of another kind).
fn dropped(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof)
}
