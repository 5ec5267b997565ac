//! What the edge itself sends each LiveSky client, sans-IO (LiveSky §2.2, the edge as seed): the
//! substreams the service gave it (`Output::Serve`'s mask) as chunks arrive — live traffic, always
//! sent and counted against the edge's egress budget; the start burst from a keyframe, sent at once;
//! and the backfill of substreams the edge has just taken over, which the client may have missed.
//!
//! The start burst is what a viewer waits for before the first picture, so it is never queued
//! behind anything: the whole burst the client asked for when the budget can carry it within
//! [`BURST_WAIT`], else only the newest keyframe run with [`FeederConfig::start_ms`] after it (what
//! the player needs to start), whatever the budget. Pacing bursts on the budget left over by live
//! traffic (as an earlier version did) left a joiner on a busy edge waiting seconds for a run that
//! reached the live chunks it already held.
//!
//! The edge's tokio driver, the simulator and the service tests feed it the same inputs, so the
//! simulated start is the product's start. Call [`Feeder::serve`], [`Feeder::new_chunk`] and
//! [`Feeder::forget`] as things happen, then drain [`Feeder::poll_output`].

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use proto::{SubstreamId, TokenBucket};

use crate::service::ConnId;

/// What the feeder needs to know of the chunks the edge holds (its ring).
pub trait RecentChunks {
    fn first_seq(&self) -> Option<u64>;
    fn last_seq(&self) -> Option<u64>;
    /// Chunk `seq`, if still held.
    fn meta(&self, seq: u64) -> Option<ChunkMeta>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMeta {
    /// Media time, 90 kHz.
    pub media_ts: u64,
    pub keyframe: bool,
    pub len: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct FeederConfig {
    /// K: chunk `seq` is in substream `seq % K`.
    pub substreams: u16,
    /// The edge's egress budget for LiveSky clients, bytes per second (a second's worth is the
    /// most it lends at once).
    pub egress_bytes_per_sec: f64,
    /// How much of the newest media a backfill resends.
    pub backfill_ms: u32,
    /// How far back a backfill goes at most for a client that said what it misses.
    pub max_backfill_ms: u32,
    /// The least media after the keyframe a short start burst begins at: the player's start
    /// threshold (`peer_core::buffer::BufferConfig::start_ms`).
    pub start_ms: u32,
}

/// A whole start burst goes when the budget carries it within this long; else the short one.
pub const BURST_WAIT: Duration = Duration::from_secs(1);

/// The player's default start threshold.
pub const DEFAULT_START_MS: u32 = 2_000;

/// A client the edge starts feeding a substream may have missed about this much of it.
pub const DEFAULT_BACKFILL_MS: u32 = 2_000;

impl FeederConfig {
    pub fn new(substreams: u16, egress_bytes_per_sec: f64) -> Self {
        Self {
            substreams,
            egress_bytes_per_sec,
            backfill_ms: DEFAULT_BACKFILL_MS,
            max_backfill_ms: 15_000,
            start_ms: DEFAULT_START_MS,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Live,
    Burst,
    Backfill,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Live => "live",
            Kind::Burst => "burst",
            Kind::Backfill => "backfill",
        }
    }
}

/// What the service's `Output::Serve` asks of the feeder for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Order {
    pub mask: u64,
    pub burst_ms: Option<u32>,
    pub backfill: u64,
    pub backfill_from: Option<u64>,
}

/// Send chunk `seq` to connection `conn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Send {
    pub conn: ConnId,
    pub seq: u64,
    pub kind: Kind,
    pub len: usize,
}

pub struct Feeder {
    cfg: FeederConfig,
    budget: TokenBucket,
    /// Each client's substream mask. Ordered: live chunks go out in the same order on every run.
    clients: BTreeMap<ConnId, u64>,
    out: VecDeque<Send>,
}

/// The start of a burst of `ms` of media: the newest keyframe at least that much older than the
/// newest chunk, else the oldest keyframe held.
pub fn burst_start(ring: &impl RecentChunks, ms: u32) -> Option<u64> {
    let (first, last) = (ring.first_seq()?, ring.last_seq()?);
    let newest = ring.meta(last)?.media_ts;
    let limit = newest.saturating_sub(u64::from(ms) * 90);
    let keyframes = (first..=last).rev().filter_map(|s| ring.meta(s).filter(|m| m.keyframe).map(|m| (s, m.media_ts)));
    let mut oldest = None;
    for (seq, ts) in keyframes {
        if ts <= limit {
            return Some(seq);
        }
        oldest = Some(seq);
    }
    oldest
}

