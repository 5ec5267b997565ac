//! A channel on one node: its ring buffer plus a watch that wakes readers. Every consumer — child
//! SNs, HTTP-TS viewers, the HLS segmenter — reads through its own [`Cursor`] from the one shared
//! ring; payloads are `Bytes` shared by all, never copied per reader.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use proto::{ChannelId, Chunk, SourceStatus, StartAt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ring::{ChunkRing, ReadPos, RingConfig, RingStats};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubState {
    /// Asking upstream; nothing known yet.
    Pending,
    /// Data flows (or the source is known and may go live).
    Ready,
    /// No node up the hierarchy knows the channel.
    NotFound,
    /// The node dropped the channel.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubStatus {
    pub last_seq: Option<u64>,
    pub source: SourceStatus,
    pub state: HubState,
}

/// How a source channel's broadcast arrives (shown in `/status` and the NOC).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct IngestInfo {
    /// `http`, `rtmp`, `srt`, `tcp`, `pull` or `loop`; None without a publisher.
    pub protocol: Option<&'static str>,
    /// Newest video minus newest audio decode timestamp, once the feed had both.
    pub av_drift_ms: Option<i64>,
}

pub struct ChannelHub {
    pub id: ChannelId,
    ring: RwLock<ChunkRing>,
    status: watch::Sender<HubStatus>,
    users: AtomicUsize,
    idle_since: Mutex<Option<Instant>>,
    /// The broadcaster session feeding a source channel, and the token that cuts it off when
    /// another takes over.
    publisher: Mutex<Option<(u64, CancellationToken)>>,
    /// Numbers publisher sessions.
    next_publisher: AtomicU64,
    /// How the current broadcast arrives, for operators.
    ingest: Mutex<IngestInfo>,
    /// The channel's Ed25519 public key, as Tier 0 announced it down the tree.
    verify_key: Mutex<Option<[u8; 32]>>,
}

impl ChannelHub {
    pub fn new(id: ChannelId, ring: RingConfig, state: HubState) -> Arc<Self> {
        let (status, _) = watch::channel(HubStatus { last_seq: None, source: SourceStatus::Idle, state });
        Arc::new(Self {
            id,
            ring: RwLock::new(ChunkRing::new(ring)),
            status,
            users: AtomicUsize::new(0),
            idle_since: Mutex::new(Some(Instant::now())),
            publisher: Mutex::new(None),
            next_publisher: AtomicU64::new(1),
            ingest: Mutex::new(IngestInfo::default()),
            verify_key: Mutex::new(None),
        })
    }

