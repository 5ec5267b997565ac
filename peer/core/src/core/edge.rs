//! What the edge says: the welcome (the channel's substreams, key and latency target), where
//! each substream comes from, chunks of its start burst and feeds, introductions, key rotations,
//! and the end of the broadcast.

use super::*;

impl PeerCore {
    pub(super) fn on_edge(&mut self, now: Instant, m: FromEdge) {
        match m {
            FromEdge::Welcome(w) => {
                if self.phase != Phase::Joining || w.channel != self.cfg.channel {
                    return;
                }
                // The timeline is the first join's; a re-join does not restart it.
                let login = now.saturating_duration_since(self.joined_at);
                self.stats.timeline.login_reply.get_or_insert(login);
                self.burst.welcomed(now);
                let k = w.substreams.clamp(1, 64);
                self.phase = Phase::Joined { id: w.peer, k };
                self.push = w.push;
                self.verifier = w.channel_key.and_then(|k| ChannelVerifier::from_bytes(&k).ok());
                // The operator's target for the channel: low-latency mode if it is below ours.
                if let Some(target) = w.target_latency_ms.filter(|&t| t < self.cfg.buffer.buffer_ms) {
                    self.cfg = self.cfg.clone().low_latency(target);
                    self.buffer.set_config(self.cfg.buffer.clone());
                }
                let feed = if w.push { FeedTo::Edge } else { FeedTo::Nobody };
                self.substreams = vec![Substream::new(feed, now); usize::from(k)];
                self.out.push_back(Output::Event(Event::Welcomed { peer: w.peer, push: w.push }));
            }
            FromEdge::Redirect { to, .. } => {
                self.out.push_back(Output::Event(Event::Redirected(to)));
                self.detach();
            }
            FromEdge::Refused { reason } => {
                self.out.push_back(Output::Event(Event::Refused(reason)));
                self.phase = Phase::Done;
            }
            FromEdge::Ended { last_seq } => {
                self.broadcast_end = Some(last_seq);
                let buffered = Duration::from_millis(self.stats().buffered_ms);
                self.outro_until = Some(now + buffered + OUTRO_SLACK);
                self.out.push_back(Output::Event(Event::BroadcastEnded));
            }
            FromEdge::Placed { push, .. } => self.push = push,
            FromEdge::Feed { substream, feed } => self.on_feed(now, substream, feed),
            FromEdge::Chunk(c) => {
                if self.authentic(&c) {
                    self.burst.chunk(now, c.header.media_ts);
                    self.stats.bytes_from_edge += c.payload.len() as u64;
                    self.on_chunk(c);
                }
            }
            FromEdge::Neighbours(list) => self.link_mesh(list),
            FromEdge::Introduce { peer } => {
                self.introduced.add(peer, now);
                let waiting: Vec<LinkId> =
                    self.children.iter().filter(|(_, c)| !c.trusted && c.peer == Some(peer)).map(|(l, _)| *l).collect();
                for link in waiting {
                    self.trust_child(now, link);
                }
            }
            FromEdge::ChannelKey { key } => self.rotate_key(now, key),
            FromEdge::Signal { .. } => {}
        }
    }
}
