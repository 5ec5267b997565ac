use std::collections::HashSet;

use super::*;

const OPEN: Reach = Reach::OPEN;

fn tracker(k: u16, k_prime: u8, edge_substreams: usize) -> Tracker {
    Tracker::new(TreeConfig { substreams: k, k_prime, mesh: 8, edge_substreams, seed: 7 })
}

/// Every structural promise of the tracker, checked from scratch.
fn check_invariants(t: &Tracker) {
    let k = t.cfg.substreams;
    let mut edge_fed = 0;
    for (&id, c) in &t.clients {
        let mut children_total = 0;
        for s in 0..k {
            let si = usize::from(s);
            // Depth follows the feed and stays within K'; walking up reaches the edge (no cycle).
            let expect = match c.feed[si] {
                Feed::None => 0,
                Feed::Edge => {
                    edge_fed += 1;
                    1
                }
                Feed::Peer(p) => {
                    let pc = &t.clients[&p];
                    assert!(pc.children[si].contains(&id), "{p} lists {id} as child in {s}");
                    assert!(pc.reachable, "unreachable {p} feeds {id}");
                    assert!(pc.reach.can_link(&c.reach), "{p} ({:?}) cannot reach {id} ({:?})", pc.reach, c.reach);
                    pc.depth[si] + 1
                }
            };
            assert_eq!(c.depth[si], expect, "depth of {id} in {s}");
            assert!(c.depth[si] <= t.cfg.k_prime, "depth {} > K'", c.depth[si]);
            let mut seen = HashSet::new();
            let mut cur = id;
            while let Feed::Peer(p) = t.clients[&cur].feed[si] {
                assert!(seen.insert(cur), "cycle through {cur} in substream {s}");
                cur = p;
            }
            for &ch in &c.children[si] {
                assert_eq!(t.clients[&ch].feed[si], Feed::Peer(id));
            }
            children_total += c.children[si].len();
        }
        assert_eq!(usize::from(c.used), children_total, "slots used by {id}");
        assert!(c.used <= c.slots, "{id} over its upload budget");
    }
    assert_eq!(t.edge_fed, edge_fed);
    // The incremental counters agree with a recount.
    let st = t.stats();
    assert_eq!(st.push, t.clients.values().filter(|c| c.push).count());
    assert_eq!(
        st.unfed,
        t.clients.values().map(|c| c.feed.iter().filter(|f| **f == Feed::None).count()).sum::<usize>()
    );
}

#[test]
fn p2p_capacity_is_the_push_peers_upload_budget_within_depth_two() {
    // K = 4; push peers upload 1.5 × the stream = 6 substream slots; K' = 2.
    let mut t = tracker(4, 2, 10 * 4);
    for id in (0..10).map(PeerId) {
        t.add_push(id, 6, None, OPEN);
    }
    let placed = (100..200).map(PeerId).take_while(|&id| t.add_p2p(id, 6, None, OPEN)).count();
    assert_eq!(placed, 15, "10 push peers × 6 slots / 4 substreams");
    assert!(!t.p2p_room());
    check_invariants(&t);
    for id in (100..115).map(PeerId) {
        let feeds = t.feeds(id).unwrap();
        assert!(feeds.iter().all(|f| matches!(f, Feed::Peer(p) if p.0 < 10)), "{feeds:?}");
        assert!((0..4).all(|s| t.depth(id, s) == 2));
    }
    // A failed placement leaves no trace.
    assert!(!t.contains(PeerId(115)) && t.stats().clients == 25);
}

