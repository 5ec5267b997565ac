//! Who can feed whom through NATs ([`Reach`]): picking a parent (the ranking that keeps open
//! peers' slots for the children only they can feed), the swap that frees the edge for a client
//! no peer can feed, and the moves that keep children off their home mates when another home has
//! room.

use super::*;

/// How other peers can reach a client: its NAT's class, and the public address it connects
/// from (peers behind one router reach each other on their LAN, whatever the router does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reach {
    pub nat: NatClass,
    pub site: Option<IpAddr>,
}

impl Reach {
    /// A client anyone can reach (no NAT, or a full-cone one).
    pub const OPEN: Reach = Reach { nat: NatClass::Open, site: None };

    pub fn new(nat: NatClass, site: IpAddr) -> Reach {
        Reach { nat, site: Some(site) }
    }

    /// Whether the two can open a peer link between them.
    pub fn can_link(&self, other: &Reach) -> bool {
        self.same_home(other) || self.nat.can_link(other.nat)
    }

    /// Whether both connect from the same known public address: one home, one LAN.
    pub fn same_home(&self, other: &Reach) -> bool {
        self.site.is_some() && self.site == other.site
    }
}

/// How many kinds of NAT'd children a parent behind `nat` can feed: its slots are worth keeping
/// for the children only it can feed.
pub(super) fn versatility(nat: NatClass) -> u8 {
    match nat {
        NatClass::Unknown | NatClass::Symmetric => 0,
        NatClass::Restricted => 1,
        NatClass::Open => 2,
    }
}

/// How much a parent's slot is worth to others, for a child (lower: take it first): the less
/// versatile its NAT, the fewer children it can serve. A home mate comes first for a child
/// behind a symmetric NAT (only open peers and home mates can feed it) and last for any other:
/// its slots are kept for the home mates that need them, and the trees reach across homes (a
/// home whose peers feed each other has all its eggs behind one router).
pub(super) fn rank(child: &Reach, parent: &Reach) -> u8 {
    let home = child.same_home(parent);
    match (least_versatile_for(child.nat), home) {
        (_, false) => versatility(parent.nat),
        (SYMMETRIC_CHILD, true) => 0,
        (_, true) => HOME_MATE_LAST,
    }
}

/// [`least_versatile_for`] a child behind a symmetric (or unmeasured) NAT.
pub(super) const SYMMETRIC_CHILD: u8 = 2;

/// [`rank`] of a home mate, for a child that can link across homes.
pub(super) const HOME_MATE_LAST: u8 = 3;

/// The lowest [`rank`] a child behind `nat` can hope for from another home.
pub(super) fn least_versatile_for(nat: NatClass) -> u8 {
    match nat {
        NatClass::Open => 0,
        NatClass::Restricted => 1,
        NatClass::Unknown | NatClass::Symmetric => SYMMETRIC_CHILD,
    }
}

/// Push peers considered for moving into the trees when a client nobody can feed needs the edge.
const SWAP_CANDIDATES: usize = 32;

/// Children moved from a home mate to a parent in another home, at most, per tick, and the
/// children looked at for it.
const SPREAD_PER_TICK: usize = 4;

const SPREAD_TRIES: usize = 16;

impl Tracker {
    /// An eligible parent for `id` in substream `s`: interior clients first, never `id` itself, one
    /// of its descendants, `avoid`, or one whose NAT and `id`'s cannot link. A client with a
    /// delay budget gets a parent whose feeds reach it within the budget if one is found among a few; else any parent (a late feed the
    /// mesh repairs beats none), and the edge's admission may take it over when it reports late.
    pub(super) fn pick_parent(&mut self, id: PeerId, s: u16, avoid: Option<PeerId>) -> Option<PeerId> {
        let budget = self.clients.get(&id).and_then(|c| c.budget_ms);
        if let Some(b) = budget
            && let Some(p) = self.pick_from(id, s, avoid, Some(b))
        {
            return Some(p);
        }
        self.pick_from(id, s, avoid, None)
    }

