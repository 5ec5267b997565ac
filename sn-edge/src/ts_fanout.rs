//! The HTTP-TS fan-out: viewers of a channel in groups of up to [`GROUP`], one task per group.
//! On each tick of the edge's flush clock the task takes every viewer's new chunks from the
//! shared ring and sends them in one non-blocking `sendfile` per socket, from the channel's spool
//! ([`crate::ts_spool`]): the kernel takes the pages, as it does from nginx's static file, instead
//! of copying every byte from the edge for every viewer. There is no task, channel or body frame
//! per viewer (issue 25).
//!
//! A viewer is not written on every tick, though: only when its player could otherwise run
//! short of its margin, or its bytes were held as long as they may be
//! ([`livesky_edge_core::pacing`]). A viewer that started a second behind live is written about
//! once a second, in one larger write, at no cost in delay: its player is a second behind anyway.
//!
//! The rules per viewer are the ones the edge always had: a viewer too far behind live skips to
//! the newest keyframe (at a chunk boundary, so the TS stays whole), one that takes nothing for
//! `stuck_viewer_seconds` while owed chunks is dropped, and none can make the edge hold more
//! for it than a read-ahead of chunks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use livesky_edge_core::pacing::{Pace, PaceSettings};
use livesky_net::limits::ConnPermit;
use proto::{ChannelId, Chunk, SourceStatus};
use sn_core::hub::{Cursor, CursorEnd, CursorEvent, HubStatus, Lease};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info};

use crate::Edge;
use crate::ts_pending::Pending;
use crate::ts_spool::{Recent, Spool};

/// Viewers served by one task: enough to make a task's wake-up worth it, few enough that a
/// channel's viewers spread over the runtime's threads.
const GROUP: usize = 256;
/// Chunks read ahead for a viewer at most: a paced viewer's hold (up to 3 s, ~40 chunks a
/// second) or start burst in one read and one write. (At 64, most paced writes took two calls.)
const READ_AHEAD: usize = 256;
/// Read-aheads a viewer may be served in one round.
const ROUNDS: usize = 4;
/// A round sooner than the next tick when a viewer's socket filled while it still owed chunks.
const BACKLOG_RETRY: Duration = Duration::from_millis(20);
/// Without a flush clock: how often viewers are checked when no chunk arrives (a paused source:
/// stuck viewers go).
const RECHECK: Duration = Duration::from_millis(250);

/// A viewer handed to the fan-out: the socket after the response head, and where it reads.
pub(crate) struct Viewer {
    /// Out of tokio's reactor: the fan-out only writes, on its clock, and never waits for the
    /// socket, so an event for every ACK would only wake a thread for nothing.
    pub stream: std::net::TcpStream,
    pub cursor: Cursor,
    /// The chunks it starts with, queued when it joins its group.
    first: Vec<Chunk>,
    /// Chunks read but not yet written whole.
    pending: Pending,
    pub last_progress: Instant,
    pub ended: bool,
    pub lease: Lease,
    pub permit: ConnPermit,
    /// When it must next be written.
    pub pace: Pace,
}

impl Viewer {
    pub fn new(
        stream: std::net::TcpStream,
        cursor: Cursor,
        first: Vec<Chunk>,
        lease: Lease,
        permit: ConnPermit,
        paced: bool,
    ) -> Self {
        let now = Instant::now();
        let first_ts = first.first().map_or(0, |c| c.header.media_ts);
        let lead = Duration::from_millis(cursor.behind_newest_ms(first_ts));
        let mut pace = Pace::new(now.into_std(), first_ts, lead);
        if !paced {
            pace.every_tick();
        }
        let pending = Pending::default();
        Self { stream, cursor, first, pending, last_progress: now, ended: false, lease, permit, pace }
    }
}

/// The groups of each channel, as senders to their tasks.
#[derive(Default)]
pub(crate) struct Groups(std::sync::Mutex<HashMap<ChannelId, Channel>>);

/// A channel's groups and the spool they share (freed with the last group).
#[derive(Default)]
struct Channel {
    groups: Vec<Group>,
    spool: Weak<Spool>,
}

struct Group {
    tx: mpsc::UnboundedSender<Viewer>,
    size: Arc<AtomicUsize>,
}

