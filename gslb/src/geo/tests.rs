use super::*;

fn db(text: &str) -> GeoDb {
    match GeoDb::parse(text, "test.csv") {
        Ok(db) => db,
        Err(e) => panic!("{e}"),
    }
}

fn at(db: &GeoDb, ip: &str) -> Option<(String, String)> {
    let ip: IpAddr = ip.parse().expect("test address");
    db.lookup(ip).map(|l| (l.region.clone(), l.isp.clone()))
}

fn loc(r: &str, i: &str) -> Option<(String, String)> {
    Some((r.into(), i.into()))
}

#[test]
fn the_longest_prefix_wins_and_the_container_resumes_after_it() {
    let db = db("10.0.0.0/8,wide,a\n10.1.0.0/16,mid,b\n10.1.2.0/24,narrow,c\n# comment\n\n192.0.2.7,host,d\n");
    assert_eq!(at(&db, "10.0.0.1"), loc("wide", "a"));
    assert_eq!(at(&db, "10.1.0.0"), loc("mid", "b"));
    assert_eq!(at(&db, "10.1.2.255"), loc("narrow", "c"));
    assert_eq!(at(&db, "10.1.3.0"), loc("mid", "b"));
    assert_eq!(at(&db, "10.2.0.0"), loc("wide", "a"));
    assert_eq!(at(&db, "10.255.255.255"), loc("wide", "a"));
    assert_eq!(at(&db, "11.0.0.0"), None);
    assert_eq!(at(&db, "9.255.255.255"), None);
    assert_eq!(at(&db, "192.0.2.7"), loc("host", "d"));
    assert_eq!(at(&db, "192.0.2.8"), None);
    assert_eq!(db.len(), 4);
}

#[test]
fn ipv6_and_mapped_ipv4_and_the_default_route() {
    let db = db("0.0.0.0/0,any,x\n2001:db8::/32,v6,y\n2001:db8:1::/48,v6b,z\n::/0,any6,w\n");
    assert_eq!(at(&db, "203.0.113.9"), loc("any", "x"));
    assert_eq!(at(&db, "255.255.255.255"), loc("any", "x"));
    assert_eq!(at(&db, "2001:db8::1"), loc("v6", "y"));
    assert_eq!(at(&db, "2001:db8:1::1"), loc("v6b", "z"));
    assert_eq!(at(&db, "2001:db8:2::1"), loc("v6", "y"));
    assert_eq!(at(&db, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), loc("any6", "w"));
    assert_eq!(at(&db, "::ffff:198.51.100.1"), loc("any", "x"));
}

#[test]
fn a_later_duplicate_wins_and_same_place_pieces_merge() {
    let db = db("10.0.0.0/8,a,x\n10.0.0.0/8,b,y\n10.5.0.0/16,b,y\n");
    assert_eq!(at(&db, "10.0.0.0"), loc("b", "y"));
    assert_eq!(at(&db, "10.5.0.0"), loc("b", "y"));
    assert_eq!(db.ranges(), 1);
}

#[test]
fn bad_lines_are_refused_with_their_number() {
    for (text, want) in [
        ("10.0.0.0/8,a\n", "three fields"),
        ("10.0.0.0/8,a,b,c\n", "three fields"),
        ("ok.0.0.0/8,a,b\n", "not an IP address"),
        ("10.0.0.0/33,a,b\n", "prefix length"),
        ("10.1.2.3/16,a,b\n", "host bits"),
        ("10.0.0.0/8,,b\n", "empty region"),
    ] {
        let text = format!("192.0.2.0/24,r,i\n{text}");
        match GeoDb::parse(&text, "geo.csv") {
            Ok(_) => panic!("accepted {text:?}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.starts_with("geo.csv:2:") && msg.contains(want), "{msg}");
            }
        }
    }
}

/// Random nested prefixes against a brute-force longest match, seeded.
#[test]
fn flattening_matches_brute_force_longest_prefix() {
    let mut s = 0x5eed_u64;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for _round in 0..20 {
        let mut prefixes = Vec::new();
        let mut text = String::new();
        for i in 0..300 {
            // A small address space (10.0.0.0/16) so prefixes nest often.
            let len = 16 + (rnd() % 17) as u8;
            let host = if len == 32 { 0 } else { (1u32 << (32 - len)) - 1 };
            let net = (0x0a00_0000 | (rnd() as u32 & 0xffff)) & !host;
            text.push_str(&format!("{}/{len},r{i},i\n", std::net::Ipv4Addr::from(net)));
            prefixes.push((net, len, i));
        }
        let db = db(&text);
        for _ in 0..2000 {
            let ip = 0x0a00_0000 | (rnd() as u32 & 0x1ffff);
            let want = prefixes
                .iter()
                .filter(|&&(net, len, _)| ip.range(len).0 == net)
                // Longest; among equals the last line.
                .max_by_key(|&&(_, len, i)| (len, i))
                .map(|&(_, _, i)| format!("r{i}"));
            let got = db.lookup(IpAddr::V4(ip.into())).map(|l| l.region.clone());
            assert_eq!(got, want, "{}", std::net::Ipv4Addr::from(ip));
        }
    }
}
