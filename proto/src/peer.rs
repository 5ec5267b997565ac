//! The LiveSky client protocol: peer↔edge control ([`ToEdge`], [`FromEdge`]) and peer↔peer data
//! ([`PeerLink`]). Both travel in the same length-prefixed frames as SN links ([`FrameCodec`]);
//! `docs/protocol.md` describes every message, its limits, and what each side does on bad input.
//!
//! The edge is tracker, seed and admission controller (LiveSky §2.2): a joining peer is told its id
//! and mode, then who feeds each substream ([`FromEdge::Feed`]); the edge pushes chunks itself for
//! the substreams it feeds (all of them for a push peer, plus the start burst).

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};

use crate::chunk::Chunk;
use crate::codec::{FrameCodec, WireMessage};
use crate::name::ChannelId;
pub use crate::nat::NatClass;
use crate::quality::{LATENCY_BOUNDS_MS, LatencyHistogram};
use crate::wire::{Reader, WireError, put_addr, put_opt_addr, put_opt_key, put_opt_u64, put_short_str, put_text};

/// Version of the client protocol, checked in [`ToEdge::Join`] and [`PeerLink::Hello`]
/// (7: reports carry the client's feed delay; 8: joins and [`ToEdge::Nat`] carry its NAT class).
pub const CLIENT_PROTOCOL_VERSION: u16 = 8;
/// Control frames other than chunks are small; this bounds what a client can make the edge parse.
pub const MAX_CONTROL_TEXT: usize = 16 * 1024;
/// Most mesh neighbours sent in one message.
pub const MAX_NEIGHBOURS: usize = 64;
/// Largest buffer map: 8,192 chunks (over 5 minutes at 25 frames/s).
pub const MAX_BUFFER_MAP: usize = 1024;

/// A peer's id, assigned by the edge, unique per edge and channel (a u64 on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PeerId(pub u64);

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u64> for PeerId {
    fn from(n: u64) -> Self {
        PeerId(n)
    }
}

/// Peer side of a control link.
pub type PeerControlCodec = FrameCodec<FromEdge, ToEdge>;
/// Edge side of a control link.
pub type EdgeControlCodec = FrameCodec<ToEdge, FromEdge>;
/// Either side of a peer↔peer link.
pub type PeerLinkCodec = FrameCodec<PeerLink, PeerLink>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    pub version: u16,
    pub channel: ChannelId,
    /// Viewer token (empty when the channel needs none).
    pub token: String,
    /// Upload the client offers, kbit/s; the edge caps it (default 1.5 × stream rate).
    pub upload_kbps: u32,
    /// Where the client accepts peer links (its private address).
    pub listen: Option<SocketAddr>,
    /// Playback buffer the client keeps, ms (sets the start burst).
    pub buffer_ms: u32,
    /// Redirects this client followed to get here: an edge keeps a client that was already sent
    /// on once, rather than bounce it between full siblings.
    pub redirects: u8,
    /// Its NAT's behaviour, when it measured it already (on an earlier edge: it rejoins).
    pub nat: NatClass,
}

/// Why a client asks for a new parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// The parent link broke or the parent left.
    Lost,
    /// The parent delivers too late for playback.
    Late,
    /// The client could not connect to the parent (NAT traversal failed).
    Unreachable,
    /// The parent took the client as a child but has sent it nothing on this substream.
    Silent,
}

/// Per-interval statistics a client reports (feeds Q1/Q2, rebuffering rate, P2P share).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerReport {
    pub interval_ms: u32,
    pub played_ms: u32,
    pub stalled_ms: u32,
    pub stalls: u32,
    pub bytes_from_edge: u64,
    pub bytes_from_peers: u64,
    pub bytes_up: u64,
    /// Request → playback start, once known.
    pub startup_ms: Option<u32>,
    /// Bytes taken from each peer in the interval (at most [`MAX_REPORTED_SENDERS`]): the edge
    /// checks senders' upload claims against them.
    pub from_peers: Vec<(PeerId, u64)>,
    /// Chunks played in the interval by glass-to-glass latency (protocol 5).
    pub latency: LatencyHistogram,
    /// How far behind ingest new media reached the client in the interval (median, ms; protocol
    /// 7): its feed delay, not its playback latency — what its children would start from.
    pub delay_ms: Option<u32>,
}