#[test]
fn deeper_trees_use_p2p_peers_as_parents_and_spread_interior_roles() {
    let mut t = tracker(4, 3, 4 * 4);
    for id in (0..4).map(PeerId) {
        t.add_push(id, 6, None, OPEN);
    }
    let placed = (100..200).map(PeerId).take_while(|&id| t.add_p2p(id, 6, None, OPEN)).count();
    // Depth 2 can hold 6 clients; each of them adds 6 slots for depth 3.
    assert!(placed >= 12, "placed {placed}");
    check_invariants(&t);
    let level2: Vec<PeerId> =
        (100..100 + placed as u64).map(PeerId).filter(|&id| (0..4).any(|s| t.depth(id, s) == 2)).collect();
    let forwarding = level2.iter().filter(|&&id| (0..4).any(|s| !t.children(id, s).is_empty())).count();
    assert!(
        forwarding * 10 >= level2.len() * 8,
        "forwarding spread over depth-2 clients: {forwarding}/{}",
        level2.len()
    );
    // Interior preference: most of what P2P peers forward is their interior substream.
    let (mut interior_edges, mut all_edges) = (0, 0);
    for &id in &level2 {
        for s in 0..4 {
            let n = t.children(id, s).len();
            all_edges += n;
            if s == t.clients[&id].interior {
                interior_edges += n;
            }
        }
    }
    assert!(interior_edges * 2 > all_edges, "{interior_edges} of {all_edges} forwarded substreams are interior");
}

#[test]
fn orphans_get_new_parents_or_the_edge_and_come_back_into_trees() {
    // Three push peers with 4 slots each feed three P2P clients exactly (K = 4): no spare slot.
    // The edge can feed 10 substreams: 12 for push peers would not fit after a fourth joins.
    let mut t = tracker(4, 2, 3 * 4);
    for id in (0..3).map(PeerId) {
        t.add_push(id, 4, None, OPEN);
    }
    for id in (100..103).map(PeerId) {
        assert!(t.add_p2p(id, 0, None, OPEN));
    }
    assert!(!t.p2p_room());
    let orphans: usize = (0..4).map(|s| t.children(PeerId(0), s).len()).sum();
    assert_eq!(orphans, 4);
    t.cfg.edge_substreams = 10;
    t.drain_changes();
    // Push peer 0 leaves: the edge has room for two of its four orphaned substreams.
    t.remove(PeerId(0));
    check_invariants(&t);
    let st = t.stats();
    assert_eq!((st.refocus_total, st.unfed, st.edge_substreams), (2, 2, 10), "{st:?}");
    let changes = t.drain_changes();
    assert_eq!(changes.iter().filter(|c| c.feed == Feed::Edge).count(), 2, "{changes:?}");
    // A new push peer appears: the tick puts everyone back into trees and frees the edge.
    t.cfg.edge_substreams = 12;
    t.add_push(PeerId(50), 4, None, OPEN);
    t.tick();
    check_invariants(&t);
    let st = t.stats();
    assert_eq!(st.unfed, 0, "{st:?}");
    assert_eq!(st.edge_substreams, 3 * 4, "only push peers are fed by the edge again: {st:?}");
}

#[test]
fn late_parent_is_replaced_and_unreachable_clients_feed_nobody() {
    let mut t = tracker(2, 2, 100);
    for id in (0..3).map(PeerId) {
        t.add_push(id, 4, None, OPEN);
    }
    assert!(t.add_p2p(PeerId(10), 0, None, OPEN));
    let Feed::Peer(old) = t.feeds(PeerId(10)).unwrap()[0] else { panic!() };
    // LiveSky §3.2: the edge feeds it until the overlay adapts, then another parent takes over.
    t.reparent(PeerId(10), 0);
    assert_eq!(t.feeds(PeerId(10)).unwrap()[0], Feed::Edge);
    assert_eq!(t.stats().refocus_total, 1);
    t.tick();
    let Feed::Peer(new) = t.feeds(PeerId(10)).unwrap()[0] else { panic!("{:?}", t.feeds(PeerId(10))) };
    assert_ne!(old, new, "the late parent is not picked again");
    t.mark_unreachable(new);
    check_invariants(&t);
    assert!(!matches!(t.feeds(PeerId(10)).unwrap()[0], Feed::Peer(p) if p == new));
    let mut placed = 0;
    for id in (20..30).map(PeerId) {
        if t.add_p2p(id, 0, None, OPEN) {
            placed += 1;
            assert!(t.feeds(id).unwrap().iter().all(|f| *f != Feed::Peer(new)), "unreachable parent chosen");
        }
    }
    assert!(placed >= 2);
    check_invariants(&t);
}