    /// Random start, then a scan (usually O(1), always correct); with a budget, at most
    /// [`BUDGET_PROBES`] candidates per tier, and only parents known to be within it. Among the
    /// parents `id` can link with, the least versatile goes first ([`rank`]): an open parent's
    /// slots are all a symmetric-NAT'd child can use, so a child that could use others takes
    /// those while a few more probes ([`RANK_PROBES`]) find one.
    fn pick_from(&mut self, id: PeerId, s: u16, avoid: Option<PeerId>, budget: Option<u32>) -> Option<PeerId> {
        let me = self.clients.get(&id).map(|c| c.reach)?;
        // A symmetric-NAT'd child may find a home mate (rank 0) among the candidates; any other
        // stops at the least versatile parent it can link with that there is at all.
        let ideal = match least_versatile_for(me.nat) {
            SYMMETRIC_CHILD => 0,
            r => (r..HOME_MATE_LAST)
                .find(|&v| self.by_versatility.get(usize::from(v)).is_some_and(|&n| n > 0))
                .unwrap_or(r),
        };
        let mut best: Option<(u8, usize, PeerId)> = None;
        for tier in 0..2 {
            let n = self.pools[usize::from(s)][tier].items.len();
            if n == 0 {
                continue;
            }
            let start = (self.next_rand() % n as u64) as usize;
            let mut look = if budget.is_some() { n.min(BUDGET_PROBES) } else { n };
            let mut i = 0;
            while i < look {
                let p = self.pools[usize::from(s)][tier].items[(start + i) % n];
                i += 1;
                let in_budget = budget.is_none_or(|b| {
                    self.clients.get(&p).is_some_and(|c| match c.delay_ms {
                        Some(d) => d <= b,
                        None => c.depth[usize::from(s)] == 1,
                    })
                });
                if !(in_budget && p != id && Some(p) != avoid && self.linkable(id, p) && !self.is_ancestor(id, p, s)) {
                    continue;
                }
                let rank = self.clients.get(&p).map_or(u8::MAX, |c| rank(&me, &c.reach));
                if best.is_none_or(|(r, t, _)| (rank, tier) < (r, t)) {
                    best = Some((rank, tier, p));
                }
                if rank <= ideal {
                    return Some(p);
                }
                look = look.min(i + RANK_PROBES);
            }
        }
        best.map(|(_, _, p)| p)
    }

    /// `id` measured its NAT (or we learned where it is): its parents and children that cannot
    /// link with it any more are changed, and its refocused substreams find parents on the next
    /// [`tick`](Self::tick) among those that can.
    pub fn set_reach(&mut self, id: PeerId, reach: Reach) {
        let Some(c) = self.clients.get_mut(&id) else { return };
        if c.reach == reach {
            return;
        }
        self.by_versatility[usize::from(versatility(c.reach.nat))] -= 1;
        self.by_versatility[usize::from(versatility(reach.nat))] += 1;
        c.reach = reach;
        let k = self.k();
        let mut cut: Vec<(PeerId, u16)> = Vec::new();
        for s in 0..k {
            let Some(c) = self.clients.get(&id) else { return };
            if let Feed::Peer(p) = c.feed[usize::from(s)]
                && !self.linkable(id, p)
            {
                cut.push((id, s));
            }
            for &ch in &c.children[usize::from(s)] {
                if !self.linkable(id, ch) {
                    cut.push((ch, s));
                }
            }
        }
        for (ch, s) in cut {
            self.reparent(ch, s);
        }
    }

    /// The client's reach, as the tracker knows it.
    pub fn reach(&self, id: PeerId) -> Option<Reach> {
        self.clients.get(&id).map(|c| c.reach)
    }

    pub(super) fn linkable(&self, a: PeerId, b: PeerId) -> bool {
        match (self.clients.get(&a), self.clients.get(&b)) {
            (Some(x), Some(y)) => x.reach.can_link(&y.reach),
            _ => false,
        }
    }

    /// Frees the edge's direct feed of one push peer for a client no parent can take (LiveSky's
    /// edge is for the peers the overlay cannot serve; with NATs that is not whoever came
    /// first): a push peer that can have a parent it links with in every substream, without
    /// pushing its subtree past K', moves into the trees. `for_id` is never the one moved, nor
    /// chosen as its parent. Returns whether room was made (K substreams).
    pub fn free_edge_room(&mut self, for_id: PeerId) -> bool {
        // A push peer moves only under parents with a slot to spare in every substream: with none
        // there is nothing to try (the common case of a full swarm: one check, not a search).
        if !self.p2p_room() {
            return false;
        }
        let mut push: Vec<PeerId> =
            self.clients.iter().filter(|(id, c)| c.push && **id != for_id).map(|(&id, _)| id).collect();
        // The most versatile first: an open peer finds parents most easily.
        push.sort_by_key(|id| std::cmp::Reverse(self.clients.get(id).map_or(0, |c| versatility(c.reach.nat))));
        for q in push.into_iter().take(SWAP_CANDIDATES) {
            if let Some(parents) = self.plan_parents(q, for_id) {
                if let Some(c) = self.clients.get_mut(&q) {
                    c.push = false;
                }
                self.push -= 1;
                for (s, p) in parents.into_iter().enumerate() {
                    self.set_feed(q, s as u16, Feed::Peer(p));
                }
                self.refresh(q);
                self.stats.swaps += 1;
                return true;
            }
        }
        false
    }

