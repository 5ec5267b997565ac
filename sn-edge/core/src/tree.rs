//! Tracker and tree builder (LiveSky §2.3, §3.2): the clients of one channel on one edge, and for
//! each substream a forest rooted at the edge. A client is fed each substream by the edge (push
//! peers, and refocused peers while they wait for a parent) or by one parent peer; depth in every
//! tree is at most K'. Parents are chosen among clients with spare upload slots (budget = cap ÷
//! substream rate), preferring a client whose *interior* substream this is, so forwarding work
//! spreads SplitStream-style over every contributing client; clients that failed NAT traversal
//! are never chosen, and a parent's NAT must let its child in ([`Reach`]). A parent is never a
//! descendant of its child, so cycles cannot form.
//!
//! Sans-IO and deterministic: changes are queued as [`Change`]s for the driver to tell the peers.

use proto::DetMap;
use std::collections::VecDeque;
use std::net::IpAddr;

pub use proto::nat::NatClass;
pub use proto::peer::PeerId;

/// Who feeds one substream to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feed {
    /// Nobody yet: waiting for a parent.
    None,
    Edge,
    Peer(PeerId),
}

#[derive(Debug, Clone)]
pub struct TreeConfig {
    /// K: substreams per channel.
    pub substreams: u16,
    /// K': maximum depth of any tree (edge-fed clients are depth 1).
    pub k_prime: u8,
    /// M: mesh neighbours handed to each client for pull repair.
    pub mesh: usize,
    /// Substreams the edge can feed in all (N*c × K); refocusing stays inside it.
    pub edge_substreams: usize,
    /// Seed of the deterministic choice among equal candidates.
    pub seed: u64,
}

/// A feed changed; the driver tells the client (and the old/new parent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub client: PeerId,
    pub substream: u16,
    pub feed: Feed,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TreeStats {
    pub clients: usize,
    pub push: usize,
    /// Substreams the edge feeds now (push peers count K each).
    pub edge_substreams: usize,
    /// Substreams waiting for any feed.
    pub unfed: usize,
    /// Times a client had to be fed by the edge because no parent was available (paper Fig. 12).
    pub refocus_total: u64,
    pub reparent_total: u64,
    /// Push peers moved into the trees to free the edge for a client no parent could take.
    pub swaps: u64,
}

struct Client {
    slots: u16,
    used: u16,
    interior: u16,
    push: bool,
    reachable: bool,
    reach: Reach,
    feed: Vec<Feed>,
    /// Per substream: the parent it was taken from for being late or gone, not to be picked again.
    shun: Vec<Option<PeerId>>,
    depth: Vec<u8>,
    children: Vec<Vec<PeerId>>,
    /// How far behind ingest its feeds reach it, as it last reported (ms).
    delay_ms: Option<u32>,
    /// The most feed delay a parent of its may have (from its latency target), if bounded.
    budget_ms: Option<u32>,
}

/// Clients eligible to feed one substream: O(1) insert, remove and random pick.
#[derive(Default)]
struct Pool {
    items: Vec<PeerId>,
    pos: DetMap<PeerId, usize>,
}

impl Pool {
    fn set(&mut self, id: PeerId, member: bool) {
        match (member, self.pos.get(&id).copied()) {
            (true, None) => {
                self.pos.insert(id, self.items.len());
                self.items.push(id);
            }
            (false, Some(i)) => {
                self.items.swap_remove(i);
                self.pos.remove(&id);
                if let Some(&moved) = self.items.get(i) {
                    self.pos.insert(moved, i);
                }
            }
            _ => {}
        }
    }
}

pub struct Tracker {
    cfg: TreeConfig,
    clients: DetMap<PeerId, Client>,
    /// Per substream: [clients whose interior substream it is, all other eligible clients].
    pools: Vec<[Pool; 2]>,
    /// Every client, and the reachable ones: for sampling mesh neighbours.
    all: Pool,
    reachable: Pool,
    rng: proto::rng::SplitMix64,
    next_interior: u16,
    edge_fed: usize,
    push: usize,
    unfed: usize,
    /// Per substream: clients waiting for any feed. Entries for clients that left or got fed are
    /// dropped lazily, so placing is amortised O(1) per join however long the queue.
    waiting: Vec<VecDeque<PeerId>>,
    changes: Vec<Change>,
    stats: TreeStats,
    /// Clients by NAT versatility ([`versatility`]): a child stops looking once it found the
    /// least versatile parent there is.
    by_versatility: [usize; 3],
}

