//! An SN's link to the management center: register (proving its key, checking the MC's), send
//! heartbeats, keep the membership (which feeds the [`AddressBook`] the relay dials from), apply
//! config documents all or nothing and acknowledge them. When the MC is away the SN keeps running
//! on what it has and reconnects with backoff; on reconnect it names the version it holds, so the
//! MC sends an update, or a snapshot if it cannot.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use proto::{NodeId, NodeKey, WireMessage};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::node::AddressBook;
use crate::spool::Spool;
use proto::mc::{self, Ack, Alive, DocError, Heartbeat, McMessage, Member, Members, ReportXml, Resync, SnConfig};

#[derive(Clone)]
pub struct McClientConfig {
    pub mc: SocketAddr,
    pub key: Arc<NodeKey>,
    /// The MC's public key (hex); without it the SN cannot tell the real MC from an impostor.
    pub mc_public_key: Option<String>,
    pub member: Member,
    /// What heartbeats say: clients served now, overflowed channels.
    pub load: Arc<dyn Fn() -> Heartbeat + Send + Sync>,
    /// Where reports wait for the MC (none: this SN sends no reports).
    pub spool: Option<Spool>,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("the MC refused this SN: {0}")]
    Refused(String),
    #[error("the MC did not prove its identity (wrong mc public key?)")]
    BadMc,
    #[error("control link: {0}")]
    Link(String),
    #[error("the MC went silent")]
    Silent,
}

/// What the SN knows from the MC; cheap to clone.
#[derive(Clone)]
pub struct McClient {
    pub config: watch::Receiver<Option<Arc<SnConfig>>>,
    pub members: watch::Receiver<Arc<BTreeMap<NodeId, Member>>>,
    /// Whether the SN is registered right now.
    pub registered: watch::Receiver<bool>,
    /// Whether an operator has drained this SN (edges move their clients away).
    pub draining: watch::Receiver<bool>,
    reports: Option<(Spool, Arc<Notify>)>,
    lookups: mpsc::UnboundedSender<NodeId>,
}

impl McClient {
    /// Asks the MC about SN `id` unless the membership already told; waits up to `within`.
    pub async fn lookup(&self, id: &NodeId, within: Duration) -> Option<Member> {
        let mut members = self.members.clone();
        if let Some(m) = members.borrow_and_update().get(id) {
            return Some(m.clone());
        }
        let _ = self.lookups.send(id.clone());
        let found = async {
            loop {
                if members.changed().await.is_err() {
                    return None;
                }
                if let Some(m) = members.borrow_and_update().get(id) {
                    return Some(m.clone());
                }
            }
        };
        tokio::time::timeout(within, found).await.ok().flatten()
    }

    /// Queues a report: on disk first, then sent when the MC is reachable.
    pub fn submit(&self, r: &ReportXml) -> std::io::Result<()> {
        let Some((spool, notify)) = &self.reports else {
            return Err(std::io::Error::other("this SN has no report spool"));
        };
        spool.put(r)?;
        notify.notify_one();
        Ok(())
    }
}

struct Sinks {
    config: watch::Sender<Option<Arc<SnConfig>>>,
    members: watch::Sender<Arc<BTreeMap<NodeId, Member>>>,
    registered: watch::Sender<bool>,
    draining: watch::Sender<bool>,
    book: Arc<AddressBook>,
    reports: Option<(Spool, Arc<Notify>)>,
    /// Ids to ask the MC about (answered by a `members` message).
    lookups: tokio::sync::Mutex<mpsc::UnboundedReceiver<NodeId>>,
}

/// Starts the link; it runs until `cancel`.
pub fn spawn(cfg: McClientConfig, book: Arc<AddressBook>, cancel: CancellationToken) -> McClient {
    let (config, config_rx) = watch::channel(None);
    let (members, members_rx) = watch::channel(Arc::new(BTreeMap::new()));
    let (registered, registered_rx) = watch::channel(false);
    let (draining, draining_rx) = watch::channel(false);
    let reports = cfg.spool.clone().map(|s| (s, Arc::new(Notify::new())));
    let (lookups, lookups_rx) = mpsc::unbounded_channel();
    let lookups_rx = tokio::sync::Mutex::new(lookups_rx);
    let sinks = Sinks { config, members, registered, draining, book, reports: reports.clone(), lookups: lookups_rx };
    tokio::spawn(run(cfg, sinks, cancel));
    McClient {
        config: config_rx,
        members: members_rx,
        registered: registered_rx,
        draining: draining_rx,
        reports,
        lookups,
    }
}

