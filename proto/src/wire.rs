//! Checked big-endian reading and writing used by every decoder in this crate: each read states
//! what it was reading, so a truncated or garbage frame yields an error that names the field.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::name::{ChannelId, NameError, NodeId};

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame truncated while reading {what}")]
    Truncated { what: &'static str },
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    #[error("unknown {what} value {value}")]
    UnknownValue { what: &'static str, value: u64 },
    #[error("bad {what}: {source}")]
    BadName { what: &'static str, source: NameError },
    #[error("{what} is not valid UTF-8")]
    BadUtf8 { what: &'static str },
    #[error("chunk payload of {len} bytes is not whole 188-byte TS packets")]
    PartialPackets { len: usize },
    #[error("chunk payload packet {index} does not start with the TS sync byte 0x47")]
    BadSync { index: usize },
    #[error("{count} unexpected trailing bytes after {what}")]
    Trailing { what: &'static str, count: usize },
    #[error("malformed {what}: {message}")]
    Malformed { what: &'static str, message: String },
    #[error("{what} has {len} entries; the limit is {max}")]
    TooMany { what: &'static str, len: usize, max: usize },
}

pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Self { buf }
    }

    fn need(&self, n: usize, what: &'static str) -> Result<(), WireError> {
        if self.buf.remaining() < n { Err(WireError::Truncated { what }) } else { Ok(()) }
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        self.need(1, what)?;
        Ok(self.buf.get_u8())
    }
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        self.need(2, what)?;
        Ok(self.buf.get_u16())
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        self.need(4, what)?;
        Ok(self.buf.get_u32())
    }
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        self.need(8, what)?;
        Ok(self.buf.get_u64())
    }
    pub(crate) fn bool(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(WireError::UnknownValue { what, value: v.into() }),
        }
    }
    /// Zero-copy: the returned bytes share the frame's allocation.
    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<Bytes, WireError> {
        self.need(n, what)?;
        Ok(self.buf.split_to(n))
    }
    pub(crate) fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        self.need(N, what)?;
        let mut out = [0u8; N];
        self.buf.copy_to_slice(&mut out);
        Ok(out)
    }
    /// A string with a one-byte length prefix.
    pub(crate) fn short_str(&mut self, what: &'static str) -> Result<String, WireError> {
        let len = self.u8(what)? as usize;
        let raw = self.bytes(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| WireError::BadUtf8 { what })
    }
    /// A string with a two-byte length prefix (human-readable reasons).
    pub(crate) fn text(&mut self, what: &'static str) -> Result<String, WireError> {
        let len = self.u16(what)? as usize;
        let raw = self.bytes(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| WireError::BadUtf8 { what })
    }
    pub(crate) fn channel(&mut self) -> Result<ChannelId, WireError> {
        let s = self.short_str("channel")?;
        ChannelId::new(&s).map_err(|source| WireError::BadName { what: "channel", source })
    }
    pub(crate) fn node(&mut self) -> Result<NodeId, WireError> {
        let s = self.short_str("node id")?;
        NodeId::new(&s).map_err(|source| WireError::BadName { what: "node id", source })
    }
    pub(crate) fn addr(&mut self, what: &'static str) -> Result<std::net::SocketAddr, WireError> {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
        let ip = match self.u8(what)? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>(what)?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>(what)?)),
            v => return Err(WireError::UnknownValue { what, value: v.into() }),
        };
        Ok(SocketAddr::new(ip, self.u16(what)?))
    }
    pub(crate) fn opt_addr(&mut self, what: &'static str) -> Result<Option<std::net::SocketAddr>, WireError> {
        if self.bool(what)? { self.addr(what).map(Some) } else { Ok(None) }
    }
    pub(crate) fn opt_key(&mut self, what: &'static str) -> Result<Option<[u8; 32]>, WireError> {
        if self.bool(what)? { self.array::<32>(what).map(Some) } else { Ok(None) }
    }
    pub(crate) fn opt_u64(&mut self, what: &'static str) -> Result<Option<u64>, WireError> {
        if self.bool(what)? { self.u64(what).map(Some) } else { Ok(None) }
    }
    pub(crate) fn finish(self, what: &'static str) -> Result<(), WireError> {
        match self.buf.remaining() {
            0 => Ok(()),
            count => Err(WireError::Trailing { what, count }),
        }
    }
}

pub(crate) fn put_short_str(out: &mut BytesMut, s: &str) {
    // Names are validated to at most 64 bytes; anything longer is a programming error upstream,
    // so truncate rather than emit a frame the peer would misparse.
    let b = &s.as_bytes()[..s.len().min(255)];
    out.put_u8(b.len() as u8);
    out.put_slice(b);
}

pub(crate) fn put_addr(out: &mut BytesMut, a: &std::net::SocketAddr) {
    match a.ip() {
        std::net::IpAddr::V4(ip) => {
            out.put_u8(4);
            out.put_slice(&ip.octets());
        }
        std::net::IpAddr::V6(ip) => {
            out.put_u8(6);
            out.put_slice(&ip.octets());
        }
    }
    out.put_u16(a.port());
}

pub(crate) fn put_opt_addr(out: &mut BytesMut, a: &Option<std::net::SocketAddr>) {
    out.put_u8(u8::from(a.is_some()));
    if let Some(a) = a {
        put_addr(out, a);
    }
}

pub(crate) fn put_opt_u64(out: &mut BytesMut, v: Option<u64>) {
    out.put_u8(u8::from(v.is_some()));
    if let Some(v) = v {
        out.put_u64(v);
    }
}

pub(crate) fn put_opt_key(out: &mut BytesMut, k: &Option<[u8; 32]>) {
    out.put_u8(u8::from(k.is_some()));
    if let Some(k) = k {
        out.put_slice(k);
    }
}

pub(crate) fn put_text(out: &mut BytesMut, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.put_u16(end as u16);
    out.put_slice(&s.as_bytes()[..end]);
}
