//! `livesky peer play livesky://HOST[:PORT]/CHANNEL`: the viewer's command. It joins the edge as a
//! LiveSky client, serves the reassembled stream at `http://127.0.0.1:PORT/live.ts` (and/or writes
//! it to stdout), launches a player if asked, follows redirects to sibling edges, shows a one-line
//! status, and leaves cleanly on Ctrl-C or when the player exits.
//!
//! HOST is resolved by the system resolver today; the GSLB issue points it at the CDN's DNS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use livesky_peer::core::{PeerConfig, PeerStats};
use livesky_peer::driver::{self, Ended, Net, Transport};
use livesky_peer::output::{LocalOutput, status_line};
use proto::{ChannelId, Chunk};
use tokio::io::AsyncWriteExt;

/// The buffer target of `--low-latency`.
pub const LOW_LATENCY_MS: u32 = 3_000;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Default port of an edge's LiveSky client service.
pub const DEFAULT_CLIENT_PORT: u16 = 7600;
const MAX_REDIRECTS: u8 = 5;

#[derive(clap::Subcommand)]
pub enum PeerCmd {
    /// Play a channel as a LiveSky peer: `livesky peer play livesky://127.0.0.1:7600/demo --player ffplay`.
    Play(PlayArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum PlayerApp {
    Ffplay,
    Mpv,
    Vlc,
}

#[derive(clap::Args)]
pub struct PlayArgs {
    /// livesky://HOST[:PORT]/CHANNEL (PORT: the edge's client port, default 7600).
    pub url: String,
    /// Where the local output listens (`/live.ts`, `/metrics`, `/status`).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub http: SocketAddr,
    /// Also write the stream to stdout (`| ffplay -`).
    #[arg(long)]
    pub stdout: bool,
    /// Launch this player on the local output once playback starts.
    #[arg(long, value_enum)]
    pub player: Option<PlayerApp>,
    /// A ~3 s buffer instead of 15 s (glass-to-glass ≤ 5 s): less delay, less protection against churn.
    #[arg(long)]
    pub low_latency: bool,
    /// Upload offered to other peers, kbit/s (the edge caps it at 1.5 × the stream rate).
    #[arg(long, default_value_t = 1000)]
    pub upload_kbps: u32,
    /// The local address peer links use (TCP: where other peers connect; WebRTC: where ICE
    /// binds; 0.0.0.0 means the address this host reaches the edge from).
    #[arg(long, default_value = "0.0.0.0:0")]
    pub listen: SocketAddr,
    /// How peers reach each other: webrtc (crosses NATs through the edge's STUN and signalling)
    /// or tcp (hosts that accept connections only).
    #[arg(long, default_value = "webrtc")]
    pub transport: Transport,
    /// Viewer token for channels that require one (from the content provider, who gets it from
    /// the management center's `POST /api/tokens`). Also read from LIVESKY_TOKEN.
    #[arg(long, env = "LIVESKY_TOKEN", default_value = "", hide_env_values = true)]
    pub token: String,
    /// Find the edge through the GSLB (DNS, then its HTTP fallback) instead of taking HOST as
    /// the edge.
    #[command(flatten)]
    pub lookup: crate::gslb_cmd::LookupArgs,
}

/// Splits `livesky://HOST[:PORT]/CHANNEL`.
pub fn parse_url(url: &str) -> anyhow::Result<(String, u16, ChannelId)> {
    let rest = url.strip_prefix("livesky://").with_context(|| format!("{url:?} is not a livesky:// URL"))?;
    let (authority, channel) =
        rest.split_once('/').with_context(|| format!("{url:?} names no channel (livesky://HOST/CHANNEL)"))?;
    let channel = ChannelId::new(channel.trim_end_matches('/')).with_context(|| format!("channel in {url:?}"))?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.contains(']') => {
            (h.trim_matches(['[', ']']), p.parse().with_context(|| format!("port in {url:?}"))?)
        }
        _ => (authority.trim_matches(['[', ']']), DEFAULT_CLIENT_PORT),
    };
    if host.is_empty() {
        bail!("{url:?} names no host");
    }
    Ok((host.to_string(), port, channel))
}

async fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))
}

/// A running player: local output address, live stats, and its task.
pub struct Player {
    pub http: SocketAddr,
    pub stats: watch::Receiver<PeerStats>,
    pub output: Arc<LocalOutput>,
    pub task: tokio::task::JoinHandle<anyhow::Result<Ended>>,
}

