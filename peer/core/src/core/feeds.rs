//! Who feeds each substream: the edge or a tree parent (LiveSky §2.3), the subscriptions sent
//! to parents, and the reports of parents that are lost, late or silent.

use super::*;

impl PeerCore {
    pub(super) fn on_feed(&mut self, now: Instant, s: u16, feed: FeedTo) {
        let Phase::Joined { .. } = self.phase else { return };
        let Some(sub) = self.substreams.get_mut(usize::from(s)) else { return };
        let old = std::mem::replace(sub, Substream { last_rx_ts: sub.last_rx_ts, ..Substream::new(feed, now) }).feed;
        if let FeedTo::Peer { id, .. } = old
            && !matches!(feed, FeedTo::Peer { id: n, .. } if n == id)
        {
            if let Some(p) = self.parents.get_mut(&id) {
                p.mask &= !(1u64 << s);
            }
            self.subscribe(id);
        }
        if let FeedTo::Peer { id, addr } = feed {
            let next_link = &mut self.next_link;
            let out = &mut self.out;
            let link_parent = &mut self.link_parent;
            let p = self.parents.entry(id).or_insert_with(|| {
                let link = LinkId::Out(*next_link);
                *next_link += 1;
                link_parent.insert(link, id);
                out.push_back(Output::Connect { link, peer: id, addr });
                Parent { link, mask: 0, up: false, pending: false }
            });
            p.mask |= 1u64 << s;
            self.subscribe(id);
        }
    }

    /// Tells parent `id` which substreams we want from it now, or lets it go.
    pub(super) fn subscribe(&mut self, id: PeerId) {
        let Some(p) = self.parents.get(&id) else { return };
        let (link, mask, up) = (p.link, p.mask, p.up);
        if mask == 0 {
            self.out.push_back(Output::Send { link, msg: PeerLink::Bye });
            self.close(link);
            self.parents.remove(&id);
            self.link_parent.remove(&link);
            return;
        }
        if !up || !self.may_subscribe() {
            if let Some(p) = self.parents.get_mut(&id) {
                p.pending = true;
            }
            return;
        }
        // From the first chunk we lack on these substreams, not from the playback point: what the
        // start burst brought would otherwise be sent again, ahead of the chunks missing since, on
        // an uplink that may have little to spare (a new child stalled where its burst ran out).
        let first_missing = (0..64u16).filter(|&s| mask & (1u64 << s) != 0).filter_map(|s| self.first_missing(s)).min();
        let from_seq = first_missing.or(self.buffer.newest_seq().map(|n| n + 1)).unwrap_or(0);
        self.out.push_back(Output::Send { link, msg: PeerLink::Subscribe { substreams: mask, from_seq } });
        if let Some(p) = self.parents.get_mut(&id) {
            p.pending = false;
        }
    }

    /// Parents are asked for chunks once playback runs, or once the edge's start burst is over,
    /// never came, or trickles too slowly to be worth waiting for (see [`BurstWatch`]).
    pub(super) fn may_subscribe(&mut self) -> bool {
        self.buffer.started_at().is_some() || self.burst.over(self.last_now)
    }

    /// Sends subscriptions held back while the burst was flowing.
    pub(super) fn flush_pending_subscriptions(&mut self) {
        if !self.may_subscribe() {
            return;
        }
        let pending: Vec<PeerId> = self.parents.iter().filter(|(_, p)| p.pending && p.up).map(|(&id, _)| id).collect();
        for id in pending {
            self.subscribe(id);
        }
    }

    pub(super) fn parent_gone(&mut self, link: LinkId, trouble: Trouble) {
        let Some(pid) = self.link_parent.remove(&link) else { return };
        let Some(p) = self.parents.remove(&pid) else { return };
        for s in 0..64u16 {
            if p.mask & (1u64 << s) != 0 {
                self.stats.lost_reports += 1;
                let missing_from = self.first_missing(s);
                self.out.push_back(Output::ToEdge(ToEdge::ParentTrouble {
                    substream: s,
                    parent: pid,
                    trouble,
                    missing_from,
                }));
            }
        }
    }

    /// The first chunk of substream `s` not held, from the playback point (or the oldest chunk
    /// held, before playback): a hole up to the newest chunk held, else the substream's next one
    /// after it (every feed silent: the edge then knows whether its source has produced it).
    pub(super) fn first_missing(&self, s: u16) -> Option<u64> {
        let k = u64::from(self.k());
        let newest = self.buffer.newest_seq()?;
        let from = self.buffer.next_seq().or_else(|| self.buffer.seqs_from(0).next())?;
        let first = from + (u64::from(s) + k - from % k) % k;
        // A buffer spans at most a few thousand chunks; bound the walk all the same.
        let mut seqs = (first..).step_by(k as usize).take(4_096);
        seqs.find(|&seq| seq > newest || !self.buffer.contains(seq))
    }

    /// Reports a parent whose substream falls behind the others.
    pub(super) fn check_late(&mut self, now: Instant) {
        let late_90k = u64::from(self.cfg.late_ms) * 90;
        let (late_ms, newest) = (Duration::from_millis(u64::from(self.cfg.late_ms)), self.newest_ts);
        // Where live is by now: when every parent stays silent, the newest chunk held stops
        // moving, and measured against it no substream ever looked late (a peer whose parents
        // never came up sat stalled for minutes). Parents that have sent are measured against
        // what arrived, so a pause of the source itself does not send every child to the edge.
        let live = newest + now.saturating_duration_since(self.newest_at).as_micros() as u64 * 9 / 100;
        // Nothing from anyone for that long: every parent may be down at once (one home's full
        // uplink feeds them all), or the source paused. Measured against live, the report says
        // which chunk is missing, and the edge, which knows how far its source has got, acts
        // only on the first.
        let starved = now.saturating_duration_since(self.newest_at) > late_ms;
        let mut late = Vec::new();
        for (s, sub) in self.substreams.iter_mut().enumerate() {
            let FeedTo::Peer { id, .. } = sub.feed else { continue };
            let settled = now.saturating_duration_since(sub.since) > late_ms;
            let expected = if sub.parent_sent && !starved { newest } else { live };
            let due = sub.late_reported.is_none_or(|at| now.saturating_duration_since(at) >= LATE_AGAIN);
            if settled && due && expected.saturating_sub(sub.last_rx_ts) > late_90k {
                sub.late_reported = Some(now);
                self.stats.late_reports += 1;
                // Late after sending something is a slow parent; nothing at all is one that
                // denies service (the edge makes it a leaf when several children say so).
                let trouble = if sub.parent_sent { Trouble::Late } else { Trouble::Silent };
                late.push((s as u16, id, trouble));
            }
        }
        for (substream, parent, trouble) in late {
            let missing_from = self.first_missing(substream);
            self.out.push_back(Output::ToEdge(ToEdge::ParentTrouble { substream, parent, trouble, missing_from }));
        }
    }
}