/// Senders a report lists at most (the biggest, when a client took from more).
pub const MAX_REPORTED_SENDERS: usize = 64;

/// WebRTC signalling relayed by the edge between two of its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    Offer,
    Answer,
    Candidate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToEdge {
    Join(Join),
    Heartbeat,
    Leave,
    ParentTrouble {
        substream: u16,
        parent: PeerId,
        trouble: Trouble,
        /// The first chunk of the substream the client still needs (from its playback point on):
        /// if the edge takes the substream over, it resends from there rather than only the last
        /// seconds — a hole further back had nobody to fill it.
        missing_from: Option<u64>,
    },
    Signal {
        to: PeerId,
        kind: SignalKind,
        payload: String,
    },
    Report(PeerReport),
    /// A chunk from this peer failed its signature check.
    BadChunk {
        from: PeerId,
        seq: u64,
    },
    /// What the client's NAT tests against the edge's STUN server found ([`crate::nat`]):
    /// `mapped` is its address as STUN saw it (the edge checks it against the connection's).
    Nat {
        class: NatClass,
        mapped: Option<SocketAddr>,
    },
}

/// Who feeds a substream, as told to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedTo {
    /// Nobody yet; the client repairs from the mesh meanwhile.
    Nobody,
    Edge,
    Peer {
        id: PeerId,
        addr: SocketAddr,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub peer: PeerId,
    pub channel: ChannelId,
    pub substreams: u16,
    pub media_kbps: u32,
    /// Served directly (all substreams from the edge) rather than by peers.
    pub push: bool,
    /// The client's address as the edge sees it.
    pub public_addr: Option<SocketAddr>,
    /// The edge's STUN server.
    pub stun: Option<SocketAddr>,
    /// Upload slots the edge counts on (substreams the client may be asked to forward).
    pub upload_slots: u16,
    /// The channel's Ed25519 public key: every chunk is checked against it before it is played
    /// or forwarded.
    pub channel_key: Option<[u8; 32]>,
    /// The channel's glass-to-glass target (ms) when the operator set one: a player buffers no
    /// more than this (low-latency mode), whatever it asked in its join.
    pub target_latency_ms: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromEdge {
    Welcome(Welcome),
    /// Join another edge (host:port of its client port).
    Redirect {
        to: String,
        reason: String,
    },
    Refused {
        reason: String,
    },
    Feed {
        substream: u16,
        feed: FeedTo,
    },
    Neighbours(Vec<(PeerId, SocketAddr)>),
    /// This peer was sent to you (as a child or a mesh neighbour): accept its link. Peers accept
    /// links only from peers their edge introduced.
    Introduce {
        peer: PeerId,
    },
    /// The channel's key changed (rotated by config push): check chunks against this one now.
    ChannelKey {
        key: [u8; 32],
    },
    /// The broadcast is over (its publisher did not come back): play up to `last_seq`, then go.
    Ended {
        last_seq: Option<u64>,
    },
    /// A client welcomed before its NAT was known has its place now: served directly or by peers,
    /// and the upload slots the edge counts on (as the welcome would have said).
    Placed {
        push: bool,
        upload_slots: u16,
    },
    Chunk(Chunk),
    Signal {
        from: PeerId,
        kind: SignalKind,
        payload: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerLink {
    Hello {
        version: u16,
        peer: PeerId,
        channel: ChannelId,
    },
    /// Child → parent: push these substreams (bit s set), starting at `from_seq`.
    Subscribe {
        substreams: u64,
        from_seq: u64,
    },
    Chunk(Chunk),
    /// Which chunks the sender holds: bit i of `bits` is chunk `first_seq + i`.
    BufferMap {
        first_seq: u64,
        bits: Bytes,
    },
    Request {
        seq: u64,
    },
    NotHave {
        seq: u64,
    },
    Bye,
    /// Send me your buffer maps for a while: I have chunks to repair. Maps flow only to peers
    /// that asked, so a healthy swarm spends nothing on them.
    WantMaps,
}

fn trouble_u8(t: Trouble) -> u8 {
    match t {
        Trouble::Lost => 1,
        Trouble::Late => 2,
        Trouble::Unreachable => 3,
        Trouble::Silent => 4,
    }
}

fn trouble_from(v: u8) -> Result<Trouble, WireError> {
    Ok(match v {
        1 => Trouble::Lost,
        2 => Trouble::Late,
        3 => Trouble::Unreachable,
        4 => Trouble::Silent,
        _ => return Err(WireError::UnknownValue { what: "trouble", value: v.into() }),
    })
}

fn signal_u8(k: SignalKind) -> u8 {
    match k {
        SignalKind::Offer => 1,
        SignalKind::Answer => 2,
        SignalKind::Candidate => 3,
    }
}

fn signal_from(v: u8) -> Result<SignalKind, WireError> {
    Ok(match v {
        1 => SignalKind::Offer,
        2 => SignalKind::Answer,
        3 => SignalKind::Candidate,
        _ => return Err(WireError::UnknownValue { what: "signal kind", value: v.into() }),
    })
}

fn bounded_text(r: &mut Reader, what: &'static str) -> Result<String, WireError> {
    let t = r.text(what)?;
    if t.len() > MAX_CONTROL_TEXT {
        return Err(WireError::TooLarge { len: t.len(), max: MAX_CONTROL_TEXT });
    }
    Ok(t)
}

fn nat_from(v: u8) -> Result<NatClass, WireError> {
    NatClass::from_u8(v).ok_or(WireError::UnknownValue { what: "NAT class", value: u64::from(v) })
}

impl WireMessage for ToEdge {
    fn kind(&self) -> &'static str {
        match self {
            ToEdge::Join(_) => "join",
            ToEdge::Heartbeat => "heartbeat",
            ToEdge::Leave => "leave",
            ToEdge::ParentTrouble { .. } => "parent-trouble",
            ToEdge::Signal { .. } => "signal",
            ToEdge::Report(_) => "report",
            ToEdge::BadChunk { .. } => "bad-chunk",
            ToEdge::Nat { .. } => "nat",
        }
    }

    fn encode_body(&self, out: &mut BytesMut) {
        match self {
            ToEdge::Join(j) => {
                out.put_u8(1);
                out.put_u16(j.version);
                put_short_str(out, j.channel.as_str());
                put_text(out, &j.token);
                out.put_u32(j.upload_kbps);
                put_opt_addr(out, &j.listen);
                out.put_u32(j.buffer_ms);
                out.put_u8(j.redirects);
                out.put_u8(j.nat.to_u8());
            }
            ToEdge::Heartbeat => out.put_u8(2),
            ToEdge::Leave => out.put_u8(3),
            ToEdge::ParentTrouble { substream, parent, trouble, missing_from } => {
                out.put_u8(4);
                out.put_u16(*substream);
                out.put_u64(parent.0);
                out.put_u8(trouble_u8(*trouble));
                put_opt_u64(out, *missing_from);
            }
            ToEdge::Signal { to, kind, payload } => {
                out.put_u8(5);
                out.put_u64(to.0);
                out.put_u8(signal_u8(*kind));
                put_text(out, payload);
            }
            ToEdge::Report(r) => {
                out.put_u8(6);
                for v in [
                    r.interval_ms,
                    r.played_ms,
                    r.stalled_ms,
                    r.stalls,
                    r.startup_ms.map_or(u32::MAX, |v| v.min(u32::MAX - 1)),
                ] {
                    out.put_u32(v);
                }
                for v in [r.bytes_from_edge, r.bytes_from_peers, r.bytes_up] {
                    out.put_u64(v);
                }
                let senders = &r.from_peers[..r.from_peers.len().min(MAX_REPORTED_SENDERS)];
                out.put_u8(senders.len() as u8);
                for (peer, bytes) in senders {
                    out.put_u64(peer.0);
                    out.put_u64(*bytes);
                }
                let latency = r.latency.trimmed();
                out.put_u8(latency.len() as u8);
                for &c in latency {
                    out.put_u32(c.min(u64::from(u32::MAX)) as u32);
                }
                out.put_u32(r.delay_ms.map_or(u32::MAX, |v| v.min(u32::MAX - 1)));
            }
            ToEdge::BadChunk { from, seq } => {
                out.put_u8(7);
                out.put_u64(from.0);
                out.put_u64(*seq);
            }
            ToEdge::Nat { class, mapped } => {
                out.put_u8(8);
                out.put_u8(class.to_u8());
                put_opt_addr(out, mapped);
            }
        }
    }

    fn decode_body(body: Bytes) -> Result<ToEdge, WireError> {
        let mut r = Reader::new(body);
        let msg = match r.u8("message type")? {
            1 => ToEdge::Join(Join {
                version: r.u16("protocol version")?,
                channel: r.channel()?,
                token: bounded_text(&mut r, "token")?,
                upload_kbps: r.u32("upload kbit/s")?,
                listen: r.opt_addr("listen address")?,
                buffer_ms: r.u32("buffer ms")?,
                redirects: r.u8("redirects")?,
                nat: nat_from(r.u8("NAT class")?)?,
            }),
            2 => ToEdge::Heartbeat,
            3 => ToEdge::Leave,
            4 => ToEdge::ParentTrouble {
                substream: r.u16("substream")?,
                parent: PeerId(r.u64("parent")?),
                trouble: trouble_from(r.u8("trouble")?)?,
                missing_from: r.opt_u64("missing from")?,
            },
            5 => ToEdge::Signal {
                to: PeerId(r.u64("signal target")?),
                kind: signal_from(r.u8("signal kind")?)?,
                payload: bounded_text(&mut r, "signal payload")?,
            },
            6 => {
                let mut u = [0u32; 5];
                for v in &mut u {
                    *v = r.u32("report field")?;
                }
                let mut b = [0u64; 3];
                for v in &mut b {
                    *v = r.u64("report byte count")?;
                }
                let n = usize::from(r.u8("sender count")?);
                if n > MAX_REPORTED_SENDERS {
                    return Err(WireError::TooMany { what: "report senders", len: n, max: MAX_REPORTED_SENDERS });
                }
                let from_peers = (0..n)
                    .map(|_| Ok((PeerId(r.u64("sender")?), r.u64("bytes from sender")?)))
                    .collect::<Result<_, WireError>>()?;
                let buckets = usize::from(r.u8("latency bucket count")?);
                let counts =
                    (0..buckets).map(|_| r.u32("latency count").map(u64::from)).collect::<Result<Vec<_>, _>>()?;
                let latency = LatencyHistogram::from_counts(&counts).ok_or(WireError::TooMany {
                    what: "latency buckets",
                    len: buckets,
                    max: LATENCY_BOUNDS_MS.len(),
                })?;
                let delay = r.u32("feed delay ms")?;
                ToEdge::Report(PeerReport {
                    latency,
                    delay_ms: (delay != u32::MAX).then_some(delay),
                    from_peers,
                    interval_ms: u[0],
                    played_ms: u[1],
                    stalled_ms: u[2],
                    stalls: u[3],
                    startup_ms: (u[4] != u32::MAX).then_some(u[4]),
                    bytes_from_edge: b[0],
                    bytes_from_peers: b[1],
                    bytes_up: b[2],
                })
            }
            7 => ToEdge::BadChunk { from: PeerId(r.u64("sender")?), seq: r.u64("seq")? },
            8 => ToEdge::Nat { class: nat_from(r.u8("NAT class")?)?, mapped: r.opt_addr("mapped address")? },
            t => return Err(WireError::UnknownType(t)),
        };
        r.finish(msg.kind())?;
        Ok(msg)
    }
}

impl WireMessage for FromEdge {
    fn kind(&self) -> &'static str {
        match self {
            FromEdge::Welcome(_) => "welcome",
            FromEdge::Redirect { .. } => "redirect",
            FromEdge::Refused { .. } => "refused",
            FromEdge::Feed { .. } => "feed",
            FromEdge::Neighbours(_) => "neighbours",
            FromEdge::Chunk(_) => "chunk",
            FromEdge::Signal { .. } => "signal",
            FromEdge::Introduce { .. } => "introduce",
            FromEdge::ChannelKey { .. } => "channel-key",
            FromEdge::Ended { .. } => "ended",
            FromEdge::Placed { .. } => "placed",
        }
    }

    fn encode_body(&self, out: &mut BytesMut) {
        match self {
            FromEdge::Introduce { peer } => {
                out.put_u8(8);
                out.put_u64(peer.0);
            }
            FromEdge::ChannelKey { key } => {
                out.put_u8(9);
                out.put_slice(key);
            }
            FromEdge::Ended { last_seq } => {
                out.put_u8(10);
                put_opt_u64(out, *last_seq);
            }
            FromEdge::Placed { push, upload_slots } => {
                out.put_u8(11);
                out.put_u8(u8::from(*push));
                out.put_u16(*upload_slots);
            }
            FromEdge::Welcome(w) => {
                out.put_u8(1);
                out.put_u64(w.peer.0);
                put_short_str(out, w.channel.as_str());
                out.put_u16(w.substreams);
                out.put_u32(w.media_kbps);
                out.put_u8(u8::from(w.push));
                put_opt_addr(out, &w.public_addr);
                put_opt_addr(out, &w.stun);
                out.put_u16(w.upload_slots);
                put_opt_key(out, &w.channel_key);
                out.put_u32(w.target_latency_ms.unwrap_or(0));
            }
            FromEdge::Redirect { to, reason } => {
                out.put_u8(2);
                put_text(out, to);
                put_text(out, reason);
            }
            FromEdge::Refused { reason } => {
                out.put_u8(3);
                put_text(out, reason);
            }
            FromEdge::Feed { substream, feed } => {
                out.put_u8(4);
                out.put_u16(*substream);
                match feed {
                    FeedTo::Nobody => out.put_u8(0),
                    FeedTo::Edge => out.put_u8(1),
                    FeedTo::Peer { id, addr } => {
                        out.put_u8(2);
                        out.put_u64(id.0);
                        put_addr(out, addr);
                    }
                }
            }
            FromEdge::Neighbours(list) => {
                out.put_u8(5);
                let list = &list[..list.len().min(MAX_NEIGHBOURS)];
                out.put_u8(list.len() as u8);
                for (id, addr) in list {
                    out.put_u64(id.0);
                    put_addr(out, addr);
                }
            }
            FromEdge::Chunk(c) => {
                out.put_u8(6);
                c.encode(out);
            }
            FromEdge::Signal { from, kind, payload } => {
                out.put_u8(7);
                out.put_u64(from.0);
                out.put_u8(signal_u8(*kind));
                put_text(out, payload);
            }
        }
    }

    fn decode_body(body: Bytes) -> Result<FromEdge, WireError> {
        let mut r = Reader::new(body);
        let msg = match r.u8("message type")? {
            1 => FromEdge::Welcome(Welcome {
                peer: PeerId(r.u64("peer id")?),
                channel: r.channel()?,
                substreams: r.u16("substreams")?,
                media_kbps: r.u32("media kbit/s")?,
                push: r.bool("push")?,
                public_addr: r.opt_addr("public address")?,
                stun: r.opt_addr("stun address")?,
                upload_slots: r.u16("upload slots")?,
                channel_key: r.opt_key("channel key")?,
                target_latency_ms: Some(r.u32("target latency ms")?).filter(|&ms| ms > 0),
            }),
            2 => FromEdge::Redirect {
                to: bounded_text(&mut r, "redirect target")?,
                reason: bounded_text(&mut r, "reason")?,
            },
            3 => FromEdge::Refused { reason: bounded_text(&mut r, "reason")? },
            4 => FromEdge::Feed {
                substream: r.u16("substream")?,
                feed: match r.u8("feed kind")? {
                    0 => FeedTo::Nobody,
                    1 => FeedTo::Edge,
                    2 => FeedTo::Peer { id: PeerId(r.u64("parent id")?), addr: r.addr("parent address")? },
                    v => return Err(WireError::UnknownValue { what: "feed kind", value: v.into() }),
                },
            },
            5 => {
                let n = usize::from(r.u8("neighbour count")?);
                if n > MAX_NEIGHBOURS {
                    return Err(WireError::TooMany { what: "neighbours", len: n, max: MAX_NEIGHBOURS });
                }
                let list = (0..n)
                    .map(|_| Ok((PeerId(r.u64("neighbour id")?), r.addr("neighbour address")?)))
                    .collect::<Result<_, WireError>>()?;
                FromEdge::Neighbours(list)
            }
            6 => FromEdge::Chunk(Chunk::decode_from(&mut r)?),
            7 => FromEdge::Signal {
                from: PeerId(r.u64("signal source")?),
                kind: signal_from(r.u8("signal kind")?)?,
                payload: bounded_text(&mut r, "signal payload")?,
            },
            8 => FromEdge::Introduce { peer: PeerId(r.u64("introduced peer")?) },
            9 => FromEdge::ChannelKey { key: r.array::<32>("channel key")? },
            10 => FromEdge::Ended { last_seq: r.opt_u64("last seq")? },
            11 => FromEdge::Placed { push: r.u8("push")? != 0, upload_slots: r.u16("upload slots")? },
            t => return Err(WireError::UnknownType(t)),
        };
        r.finish(msg.kind())?;
        Ok(msg)
    }
}

impl WireMessage for PeerLink {
    fn kind(&self) -> &'static str {
        match self {
            PeerLink::Hello { .. } => "hello",
            PeerLink::Subscribe { .. } => "subscribe",
            PeerLink::Chunk(_) => "chunk",
            PeerLink::BufferMap { .. } => "buffer-map",
            PeerLink::Request { .. } => "request",
            PeerLink::NotHave { .. } => "not-have",
            PeerLink::Bye => "bye",
            PeerLink::WantMaps => "want-maps",
        }
    }

    fn encode_body(&self, out: &mut BytesMut) {
        match self {
            PeerLink::Hello { version, peer, channel } => {
                out.put_u8(1);
                out.put_u16(*version);
                out.put_u64(peer.0);
                put_short_str(out, channel.as_str());
            }
            PeerLink::Subscribe { substreams, from_seq } => {
                out.put_u8(2);
                out.put_u64(*substreams);
                out.put_u64(*from_seq);
            }
            PeerLink::Chunk(c) => {
                out.put_u8(3);
                c.encode(out);
            }
            PeerLink::BufferMap { first_seq, bits } => {
                out.put_u8(4);
                out.put_u64(*first_seq);
                let bits = &bits[..bits.len().min(MAX_BUFFER_MAP)];
                out.put_u16(bits.len() as u16);
                out.put_slice(bits);
            }
            PeerLink::Request { seq } => {
                out.put_u8(5);
                out.put_u64(*seq);
            }
            PeerLink::NotHave { seq } => {
                out.put_u8(6);
                out.put_u64(*seq);
            }
            PeerLink::Bye => out.put_u8(7),
            PeerLink::WantMaps => out.put_u8(8),
        }
    }

    fn decode_body(body: Bytes) -> Result<PeerLink, WireError> {
        let mut r = Reader::new(body);
        let msg = match r.u8("message type")? {
            1 => PeerLink::Hello {
                version: r.u16("protocol version")?,
                peer: PeerId(r.u64("peer id")?),
                channel: r.channel()?,
            },
            2 => PeerLink::Subscribe { substreams: r.u64("substream mask")?, from_seq: r.u64("from seq")? },
            3 => PeerLink::Chunk(Chunk::decode_from(&mut r)?),
            4 => {
                let first_seq = r.u64("first seq")?;
                let n = usize::from(r.u16("buffer map length")?);
                if n > MAX_BUFFER_MAP {
                    return Err(WireError::TooLarge { len: n, max: MAX_BUFFER_MAP });
                }
                PeerLink::BufferMap { first_seq, bits: r.bytes(n, "buffer map")? }
            }
            5 => PeerLink::Request { seq: r.u64("seq")? },
            6 => PeerLink::NotHave { seq: r.u64("seq")? },
            7 => PeerLink::Bye,
            8 => PeerLink::WantMaps,
            t => return Err(WireError::UnknownType(t)),
        };
        r.finish(msg.kind())?;
        Ok(msg)
    }
}

#[cfg(test)]
mod tests;
