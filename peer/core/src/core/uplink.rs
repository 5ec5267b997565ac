//! What this peer forwards: its children (taken only once the edge introduced them), their
//! subscriptions, and the queues behind the upload cap (live first, catch-up with what is left).

use super::*;

impl PeerCore {
    /// The edge introduced the peer on `link`: feed it what it asked for meanwhile.
    pub(super) fn trust_child(&mut self, now: Instant, link: LinkId) {
        let Some(child) = self.children.get_mut(&link) else { return };
        child.trusted = true;
        if let Some((substreams, from_seq)) = child.pending.take() {
            self.subscribe_child(now, link, substreams, from_seq);
        }
    }

    /// Cuts links from peers that said hello (or nothing) but were never introduced.
    pub(super) fn drop_strangers(&mut self, now: Instant) {
        let late: Vec<LinkId> = self
            .children
            .iter()
            .filter(|(_, c)| !c.trusted && now.saturating_duration_since(c.accepted_at) >= crate::introduce::WAIT)
            .map(|(l, _)| *l)
            .collect();
        for link in late {
            self.stats.strangers += 1;
            self.children.remove(&link);
            self.close(link);
        }
    }

    pub(super) fn subscribe_child(&mut self, now: Instant, link: LinkId, substreams: u64, from_seq: u64) {
        // Send what we hold for it, but no more than the catch-up window.
        let floor = self
            .buffer
            .newest_seq()
            .and_then(|n| self.buffer.get(n))
            .map(|c| c.header.media_ts.saturating_sub(u64::from(self.cfg.catchup_ms) * 90))
            .unwrap_or(0);
        let Some(child) = self.children.get_mut(&link) else { return };
        child.mask = substreams;
        child.from_seq = from_seq;
        let k = self.k();
        let backlog: Vec<Chunk> = self
            .buffer
            .from(from_seq)
            .filter(|c| c.header.media_ts >= floor && substreams & (1u64 << SubstreamId::of(c.seq(), k).0) != 0)
            .cloned()
            .collect();
        self.catchup_queue.retain(|(l, _)| *l != link);
        self.catchup_queue.extend(backlog.into_iter().map(|c| (link, c)));
        while self.catchup_queue.len() > CATCHUP_QUEUE {
            self.catchup_queue.pop_front();
            self.stats.up_dropped += 1;
        }
        self.drain_up(now);
    }

    pub(super) fn trim_up_queue(&mut self) {
        while self.up_queue.len() > UP_QUEUE {
            self.up_queue.pop_front();
            self.stats.up_dropped += 1;
        }
    }

    /// Sends queued chunks to children as the upload cap allows, in the order of
    /// [`Self::catchup_next`].
    pub(super) fn drain_up(&mut self, now: Instant) {
        self.up_ready = None;
        loop {
            let catchup = self.catchup_next();
            let queue = if catchup { &self.catchup_queue } else { &self.up_queue };
            let Some((link, len)) = queue.front().map(|(l, c)| (*l, c.payload.len() as f64)) else { return };
            let open = self.is_open(link);
            let queue = if catchup { &mut self.catchup_queue } else { &mut self.up_queue };
            if !open {
                queue.pop_front();
                continue;
            }
            if !self.upload.try_take_oversized(now, len) {
                // Wake exactly when the cap lets it go (at least 1 ms on: no busy loop).
                self.up_ready = Some(self.upload.ready_at_oversized(now, len).max(now + Duration::from_millis(1)));
                return;
            }
            let Some((link, c)) = queue.pop_front() else { return };
            #[cfg(feature = "faults")]
            let Some(c) = self.misbehave(c) else { continue };
            self.stats.bytes_up += c.payload.len() as u64;
            self.out.push_back(Output::Send { link, msg: PeerLink::Chunk(c) });
        }
    }

    /// Whether a catch-up chunk goes before the live ones. A child catching up is missing what
    /// plays soonest: a new child asks from the first chunk its start burst did not bring, and
    /// its buffer is that burst, a second or two. Children fed live hold more, so their chunks
    /// may wait, but no longer than [`LIVE_SLACK_90K`] (a child's whole backlog, up to
    /// `catchup_ms`, must not starve the others). Live first after that.
    fn catchup_next(&self) -> bool {
        if self.catchup_queue.is_empty() {
            return false;
        }
        self.up_queue.front().is_none_or(|(_, c)| self.newest_ts.saturating_sub(c.header.media_ts) < LIVE_SLACK_90K)
    }

    /// The test faults: a denier sends nothing, a tamperer sends chunks with a byte flipped.
    #[cfg(feature = "faults")]
    fn misbehave(&self, mut c: Chunk) -> Option<Chunk> {
        if self.cfg.faults.deny {
            return None;
        }
        if self.cfg.faults.tamper {
            let mut bytes = c.payload.to_vec();
            if let Some(b) = bytes.get_mut(100) {
                *b ^= 0x55;
            }
            c.payload = bytes::Bytes::from(bytes);
        }
        Some(c)
    }
}