/// Candidates looked at for a parent within a client's delay budget before any parent will do:
/// bounds the cost of a pick when most parents are over budget.
const BUDGET_PROBES: usize = 64;

/// Candidates looked at, past the first that will do, for a less versatile one.
const RANK_PROBES: usize = 16;

impl Tracker {
    pub fn new(cfg: TreeConfig) -> Self {
        let k = usize::from(cfg.substreams.max(1));
        let rng = proto::rng::SplitMix64::new(cfg.seed | 1);
        Self {
            pools: (0..k).map(|_| [Pool::default(), Pool::default()]).collect(),
            cfg,
            clients: DetMap::default(),
            all: Pool::default(),
            reachable: Pool::default(),
            rng,
            next_interior: 0,
            edge_fed: 0,
            push: 0,
            unfed: 0,
            waiting: (0..k).map(|_| VecDeque::new()).collect(),
            changes: Vec::new(),
            stats: TreeStats::default(),
            by_versatility: [0; 3],
        }
    }

    pub fn config(&self) -> &TreeConfig {
        &self.cfg
    }

    pub fn stats(&self) -> TreeStats {
        TreeStats {
            clients: self.clients.len(),
            push: self.push,
            edge_substreams: self.edge_fed,
            unfed: self.unfed,
            ..self.stats
        }
    }