async fn run(cfg: McClientConfig, sinks: Sinks, cancel: CancellationToken) {
    let mut backoff = proto::backoff::Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = session(&cfg, &sinks, &cancel) => r,
        };
        // A link that got as far as registering starts the backoff over.
        if sinks.registered.send_replace(false) {
            backoff.reset();
        }
        match result {
            Ok(()) => return,
            Err(SessionError::Refused(reason)) => {
                error!(node = %cfg.member.id, mc = %cfg.mc, %reason, "the management center refused this SN");
                backoff.hold_off();
            }
            Err(e) => {
                warn!(node = %cfg.member.id, mc = %cfg.mc, error = %e, "management center link down; running on the last config");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

type Link = livesky_net::mclink::McLink;

async fn next(link: &mut Link, within: Duration) -> Result<McMessage, SessionError> {
    match tokio::time::timeout(within, link.next()).await {
        Ok(Some(Ok(m))) => Ok(m),
        Ok(Some(Err(e))) => Err(SessionError::Link(e.to_string())),
        Ok(None) => Err(SessionError::Link("closed by the MC".into())),
        Err(_) => Err(SessionError::Silent),
    }
}

async fn send(link: &mut Link, m: McMessage) -> Result<(), SessionError> {
    livesky_net::mclink::send(link, m).await.map_err(|e| match e {
        livesky_net::mclink::SendError::Timeout => SessionError::Silent,
        other => SessionError::Link(other.to_string()),
    })
}

async fn session(cfg: &McClientConfig, sinks: &Sinks, cancel: &CancellationToken) -> Result<(), SessionError> {
    let stream = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(cfg.mc))
        .await
        .map_err(|_| SessionError::Connect(std::io::ErrorKind::TimedOut.into()))?
        .map_err(SessionError::Connect)?;
    let _ = stream.set_nodelay(true);
    livesky_net::limits::keepalive(&stream);
    let pinned = match &cfg.mc_public_key {
        Some(k) => {
            Some(proto::NodePublicKey::from_hex(k).map_err(|e| SessionError::Link(format!("mc public key: {e}")))?)
        }
        None => None,
    };
    let mut link =
        match tokio::time::timeout(Duration::from_secs(5), livesky_net::mc_tls::connect(stream, pinned)).await {
            Ok(Ok(link)) => link,
            Ok(Err(livesky_net::mc_tls::ConnectError::NotTheMc(_))) => return Err(SessionError::BadMc),
            Ok(Err(e)) => return Err(SessionError::Link(e.to_string())),
            Err(_) => return Err(SessionError::Link("TLS handshake took longer than 5 s".into())),
        };
    let id = cfg.member.id.clone();
    let challenge = match next(&mut link, Duration::from_secs(5)).await? {
        McMessage::Challenge(c) => c.nonce,
        other => return Err(SessionError::Link(format!("expected a challenge, got {}", other.kind()))),
    };
    let my_nonce = mc::nonce().ok_or_else(|| SessionError::Link("no randomness for a challenge".into()))?;
    let have_version = sinks.config.borrow().as_ref().map_or(0, |c| c.version);
    let alive = Alive {
        member: cfg.member.clone(),
        have_version,
        nonce: my_nonce.clone(),
        signature: cfg.key.sign_hex(&mc::alive_proof(&id, &challenge)),
    };
    send(&mut link, McMessage::Alive(alive)).await?;
    let welcome = match next(&mut link, Duration::from_secs(5)).await? {
        McMessage::Welcome(w) => w,
        McMessage::Refused(r) => return Err(SessionError::Refused(r.reason)),
        other => return Err(SessionError::Link(format!("expected welcome, got {}", other.kind()))),
    };
    match &cfg.mc_public_key {
        Some(k) => proto::verify_node_signature(k, &mc::welcome_proof(&id, &my_nonce), &welcome.signature)
            .map_err(|_| SessionError::BadMc)?,
        None => warn!(node = %id, "no MC public key configured: not checking the MC's identity"),
    }
    sinks.registered.send_replace(true);
    info!(node = %id, mc = %cfg.mc, have = have_version, "registered with the management center");
    let beat = Duration::from_millis(welcome.heartbeat_ms.max(10));
    let mut tick = tokio::time::interval(beat);
    // Reports sent on this link and not yet acknowledged.
    let mut sent: HashSet<String> = HashSet::new();
    let idle = Arc::new(Notify::new());
    let wake = sinks.reports.as_ref().map_or(idle, |(_, n)| n.clone());
    send_reports(&mut link, sinks, &mut sent).await?;
    let mut lookups = sinks.lookups.lock().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            Some(id) = lookups.recv() => send(&mut link, McMessage::Lookup(mc::Lookup { id })).await?,
            _ = wake.notified() => send_reports(&mut link, sinks, &mut sent).await?,
            _ = tick.tick() => send(&mut link, McMessage::Heartbeat((cfg.load)())).await?,
            m = next(&mut link, beat * 3) => match m? {
                McMessage::Members(m) => on_members(sinks, m),
                McMessage::Config(doc) => {
                    let reply = on_config(sinks, &id, *doc);
                    if let Some(reply) = reply {
                        send(&mut link, reply).await?;
                    }
                }
                McMessage::Refused(r) => return Err(SessionError::Refused(r.reason)),
                McMessage::Drain(d) => {
                    sinks.draining.send_replace(d.on);
                }
                McMessage::ReportAck(a) => {
                    if let Some((spool, _)) = &sinks.reports {
                        spool.remove(&a.id);
                    }
                    sent.remove(&a.id);
                }
                other => debug!(node = %id, kind = other.kind(), "ignoring an unexpected MC message"),
            },
        }
    }
}