impl Feeder {
    pub fn new(cfg: FeederConfig) -> Self {
        let rate = cfg.egress_bytes_per_sec.max(1.0);
        Self { cfg, budget: TokenBucket::new(rate, rate), clients: BTreeMap::new(), out: VecDeque::new() }
    }

    /// The edge's egress budget changed (the MC pushed a new capacity).
    pub fn set_egress(&mut self, now: Instant, bytes_per_sec: f64) {
        let rate = bytes_per_sec.max(1.0);
        self.cfg.egress_bytes_per_sec = rate;
        self.budget.set_rate(now, rate, rate);
    }

    fn substream_bit(&self, seq: u64) -> u64 {
        1u64 << SubstreamId::of(seq, self.cfg.substreams).0
    }

    /// The service's `Output::Serve`: from now on push `order.mask`'s substreams to `conn`;
    /// `burst_ms` (at join) sends that much recent media from a keyframe; `backfill` resends what
    /// the client may have missed of substreams just added: from `backfill_from` (the first chunk
    /// it said it misses, at most [`FeederConfig::max_backfill_ms`] back), else the last
    /// [`FeederConfig::backfill_ms`].
    pub fn serve(&mut self, now: Instant, conn: ConnId, order: Order, ring: &impl RecentChunks) {
        self.clients.insert(conn, order.mask);
        if let Some(ms) = order.burst_ms {
            self.burst(now, conn, ms, ring);
        }
        if order.backfill != 0
            && let (Some(first), Some(last)) = (ring.first_seq(), ring.last_seq())
            && let Some(newest) = ring.meta(last)
        {
            let since = newest.media_ts.saturating_sub(u64::from(self.cfg.backfill_ms) * 90);
            let floor = newest.media_ts.saturating_sub(u64::from(self.cfg.max_backfill_ms) * 90);
            let recent =
                (first..=last).rev().map_while(|s| ring.meta(s).filter(|m| m.media_ts >= floor).map(|m| (s, m)));
            let from = order.backfill_from.unwrap_or(u64::MAX);
            let mut missed: Vec<(u64, ChunkMeta)> = recent
                .filter(|(s, m)| (m.media_ts >= since || *s >= from) && order.backfill & self.substream_bit(*s) != 0)
                .collect();
            missed.reverse();
            for (seq, m) in missed {
                self.push(now, conn, seq, Kind::Backfill, m.len);
            }
        }
    }

    /// The start burst: `ms` of media from a keyframe if the budget carries it soon enough, else
    /// the newest run the player can start on.
    fn burst(&mut self, now: Instant, conn: ConnId, ms: u32, ring: &impl RecentChunks) {
        let (Some(whole), Some(last)) = (burst_start(ring, ms), ring.last_seq()) else { return };
        let bytes: usize = (whole..=last).filter_map(|s| ring.meta(s)).map(|m| m.len).sum();
        let from = if self.budget.ready_at(now, bytes as f64) <= now + BURST_WAIT {
            whole
        } else {
            burst_start(ring, self.cfg.start_ms.min(ms)).map_or(whole, |s| s.max(whole))
        };
        for seq in from..=last {
            if let Some(m) = ring.meta(seq) {
                self.push(now, conn, seq, Kind::Burst, m.len);
            }
        }
    }

    /// Chunk `seq` arrived in the ring: every client fed its substream gets it.
    pub fn new_chunk(&mut self, now: Instant, seq: u64, ring: &impl RecentChunks) {
        let Some(m) = ring.meta(seq) else { return };
        let bit = self.substream_bit(seq);
        let targets: Vec<ConnId> =
            self.clients.iter().filter(|(_, mask)| **mask & bit != 0).map(|(&conn, _)| conn).collect();
        for conn in targets {
            self.push(now, conn, seq, Kind::Live, m.len);
        }
    }

    /// The connection is gone.
    pub fn forget(&mut self, conn: ConnId) {
        self.clients.remove(&conn);
    }

    pub fn poll_output(&mut self) -> Option<Send> {
        self.out.pop_front()
    }

    /// Everything the feeder sends is real-time: counted against the budget, never held back.
    fn push(&mut self, now: Instant, conn: ConnId, seq: u64, kind: Kind, len: usize) {
        self.budget.force_take(now, len as f64);
        self.out.push_back(Send { conn, seq, kind, len });
    }
}

#[cfg(test)]
mod tests;
