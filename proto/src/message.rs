//! Messages between service nodes (SN↔SN). One TCP connection carries one channel subscription:
//! the child sends `Hello` (with a fresh nonce); the parent answers `Challenge` (its own nonce and
//! its signature over both, proving it is the node the child dialled); the child sends `Auth` (its
//! signature, proving who it is) and `Subscribe`; the parent answers `SubscribeOk` (or
//! `SubscribeErr`) and pushes `Chunk`s. Both sides send `Keepalive` when idle so a silent but open
//! link can be told from a quiet source. Signatures are made with the nodes' identity keys (the
//! ones the management center knows) over [`link_proof`].

use bytes::{BufMut, Bytes, BytesMut};

use crate::chunk::Chunk;
use crate::codec::WireMessage;
use crate::name::{ChannelId, NodeId};
use crate::wire::{Reader, WireError, put_opt_key, put_short_str, put_text};

/// 2: source state became idle/live/ended (was a live flag). 3: links are authenticated.
pub const PROTOCOL_VERSION: u16 = 3;
/// Longest subscription path accepted; tier counts are small, a longer path is a loop or garbage.
pub const MAX_PATH: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    pub node: NodeId,
    pub tier: u8,
    /// The child's challenge for the parent.
    pub nonce: [u8; 32],
}

/// Which side of a link signs a [`link_proof`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkSide {
    Parent,
    Child,
}

/// What a node signs to prove its identity on an SN link: its side, its id, the other's id, the
/// other's nonce, then its own. Binding both ids and both nonces makes a proof useless on any
/// other link, in either direction.
pub fn link_proof(
    side: LinkSide,
    signer: &NodeId,
    other: &NodeId,
    their_nonce: &[u8; 32],
    my_nonce: &[u8; 32],
) -> Vec<u8> {
    let side = match side {
        LinkSide::Parent => "parent",
        LinkSide::Child => "child",
    };
    let mut m = format!("livesky-sn-link\0{side}\0{signer}\0{other}\0").into_bytes();
    m.extend_from_slice(their_nonce);
    m.extend_from_slice(my_nonce);
    m
}

/// Where a new subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// At the newest keyframe the parent holds (or the next one to arrive).
    Live,
    /// Exactly at this seq: used to resume after failover with no gap and no duplicate.
    Seq(u64),
    /// At the newest keyframe at least this many ms of media older than the newest chunk, so a
    /// new edge can offer a start burst and HLS history immediately.
    Backlog { ms: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub channel: ChannelId,
    pub start: StartAt,
    /// Nodes this request has passed through, nearest the viewer first; a node finding itself in
    /// the path refuses, which makes subscription loops among same-tier peers impossible.
    pub path: Vec<NodeId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseCode {
    /// No node up the hierarchy knows the channel.
    NotFound,
    /// The request would form a loop.
    Loop,
    /// The parent cannot take more children now.
    Overloaded,
    /// The requester is not allowed (wrong tier, unknown node).
    Forbidden,
    /// The parent has the channel but cannot reach any source for it right now.
    Unavailable,
}

/// Whether a channel's broadcast is producing, as Tier 0 sees it and hands down the tree.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum SourceStatus {
    /// No broadcast right now (none yet, or its publisher is reconnecting).
    #[default]
    Idle,
    Live,
    /// The broadcaster left and did not come back within Tier 0's reconnect grace: viewers are
    /// told the broadcast is over instead of waiting on a channel nobody feeds.
    Ended,
}

impl SourceStatus {
    pub fn is_live(self) -> bool {
        self == SourceStatus::Live
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SourceStatus::Idle => "idle",
            SourceStatus::Live => "live",
            SourceStatus::Ended => "ended",
        }
    }
    fn to_u8(self) -> u8 {
        match self {
            SourceStatus::Idle => 0,
            SourceStatus::Live => 1,
            SourceStatus::Ended => 2,
        }
    }
    fn from_u8(v: u8) -> Result<Self, WireError> {
        Ok(match v {
            0 => SourceStatus::Idle,
            1 => SourceStatus::Live,
            2 => SourceStatus::Ended,
            _ => return Err(WireError::UnknownValue { what: "source status", value: v.into() }),
        })
    }
}

