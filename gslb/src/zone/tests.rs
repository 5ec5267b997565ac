use std::collections::BTreeSet;
use std::net::SocketAddr;

use super::*;
use crate::choose::EdgeInfo;
use crate::settings::GslbSettings;

fn settings(wildcard: bool) -> GslbSettings {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut s = GslbSettings::new("Live.Example", any, any, "http://127.0.0.1:1".into(), "geo.csv".into());
    s.wildcard = wildcard;
    s.ns_addrs = vec!["192.0.2.53".parse().expect("ip")];
    s
}

fn edge(id: &str, region: &str, ip: &str) -> EdgeInfo {
    EdgeInfo {
        id: id.into(),
        region: region.into(),
        isp: "tel".into(),
        addrs: vec![ip.parse().expect("ip")],
        http: None,
        clients: None,
        users: 0,
        capacity_kbps: 10_000,
        full: BTreeSet::new(),
    }
}

fn view() -> View {
    View {
        edges: Edges::new(vec![edge("n", "north", "192.0.2.1"), edge("s", "south", "192.0.2.2")]),
        channels: HashMap::from([("demo".to_string(), 500)]),
    }
}

fn ask(zone: &Zone, name: &str, t: RecordType, view: &View, loc: Option<&Location>) -> Reply {
    let name = Name::from_ascii(name).expect("name");
    zone.answer(&name, t, DNSClass::IN, view, &Client { location: loc, key: 1 })
}

fn ips(r: &Reply) -> Vec<String> {
    r.answers.iter().map(|rec| rec.data.to_string()).collect()
}

#[test]
fn a_channel_gets_the_edge_of_the_clients_region_and_keeps_its_spelling() {
    let z = Zone::new(&settings(false)).expect("zone");
    let south = Location { region: "south".into(), isp: "tel".into() };
    let r = ask(&z, "DeMo.live.example.", RecordType::A, &view(), Some(&south));
    assert_eq!(r.rcode, ResponseCode::NoError);
    assert_eq!(ips(&r), ["192.0.2.2"]);
    assert_eq!(r.answers[0].name.to_string(), "DeMo.live.example.");
    assert_eq!(r.answers[0].ttl, 20);
    assert_eq!(r.chosen, Some(("s".to_string(), Match::IspRegion)));
    // Unknown location: any edge, both offered.
    assert_eq!(ask(&z, "demo.live.example.", RecordType::A, &view(), None).answers.len(), 2);
}

#[test]
fn the_apex_has_soa_and_ns_with_glue() {
    let z = Zone::new(&settings(false)).expect("zone");
    let r = ask(&z, "live.example.", RecordType::SOA, &view(), None);
    assert_eq!(r.answers[0].record_type(), RecordType::SOA);
    let r = ask(&z, "live.example.", RecordType::NS, &view(), None);
    assert_eq!(r.answers[0].data.to_string(), "ns1.live.example.");
    assert_eq!(r.additional[0].data.to_string(), "192.0.2.53");
    assert_eq!(ips(&ask(&z, "ns1.live.example.", RecordType::A, &view(), None)), ["192.0.2.53"]);
    // NODATA at the apex: SOA in authority.
    let r = ask(&z, "live.example.", RecordType::A, &view(), None);
    assert!(r.answers.is_empty() && r.authority.len() == 1 && r.rcode == ResponseCode::NoError);
}

#[test]
fn unknown_names_are_nxdomain_foreign_ones_and_other_classes_refused() {
    let z = Zone::new(&settings(false)).expect("zone");
    for name in ["nosuch.live.example.", "a.demo.live.example."] {
        let r = ask(&z, name, RecordType::A, &view(), None);
        assert_eq!(r.rcode, ResponseCode::NXDomain, "{name}");
        assert_eq!(r.authority[0].record_type(), RecordType::SOA);
    }
    assert_eq!(ask(&z, "demo.other.example.", RecordType::A, &view(), None).rcode, ResponseCode::Refused);
    let name = Name::from_ascii("demo.live.example.").expect("name");
    let ch = z.answer(&name, RecordType::A, DNSClass::CH, &view(), &Client { location: None, key: 1 });
    assert_eq!(ch.rcode, ResponseCode::Refused);
}

#[test]
fn other_types_and_missing_families_are_nodata_and_no_edges_is_servfail() {
    let z = Zone::new(&settings(false)).expect("zone");
    let r = ask(&z, "demo.live.example.", RecordType::MX, &view(), None);
    assert!(r.answers.is_empty() && r.rcode == ResponseCode::NoError && r.authority.len() == 1);
    let r = ask(&z, "demo.live.example.", RecordType::AAAA, &view(), None);
    assert!(r.answers.is_empty() && r.rcode == ResponseCode::NoError);
    let mut list = view().edges.list().to_vec();
    list[1].addrs.push("2001:db8::2".parse().expect("ip"));
    let v6 = View { edges: Edges::new(list), ..view() };
    assert_eq!(ips(&ask(&z, "demo.live.example.", RecordType::AAAA, &v6, None)), ["2001:db8::2"]);
    assert_eq!(ask(&z, "demo.live.example.", RecordType::ANY, &v6, None).answers.len(), 3);
    let empty = View { edges: Edges::default(), ..view() };
    assert_eq!(ask(&z, "demo.live.example.", RecordType::A, &empty, None).rcode, ResponseCode::ServFail);
}

#[test]
fn the_wildcard_answers_any_channel_like_label() {
    let z = Zone::new(&settings(true)).expect("zone");
    assert_eq!(ask(&z, "other.live.example.", RecordType::A, &view(), None).answers.len(), 2);
    let z = Zone::new(&settings(false)).expect("zone");
    assert_eq!(ask(&z, "other.live.example.", RecordType::A, &view(), None).rcode, ResponseCode::NXDomain);
}
