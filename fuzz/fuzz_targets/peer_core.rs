//! A joined peer player facing hostile neighbours: any sequence of peer-link messages (buffer
//! maps of any length and offset, requests, chunks with bad signatures, subscribes, byes) on a
//! child link, a mesh link and a parent link, with time moving on, and the edge lost and
//! re-joined at any point. The core must never panic, and it must never play a chunk that fails
//! the channel's signature check.
#![no_main]

use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use livesky_peer_core::core::{Input, LinkId, Output, PeerConfig, PeerCore};
use proto::peer::{FeedTo, FromEdge, PeerId, PeerLink, Welcome};
use proto::{ChannelId, ChannelSigner, WireMessage};

fuzz_target!(|data: &[u8]| {
    let Ok(channel) = ChannelId::new("demo") else { return };
    let signer = ChannelSigner::from_seed([7; 32]);
    let verifier = signer.verifier();
    let mut now = Instant::now();
    let mut core = PeerCore::new(PeerConfig::new(channel.clone()), now);
    let welcome = |peer| Welcome {
        peer: PeerId(peer),
        channel: channel.clone(),
        substreams: 4,
        media_kbps: 500,
        push: false,
        public_addr: None,
        stun: None,
        upload_slots: 2,
        channel_key: Some(verifier.to_bytes()),
        target_latency_ms: None,
    };
    core.handle(now, Input::FromEdge(FromEdge::Welcome(welcome(9))));
    core.handle(now, Input::FromEdge(FromEdge::Neighbours(vec![(PeerId(5), "10.0.0.5:4000".parse().expect("addr"))])));
    core.handle(now, Input::FromEdge(FromEdge::Feed { substream: 0, feed: FeedTo::Peer { id: PeerId(6), addr: "10.0.0.6:4000".parse().expect("addr") } }));
    core.handle(now, Input::LinkAccepted { link: LinkId::In(100), peer: None });
    let mut links = vec![LinkId::In(100)];
    let mut played = Vec::new();
    let drain = |core: &mut PeerCore, links: &mut Vec<LinkId>, played: &mut Vec<_>| {
        while let Some(o) = core.poll_output() {
            match o {
                Output::Connect { link, .. } => links.push(link),
                Output::Play(c) => played.push(c),
                _ => {}
            }
        }
    };
    drain(&mut core, &mut links, &mut played);
    for &l in &links {
        core.handle(now, Input::LinkUp(l));
    }
    // Records: [link pick, ms to advance, len, body…].
    let mut rest = data;
    while let [pick, step, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(n);
        rest = next;
        now += Duration::from_millis(u64::from(*step) * 20);
        if *pick == 0xff {
            // The edge is lost; the player finds another and re-joins with the same core.
            core.handle(now, Input::EdgeClosed);
            core.handle_timeout(now);
            core.handle(now, Input::Rejoin { redirects: 0, listen: None });
            core.handle(now, Input::FromEdge(FromEdge::Welcome(welcome(10))));
            drain(&mut core, &mut links, &mut played);
            continue;
        }
        if *pick == 0xfe {
            // The broadcast ends somewhere around what the peer holds.
            core.handle(now, Input::FromEdge(FromEdge::Ended { last_seq: Some(u64::from(*len)) }));
            let _ = core.broadcast_played_out();
            drain(&mut core, &mut links, &mut played);
            continue;
        }
        let link = links[usize::from(*pick) % links.len()];
        if let Ok(msg) = PeerLink::decode_body(Bytes::copy_from_slice(body)) {
            core.handle(now, Input::FromPeer(link, msg));
        }
        if step % 5 == 0 {
            core.handle_timeout(now);
        }
        drain(&mut core, &mut links, &mut played);
    }
    core.handle_timeout(now + Duration::from_secs(30));
    drain(&mut core, &mut links, &mut played);
    for c in played {
        assert!(verifier.verify(&c).is_ok(), "played chunk {} failed its signature check", c.seq());
    }
});