/// Where a player asks for another edge when its edge is lost: the GSLB, for `domain`; `port`
/// is the edges' client port.
#[derive(Clone)]
pub struct Relookup {
    pub domain: String,
    pub port: u16,
    pub lookup: livesky_gslb::client::Lookup,
}

/// Edges lost (and replaced through the GSLB) before a player gives up.
const MAX_RELOOKUPS: u32 = 10;
/// Refusals an edge says are passing ("…; retry …": the join rate of an address that many players
/// share, a full edge with no sibling) are retried this many times, backing off from 2 s to 16 s.
const MAX_RETRIED_REFUSALS: u32 = 5;

/// Whether the edge's refusal says to try again (its transient refusals do; a bad token, a ban or an
/// unknown channel do not).
fn says_retry(reason: &str) -> bool {
    reason.contains("retry")
}

/// Starts playing `channel` from the edge at `net.edge`, following redirects; local output on `http`.
pub async fn start_player(
    net: Net,
    channel: ChannelId,
    cfg: PeerConfig,
    http: SocketAddr,
    stdout: bool,
    cancel: CancellationToken,
) -> anyhow::Result<Player> {
    start_player_with(net, channel, cfg, http, stdout, cancel, None).await
}

/// Asks the GSLB until it names an edge other than `lost` (it drops a dead edge within about a
/// second of the MC noticing), for up to `patience`.
async fn another_edge(
    r: &Relookup,
    channel: &ChannelId,
    lost: Option<SocketAddr>,
    patience: Duration,
    cancel: &CancellationToken,
) -> anyhow::Result<SocketAddr> {
    // The buffer plays meanwhile; past it the viewer sees a stall, which beats giving up while the
    // GSLB or the edges come back (an MC restart, an edge restart).
    let start = tokio::time::Instant::now();
    let deadline = start + patience;
    let mut backoff = proto::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    let mut attempt = 0u32;
    while tokio::time::Instant::now() < deadline {
        attempt += 1;
        match livesky_gslb::client::resolve_edge(&r.domain, r.port, channel.as_str(), &r.lookup).await {
            Ok(found) => {
                if let Some(e) = found.edges.iter().copied().find(|e| Some(*e) != lost) {
                    tracing::info!(edge = %e, via = ?found.via, "the GSLB chose an edge");
                    return Ok(e);
                }
                // The GSLB drops a dead edge within seconds; one it still names after that is
                // alive, and it was our own link that broke (a home's line cut, its uplink full).
                if let Some(e) = lost.filter(|l| found.edges.contains(l))
                    && start.elapsed() >= LOST_EDGE_GRACE
                {
                    tracing::info!(edge = %e, "the GSLB still names the edge we lost: joining it again");
                    return Ok(e);
                }
            }
            Err(e) => tracing::warn!(error = %e, attempt, "the GSLB did not answer"),
        }
        tokio::select! {
            _ = cancel.cancelled() => bail!("stopped while looking for another edge"),
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
    match lost {
        Some(lost) => bail!("the GSLB named no edge other than the lost {lost} for {} s", patience.as_secs()),
        None => bail!("the GSLB named no edge for {} s", patience.as_secs()),
    }
}

/// How long a player waits for the GSLB to name an edge other than the one it lost before it
/// takes that one again.
const LOST_EDGE_GRACE: Duration = Duration::from_secs(5);

/// A session on one edge this long shows the player's edges and link are sound again: the count
/// of lost edges starts over.
const RELOOKUPS_FORGOTTEN_AFTER: Duration = Duration::from_secs(60);

/// How long a starting player asks the GSLB (a SERVFAIL while the GSLB has not heard of any edge
/// yet, a lost packet) before it gives up.
const FIRST_LOOKUP_FOR: Duration = Duration::from_secs(30);

/// How long a player that lost its edge keeps asking the GSLB for another.
const RELOOKUP_FOR: Duration = Duration::from_secs(90);

/// As [`start_player`]; with `relookup`, a lost edge is replaced by one the GSLB names, and
/// playback goes on from the local buffer meanwhile.
pub async fn start_player_with(
    net: Net,
    channel: ChannelId,
    cfg: PeerConfig,
    http: SocketAddr,
    stdout: bool,
    cancel: CancellationToken,
    relookup: Option<Relookup>,
) -> anyhow::Result<Player> {
    let listener = TcpListener::bind(http).await.with_context(|| format!("binding the local output on {http}"))?;
    let http = listener.local_addr()?;
    let output = LocalOutput::new();
    let (stats_tx, stats) = watch::channel(PeerStats::default());
    tokio::spawn(output.clone().serve(listener, stats.clone(), cancel.clone()));
    let (play_tx, mut play_rx) = mpsc::channel::<Chunk>(1024);
    let out = output.clone();
    tokio::spawn(async move {
        let mut stdout_sink = stdout.then(tokio::io::stdout);
        while let Some(c) = play_rx.recv().await {
            if let Some(w) = stdout_sink.as_mut()
                && w.write_all(&c.payload).await.is_err()
            {
                stdout_sink = None;
            }
            out.push(c);
        }
    });
    let task = tokio::spawn(async move {
        let mut net = net;
        let (mut redirects, mut relookups, mut refusals) = (0u8, 0u32, 0u32);
        let mut backoff = proto::backoff::Backoff::new(Duration::from_secs(2), Duration::from_secs(16));
        // The edge that redirected us, while the one it named has not answered yet.
        let mut came_from: Option<SocketAddr> = None;
        // One core for the whole session: moving to another edge keeps its buffer playing.
        let mut core = None;
        let play = Some(play_tx);
        loop {
            let mut cfg = cfg.clone();
            cfg.channel = channel.clone();
            cfg.redirects = redirects;
            let run = driver::run_with(&mut core, cfg, net, play.clone(), stats_tx.clone(), cancel.child_token());
            let session = tokio::time::Instant::now();
            let ended = match run.await {
                Ok(ended) => {
                    came_from = None;
                    if session.elapsed() >= RELOOKUPS_FORGOTTEN_AFTER {
                        relookups = 0;
                    }
                    ended
                }
                // A sibling that does not answer (an edge's sibling list can name a dead edge): back
                // to the edge that sent us, which keeps a client already redirected once.
                Err(driver::PeerError::Edge { addr, source }) if came_from.is_some() => {
                    tracing::warn!(edge = %addr, error = %source, "the edge we were sent to does not answer; back to the one that sent us");
                    net.edge = came_from.take().unwrap_or(net.edge);
                    continue;
                }
                // An edge the GSLB named that does not answer is one more lost edge.
                Err(driver::PeerError::Edge { addr, source }) if relookup.is_some() && relookups > 0 => {
                    tracing::warn!(edge = %addr, error = %source, "cannot reach the edge");
                    Ended::EdgeLost
                }
                Err(e) => return Err(e.into()),
            };
            match ended {
                Ended::Redirected(to) => {
                    redirects += 1;
                    if redirects > MAX_REDIRECTS {
                        bail!("more than {MAX_REDIRECTS} redirects");
                    }
                    tracing::info!(%to, "redirected to another edge");
                    let (host, port) = to.rsplit_once(':').context("redirect target has no port")?;
                    let port = port.parse().context("redirect port")?;
                    came_from = Some(net.edge);
                    net.edge = driver::coast(&mut core, &play, &stats_tx, resolve(host, port)).await?;
                }
                Ended::EdgeLost if relookups < MAX_RELOOKUPS && !cancel.is_cancelled() => {
                    let Some(r) = &relookup else { return Ok(Ended::EdgeLost) };
                    relookups += 1;
                    tracing::warn!(edge = %net.edge, "lost the edge; playing from the buffer while the GSLB names another");
                    let lost = net.edge;
                    net.edge = driver::coast(
                        &mut core,
                        &play,
                        &stats_tx,
                        another_edge(r, &channel, Some(lost), RELOOKUP_FOR, &cancel),
                    )
                    .await?;
                    tracing::info!(edge = %net.edge, "rejoining through another edge");
                    redirects = 0;
                }
                Ended::Refused(reason)
                    if says_retry(&reason) && refusals < MAX_RETRIED_REFUSALS && !cancel.is_cancelled() =>
                {
                    refusals += 1;
                    let wait = backoff.next_delay();
                    tracing::warn!(edge = %net.edge, %reason, ?wait, "the edge refused for now; playing from the buffer, then joining again");
                    driver::coast(&mut core, &play, &stats_tx, tokio::time::sleep(wait)).await;
                }
                other => return Ok(other),
            }
        }
    });
    Ok(Player { http, stats, output, task })
}

pub async fn run(cmd: PeerCmd) -> anyhow::Result<()> {
    let PeerCmd::Play(args) = cmd;
    let (host, port, channel) = parse_url(&args.url)?;
    let relookup = args.lookup.is_set().then(|| Relookup { domain: host.clone(), port, lookup: args.lookup.lookup() });
    let cancel = CancellationToken::new();
    let edge = match &relookup {
        Some(r) => {
            let lookup = another_edge(r, &channel, None, FIRST_LOOKUP_FOR, &cancel);
            tokio::select! {
                e = lookup => e?,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
        None => resolve(&host, port).await?,
    };
    let mut cfg = PeerConfig::new(channel.clone());
    if args.low_latency {
        cfg = cfg.low_latency(LOW_LATENCY_MS);
    }
    cfg.upload_kbps = args.upload_kbps;
    cfg.token = args.token.clone();
    let net = Net { edge, listen: args.listen, transport: args.transport };
    let player = start_player_with(net, channel, cfg, args.http, args.stdout, cancel.clone(), relookup).await?;
    eprintln!("LiveSky peer: playing {} — local output http://{}/live.ts (metrics at /metrics)", args.url, player.http);
    let mut app: Option<tokio::process::Child> = None;
    let mut before = PeerStats::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    let mut task = player.task;
    let ended = loop {
        tokio::select! {
            _ = &mut stop => {
                cancel.cancel();
                break task.await;
            }
            r = &mut task => break r,
            _ = tick.tick() => {
                let now = *player.stats.borrow();
                eprint!("\r{}   ", status_line(&now, &before, Duration::from_secs(1)));
                before = now;
                if app.is_none() && now.startup.is_some()
                    && let Some(p) = args.player {
                        app = Some(launch(p, player.http)?);
                    }
                if let Some(child) = app.as_mut()
                    && child.try_wait()?.is_some() {
                        cancel.cancel();
                        break task.await;
                    }
            }
        }
    };
    eprintln!();
    let ended = ended.context("peer task")??;
    match ended {
        Ended::Refused(r) => bail!("the edge refused: {r}"),
        Ended::EdgeLost => bail!("lost the edge"),
        Ended::BroadcastEnded => {
            eprintln!("the broadcast ended (its broadcaster did not come back); played to its end");
            Ok(())
        }
        other => {
            eprintln!("left: {other:?}");
            Ok(())
        }
    }
}

fn launch(p: PlayerApp, http: SocketAddr) -> anyhow::Result<tokio::process::Child> {
    let url = format!("http://{http}/live.ts");
    let (bin, args): (&str, Vec<String>) = match p {
        PlayerApp::Ffplay => ("ffplay", vec!["-loglevel".into(), "warning".into(), url]),
        PlayerApp::Mpv => ("mpv", vec![url]),
        PlayerApp::Vlc => ("vlc", vec![url]),
    };
    tokio::process::Command::new(bin)
        .args(&args)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {bin} (is it installed?)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The edge's passing refusals (sn-edge/core/src/service/join.rs) are retried; lasting ones are not.
    #[test]
    fn only_passing_refusals_are_retried() {
        assert!(says_retry("too many joins from your address; retry in a few seconds"));
        assert!(says_retry("edge is full and knows no other edge; retry later"));
        assert!(!says_retry("banned for 60 s more: forwarded chunks that failed the signature check"));
        assert!(!says_retry("no channel x on this CDN"));
    }

    #[test]
    fn parses_livesky_urls() {
        let (h, p, c) = parse_url("livesky://edge.example.com/live1").unwrap();
        assert_eq!((h.as_str(), p, c.as_str()), ("edge.example.com", 7600, "live1"));
        let (h, p, _) = parse_url("livesky://127.0.0.1:7601/demo").unwrap();
        assert_eq!((h.as_str(), p), ("127.0.0.1", 7601));
        let (h, p, _) = parse_url("livesky://[::1]:9000/demo").unwrap();
        assert_eq!((h.as_str(), p), ("::1", 9000));
        for bad in
            ["http://x/demo", "livesky://host", "livesky://host/bad name", "livesky:///demo", "livesky://h:port/demo"]
        {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