impl Groups {
    /// Adds a viewer to a group of its channel with room, starting one if none has.
    pub(crate) fn add(&self, edge: &Arc<Edge>, channel: &ChannelId, mut viewer: Viewer) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Channel { groups, spool } = map.entry(channel.clone()).or_default();
        // A group that found itself empty has closed its end; it is gone.
        groups.retain(|g| !g.tx.is_closed());
        for g in groups.iter() {
            if g.size.load(Ordering::Relaxed) < GROUP {
                g.size.fetch_add(1, Ordering::Relaxed);
                match g.tx.send(viewer) {
                    Ok(()) => return,
                    Err(mpsc::error::SendError(v)) => {
                        g.size.fetch_sub(1, Ordering::Relaxed);
                        viewer = v;
                    }
                }
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let size = Arc::new(AtomicUsize::new(1));
        // A fresh receiver is open: this send cannot fail.
        let _ = tx.send(viewer);
        groups.push(Group { tx, size: size.clone() });
        let spool = spool.upgrade().unwrap_or_else(|| {
            let fresh = Arc::new(Spool::new(&edge.settings().ts_spool_dir, edge.metrics.spool_counters()));
            *spool = Arc::downgrade(&fresh);
            fresh
        });
        let task = GroupTask::new(edge.clone(), channel.clone(), size, spool);
        edge.node.spawn(task.run(rx));
    }
}

/// Why a viewer left.
type Reason = &'static str;
/// The viewer closed its connection.
const GONE: Reason = "closed";

struct GroupTask {
    edge: Arc<Edge>,
    channel: ChannelId,
    size: Arc<AtomicUsize>,
    viewers: Vec<Viewer>,
    stuck: Duration,
    max_lag_ms: u64,
    pace: PaceSettings,
    spool: Arc<Spool>,
    recent: Recent,
    /// The metric handles every tick updates, looked up once.
    tick_metrics: TickMetrics,
}

struct TickMetrics {
    viewer_bytes: prometheus::IntCounter,
    cost: crate::metrics::ServeCost,
}

impl GroupTask {
    fn new(edge: Arc<Edge>, channel: ChannelId, size: Arc<AtomicUsize>, spool: Arc<Spool>) -> Self {
        let s = edge.settings();
        let stuck = Edge::secs(s.stuck_viewer_seconds);
        let max_lag_ms = (s.max_viewer_lag_seconds * 1000.0) as u64;
        let pace = PaceSettings {
            tick: Duration::from_millis(s.viewer_coalesce_ms),
            margin: Duration::from_millis(s.viewer_margin_ms),
            max_hold: Duration::from_millis(s.viewer_max_hold_ms),
        };
        let m = &edge.metrics;
        let tick_metrics = TickMetrics {
            viewer_bytes: m.viewer_bytes.with_label_values(&[channel.as_str(), "ts"]),
            cost: m.serve_cost("ts"),
        };
        let recent = Recent::default();
        Self { edge, channel, size, viewers: Vec::new(), stuck, max_lag_ms, pace, spool, recent, tick_metrics }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Viewer>) {
        let mut flush = self.edge.flush_clock.clone();
        // Without a flush clock (`viewer_coalesce_ms = 0`) the hub's own signal wakes the group.
        let mut hub: Option<watch::Receiver<HubStatus>> = None;
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut open = true;
        let (mut backlogged, mut again) = (false, tokio::time::Instant::now());
        loop {
            let mut backlog_only = false;
            tokio::select! {
                _ = self.edge.node.cancelled() => break,
                v = rx.recv(), if open => match v {
                    Some(v) => self.join(v),
                    None => open = false,
                },
                _ = tick(&mut flush, &mut hub) => {}
                // The flush clock runs whatever the source does; without it a paused source would
                // leave stuck viewers unchecked. (With it, a recheck would be one more write per
                // viewer: at 100 ms ticks it made 14 writes a second instead of 10.)
                _ = recheck.tick(), if flush.is_none() => {}
                _ = tokio::time::sleep_until(again), if backlogged => backlog_only = true,
            }
            if flush.is_none() && hub.is_none() {
                hub = self.viewers.first().map(|v| v.cursor.hub().watch());
            }
            backlogged = self.serve_all(backlog_only);
            again = tokio::time::Instant::now() + BACKLOG_RETRY;
            if self.viewers.is_empty() {
                // Closed first, then drained: a viewer sent meanwhile is served, never lost.
                rx.close();
                while let Ok(v) = rx.try_recv() {
                    self.join(v);
                }
                if self.viewers.is_empty() {
                    return;
                }
                open = false;
            }
        }
        for v in std::mem::take(&mut self.viewers) {
            self.leave(v, "shutdown");
        }
    }

    fn join(&mut self, mut v: Viewer) {
        for c in std::mem::take(&mut v.first) {
            v.pending.push(self.recent.span(&self.spool, &c), &c);
        }
        self.edge.metrics.viewers.with_label_values(&[self.channel.as_str(), "ts"]).inc();
        self.viewers.push(v);
    }

    fn leave(&self, v: Viewer, reason: Reason) {
        let ch = self.channel.as_str();
        let m = &self.edge.metrics;
        m.viewers.with_label_values(&[ch, "ts"]).dec();
        // A viewer that went away itself was not dropped.
        if reason != GONE {
            m.viewer_drops.with_label_values(&[ch, reason]).inc();
        }
        self.size.fetch_sub(1, Ordering::Relaxed);
        // Held only to be let go here: the channel lease and the connection's place under the cap.
        drop((v.lease, v.permit));
    }

