use super::*;

fn edge(id: &str, region: &str, isp: &str, users: u64) -> EdgeInfo {
    EdgeInfo {
        id: id.into(),
        region: region.into(),
        isp: isp.into(),
        addrs: vec![IpAddr::from([192, 0, 2, id.len() as u8])],
        http: Some(SocketAddr::from(([192, 0, 2, 1], 80))),
        clients: None,
        users,
        // N*c = 100 at 400 kbit/s.
        capacity_kbps: 40_000,
        full: BTreeSet::new(),
    }
}

fn at(region: &str, isp: &str) -> Location {
    Location { region: region.into(), isp: isp.into() }
}

fn ask<'a>(client: Option<&'a Location>, key: u64) -> Ask<'a> {
    Ask { client, channel: "demo", bitrate_kbps: 400, key, want: Want::V4 }
}

/// What `choose` picked: ids best first, and the match level.
struct Picked {
    ids: Vec<String>,
    level: Match,
}

fn pick(edges: &[EdgeInfo], ask: &Ask<'_>, p: &Policy) -> Picked {
    let edges = Edges::new(edges.to_vec());
    let c = choose(&edges, ask, p);
    Picked { ids: c.edges.iter().map(|e| e.id.clone()).collect(), level: c.level }
}

fn ids(c: &Picked) -> Vec<String> {
    c.ids.clone()
}

#[test]
fn match_levels_are_tried_in_order() {
    let edges = vec![edge("a", "north", "tel", 0), edge("b", "south", "tel", 0), edge("c", "north", "uni", 0)];
    let p = Policy { answers: 1, ..Policy::default() };
    let north_tel = at("north", "tel");
    let c = pick(&edges, &ask(Some(&north_tel), 1), &p);
    assert_eq!((ids(&c), c.level), (vec!["a".to_string()], Match::IspRegion));
    // Without `a`: same ISP (b) beats same region (c).
    let c = pick(&edges[1..], &ask(Some(&north_tel), 1), &p);
    assert_eq!((ids(&c), c.level), (vec!["b".to_string()], Match::Isp));
    let c = pick(&edges[2..], &ask(Some(&north_tel), 1), &p);
    assert_eq!(c.level, Match::Region);
    let west_mob = at("west", "mob");
    assert_eq!(pick(&edges, &ask(Some(&west_mob), 1), &p).level, Match::Any);
    assert_eq!(pick(&edges, &ask(None, 1), &p).level, Match::Unknown);
    assert!(pick(&[], &ask(None, 1), &p).ids.is_empty());
}

#[test]
fn the_least_loaded_wins_and_a_loaded_edge_loses_new_clients() {
    let loc = at("north", "tel");
    let edges = vec![edge("a", "north", "tel", 60), edge("b", "north", "tel", 20)];
    for key in 0..100 {
        let c = pick(&edges, &ask(Some(&loc), key), &Policy::default());
        assert_eq!(ids(&c), ["b", "a"], "the second answer is the fallback");
    }
}

#[test]
fn ties_spread_clients_deterministically() {
    let loc = at("north", "tel");
    let edges: Vec<EdgeInfo> =
        ["e1", "e2", "e3", "e4"].iter().enumerate().map(|(i, id)| edge(id, "north", "tel", i as u64 % 2)).collect();
    let p = Policy { answers: 1, ..Policy::default() };
    let mut counts = std::collections::HashMap::new();
    for key in 0..4000u64 {
        let c = pick(&edges, &ask(Some(&loc), mix(key)), &p);
        let again = pick(&edges, &ask(Some(&loc), mix(key)), &p);
        assert_eq!(ids(&c), ids(&again));
        *counts.entry(c.ids[0].clone()).or_insert(0) += 1;
    }
    // Loads 0 and 0.01 are within the band: every edge gets about a quarter.
    for id in ["e1", "e2", "e3", "e4"] {
        let n = counts.get(id).copied().unwrap_or(0);
        assert!((800..1200).contains(&n), "{id}: {n} of 4000 ({counts:?})");
    }
}

#[test]
fn overflowed_edges_are_skipped_unless_all_have_overflowed() {
    let loc = at("north", "tel");
    let mut edges = vec![edge("a", "north", "tel", 0), edge("b", "south", "uni", 90)];
    edges[0].full.insert("demo".into());
    let c = pick(&edges, &ask(Some(&loc), 7), &Policy::default());
    assert_eq!((ids(&c), c.level), (vec!["b".to_string()], Match::Any));
    // Another channel on `a` is fine.
    let other = Ask { channel: "live", ..ask(Some(&loc), 7) };
    assert_eq!(ids(&pick(&edges, &other, &Policy::default())), ["a"]);
    edges[1].full.insert("demo".into());
    assert_eq!(ids(&pick(&edges, &ask(Some(&loc), 7), &Policy::default())), ["a"]);
}

#[test]
fn only_edges_with_the_wanted_address_kind_answer() {
    let mut edges = vec![edge("a", "north", "tel", 0), edge("b", "north", "tel", 50)];
    edges[1].addrs.push("2001:db8::b".parse().expect("v6"));
    edges[0].http = None;
    let loc = at("north", "tel");
    let v6 = Ask { want: Want::V6, ..ask(Some(&loc), 1) };
    assert_eq!(ids(&pick(&edges, &v6, &Policy::default())), ["b"]);
    let http = Ask { want: Want::Http, ..ask(Some(&loc), 1) };
    assert_eq!(ids(&pick(&edges, &http, &Policy::default())), ["b"]);
}

#[test]
fn load_is_clients_over_n_star_c() {
    let e = edge("a", "r", "i", 50);
    assert!((load(&e, 400) - 0.5).abs() < 1e-9);
    assert!((load(&e, 800) - 1.0).abs() < 1e-9);
    let zero = EdgeInfo { capacity_kbps: 0, ..e };
    assert!((load(&zero, 400) - 50.0).abs() < 1e-9);
}

#[test]
fn client_keys_group_subnets() {
    let k = |s: &str| client_key(s.parse().expect("ip"));
    assert_eq!(k("198.51.100.1"), k("198.51.100.200"));
    assert_ne!(k("198.51.100.1"), k("198.51.101.1"));
    assert_eq!(k("2001:db8:0:1::1"), k("2001:db8:0:2::9"));
}