    pub fn contains(&self, id: PeerId) -> bool {
        self.clients.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    pub fn is_push(&self, id: PeerId) -> bool {
        self.clients.get(&id).is_some_and(|c| c.push)
    }

    pub fn feeds(&self, id: PeerId) -> Option<&[Feed]> {
        self.clients.get(&id).map(|c| c.feed.as_slice())
    }

    pub fn depth(&self, id: PeerId, s: u16) -> u8 {
        self.clients.get(&id).map_or(0, |c| c.depth[usize::from(s)])
    }

    pub fn children(&self, id: PeerId, s: u16) -> &[PeerId] {
        self.clients.get(&id).map_or(&[], |c| c.children[usize::from(s)].as_slice())
    }

    /// Gives `id` `slots` upload slots (never fewer than it uses): a client that proved it can
    /// be a parent.
    pub fn set_slots(&mut self, id: PeerId, slots: u16) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.slots = slots.max(c.used);
        }
        self.refresh(id);
    }

    /// Upload slots in use and in all.
    pub fn slots(&self, id: PeerId) -> Option<(u16, u16)> {
        self.clients.get(&id).map(|c| (c.used, c.slots))
    }

    /// Changes since the last call.
    pub fn drain_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    fn k(&self) -> u16 {
        self.cfg.substreams.max(1)
    }

    fn next_rand(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn insert(&mut self, id: PeerId, slots: u16, push: bool, budget_ms: Option<u32>, reach: Reach) {
        let k = usize::from(self.k());
        let interior = self.next_interior;
        self.next_interior = (self.next_interior + 1) % self.k();
        self.clients.insert(
            id,
            Client {
                slots,
                used: 0,
                interior,
                push,
                reachable: true,
                reach,
                feed: vec![Feed::None; k],
                shun: vec![None; k],
                depth: vec![0; k],
                delay_ms: None,
                budget_ms,
                children: vec![Vec::new(); k],
            },
        );
        self.all.set(id, true);
        self.reachable.set(id, true);
        self.by_versatility[usize::from(versatility(reach.nat))] += 1;
        self.push += usize::from(push);
        self.unfed += k;
    }

    /// Changes how many substreams the edge may feed (a new edge bandwidth); peers already fed
    /// keep their feeds, new ones follow the new bound.
    pub fn set_edge_substreams(&mut self, n: usize) {
        self.cfg.edge_substreams = n;
    }

    /// Edge substreams still free.
    pub fn edge_room(&self) -> usize {
        self.cfg.edge_substreams.saturating_sub(self.edge_fed)
    }

    /// Adds a push peer: the edge feeds it every substream.
    ///
    /// `budget_ms`, here and in [`Tracker::add_p2p`] / [`Tracker::add_waiting`], is the most feed
    /// delay the client's parents may have (its latency target leaves room for one more hop and
    /// for repair); parents that have not reported yet count as within it only if the edge feeds
    /// them that substream.
    /// `reach`, here and there, decides which parents and children it may have.
    pub fn add_push(&mut self, id: PeerId, slots: u16, budget_ms: Option<u32>, reach: Reach) {
        self.insert(id, slots, true, budget_ms, reach);
        for s in 0..self.k() {
            self.set_feed(id, s, Feed::Edge);
        }
    }

    /// Adds a P2P client with a parent for every substream, or changes nothing and returns false
    /// when some substream has no eligible parent.
    pub fn add_p2p(&mut self, id: PeerId, slots: u16, budget_ms: Option<u32>, reach: Reach) -> bool {
        self.insert(id, slots, false, budget_ms, reach);
        let mark = self.changes.len();
        for s in 0..self.k() {
            match self.pick_parent(id, s, None) {
                Some(p) => self.set_feed(id, s, Feed::Peer(p)),
                None => {
                    for s2 in 0..s {
                        self.set_feed(id, s2, Feed::None);
                    }
                    self.drop_client(id);
                    self.changes.truncate(mark);
                    return false;
                }
            }
        }
        true
    }

    /// Adds a P2P client that no parent can take yet: every substream waits for a parent (or for
    /// room at the edge).
    pub fn add_waiting(&mut self, id: PeerId, slots: u16, budget_ms: Option<u32>, reach: Reach) {
        self.insert(id, slots, false, budget_ms, reach);
        for s in 0..self.k() {
            self.waiting[usize::from(s)].push_back(id);
        }
        self.place_waiting();
    }

    /// Whether a P2P client could be placed now (every substream has a candidate).
    pub fn p2p_room(&self) -> bool {
        self.pools.iter().all(|p| !p[0].items.is_empty() || !p[1].items.is_empty())
    }

    /// Removes a client (left, or aged out); its children are rescued (edge, else new parents).
    pub fn remove(&mut self, id: PeerId) {
        if !self.clients.contains_key(&id) {
            return;
        }
        // Cutting each feed orphans the children: each is rescued with its subtree intact.
        for s in 0..self.k() {
            self.set_feed(id, s, Feed::None);
        }
        self.drop_client(id);
        // Nobody needs to be told about the feeds of a client that is gone.
        self.changes.retain(|c| c.client != id);
        self.place_waiting();
    }

    fn drop_client(&mut self, id: PeerId) {
        for s in 0..usize::from(self.k()) {
            for p in &mut self.pools[s] {
                p.set(id, false);
            }
        }
        self.all.set(id, false);
        self.reachable.set(id, false);
        if let Some(c) = self.clients.remove(&id) {
            self.by_versatility[usize::from(versatility(c.reach.nat))] -= 1;
            self.push -= usize::from(c.push);
            self.unfed -= c.feed.iter().filter(|f| **f == Feed::None).count();
        }
    }

    /// A client cannot be reached by its peers (NAT traversal failed): it feeds nobody any more.
    pub fn mark_unreachable(&mut self, id: PeerId) {
        let Some(c) = self.clients.get_mut(&id) else { return };
        c.reachable = false;
        self.reachable.set(id, false);
        self.rehome_children(id);
    }

    /// `id` may no longer be a parent (it stays a mesh neighbour): its children get other feeds.
    pub fn make_leaf(&mut self, id: PeerId) {
        let Some(c) = self.clients.get_mut(&id) else { return };
        c.slots = 0;
        self.rehome_children(id);
    }

    fn rehome_children(&mut self, id: PeerId) {
        let k = self.k();
        let Some(c) = self.clients.get(&id) else { return };
        let kids: Vec<(PeerId, u16)> =
            (0..k).flat_map(|s| c.children[usize::from(s)].iter().map(move |&ch| (ch, s))).collect();
        self.refresh(id);
        for (ch, s) in kids {
            self.reparent(ch, s);
        }
    }

    /// A client reports its parent for `s` gone or late: give it another, else let the edge feed it.
    pub fn reparent(&mut self, id: PeerId, s: u16) {
        let Some(c) = self.clients.get(&id) else { return };
        if s >= self.k() {
            return;
        }
        let avoid = match c.feed[usize::from(s)] {
            Feed::Peer(p) => Some(p),
            _ => None,
        };
        self.stats.reparent_total += 1;
        if let Some(c) = self.clients.get_mut(&id) {
            c.shun[usize::from(s)] = avoid;
        }
        self.rescue(id, s, avoid);
        self.place_waiting();
    }

    /// LiveSky §3.2: a client hurt by churn takes the substream from the edge until the overlay
    /// adapts (the next [`tick`](Self::tick) gives it a parent again), so playback goes on; with
    /// no edge room it gets another parent now, or waits for one.
    fn rescue(&mut self, id: PeerId, s: u16, avoid: Option<PeerId>) {
        if self.edge_room() > 0 {
            self.stats.refocus_total += 1;
            self.set_feed(id, s, Feed::Edge);
        } else if let Some(p) = self.pick_parent(id, s, avoid) {
            self.set_feed(id, s, Feed::Peer(p));
        } else {
            self.set_feed(id, s, Feed::None);
            self.waiting[usize::from(s)].push_back(id);
        }
    }

    /// Periodic: move refocused clients back into trees and feed whoever waits. A refocused
    /// client no tree has room for becomes a push peer when the edge has room for the rest of
    /// its substreams (room that departed push peers left): it then parents others in every
    /// tree, which is what the trees lack.
    pub fn tick(&mut self) {
        let refocused: Vec<(PeerId, u16, Option<PeerId>)> = self
            .clients
            .iter()
            .filter(|(_, c)| !c.push)
            .flat_map(|(&id, c)| {
                c.feed
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| **f == Feed::Edge)
                    .map(move |(s, _)| (id, s as u16, c.shun[s]))
            })
            .collect();
        let mut stuck: Vec<PeerId> = Vec::new();
        for (id, s, shun) in refocused {
            match self.pick_parent(id, s, shun) {
                Some(p) => {
                    self.set_feed(id, s, Feed::Peer(p));
                    if let Some(c) = self.clients.get_mut(&id) {
                        c.shun[usize::from(s)] = None;
                    }
                }
                None => stuck.push(id),
            }
        }
        stuck.dedup();
        for id in stuck {
            self.promote(id);
        }
        self.place_waiting();
        self.spread_homes();
    }

    /// Gives waiting clients a parent, else the edge while it has room; stops at the first one
    /// of a substream that cannot be placed (no parent and no edge room: none behind it can be).
    fn place_waiting(&mut self) {
        // One try at freeing edge room per call: a failed one costs up to SWAP_CANDIDATES plans.
        let mut may_swap = true;
        for s in 0..self.k() {
            while let Some(&id) = self.waiting[usize::from(s)].front() {
                let needs = self.clients.get(&id).is_some_and(|c| c.feed[usize::from(s)] == Feed::None);
                if !needs {
                    self.waiting[usize::from(s)].pop_front();
                    continue;
                }
                if let Some(p) = self.pick_parent(id, s, None) {
                    self.waiting[usize::from(s)].pop_front();
                    self.set_feed(id, s, Feed::Peer(p));
                } else if self.edge_room() > 0 {
                    self.waiting[usize::from(s)].pop_front();
                    self.stats.refocus_total += 1;
                    self.set_feed(id, s, Feed::Edge);
                } else if may_swap {
                    may_swap = false;
                    if !self.free_edge_room(id) {
                        break;
                    }
                } else {
                    break;
                }
            }
        }
    }

    /// How far behind ingest `id`'s feeds reach it (its report).
    pub fn set_delay(&mut self, id: PeerId, delay_ms: Option<u32>) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.delay_ms = delay_ms;
        }
    }

    /// `id`'s reported feed delay.
    pub fn delay(&self, id: PeerId) -> Option<u32> {
        self.clients.get(&id).and_then(|c| c.delay_ms)
    }

    /// The most feed delay `id`'s parents may have ([`Tracker::add_push`]).
    pub fn budget(&self, id: PeerId) -> Option<u32> {
        self.clients.get(&id).and_then(|c| c.budget_ms)
    }

    /// Feeds `id` from the edge, every substream, if the edge has room (it reports its feeds too
    /// late for its target); whether it is a push peer now.
    pub fn feed_directly(&mut self, id: PeerId) -> bool {
        self.promote(id);
        self.is_push(id)
    }

    /// Whether `a` is `b` or an ancestor of `b` in substream `s` (bounded by the depth limit).
    fn is_ancestor(&self, a: PeerId, mut b: PeerId, s: u16) -> bool {
        for _ in 0..=self.cfg.k_prime {
            if a == b {
                return true;
            }
            match self.clients.get(&b).map(|c| c.feed[usize::from(s)]) {
                Some(Feed::Peer(p)) => b = p,
                _ => return false,
            }
        }
        false
    }

    /// Points `id`'s substream `s` at `feed`, keeping slots, depths, children and pools in step.
    fn set_feed(&mut self, id: PeerId, s: u16, feed: Feed) {
        let si = usize::from(s);
        let Some(old) = self.clients.get(&id).map(|c| c.feed[si]) else { return };
        if old == feed {
            return;
        }
        match old {
            Feed::Edge => self.edge_fed -= 1,
            Feed::Peer(p) => {
                if let Some(pc) = self.clients.get_mut(&p) {
                    pc.used -= 1;
                    pc.children[si].retain(|&c| c != id);
                }
                self.refresh(p);
            }
            Feed::None => {}
        }
        let depth = match feed {
            Feed::None => 0,
            Feed::Edge => {
                self.edge_fed += 1;
                1
            }
            Feed::Peer(p) => {
                let Some(pc) = self.clients.get_mut(&p) else { return };
                pc.used += 1;
                pc.children[si].push(id);
                let d = pc.depth[si] + 1;
                self.refresh(p);
                d
            }
        };
        if let Some(c) = self.clients.get_mut(&id) {
            c.feed[si] = feed;
            c.depth[si] = depth;
        }
        match (old, feed) {
            (Feed::None, Feed::Edge | Feed::Peer(_)) => self.unfed -= 1,
            (Feed::Edge | Feed::Peer(_), Feed::None) => self.unfed += 1,
            _ => {}
        }
        self.changes.push(Change { client: id, substream: s, feed });
        self.refresh(id);
        self.fix_children(id, s);
    }

    /// After `id`'s depth in `s` changed: children follow, and any pushed past K' waits anew.
    fn fix_children(&mut self, id: PeerId, s: u16) {
        let si = usize::from(s);
        let Some(c) = self.clients.get(&id) else { return };
        let (depth, kids) = (c.depth[si], c.children[si].clone());
        for ch in kids {
            if depth == 0 {
                // The parent lost its own feed (it left, or its parent did): an orphan.
                self.rescue(ch, s, None);
            } else if depth >= self.cfg.k_prime {
                self.set_feed(ch, s, Feed::None);
                self.waiting[si].push_back(ch);
            } else if let Some(cc) = self.clients.get_mut(&ch)
                && cc.depth[si] != depth + 1
            {
                cc.depth[si] = depth + 1;
                self.refresh(ch);
                self.fix_children(ch, s);
            }
        }
    }

    /// Makes `id` a push peer if the edge has room for all its substreams.
    fn promote(&mut self, id: PeerId) {
        let Some(c) = self.clients.get(&id) else { return };
        let rest: Vec<u16> = (0..self.k()).filter(|&s| c.feed[usize::from(s)] != Feed::Edge).collect();
        if c.push || self.edge_room() < rest.len() {
            return;
        }
        if let Some(c) = self.clients.get_mut(&id) {
            c.push = true;
            c.shun.iter_mut().for_each(|s| *s = None);
        }
        self.push += 1;
        for s in rest {
            self.set_feed(id, s, Feed::Edge);
        }
        self.refresh(id);
    }

    /// Recomputes in which pools `id` belongs.
    fn refresh(&mut self, id: PeerId) {
        let Some(c) = self.clients.get(&id) else { return };
        let spare = c.used < c.slots && c.reachable;
        // A refocused substream is on loan from the edge: building a subtree on it would be
        // torn down when it returns to a tree.
        let on_loan = |s: usize| !c.push && c.feed[s] == Feed::Edge;
        let eligible: Vec<(usize, bool)> = (0..c.feed.len())
            .map(|s| (s, spare && !on_loan(s) && c.depth[s] >= 1 && c.depth[s] < self.cfg.k_prime))
            .collect();
        let interior = usize::from(c.interior);
        for (s, ok) in eligible {
            self.pools[s][0].set(id, ok && s == interior);
            self.pools[s][1].set(id, ok && s != interior);
        }
    }

    /// M distinct mesh neighbours for `id`, reachable clients first, sampled in O(M) (a sweep
    /// when few can link with it); only peers whose NAT and `id`'s can link.
    pub fn mesh_for(&mut self, id: PeerId) -> Vec<PeerId> {
        let want = self.cfg.mesh;
        let mut out = Vec::with_capacity(want);
        for reachable_only in [true, false] {
            let n = if reachable_only { self.reachable.items.len() } else { self.all.items.len() };
            // Random probes, then a sweep once the pool is nearly exhausted.
            let mut probes = 0;
            while out.len() < want && probes < 4 * want + 8 {
                probes += 1;
                if n == 0 {
                    break;
                }
                let i = (self.next_rand() % n as u64) as usize;
                let o = if reachable_only { self.reachable.items[i] } else { self.all.items[i] };
                if o != id && !out.contains(&o) && self.linkable(id, o) {
                    out.push(o);
                }
            }
        }
        if out.len() < want {
            for &o in &self.all.items {
                if out.len() >= want {
                    break;
                }
                if o != id && !out.contains(&o) && self.linkable(id, o) {
                    out.push(o);
                }
            }
        }
        out
    }
}

mod reach;
pub use reach::Reach;
use reach::versatility;

#[cfg(test)]
mod tests;