    /// One round: every viewer gets what it is owed, as far as its socket takes it (with
    /// `backlog_only`, only the viewers still owed chunks from the last round: the others keep
    /// their one write per tick). True if a viewer took some but its socket filled before it had
    /// all (a stream faster than a socket buffer per tick): worth another round soon, not a tick
    /// later.
    fn serve_all(&mut self, backlog_only: bool) -> bool {
        let started = std::time::Instant::now();
        let now = Instant::now();
        let mut written = 0u64;
        let mut backlog = false;
        let mut i = 0;
        while i < self.viewers.len() {
            // A viewer owed nothing is left alone until its player needs more: its new chunks
            // wait in the ring for one larger write.
            let v = &self.viewers[i];
            if v.pending.is_empty() && (backlog_only || !v.pace.due(now.into_std(), &self.pace)) {
                i += 1;
                continue;
            }
            match self.serve(i, now) {
                Ok(n) => {
                    written += n as u64;
                    backlog |= n > 0 && !self.viewers[i].pending.is_empty();
                    i += 1;
                }
                Err(reason) => {
                    let v = self.viewers.swap_remove(i);
                    self.leave(v, reason);
                }
            }
        }
        let m = &self.tick_metrics;
        m.viewer_bytes.inc_by(written);
        m.cost.record(written, started.elapsed());
        backlog
    }

    /// Reads and writes for viewer `i`: the bytes written, or why it must go. A viewer whose
    /// socket takes everything is served all the ring has for it (a fast stream brings more in
    /// a tick than one read-ahead holds), a few read-aheads at most, so one viewer cannot hold
    /// up the group.
    fn serve(&mut self, i: usize, now: Instant) -> Result<usize, Reason> {
        let (max_lag_ms, stuck) = (self.max_lag_ms, self.stuck);
        let v = &mut self.viewers[i];
        if v.pending.is_empty() {
            // Owing nothing is not being stuck.
            v.last_progress = now;
        }
        let mut written = 0;
        for _ in 0..ROUNDS {
            let mut fresh = 0;
            if v.pending.len() < READ_AHEAD && !v.ended {
                let before = v.pending.len();
                let (pending, recent, spool) = (&mut v.pending, &mut self.recent, &self.spool);
                let read = v.cursor.try_next_each(READ_AHEAD - before, |c| {
                    pending.push(recent.span(spool, c), c);
                });
                fresh = v.pending.len() - before;
                match read {
                    Ok(Some(CursorEvent::Source(SourceStatus::Ended))) => v.ended = true,
                    Ok(_) => {}
                    Err(CursorEnd::Lagged { .. }) => {
                        // The ring moved past it: what it had queued is as old as it gets.
                        skip(&self.edge, &self.channel, v);
                    }
                    Err(CursorEnd::Closed) => return Err("channel_closed"),
                    Err(CursorEnd::NotFound) => return Err("not_found"),
                }
            }
            // Too far behind live, measured at the oldest chunk it is owed: skip ahead.
            if let Some(ts) = v.pending.oldest_ts()
                && !v.pending.begun()
                && v.cursor.behind_newest_ms(ts) > max_lag_ms
            {
                debug!(channel = %self.channel, "viewer too far behind; skipping ahead");
                skip(&self.edge, &self.channel, v);
                continue;
            }
            let (n, last_ts) = v.pending.write(&v.stream).map_err(|_| GONE)?;
            written += n;
            if let Some(ts) = last_ts {
                v.pace.wrote(now.into_std(), ts);
            }
            if !v.pending.is_empty() || fresh == 0 {
                break;
            }
        }
        if written > 0 {
            v.last_progress = now;
        }
        if v.pending.is_empty() && v.ended {
            return Err("broadcast_ended");
        }
        if !v.pending.is_empty() && now.saturating_duration_since(v.last_progress) >= stuck {
            // Owed chunks and taking nothing: skipping ahead would not help a viewer that
            // does not read at all.
            info!(channel = %self.channel, "viewer took nothing for a while; dropping it");
            return Err("stuck");
        }
        Ok(written)
    }
}

/// Drops what a viewer is owed (but the rest of a chunk begun) and moves it to the newest keyframe.
fn skip(edge: &Edge, channel: &ChannelId, v: &mut Viewer) {
    edge.metrics.viewer_skips.with_label_values(&[channel.as_str()]).inc();
    v.pending.keep_begun();
    v.cursor.skip_to_latest_keyframe();
    v.pace.every_tick();
}

/// The next flush tick, or the hub's next change when there is no flush clock.
async fn tick(flush: &mut Option<watch::Receiver<u64>>, hub: &mut Option<watch::Receiver<HubStatus>>) {
    match (flush.as_mut(), hub.as_mut()) {
        (Some(clock), _) => {
            if clock.changed().await.is_err() {
                *flush = None;
            }
        }
        (None, Some(h)) => {
            if h.changed().await.is_err() {
                *hub = None;
            }
        }
        (None, None) => std::future::pending().await,
    }
}
