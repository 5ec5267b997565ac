use super::*;
use crate::chunk::tests::sample_chunk;

fn round_trip<M: WireMessage + PartialEq + std::fmt::Debug>(msgs: &[M]) {
    for m in msgs {
        let mut body = BytesMut::new();
        m.encode_body(&mut body);
        let body = body.freeze();
        assert_eq!(&M::decode_body(body.clone()).unwrap(), m);
        for cut in 0..body.len() {
            assert!(M::decode_body(body.slice(..cut)).is_err(), "{} cut at {cut}", m.kind());
        }
        let mut longer = BytesMut::from(&body[..]);
        longer.put_u8(0);
        assert!(M::decode_body(longer.freeze()).is_err(), "{} with trailing byte", m.kind());
    }
}

fn ch() -> ChannelId {
    ChannelId::new("live").unwrap()
}

#[test]
fn control_messages_round_trip_and_reject_truncation() {
    let a4: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let a6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
    round_trip(&[
        ToEdge::Join(Join {
            version: 1,
            channel: ch(),
            token: "tok".into(),
            upload_kbps: 600,
            listen: Some(a4),
            buffer_ms: 15_000,
            redirects: 3,
            nat: crate::nat::NatClass::Restricted,
        }),
        ToEdge::Join(Join {
            version: 1,
            channel: ch(),
            token: String::new(),
            upload_kbps: 0,
            listen: None,
            buffer_ms: 3_000,
            redirects: 0,
            nat: crate::nat::NatClass::Unknown,
        }),
        ToEdge::Nat { class: crate::nat::NatClass::Symmetric, mapped: Some(a4) },
        ToEdge::Nat { class: crate::nat::NatClass::Unknown, mapped: None },
        ToEdge::Heartbeat,
        ToEdge::Leave,
        ToEdge::ParentTrouble { substream: 3, parent: PeerId(99), trouble: Trouble::Late, missing_from: Some(1_234) },
        ToEdge::ParentTrouble { substream: 0, parent: PeerId(9), trouble: Trouble::Lost, missing_from: None },
        ToEdge::Signal { to: PeerId(5), kind: SignalKind::Offer, payload: "v=0\r\n…".into() },
        ToEdge::Report(PeerReport {
            interval_ms: 60_000,
            played_ms: 59_000,
            startup_ms: Some(800),
            bytes_up: 1 << 40,
            from_peers: vec![(PeerId(7), 1 << 20), (PeerId(9), 0)],
            latency: crate::quality::LatencyHistogram::from_counts(&[0, 3, 1_500]).unwrap_or_default(),
            delay_ms: Some(1_250),
            ..Default::default()
        }),
        ToEdge::Report(PeerReport::default()),
        ToEdge::BadChunk { from: PeerId(4), seq: 77 },
    ]);
    round_trip(&[
        FromEdge::Welcome(Welcome {
            peer: PeerId(42),
            channel: ch(),
            substreams: 4,
            media_kbps: 400,
            push: true,
            public_addr: Some(a6),
            stun: Some(a4),
            upload_slots: 6,
            channel_key: Some([5; 32]),
            target_latency_ms: Some(3_000),
        }),
        FromEdge::Redirect { to: "127.0.0.1:9000".into(), reason: "stage 4".into() },
        FromEdge::Refused { reason: "full".into() },
        FromEdge::Feed { substream: 1, feed: FeedTo::Nobody },
        FromEdge::Feed { substream: 2, feed: FeedTo::Edge },
        FromEdge::Feed { substream: 3, feed: FeedTo::Peer { id: PeerId(8), addr: a6 } },
        FromEdge::Neighbours(vec![(PeerId(1), a4), (PeerId(2), a6)]),
        FromEdge::Chunk(sample_chunk(9, 2)),
        FromEdge::Signal { from: PeerId(3), kind: SignalKind::Candidate, payload: "candidate:1".into() },
        FromEdge::Introduce { peer: PeerId(12) },
        FromEdge::ChannelKey { key: [7; 32] },
        FromEdge::Ended { last_seq: Some(77) },
        FromEdge::Ended { last_seq: None },
        FromEdge::Placed { push: true, upload_slots: 6 },
        FromEdge::Placed { push: false, upload_slots: 0 },
    ]);
    round_trip(&[
        PeerLink::Hello { version: 1, peer: PeerId(7), channel: ch() },
        PeerLink::Subscribe { substreams: 0b1010, from_seq: 123 },
        PeerLink::Chunk(sample_chunk(1, 1)),
        PeerLink::BufferMap { first_seq: 1000, bits: Bytes::from_static(&[0xff, 0x0f]) },
        PeerLink::Request { seq: 5 },
        PeerLink::NotHave { seq: 5 },
        PeerLink::Bye,
        PeerLink::WantMaps,
    ]);
}

#[test]
fn oversized_fields_are_refused() {
    let mut body = BytesMut::new();
    body.put_u8(5);
    body.put_u8(200); // 200 neighbours claimed
    assert!(matches!(FromEdge::decode_body(body.freeze()), Err(WireError::TooMany { .. })));
    let mut body = BytesMut::new();
    body.put_u8(4);
    body.put_u64(0);
    body.put_u16(5000);
    assert!(matches!(PeerLink::decode_body(body.freeze()), Err(WireError::TooLarge { .. })));
    let big = ToEdge::Signal { to: PeerId(1), kind: SignalKind::Offer, payload: "x".repeat(MAX_CONTROL_TEXT + 1) };
    let mut body = BytesMut::new();
    big.encode_body(&mut body);
    assert!(matches!(ToEdge::decode_body(body.freeze()), Err(WireError::TooLarge { .. })));
    let mut body = BytesMut::new();
    body.put_u8(4);
    body.put_u16(0);
    body.put_u8(9);
    assert!(FromEdge::decode_body(body.freeze()).is_err(), "unknown feed kind");
}
