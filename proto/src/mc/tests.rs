use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use super::*;

const TOPO: &str = r#"
[[channel]]
id = "demo"
source = { kind = "loop", path = "builtin:demo" }
bitrate_kbps = 500
signing_key = "0101010101010101010101010101010101010101010101010101010101010101"

[[channel]]
id = "live"
source = { kind = "push" }
stream_key = "secret"

[[node]]
id = "tier0"
tier = 0
sn_listen = "127.0.0.1:7400"
http_listen = "127.0.0.1:7480"

[[node]]
id = "edge1"
tier = 1
role = "edge"
http_listen = "127.0.0.1:8081"
parents = ["tier0"]
"#;

fn topo(text: &str) -> Topology {
    Topology::parse(text, "test.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap_or_else(|e| panic!("{e}"))
}

fn round_trip(m: &McMessage) -> McMessage {
    let mut codec = mc_codec();
    let mut buf = BytesMut::new();
    codec.encode(m, &mut buf).unwrap_or_else(|e| panic!("{e}"));
    codec.decode(&mut buf).unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("no frame"))
}

#[test]
fn every_message_survives_the_wire() {
    let member = Member {
        id: id("edge1"),
        tier: 2,
        role: crate::config::Role::Edge,
        http: "127.0.0.1:8081".parse().unwrap_or_else(|e| panic!("{e}")),
        sn: None,
        clients: Some("127.0.0.1:7600".parse().unwrap_or_else(|e| panic!("{e}"))),
        capacity_kbps: 200_000,
        key: None,
        upstream: vec![id("core1"), id("core2")].into(),
    };
    let cfg = SnConfig::derive(&topo(TOPO), &id("edge1"), 3).unwrap_or_else(|| panic!("edge1"));
    let msgs = [
        McMessage::Challenge(Challenge { nonce: "abc".into() }),
        McMessage::Alive(Alive { member: member.clone(), have_version: 2, nonce: "n".into(), signature: "ff".into() }),
        McMessage::Welcome(Welcome { heartbeat_ms: 1000, signature: "00".into() }),
        McMessage::Refused(Refused { reason: "unknown SN <x> & co".into() }),
        McMessage::Heartbeat(Heartbeat {
            users: 7,
            full: ["demo", "live"].iter().map(|c| c.parse().unwrap_or_else(|e| panic!("{e}"))).collect(),
            failovers: 3,
            live: vec![ReportRow {
                channel: "demo".into(),
                users: 7,
                livesky: 5,
                cdn_bytes: 1 << 40,
                ..ReportRow::default()
            }],
        }),
        McMessage::Members(Members {
            version: 4,
            full: false,
            members: vec![member],
            gone: vec![Gone { id: id("core1") }],
        }),
        McMessage::Members(Members { version: 5, full: true, ..Members::default() }),
        McMessage::Config(Box::new(cfg.snapshot())),
        McMessage::Ack(Ack { version: 3 }),
        McMessage::Resync(Resync { have_version: 1, reason: "gap".into() }),
        McMessage::Lookup(Lookup { id: id("tier0") }),
        McMessage::Report(Box::new(ReportXml {
            node: id("edge1"),
            id: "00000001700000000000".into(),
            start_ms: 1_700_000_000_000,
            period_ms: 60_000,
            rows: vec![ReportRow {
                channel: "demo".into(),
                users: 3,
                cdn_bytes: 1 << 40,
                stage: 2,
                startup_ms: vec![900, 1200].into(),
                ..ReportRow::default()
            }],
        })),
        McMessage::ReportAck(ReportAck { id: "00000001700000000000".into() }),
    ];
    for m in &msgs {
        assert_eq!(&round_trip(m), m, "{}", m.kind());
    }
}

#[test]
fn garbage_frames_are_errors() {
    let mut codec = mc_codec();
    for body in [
        &b"hello"[..],
        b"<nonsense/>",
        b"<alive id=\"x\"/>",
        b"<ack version=\"-1\"/>",
        b"<\xff\xfe>",
        b"<",
        b"<heartbeat users=\"1\" full=\"demo b@d\" failovers=\"0\"/>",
    ] {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
        buf.extend_from_slice(body);
        assert!(codec.decode(&mut buf).is_err(), "{:?}", String::from_utf8_lossy(body));
    }
}