#[test]
fn random_churn_never_breaks_the_trees() {
    let mut t = tracker(4, 3, 40);
    let mut rng = proto::rng::SplitMix64::new(12345);
    let mut next = || rng.next_u64();
    let mut live: Vec<PeerId> = Vec::new();
    for step in 0..3000u64 {
        match next() % 10 {
            0..=4 => {
                let id = PeerId(step + 1000);
                let slots = (next() % 9) as u16;
                if t.stats().push < 6 && next() % 3 == 0 {
                    t.add_push(id, slots, None, OPEN);
                    live.push(id);
                } else if t.add_p2p(id, slots, None, OPEN) {
                    live.push(id);
                }
            }
            5..=7 if !live.is_empty() => {
                let i = (next() % live.len() as u64) as usize;
                t.remove(live.swap_remove(i));
            }
            8 if !live.is_empty() => {
                let id = live[(next() % live.len() as u64) as usize];
                t.reparent(id, (next() % 4) as u16);
            }
            9 if !live.is_empty() => {
                if next() % 4 == 0 {
                    let id = live[(next() % live.len() as u64) as usize];
                    t.mark_unreachable(id);
                } else {
                    t.tick();
                }
            }
            _ => {}
        }
        check_invariants(&t);
    }
    assert!(t.stats().reparent_total > 100);
}

#[test]
fn mesh_neighbours_are_distinct_others_reachable_first() {
    let mut t = tracker(4, 2, 1000);
    for id in (0..30).map(PeerId) {
        t.add_push(id, 6, None, OPEN);
    }
    for id in (0..10).map(PeerId) {
        t.mark_unreachable(id);
    }
    let m = t.mesh_for(PeerId(5));
    assert_eq!(m.len(), 8);
    assert!(!m.contains(&PeerId(5)));
    assert_eq!(m.iter().collect::<HashSet<_>>().len(), 8);
    assert!(m.iter().all(|&o| o.0 >= 10), "reachable first: {m:?}");
    let mut small = tracker(4, 2, 100);
    for id in (0..4).map(PeerId) {
        small.add_push(id, 6, None, OPEN);
    }
    assert_eq!(small.mesh_for(PeerId(0)).len(), 3, "everyone else when there are fewer than M");
}

/// Issue 22: a client with a delay budget gets parents whose feeds reach them within it —
/// edge-fed ones, or ones that reported a small delay — not a late, deep one, while another
/// client without a budget may have any; with no parent within budget it still gets one.
#[test]
fn a_client_with_a_delay_budget_gets_parents_within_it() {
    let mut t = tracker(1, 4, 2);
    t.add_push(PeerId(1), 1, None, OPEN);
    // 2 hangs under 1; 3 under 2, and 3 reports its feed 4 s behind ingest.
    assert!(t.add_p2p(PeerId(2), 8, None, OPEN));
    t.set_delay(PeerId(2), Some(700));
    assert!(t.add_p2p(PeerId(3), 8, None, OPEN));
    t.set_delay(PeerId(3), Some(4_000));
    check_invariants(&t);
    // Every pick for a 1.5 s budget lands on 2 (reported in budget) or 1 (edge-fed), never 3.
    for id in 10..40 {
        assert!(t.add_p2p(PeerId(id), 0, Some(1_500), OPEN));
        let Some(&[Feed::Peer(p)]) = t.feeds(PeerId(id)) else { panic!("{id} has no parent") };
        assert!(p == PeerId(2) || p == PeerId(1), "{id} under {p}");
        t.remove(PeerId(id));
    }
    // Budgeted clients fill 2; the next still gets a parent, 3: late beats nothing.
    for id in 40..47 {
        assert!(t.add_p2p(PeerId(id), 0, Some(1_500), OPEN));
        assert_eq!(t.feeds(PeerId(id)), Some(&[Feed::Peer(PeerId(2))][..]));
    }
    assert!(t.add_p2p(PeerId(50), 0, Some(1_500), OPEN));
    assert_eq!(t.feeds(PeerId(50)), Some(&[Feed::Peer(PeerId(3))][..]));
    check_invariants(&t);
    assert_eq!((t.delay(PeerId(50)), t.budget(PeerId(50))), (None, Some(1_500)), "budgeted, not reported");
    // The edge takes a client over when it has room for all its substreams.
    assert!(t.feed_directly(PeerId(50)));
    assert_eq!(t.feeds(PeerId(50)), Some(&[Feed::Edge][..]));
    check_invariants(&t);
}

