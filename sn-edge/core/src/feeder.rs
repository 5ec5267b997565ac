//! What the edge itself sends each LiveSky client, sans-IO (LiveSky §2.2, the edge as seed): the
//! substreams the service gave it (`Output::Serve`'s mask) as chunks arrive — live traffic, always
//! sent and counted against the edge's egress budget; the start burst from a keyframe — background
//! traffic, sent with whatever budget is left, earliest joiner first; and the backfill of
//! substreams the edge has just taken over, which the client may have missed.
//!
//! The edge's tokio driver, the simulator and the service tests feed it the same inputs, so the
//! simulated start is the product's start. Call order: [`Feeder::serve`], [`Feeder::new_chunk`],
//! [`Feeder::forget`] and [`Feeder::handle_timeout`] as things happen, then drain
//! [`Feeder::poll_output`] and wake at [`Feeder::poll_timeout`].

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

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
}

/// A client the edge starts feeding a substream may have missed about this much of it.
pub const DEFAULT_BACKFILL_MS: u32 = 2_000;

impl FeederConfig {
    pub fn new(substreams: u16, egress_bytes_per_sec: f64) -> Self {
        Self { substreams, egress_bytes_per_sec, backfill_ms: DEFAULT_BACKFILL_MS }
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

/// Send chunk `seq` to connection `conn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Send {
    pub conn: ConnId,
    pub seq: u64,
    pub kind: Kind,
    pub len: usize,
}

#[derive(Debug, Default)]
struct Client {
    mask: u64,
    /// The start burst still to send: next and last seq.
    burst: Option<(u64, u64)>,
}

pub struct Feeder {
    cfg: FeederConfig,
    budget: TokenBucket,
    /// Ordered: which burst takes the budget first is decided the same way on every run.
    clients: BTreeMap<ConnId, Client>,
    out: VecDeque<Send>,
    /// When the budget lets the next burst chunk go (while a burst waits on it).
    wake: Option<Instant>,
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
        Self { cfg, budget: TokenBucket::new(rate, rate), clients: BTreeMap::new(), out: VecDeque::new(), wake: None }
    }

    fn substream_bit(&self, seq: u64) -> u64 {
        1u64 << SubstreamId::of(seq, self.cfg.substreams).0
    }

    /// The service's `Output::Serve`: from now on push `mask`'s substreams to `conn`; `burst_ms`
    /// (at join) sends that much recent media from a keyframe; `backfill` resends what the client
    /// may have missed of substreams just added.
    pub fn serve(
        &mut self,
        now: Instant,
        conn: ConnId,
        mask: u64,
        burst_ms: Option<u32>,
        backfill: u64,
        ring: &impl RecentChunks,
    ) {
        let client = self.clients.entry(conn).or_default();
        client.mask = mask;
        if let Some(ms) = burst_ms {
            client.burst = burst_start(ring, ms).zip(ring.last_seq());
        }
        if backfill != 0
            && let (Some(first), Some(last)) = (ring.first_seq(), ring.last_seq())
            && let Some(newest) = ring.meta(last)
        {
            let since = newest.media_ts.saturating_sub(u64::from(self.cfg.backfill_ms) * 90);
            let recent =
                (first..=last).rev().map_while(|s| ring.meta(s).filter(|m| m.media_ts >= since).map(|m| (s, m)));
            let mut missed: Vec<(u64, ChunkMeta)> =
                recent.filter(|(s, _)| backfill & self.substream_bit(*s) != 0).collect();
            missed.reverse();
            for (seq, m) in missed {
                self.push(now, conn, seq, Kind::Backfill, m.len);
            }
        }
        self.pace(now, ring);
    }

    /// Chunk `seq` arrived in the ring: every client fed its substream gets it.
    pub fn new_chunk(&mut self, now: Instant, seq: u64, ring: &impl RecentChunks) {
        let Some(m) = ring.meta(seq) else { return };
        let bit = self.substream_bit(seq);
        let targets: Vec<ConnId> =
            self.clients.iter().filter(|(_, c)| c.mask & bit != 0).map(|(&conn, _)| conn).collect();
        for conn in targets {
            self.push(now, conn, seq, Kind::Live, m.len);
        }
        self.pace(now, ring);
    }

    /// The connection is gone.
    pub fn forget(&mut self, conn: ConnId) {
        self.clients.remove(&conn);
    }

    pub fn handle_timeout(&mut self, now: Instant, ring: &impl RecentChunks) {
        if self.wake.is_some_and(|w| w <= now) {
            self.pace(now, ring);
        }
    }

    pub fn poll_output(&mut self) -> Option<Send> {
        self.out.pop_front()
    }

    /// When the next burst chunk may go.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wake
    }

    /// Live and backfill traffic: real-time, counted against the budget but never held back.
    fn push(&mut self, now: Instant, conn: ConnId, seq: u64, kind: Kind, len: usize) {
        if kind != Kind::Burst {
            self.budget.force_take(now, len as f64);
        }
        self.out.push_back(Send { conn, seq, kind, len });
    }

    /// Start bursts with the budget left, earliest joiner first.
    fn pace(&mut self, now: Instant, ring: &impl RecentChunks) {
        self.wake = None;
        let first_held = ring.first_seq();
        for (&conn, client) in self.clients.iter_mut() {
            while let Some((next, last)) = client.burst {
                if next > last {
                    client.burst = None;
                    break;
                }
                let Some(m) = ring.meta(next) else {
                    // Evicted meanwhile: go on from what is still held, or give up.
                    client.burst = first_held.filter(|&f| f > next && f <= last).map(|f| (f, last));
                    continue;
                };
                if !self.budget.try_take(now, m.len as f64) {
                    self.wake =
                        Some(self.budget.ready_at(now, m.len as f64).max(now + std::time::Duration::from_millis(1)));
                    return;
                }
                self.out.push_back(Send { conn, seq: next, kind: Kind::Burst, len: m.len });
                client.burst = Some((next + 1, last));
            }
        }
    }
}

#[cfg(test)]
mod tests;