    // A panic while holding the lock cannot leave the ring half-updated in a way readers care
    // about (push is the only writer), so a poisoned lock is simply taken over.
    pub fn ring(&self) -> RwLockReadGuard<'_, ChunkRing> {
        self.ring.read().unwrap_or_else(|e| e.into_inner())
    }
    fn ring_mut(&self) -> RwLockWriteGuard<'_, ChunkRing> {
        self.ring.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn verify_key(&self) -> Option<[u8; 32]> {
        *self.verify_key.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_verify_key(&self, key: Option<[u8; 32]>) {
        *self.verify_key.lock().unwrap_or_else(|e| e.into_inner()) = key;
    }

    pub fn status(&self) -> HubStatus {
        *self.status.borrow()
    }

    pub fn watch(&self) -> watch::Receiver<HubStatus> {
        self.status.subscribe()
    }

    pub fn ring_stats(&self) -> (RingStats, u64) {
        let r = self.ring();
        (r.stats(), r.span_ms())
    }

    /// Adds a chunk; false if its seq is not newer than the last (a duplicate).
    pub fn publish(&self, chunk: Chunk) -> bool {
        let seq = chunk.seq();
        let pushed = self.ring_mut().push(chunk);
        if pushed {
            self.status.send_modify(|s| s.last_seq = Some(seq));
        }
        pushed
    }

    pub fn set_state(&self, state: HubState) {
        self.status.send_if_modified(|s| std::mem::replace(&mut s.state, state) != state);
    }

    pub fn set_source(&self, source: SourceStatus) {
        self.status.send_if_modified(|s| std::mem::replace(&mut s.source, source) != source);
    }

    /// Waits until the channel is Ready (true) or known to be absent (false), up to `limit`.
    pub async fn wait_ready(&self, limit: std::time::Duration) -> Option<bool> {
        let mut rx = self.watch();
        let res = tokio::time::timeout(limit, rx.wait_for(|s| s.state != HubState::Pending)).await;
        match res {
            Ok(Ok(s)) => Some(s.state == HubState::Ready),
            Ok(Err(_)) => Some(false),
            Err(_) => None,
        }
    }

    /// Claims the single publisher slot of a source channel: the session's id and the token
    /// cancelled when another takes over. A live publisher is kept (None) unless `take_over`,
    /// which cuts it off: from then on only the new one's chunks are taken.
    pub fn claim_publisher(&self, take_over: bool) -> Option<(u64, CancellationToken)> {
        let mut slot = self.publisher.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, kicked)) = slot.as_ref() {
            if !take_over {
                return None;
            }
            kicked.cancel();
        }
        let id = self.next_publisher.fetch_add(1, Ordering::Relaxed);
        let kicked = CancellationToken::new();
        *slot = Some((id, kicked.clone()));
        Some((id, kicked))
    }

    /// Ends publisher session `id`; false for a session taken over (it has nothing to release).
    pub fn release_publisher(&self, id: u64) -> bool {
        let mut slot = self.publisher.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|(owner, _)| *owner == id) {
            *slot = None;
            self.set_ingest(IngestInfo::default());
            self.set_source(SourceStatus::Idle);
            return true;
        }
        false
    }

    /// Number of the next publisher session: unchanged while nobody claimed the channel.
    pub fn publisher_sessions(&self) -> u64 {
        self.next_publisher.load(Ordering::Relaxed)
    }

    /// Ends the broadcast unless a publisher claimed the channel since `sessions` was read (see
    /// [`ChannelHub::publisher_sessions`]); true if it ended it.
    pub fn end_broadcast_unless_claimed(&self, sessions: u64) -> bool {
        let slot = self.publisher.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() || self.publisher_sessions() != sessions {
            return false;
        }
        self.set_source(SourceStatus::Ended);
        true
    }

    pub fn ingest(&self) -> IngestInfo {
        *self.ingest.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_ingest(&self, info: IngestInfo) {
        *self.ingest.lock().unwrap_or_else(|e| e.into_inner()) = info;
    }

    /// As [`ChannelHub::publish`], for publisher session `id`: false once another took over, so
    /// two sessions never interleave their sequence numbers.
    pub fn publish_from(&self, id: u64, chunk: Chunk) -> bool {
        let slot = self.publisher.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().is_some_and(|(owner, _)| *owner == id) && self.publish(chunk)
    }

    pub fn users(&self) -> usize {
        self.users.load(Ordering::Acquire)
    }

    /// How long nobody has used the channel, if nobody is using it.
    pub fn idle_for(&self, now: Instant) -> Option<std::time::Duration> {
        let idle = self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        idle.map(|since| now.saturating_duration_since(since))
    }

    pub fn lease(self: &Arc<Self>) -> Lease {
        self.users.fetch_add(1, Ordering::AcqRel);
        *self.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Lease { hub: self.clone() }
    }

    /// A reader positioned per `start`: `Live` = newest keyframe, `Backlog` = a keyframe that
    /// much media back, `Seq(n)` = exactly n (or the oldest held if n was evicted).
    pub fn cursor(self: &Arc<Self>, start: StartAt) -> Cursor {
        let ring = self.ring();
        let (next, need_keyframe) = match start {
            StartAt::Seq(n) => (Some(ring.first_seq().map_or(n, |f| n.max(f))), false),
            StartAt::Live => match ring.latest_keyframe() {
                Some(k) => (Some(k), false),
                None => (ring.last_seq().map(|l| l + 1), true),
            },
            StartAt::Backlog { ms } => match ring.keyframe_before(u64::from(ms)) {
                Some(k) => (Some(k), false),
                None => (ring.last_seq().map(|l| l + 1), true),
            },
        };
        drop(ring);
        self.make_cursor(next, need_keyframe)
    }

    /// A reader that starts right after the newest chunk held (or at the first to arrive).
    pub fn cursor_after_newest(self: &Arc<Self>) -> Cursor {
        let next = self.ring().last_seq().map(|l| l + 1);
        self.make_cursor(next, false)
    }

    /// A reader that starts at the next keyframe to arrive (new content only).
    pub fn cursor_at_next_keyframe(self: &Arc<Self>) -> Cursor {
        let next = self.ring().last_seq().map(|l| l + 1);
        self.make_cursor(next, true)
    }

    fn make_cursor(self: &Arc<Self>, next: Option<u64>, need_keyframe: bool) -> Cursor {
        let rx = self.watch();
        let source_seen = rx.borrow().source;
        Cursor { hub: self.clone(), rx, next, need_keyframe, source_seen }
    }
}

/// Keeps a channel open on a node while held (viewers, child SNs, the segmenter).
pub struct Lease {
    hub: Arc<ChannelHub>,
}