fn behind(nat: NatClass, home: u8) -> Reach {
    Reach::new(nat, IpAddr::from([198, 51, 100, home]))
}

#[test]
fn children_get_parents_their_nats_can_link_with() {
    use NatClass::*;
    // K = 2; the edge feeds 3 push peers (one per class) and nothing more.
    let mut t = tracker(2, 3, 3 * 2);
    t.add_push(PeerId(1), 8, None, behind(Open, 1));
    t.add_push(PeerId(2), 8, None, behind(Restricted, 2));
    t.add_push(PeerId(3), 8, None, behind(Symmetric, 3));
    let mut rng = proto::rng::SplitMix64::new(5);
    for id in 10..40 {
        let nat = [Open, Restricted, Symmetric, Unknown][(rng.next_u64() % 4) as usize];
        if !t.add_p2p(PeerId(id), 2, None, behind(nat, id as u8)) {
            t.add_waiting(PeerId(id), 2, None, behind(nat, id as u8));
        }
        check_invariants(&t);
    }
    // A symmetric child's parents are all open; restricted parents have only open or restricted
    // children; an unmeasured client counts as symmetric.
    // Open children fit anywhere (the restricted and symmetric push peers have room); the
    // others wait for open parents' slots.
    let placed = |id: u64| t.feeds(PeerId(id)).unwrap().iter().all(|f| matches!(f, Feed::Peer(_)));
    let open: Vec<u64> = (10..40).filter(|&id| t.reach(PeerId(id)).unwrap().nat == Open).collect();
    assert!(open.len() >= 5 && open.iter().all(|&id| placed(id)), "open clients placed: {open:?}");
    assert!((10..40).filter(|&id| placed(id)).count() >= 12);
    for id in 10..40 {
        let me = t.reach(PeerId(id)).unwrap();
        for f in t.feeds(PeerId(id)).unwrap() {
            if let Feed::Peer(p) = f {
                let parent = t.reach(*p).unwrap().nat;
                if matches!(me.nat, Symmetric | Unknown) {
                    assert_eq!(parent, Open, "{id} ({}) fed by {p} ({parent})", me.nat);
                }
                if parent == Symmetric {
                    assert_eq!(me.nat, Open, "symmetric {p} feeds {id} ({})", me.nat);
                }
            }
        }
        for o in t.mesh_for(PeerId(id)) {
            assert!(me.can_link(&t.reach(o).unwrap()), "mesh neighbour {o} of {id}");
        }
    }
}

#[test]
fn peers_behind_one_router_link_whatever_their_nat() {
    use NatClass::*;
    let mut t = tracker(1, 3, 1);
    t.add_push(PeerId(1), 4, None, behind(Symmetric, 9));
    // Same public address: their LAN joins them.
    assert!(t.add_p2p(PeerId(2), 0, None, behind(Symmetric, 9)));
    assert_eq!(t.feeds(PeerId(2)).unwrap(), &[Feed::Peer(PeerId(1))]);
    // Another home behind a symmetric NAT cannot, and the edge is full: it waits.
    assert!(!t.add_p2p(PeerId(3), 0, None, behind(Symmetric, 10)));
    check_invariants(&t);
}