/// Sends every spooled report not yet sent on this link, oldest first.
async fn send_reports(link: &mut Link, sinks: &Sinks, sent: &mut HashSet<String>) -> Result<(), SessionError> {
    let Some((spool, _)) = &sinks.reports else { return Ok(()) };
    for id in spool.pending() {
        if sent.contains(&id) {
            continue;
        }
        match spool.load(&id) {
            Ok(r) => {
                send(link, McMessage::Report(Box::new(r))).await?;
                sent.insert(id);
            }
            Err(e) => {
                error!(spool = %spool.dir().display(), %id, error = %e, "unreadable report moved aside");
                spool.quarantine(&id);
            }
        }
    }
    Ok(())
}

fn on_members(sinks: &Sinks, m: Members) {
    sinks.members.send_modify(|map| {
        let map = Arc::make_mut(map);
        if m.full {
            map.clear();
        }
        for g in &m.gone {
            map.remove(&g.id);
            sinks.book.remove(&g.id);
        }
        for member in m.members {
            if let Some(a) = member.sn {
                sinks.book.set(member.id.clone(), a);
            }
            // The keys and topology links the MC vouches for: SN links are checked against them.
            if let Some(key) = member.key.as_deref().and_then(|k| proto::NodePublicKey::from_hex(k).ok()) {
                sinks.book.set_key(member.id.clone(), key);
            }
            if !member.upstream.is_empty() {
                sinks.book.set_upstream(member.id.clone(), member.upstream.0.clone());
            }
            map.insert(member.id.clone(), member);
        }
    });
}

/// Applies a config document; the answer for the MC.
fn on_config(sinks: &Sinks, id: &NodeId, doc: mc::ConfigXml) -> Option<McMessage> {
    let version = doc.version;
    let current = sinks.config.borrow().clone();
    match SnConfig::apply(current.as_deref(), id, doc) {
        Ok(next) => {
            info!(node = %id, version, "config applied");
            sinks.config.send_replace(Some(Arc::new(next)));
            Some(McMessage::Ack(Ack { version }))
        }
        Err(e @ DocError::BaseMismatch { .. }) => {
            warn!(node = %id, error = %e, "asking the MC for a snapshot");
            let have_version = current.map_or(0, |c| c.version);
            Some(McMessage::Resync(Resync { have_version, reason: e.to_string() }))
        }
        Err(e) => {
            error!(node = %id, version, error = %e, "config document refused; keeping the current config");
            None
        }
    }
}