impl RefuseCode {
    fn to_u8(self) -> u8 {
        match self {
            RefuseCode::NotFound => 1,
            RefuseCode::Loop => 2,
            RefuseCode::Overloaded => 3,
            RefuseCode::Forbidden => 4,
            RefuseCode::Unavailable => 5,
        }
    }
    fn from_u8(v: u8) -> Result<Self, WireError> {
        Ok(match v {
            1 => RefuseCode::NotFound,
            2 => RefuseCode::Loop,
            3 => RefuseCode::Overloaded,
            4 => RefuseCode::Forbidden,
            5 => RefuseCode::Unavailable,
            _ => return Err(WireError::UnknownValue { what: "refuse code", value: v.into() }),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnMessage {
    Hello(Hello),
    /// Parent → child, answering `Hello`: the parent's nonce and its proof.
    Challenge {
        nonce: [u8; 32],
        proof: [u8; 64],
    },
    /// Child → parent: the child's proof over the parent's nonce.
    Auth {
        proof: [u8; 64],
    },
    Subscribe(Subscribe),
    /// `verify_key`: the channel's Ed25519 public key, handed down the tree from Tier 0.
    SubscribeOk {
        channel: ChannelId,
        source: SourceStatus,
        verify_key: Option<[u8; 32]>,
    },
    SubscribeErr {
        channel: ChannelId,
        code: RefuseCode,
        reason: String,
    },
    Chunk(Chunk),
    /// The parent's view of whether the channel's source is producing; while it is not, a child
    /// must not take the silence for a stalled parent.
    SourceState {
        channel: ChannelId,
        source: SourceStatus,
    },
    Keepalive,
}

mod tag {
    pub const HELLO: u8 = 1;
    pub const SUBSCRIBE: u8 = 2;
    pub const SUBSCRIBE_OK: u8 = 3;
    pub const SUBSCRIBE_ERR: u8 = 4;
    pub const CHUNK: u8 = 5;
    pub const SOURCE_STATE: u8 = 6;
    pub const KEEPALIVE: u8 = 7;
    pub const CHALLENGE: u8 = 8;
    pub const AUTH: u8 = 9;
}

impl WireMessage for SnMessage {
    fn kind(&self) -> &'static str {
        match self {
            SnMessage::Hello(_) => "hello",
            SnMessage::Challenge { .. } => "challenge",
            SnMessage::Auth { .. } => "auth",
            SnMessage::Subscribe(_) => "subscribe",
            SnMessage::SubscribeOk { .. } => "subscribe-ok",
            SnMessage::SubscribeErr { .. } => "subscribe-err",
            SnMessage::Chunk(_) => "chunk",
            SnMessage::SourceState { .. } => "source-state",
            SnMessage::Keepalive => "keepalive",
        }
    }

    fn encode_body(&self, out: &mut BytesMut) {
        match self {
            SnMessage::Hello(h) => {
                out.put_u8(tag::HELLO);
                out.put_u16(h.version);
                put_short_str(out, h.node.as_str());
                out.put_u8(h.tier);
                out.put_slice(&h.nonce);
            }
            SnMessage::Challenge { nonce, proof } => {
                out.put_u8(tag::CHALLENGE);
                out.put_slice(nonce);
                out.put_slice(proof);
            }
            SnMessage::Auth { proof } => {
                out.put_u8(tag::AUTH);
                out.put_slice(proof);
            }
            SnMessage::Subscribe(s) => {
                out.put_u8(tag::SUBSCRIBE);
                put_short_str(out, s.channel.as_str());
                match s.start {
                    StartAt::Live => out.put_u8(0),
                    StartAt::Seq(seq) => {
                        out.put_u8(1);
                        out.put_u64(seq);
                    }
                    StartAt::Backlog { ms } => {
                        out.put_u8(2);
                        out.put_u32(ms);
                    }
                }
                let path = &s.path[..s.path.len().min(MAX_PATH)];
                out.put_u8(path.len() as u8);
                for n in path {
                    put_short_str(out, n.as_str());
                }
            }
            SnMessage::SubscribeOk { channel, source, verify_key } => {
                out.put_u8(tag::SUBSCRIBE_OK);
                put_short_str(out, channel.as_str());
                out.put_u8(source.to_u8());
                put_opt_key(out, verify_key);
            }
            SnMessage::SubscribeErr { channel, code, reason } => {
                out.put_u8(tag::SUBSCRIBE_ERR);
                put_short_str(out, channel.as_str());
                out.put_u8(code.to_u8());
                put_text(out, reason);
            }
            SnMessage::Chunk(c) => {
                out.put_u8(tag::CHUNK);
                c.encode(out);
            }
            SnMessage::SourceState { channel, source } => {
                out.put_u8(tag::SOURCE_STATE);
                put_short_str(out, channel.as_str());
                out.put_u8(source.to_u8());
            }
            SnMessage::Keepalive => out.put_u8(tag::KEEPALIVE),
        }
    }

    fn decode_body(body: Bytes) -> Result<SnMessage, WireError> {
        let mut r = Reader::new(body);
        let t = r.u8("message type")?;
        let msg = match t {
            tag::HELLO => SnMessage::Hello(Hello {
                version: r.u16("protocol version")?,
                node: r.node()?,
                tier: r.u8("tier")?,
                nonce: r.array::<32>("nonce")?,
            }),
            tag::CHALLENGE => SnMessage::Challenge { nonce: r.array::<32>("nonce")?, proof: r.array::<64>("proof")? },
            tag::AUTH => SnMessage::Auth { proof: r.array::<64>("proof")? },
            tag::SUBSCRIBE => {
                let channel = r.channel()?;
                let start = match r.u8("start mode")? {
                    0 => StartAt::Live,
                    1 => StartAt::Seq(r.u64("start seq")?),
                    2 => StartAt::Backlog { ms: r.u32("backlog ms")? },
                    v => return Err(WireError::UnknownValue { what: "start mode", value: v.into() }),
                };
                let n = r.u8("path length")? as usize;
                if n > MAX_PATH {
                    return Err(WireError::TooMany { what: "subscription path", len: n, max: MAX_PATH });
                }
                let path = (0..n).map(|_| r.node()).collect::<Result<Vec<_>, _>>()?;
                SnMessage::Subscribe(Subscribe { channel, start, path })
            }
            tag::SUBSCRIBE_OK => SnMessage::SubscribeOk {
                channel: r.channel()?,
                source: SourceStatus::from_u8(r.u8("source status")?)?,
                verify_key: r.opt_key("verify key")?,
            },
            tag::SUBSCRIBE_ERR => SnMessage::SubscribeErr {
                channel: r.channel()?,
                code: RefuseCode::from_u8(r.u8("refuse code")?)?,
                reason: r.text("refuse reason")?,
            },
            tag::CHUNK => SnMessage::Chunk(Chunk::decode_from(&mut r)?),
            tag::SOURCE_STATE => {
                SnMessage::SourceState { channel: r.channel()?, source: SourceStatus::from_u8(r.u8("source status")?)? }
            }
            tag::KEEPALIVE => SnMessage::Keepalive,
            other => return Err(WireError::UnknownType(other)),
        };
        r.finish(msg.kind())?;
        Ok(msg)
    }
}