#[test]
fn a_measured_nat_moves_feeds_that_cannot_work() {
    use NatClass::*;
    // One tree; the edge feeds a restricted push peer and has room for one more substream.
    let mut t = tracker(1, 3, 2);
    t.add_push(PeerId(1), 4, None, behind(Restricted, 1));
    // Joined before measuring, it was taken as restricted-compatible only if measured: an
    // unmeasured client counts as symmetric, so it is not given the restricted parent.
    assert!(!t.add_p2p(PeerId(2), 0, None, behind(Unknown, 2)));
    t.add_waiting(PeerId(2), 0, None, behind(Unknown, 2));
    assert_eq!(t.feeds(PeerId(2)).unwrap(), &[Feed::Edge], "the edge feeds it meanwhile");
    // Its measurement says restricted: the next tick gives it the restricted parent.
    t.set_reach(PeerId(2), behind(Restricted, 2));
    t.tick();
    assert_eq!(t.feeds(PeerId(2)).unwrap(), &[Feed::Peer(PeerId(1))]);
    check_invariants(&t);
    // A child measured as restricted turns out symmetric: it is moved off the restricted
    // parent at once (to the edge, which has room again).
    t.set_reach(PeerId(2), behind(Symmetric, 2));
    assert_eq!(t.feeds(PeerId(2)).unwrap(), &[Feed::Edge]);
    check_invariants(&t);
}

#[test]
fn open_parents_are_kept_for_the_children_only_they_can_feed() {
    use NatClass::*;
    for seed in 0..20 {
        let mut t = Tracker::new(TreeConfig { substreams: 1, k_prime: 3, mesh: 4, edge_substreams: 3, seed });
        t.add_push(PeerId(1), 4, None, behind(Open, 1));
        t.add_push(PeerId(2), 4, None, behind(Restricted, 2));
        t.add_push(PeerId(3), 4, None, behind(Symmetric, 3));
        // An open child takes the symmetric parent, a restricted one the restricted parent.
        assert!(t.add_p2p(PeerId(10), 0, None, behind(Open, 10)));
        assert_eq!(t.feeds(PeerId(10)).unwrap(), &[Feed::Peer(PeerId(3))], "seed {seed}");
        assert!(t.add_p2p(PeerId(11), 0, None, behind(Restricted, 11)));
        assert_eq!(t.feeds(PeerId(11)).unwrap(), &[Feed::Peer(PeerId(2))], "seed {seed}");
        assert!(t.add_p2p(PeerId(12), 0, None, behind(Symmetric, 12)));
        assert_eq!(t.feeds(PeerId(12)).unwrap(), &[Feed::Peer(PeerId(1))], "seed {seed}");
        check_invariants(&t);
    }
}

#[test]
fn a_push_peer_peers_can_feed_makes_room_for_one_they_cannot() {
    use NatClass::*;
    // K = 2, K' = 3; the edge feeds two push peers and nothing more: a symmetric one and a
    // restricted one, which cannot hang under each other.
    let mut t = tracker(2, 3, 2 * 2);
    t.add_push(PeerId(1), 4, None, behind(Symmetric, 1));
    t.add_push(PeerId(2), 4, None, behind(Restricted, 2));
    // A symmetric child links only with open peers: none, and the edge is full; nobody can move.
    assert!(!t.add_p2p(PeerId(3), 0, None, behind(Symmetric, 3)));
    assert!(!t.free_edge_room(PeerId(3)));
    // With a second restricted push peer one of the two hangs under the other, and the edge
    // feeds the symmetric newcomer in its place.
    let mut t = tracker(2, 3, 3 * 2);
    t.add_push(PeerId(1), 4, None, behind(Symmetric, 1));
    t.add_push(PeerId(2), 4, None, behind(Restricted, 2));
    t.add_push(PeerId(4), 4, None, behind(Restricted, 4));
    t.add_waiting(PeerId(3), 0, None, behind(Symmetric, 3));
    assert_eq!(t.feeds(PeerId(3)).unwrap(), &[Feed::Edge, Feed::Edge]);
    assert_eq!(t.stats().swaps, 1);
    let (moved, stays) = if t.is_push(PeerId(2)) { (4, 2) } else { (2, 4) };
    assert!(t.is_push(PeerId(1)) && !t.is_push(PeerId(moved)));
    assert_eq!(t.feeds(PeerId(moved)).unwrap(), &[Feed::Peer(PeerId(stays)), Feed::Peer(PeerId(stays))]);
    check_invariants(&t);
}