impl Lease {
    pub fn hub(&self) -> &Arc<ChannelHub> {
        &self.hub
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.hub.users.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.hub.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorEvent {
    /// Chunks were appended to the caller's buffer.
    Chunks,
    /// The source went live, paused or ended; every chunk published before the change has been
    /// handed out first.
    Source(SourceStatus),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CursorEnd {
    #[error("reader fell behind the ring; oldest held chunk is {oldest}")]
    Lagged { oldest: u64 },
    #[error("channel closed on this node")]
    Closed,
    #[error("channel not found upstream")]
    NotFound,
}

pub struct Cursor {
    hub: Arc<ChannelHub>,
    rx: watch::Receiver<HubStatus>,
    /// None: start at the first chunk to arrive.
    next: Option<u64>,
    need_keyframe: bool,
    source_seen: SourceStatus,
}

impl Cursor {
    pub fn hub(&self) -> &Arc<ChannelHub> {
        &self.hub
    }

    pub fn position(&self) -> Option<u64> {
        self.next
    }

    /// Waits for chunks (up to `max`, appended to `out`) or a source state change.
    pub async fn next(&mut self, out: &mut Vec<Chunk>, max: usize) -> Result<CursorEvent, CursorEnd> {
        loop {
            if let Some(ev) = self.try_next(out, max)? {
                return Ok(ev);
            }
            if self.rx.changed().await.is_err() {
                return Err(CursorEnd::Closed);
            }
        }
    }

    /// What [`Cursor::next`] would return now, without waiting: None when nothing is new (a
    /// reader serving many viewers on one clock polls each).
    pub fn try_next(&mut self, out: &mut Vec<Chunk>, max: usize) -> Result<Option<CursorEvent>, CursorEnd> {
        self.try_next_each(max, |c| out.push(c.clone()))
    }

    /// [`Cursor::try_next`], showing `each` the chunks in the ring rather than copying them out
    /// (a fan-out keeps only a payload and a time of each, for many viewers every tick).
    pub fn try_next_each(&mut self, max: usize, each: impl FnMut(&Chunk)) -> Result<Option<CursorEvent>, CursorEnd> {
        let status = *self.rx.borrow_and_update();
        match status.state {
            HubState::NotFound => return Err(CursorEnd::NotFound),
            HubState::Closed => return Err(CursorEnd::Closed),
            HubState::Pending | HubState::Ready => {}
        }
        // Chunks first: a viewer told "ended" must already have the broadcast's last chunks.
        if self.read(max, each)? {
            return Ok(Some(CursorEvent::Chunks));
        }
        if status.source != self.source_seen {
            self.source_seen = status.source;
            return Ok(Some(CursorEvent::Source(status.source)));
        }
        Ok(None)
    }

    /// Up to `max` chunks from the position, shown to `each` (those before the first keyframe
    /// left out while one is needed); true if any was.
    fn read(&mut self, max: usize, mut each: impl FnMut(&Chunk)) -> Result<bool, CursorEnd> {
        let ring = self.hub.ring();
        let Some(from) = self.next.or_else(|| ring.first_seq()) else { return Ok(false) };
        let (need, mut shown) = (&mut self.need_keyframe, false);
        let pos = ring.each_from(from, max, |c| {
            if *need && !c.header.is_keyframe() {
                return;
            }
            *need = false;
            shown = true;
            each(c);
        });
        match pos {
            ReadPos::Behind { oldest } => Err(CursorEnd::Lagged { oldest }),
            ReadPos::Next(n) => {
                self.next = Some(n);
                Ok(shown)
            }
        }
    }

    /// Jumps to the newest keyframe (a lagging viewer skips ahead); false if there is none.
    pub fn skip_to_latest_keyframe(&mut self) -> bool {
        let k = self.hub.ring().latest_keyframe();
        match k {
            Some(k) => {
                self.next = Some(k);
                true
            }
            None => {
                self.next = None;
                self.need_keyframe = true;
                false
            }
        }
    }

    /// Continues from `seq` (e.g. the oldest held after a lag, for relays that accept gaps).
    pub fn seek(&mut self, seq: u64) {
        self.next = Some(seq);
    }

    /// Media time from `media_ts` to the newest chunk held.
    pub fn behind_newest_ms(&self, media_ts: u64) -> u64 {
        self.hub.ring().newest().map_or(0, |n| n.header.media_ts.saturating_sub(media_ts) / 90)
    }

    /// Media time between the reader's position and the newest chunk.
    pub fn lag_ms(&self) -> u64 {
        let ring = self.hub.ring();
        let (Some(next), Some(newest)) = (self.next, ring.newest()) else { return 0 };
        match ring.get(next) {
            Some(c) => newest.header.media_ts.saturating_sub(c.header.media_ts) / 90,
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::tests::chunk;
    use std::time::Duration;

    fn hub() -> Arc<ChannelHub> {
        ChannelHub::new(ChannelId::new("t").unwrap(), RingConfig::default(), HubState::Ready)
    }

    async fn read(c: &mut Cursor) -> Vec<u64> {
        let mut out = Vec::new();
        let ev = tokio::time::timeout(Duration::from_secs(1), c.next(&mut out, 1000)).await.unwrap().unwrap();
        assert_eq!(ev, CursorEvent::Chunks);
        out.iter().map(Chunk::seq).collect()
    }

    #[tokio::test]
    async fn live_cursor_starts_at_latest_keyframe() {
        let h = hub();
        for s in 0..120 {
            h.publish(chunk(s));
        }
        let mut c = h.cursor(StartAt::Live);
        assert_eq!(read(&mut c).await, (100..120).collect::<Vec<_>>());
        let reader = tokio::spawn(async move { read(&mut c).await });
        tokio::task::yield_now().await;
        h.publish(chunk(120));
        assert_eq!(reader.await.unwrap(), [120]);
    }

    #[tokio::test]
    async fn cursor_on_empty_hub_waits_for_first_keyframe() {
        let h = hub();
        let mut c = h.cursor(StartAt::Live);
        for s in 40..55 {
            h.publish(chunk(s));
        }
        assert_eq!(read(&mut c).await, (50..55).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn seq_cursor_resumes_exactly() {
        let h = hub();
        for s in 0..10 {
            h.publish(chunk(s));
        }
        let mut c = h.cursor(StartAt::Seq(7));
        assert_eq!(read(&mut c).await, [7, 8, 9]);
        assert!(!h.publish(chunk(9)), "duplicate refused");
    }

    #[tokio::test]
    async fn source_state_and_close_reach_readers() {
        let h = hub();
        let mut c = h.cursor(StartAt::Live);
        h.set_source(SourceStatus::Live);
        let mut out = Vec::new();
        assert_eq!(c.next(&mut out, 10).await, Ok(CursorEvent::Source(SourceStatus::Live)));
        h.set_state(HubState::Closed);
        assert_eq!(c.next(&mut out, 10).await, Err(CursorEnd::Closed));
    }

    #[tokio::test]
    async fn the_end_of_a_broadcast_comes_after_its_last_chunks_and_only_if_nobody_came_back() {
        let h = hub();
        let (first, _) = h.claim_publisher(false).expect("free");
        let mut c = h.cursor(StartAt::Seq(0));
        for s in 0..3 {
            assert!(h.publish_from(first, chunk(s)));
        }
        h.release_publisher(first);
        let sessions = h.publisher_sessions();
        // Came back within the grace: the broadcast goes on.
        let (second, _) = h.claim_publisher(false).expect("free");
        h.release_publisher(second);
        assert!(!h.end_broadcast_unless_claimed(sessions), "a publisher came back since");
        assert_eq!(h.status().source, SourceStatus::Idle);
        let sessions = h.publisher_sessions();
        assert!(h.end_broadcast_unless_claimed(sessions));
        let mut out = Vec::new();
        assert_eq!(c.next(&mut out, 10).await, Ok(CursorEvent::Chunks));
        assert_eq!(out.iter().map(|c| c.seq()).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(c.next(&mut out, 10).await, Ok(CursorEvent::Source(SourceStatus::Ended)));
    }

    #[tokio::test]
    async fn lagging_reader_is_told_and_can_skip() {
        let h = ChannelHub::new(
            ChannelId::new("t").unwrap(),
            RingConfig { keep_ms: 2_000, max_bytes: usize::MAX },
            HubState::Ready,
        );
        h.publish(chunk(0));
        let mut c = h.cursor(StartAt::Seq(0));
        for s in 1..400 {
            h.publish(chunk(s));
        }
        let mut out = Vec::new();
        assert!(matches!(c.next(&mut out, 10).await, Err(CursorEnd::Lagged { .. })));
        assert!(c.skip_to_latest_keyframe());
        assert_eq!(read(&mut c).await, (350..400).collect::<Vec<_>>());
    }

    #[test]
    fn leases_track_idleness() {
        let h = hub();
        let l1 = h.lease();
        let l2 = h.lease();
        assert_eq!(h.users(), 2);
        assert_eq!(h.idle_for(Instant::now()), None);
        drop(l1);
        assert_eq!(h.idle_for(Instant::now()), None);
        drop(l2);
        assert!(h.idle_for(Instant::now()).is_some());
    }

    #[test]
    fn one_publisher_at_a_time_unless_taken_over() {
        let h = hub();
        let (first, _) = h.claim_publisher(false).expect("free");
        assert!(h.claim_publisher(false).is_none(), "busy");
        h.release_publisher(first);
        let (second, kicked) = h.claim_publisher(false).expect("free again");
        let (third, _) = h.claim_publisher(true).expect("taken over");
        assert!(kicked.is_cancelled(), "the first is told");
        assert!(!h.publish_from(second, chunk(0)), "the one taken over publishes nothing more");
        assert!(h.publish_from(third, chunk(0)));
        h.release_publisher(second);
        assert!(h.claim_publisher(false).is_none(), "releasing a session taken over frees nothing");
    }
}