#[test]
fn a_snapshot_rebuilds_the_config_and_secrets_stay_on_the_origin() {
    let t = topo(TOPO);
    let edge = SnConfig::derive(&t, &id("edge1"), 1).unwrap_or_else(|| panic!("edge1"));
    let xml = edge.snapshot().to_xml();
    assert!(!xml.contains("secret") && !xml.contains("0101"), "{xml}");
    let tier0 = SnConfig::derive(&t, &id("tier0"), 1).unwrap_or_else(|| panic!("tier0")).snapshot().to_xml();
    assert!(tier0.contains("stream-key=\"secret\"") && tier0.contains("signing-key=\"0101"), "{tier0}");
    let back = SnConfig::apply(None, &id("edge1"), edge.snapshot()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.snapshot(), edge.snapshot());
}

#[test]
fn a_changed_bitrate_is_an_update_with_only_that_channel() {
    let v1 = SnConfig::derive(&topo(TOPO), &id("edge1"), 1).unwrap_or_else(|| panic!("v1"));
    let v2 = SnConfig::derive(&topo(&TOPO.replace("bitrate_kbps = 500", "bitrate_kbps = 800")), &id("edge1"), 2)
        .unwrap_or_else(|| panic!("v2"));
    let xml = v2.diff_from(&v1).to_xml();
    assert_eq!(
        xml,
        r#"<config node="edge1" version="2" base="1"><channel id="demo" origin="tier0" source="loop" path="builtin:demo" speed="1" substreams="4" bitrate-kbps="800" legacy="ts hls"/></config>"#
    );
    let applied = SnConfig::apply(Some(&v1), &id("edge1"), v2.diff_from(&v1)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(applied.snapshot(), v2.snapshot());
    let full = v2.snapshot().to_xml();
    assert!(full.len() > 4 * xml.len(), "snapshot {} bytes, update {}", full.len(), xml.len());
}

#[test]
fn updates_add_change_and_remove_channels_all_or_nothing() {
    let v1 = SnConfig::derive(&topo(TOPO), &id("edge1"), 1).unwrap_or_else(|| panic!("v1"));
    let text = TOPO
        .replace("id = \"live\"", "id = \"news\"")
        .replace("parents = [\"tier0\"]", "parents = [\"tier0\"]\nring_seconds = 60");
    let v2 = SnConfig::derive(&topo(&text), &id("edge1"), 2).unwrap_or_else(|| panic!("v2"));
    let up = v2.diff_from(&v1);
    let xml = up.to_xml();
    assert!(xml.contains("<node>") && xml.contains(r#"<channel id="news""#), "{xml}");
    assert!(xml.contains(r#"<remove-channel id="live"/>"#) && !xml.contains(r#"id="demo""#), "{xml}");
    let got = SnConfig::apply(Some(&v1), &id("edge1"), up.clone()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.channels.keys().map(|c| c.as_str()).collect::<Vec<_>>(), ["demo", "news"]);
    assert_eq!(got.node.ring_seconds, 60);
    // On top of the wrong version, or for another node: refused, nothing half-applied.
    let v0 = SnConfig { version: 0, ..v1.clone() };
    assert!(matches!(SnConfig::apply(Some(&v0), &id("edge1"), up.clone()), Err(DocError::BaseMismatch { .. })));
    assert!(matches!(SnConfig::apply(None, &id("edge1"), up.clone()), Err(DocError::BaseMismatch { .. })));
    assert!(matches!(SnConfig::apply(Some(&v1), &id("tier0"), up), Err(DocError::WrongNode { .. })));
    let mut bad = v2.diff_from(&v1);
    bad.channels[0].source = "carrier-pigeon".into();
    assert!(matches!(SnConfig::apply(Some(&v1), &id("edge1"), bad), Err(DocError::Invalid(_))));
}