#[test]
fn children_move_from_a_home_mate_to_another_home_when_it_has_room() {
    use NatClass::*;
    let mut t = tracker(1, 3, 1);
    t.add_push(PeerId(1), 2, None, behind(Restricted, 1));
    // Its home mate hangs under it: nobody else has room.
    assert!(t.add_p2p(PeerId(2), 0, None, behind(Restricted, 1)));
    assert_eq!(t.feeds(PeerId(2)).unwrap(), &[Feed::Peer(PeerId(1))]);
    // A restricted peer from another home, with room, joins under the push peer too.
    assert!(t.add_p2p(PeerId(3), 2, None, behind(Restricted, 3)));
    assert_eq!(t.feeds(PeerId(3)).unwrap(), &[Feed::Peer(PeerId(1))]);
    // The next tick moves the home mate under it, and the push peer's slot is free again.
    t.tick();
    assert_eq!(t.feeds(PeerId(2)).unwrap(), &[Feed::Peer(PeerId(3))]);
    assert_eq!(t.slots(PeerId(1)), Some((1, 2)));
    // A symmetric child stays with its home mate (only it or open peers can feed it).
    let mut t = tracker(1, 3, 1);
    t.add_push(PeerId(1), 2, None, behind(Restricted, 1));
    assert!(t.add_p2p(PeerId(3), 2, None, behind(Open, 3)));
    t.add_p2p(PeerId(2), 0, None, behind(Symmetric, 1));
    let before = t.feeds(PeerId(2)).unwrap().to_vec();
    t.tick();
    assert_eq!(t.feeds(PeerId(2)).unwrap(), before.as_slice());
    check_invariants(&t);
}

#[test]
fn a_child_under_its_home_mate_trades_places_with_one_under_another_home() {
    use NatClass::*;
    // One tree, no edge room beyond the two push peers; each has one slot.
    let mut t = tracker(1, 3, 2);
    t.add_push(PeerId(1), 1, None, behind(Restricted, 1));
    t.add_push(PeerId(2), 1, None, behind(Restricted, 2));
    assert!(t.add_p2p(PeerId(10), 0, None, behind(Restricted, 1)));
    assert!(t.add_p2p(PeerId(20), 0, None, behind(Restricted, 2)));
    // Each under its home mate (as when each joined while only its mate had room).
    t.set_feed(PeerId(10), 0, Feed::None);
    t.set_feed(PeerId(20), 0, Feed::None);
    t.set_feed(PeerId(10), 0, Feed::Peer(PeerId(1)));
    t.set_feed(PeerId(20), 0, Feed::Peer(PeerId(2)));
    check_invariants(&t);
    // Every parent is full; the tick trades them across homes.
    t.tick();
    assert_eq!(t.feeds(PeerId(10)).unwrap(), &[Feed::Peer(PeerId(2))]);
    assert_eq!(t.feeds(PeerId(20)).unwrap(), &[Feed::Peer(PeerId(1))]);
    check_invariants(&t);
}

#[test]
fn a_parent_that_feeds_only_its_home_gets_a_child_from_another() {
    use NatClass::*;
    // Testbed run: h3's push peer fed only its home mates while h5's peer hung under another h3
    // peer. One tree: 1 (home 3, push) feeds 2 and 3 (home 3); 2 feeds 4 (home 5).
    let mut t = tracker(1, 3, 1);
    t.add_push(PeerId(1), 2, None, behind(Restricted, 3));
    for (id, slots) in [(2, 2), (3, 0), (4, 0)] {
        t.add_waiting(PeerId(id), slots, None, behind(Restricted, if id == 4 { 5 } else { 3 }));
    }
    for (id, parent) in [(2, 1), (3, 1), (4, 2)] {
        t.set_feed(PeerId(id), 0, Feed::None);
        t.set_feed(PeerId(id), 0, Feed::Peer(PeerId(parent)));
    }
    check_invariants(&t);
    t.tick();
    // 1 feeds home 5 now; 3 went under 2 in 4's place.
    assert!(t.children(PeerId(1), 0).contains(&PeerId(4)), "{:?}", t.children(PeerId(1), 0));
    assert_eq!(t.feeds(PeerId(3)).unwrap(), &[Feed::Peer(PeerId(2))]);
    check_invariants(&t);
}