    /// A parent in every substream for push peer `q` (none of them `not`), each with a slot to
    /// spare for it and shallow enough that q's subtree stays within K'; None if any is missing.
    fn plan_parents(&mut self, q: PeerId, not: PeerId) -> Option<Vec<PeerId>> {
        let mut taken: Vec<PeerId> = Vec::new();
        let mut plan = Vec::with_capacity(usize::from(self.k()));
        for s in 0..self.k() {
            let below = self.height(q, s);
            let mut found = None;
            for tier in 0..2 {
                let n = self.pools[usize::from(s)][tier].items.len();
                let start = if n == 0 { 0 } else { (self.next_rand() % n as u64) as usize };
                for i in 0..n.min(BUDGET_PROBES) {
                    let p = self.pools[usize::from(s)][tier].items[(start + i) % n];
                    let Some(pc) = self.clients.get(&p) else { continue };
                    let spare =
                        usize::from(pc.slots.saturating_sub(pc.used)) > taken.iter().filter(|&&t| t == p).count();
                    if p != q
                        && p != not
                        && spare
                        && pc.depth[usize::from(s)] + 1 + below <= self.cfg.k_prime
                        && self.linkable(q, p)
                        && !self.is_ancestor(q, p, s)
                    {
                        found = Some(p);
                        break;
                    }
                }
                if found.is_some() {
                    break;
                }
            }
            let p = found?;
            taken.push(p);
            plan.push(p);
        }
        Some(plan)
    }

    /// Levels below `id` in substream `s` (0 for a leaf), bounded by K'.
    fn height(&self, id: PeerId, s: u16) -> u8 {
        fn walk(t: &Tracker, id: PeerId, s: usize, left: u8) -> u8 {
            let Some(c) = t.clients.get(&id) else { return 0 };
            if left == 0 {
                return 0;
            }
            c.children[s].iter().map(|&ch| 1 + walk(t, ch, s, left - 1)).max().unwrap_or(0)
        }
        walk(self, id, usize::from(s), self.cfg.k_prime)
    }

    /// Children that can link across homes but hang under a home mate (no other parent had room
    /// when they came) move to a parent in another home that has room now, a few per tick: the
    /// mate's slots are kept for the home mates only it can feed ([`rank`]).
    pub(super) fn spread_homes(&mut self) {
        let movers: Vec<(PeerId, u16, PeerId)> = self
            .clients
            .iter()
            .filter(|(_, c)| !c.push && least_versatile_for(c.reach.nat) != SYMMETRIC_CHILD)
            .flat_map(|(&id, c)| {
                c.feed.iter().enumerate().filter_map(move |(s, f)| match f {
                    Feed::Peer(p) => Some((id, s as u16, *p)),
                    _ => None,
                })
            })
            .filter(|&(id, _, p)| self.home_mates(id, p))
            .collect();
        if movers.is_empty() {
            return;
        }
        // From a random one on: movers that cannot move do not hold up the others.
        let start = (self.next_rand() % movers.len() as u64) as usize;
        let mut moved = 0;
        for i in 0..movers.len().min(SPREAD_TRIES) {
            if moved == SPREAD_PER_TICK {
                break;
            }
            let (id, s, mate) = movers[(start + i) % movers.len()];
            if let Some(q) = self.pick_parent(id, s, Some(mate))
                && !self.home_mates(id, q)
            {
                self.set_feed(id, s, Feed::Peer(q));
                moved += 1;
            } else if self.exchange(id, s, mate, true)
                || (!self.feeds_another_home(mate) && self.exchange(id, s, mate, false))
            {
                moved += 1;
            }
        }
    }

    /// Every parent of another home is full: `c` (fed by its home mate `p` in `s`) trades places
    /// with a child `d` of a parent `q` of another home that `p` can feed instead, when neither
    /// move makes a cycle or a tree deeper than K'. Both then hang under another home — unless
    /// `strict` is off: then `q` may be `c`'s home mate, and only `p` (which fed no other home)
    /// gains a child from another home.
    fn exchange(&mut self, c: PeerId, s: u16, p: PeerId, strict: bool) -> bool {
        let si = usize::from(s);
        let (hc, kp) = (self.height(c, s), self.cfg.k_prime);
        let Some(dp) = self.clients.get(&p).map(|x| x.depth[si]) else { return false };
        let found = self.clients.iter().find_map(|(&q, qc)| {
            if q == p || q == c || qc.depth[si] == 0 || qc.depth[si] + 1 + hc > kp {
                return None;
            }
            if (strict && self.home_mates(c, q)) || !self.linkable(c, q) || self.is_ancestor(c, q, s) {
                return None;
            }
            let d = qc.children[si].iter().copied().find(|&d| {
                d != c
                    && !self.home_mates(d, p)
                    && self.linkable(d, p)
                    && !self.is_ancestor(d, p, s)
                    && dp + 1 + self.height(d, s) <= kp
            })?;
            Some((q, d))
        });
        let Some((q, d)) = found else { return false };
        self.set_feed(c, s, Feed::Peer(q));
        self.set_feed(d, s, Feed::Peer(p));
        true
    }

    /// Whether `p` feeds anyone outside its home.
    fn feeds_another_home(&self, p: PeerId) -> bool {
        self.clients.get(&p).is_some_and(|c| c.children.iter().flatten().any(|&ch| !self.home_mates(p, ch)))
    }

    pub(super) fn home_mates(&self, a: PeerId, b: PeerId) -> bool {
        match (self.clients.get(&a), self.clients.get(&b)) {
            (Some(x), Some(y)) => x.reach.same_home(&y.reach),
            _ => false,
        }
    }
}
