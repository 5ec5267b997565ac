//! A gate in front of rml_rtmp's chunk deserializer (sans-IO): it reads the same chunk stream,
//! with the same rules, one step ahead, and refuses what would crash or bloat the session before
//! rml_rtmp sees a byte of it.
//!
//! What rml_rtmp 0.8 cannot take, each found by hand or by the `rtmp_session` fuzz target:
//! - AMF0 values nested thousands deep (its deserializer recurses: the stack overflows and the
//!   process aborts) — nesting is capped at [`MAX_AMF_DEPTH`];
//! - an AMF0 command with fewer than three values (it indexes them: panic);
//! - a chunk that starts a message while another is half read: it keeps one message buffer, so a
//!   second header with a shorter length underflows (`capacity overflow` panic) — real encoders
//!   (FFmpeg, OBS/librtmp) never interleave, so this is refused;
//! - an extended timestamp smaller than the 24-bit field it extends (subtraction overflow);
//! - message lengths it reserves memory for up front — capped per message type.
//!
//! A header is checked as soon as it is whole (rml_rtmp acts on a header before the payload
//! arrives); a message's content when its last chunk is whole.

use std::collections::HashMap;

/// Deepest AMF0 nesting accepted (objects, ECMA and strict arrays). Encoders send depth 1–2.
pub const MAX_AMF_DEPTH: usize = 16;
/// Largest audio or video message (a 4K keyframe at 50 Mbit/s is ~2 MB).
pub const MAX_MEDIA_MESSAGE: u32 = 8 << 20;
/// Largest message of any other type (commands, metadata, protocol control).
pub const MAX_CONTROL_MESSAGE: u32 = 64 << 10;
/// Distinct chunk streams one connection may open (encoders use a handful).
pub const MAX_CHUNK_STREAMS: usize = 64;

const EXTENDED: u32 = 0x00FF_FFFF;
const INITIAL_CHUNK_SIZE: u32 = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("message of type {type_id} is {len} bytes; at most {max} are accepted")]
    TooLarge { type_id: u8, len: u32, max: u32 },
    #[error("chunk stream {csid} continues a message it never started")]
    NoPreviousHeader { csid: u32 },
    #[error(
        "a chunk of stream {csid} (format {fmt}) arrived while a message on stream {open} was half read; interleaved messages are not supported"
    )]
    Interleaved { csid: u32, fmt: u8, open: u32 },
    #[error("extended timestamp {0:#x} is below the 24-bit field it extends")]
    BadExtendedTimestamp(u32),
    #[error("more than {MAX_CHUNK_STREAMS} chunk streams")]
    TooManyChunkStreams,
    #[error("chunk size {0} is outside 1..={MAX_MEDIA_MESSAGE}")]
    BadChunkSize(u32),
    #[error("AMF0 values nested deeper than {MAX_AMF_DEPTH}")]
    TooDeep,
    #[error("malformed AMF0: {0}")]
    Amf(&'static str),
    #[error("AMF command with {0} values; a command needs a name, a transaction id and an object")]
    ShortCommand(usize),
}

#[derive(Debug, Clone, Copy)]
struct Header {
    ts_field: u32,
    len: u32,
    type_id: u8,
}

/// The message being read (its first chunk is in).
struct Partial {
    csid: u32,
    got: u32,
    /// The payload so far, kept only for types whose content is checked.
    data: Vec<u8>,
}

/// One parsed chunk header: where its payload starts and how long it is.
struct Chunk {
    csid: u32,
    header: Header,
    payload_at: usize,
    payload_len: u32,
}

#[derive(Default)]
pub struct ChunkGuard {
    pending: Vec<u8>,
    chunk_size: u32,
    headers: HashMap<u32, Header>,
    partial: Option<Partial>,
}

fn max_len(type_id: u8) -> u32 {
    match type_id {
        8 | 9 => MAX_MEDIA_MESSAGE,
        _ => MAX_CONTROL_MESSAGE,
    }
}

/// Types whose whole content the guard reads: set chunk size, and the AMF0-encoded ones
/// rml_rtmp deserializes (15 and 17 are "AMF3" types that carry AMF0 in practice).
fn kept(type_id: u8) -> bool {
    matches!(type_id, 1 | 15 | 17 | 18 | 20)
}

fn be(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0, |acc, &b| (acc << 8) | u32::from(b))
}

impl ChunkGuard {
    pub fn new() -> Self {
        Self { chunk_size: INITIAL_CHUNK_SIZE, ..Default::default() }
    }

    /// Checks `bytes` (the next bytes of the chunk stream, after the handshake). `Ok` means
    /// rml_rtmp may be given them; an error ends the connection.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), GuardError> {
        self.pending.extend_from_slice(bytes);
        let mut at = 0;
        let result = loop {
            match self.next_chunk(at) {
                Ok(Some(c)) => {
                    let end = c.payload_at + c.payload_len as usize;
                    if self.pending.len() < end {
                        break Ok(()); // header checked; the payload is still coming
                    }
                    if let Err(e) = self.take_chunk(&c) {
                        break Err(e);
                    }
                    at = end;
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.pending.drain(..at);
        result
    }

    /// Parses (without consuming) the chunk header at `at`: None until it is whole.
    fn next_chunk(&self, at: usize) -> Result<Option<Chunk>, GuardError> {
        let buf = &self.pending[at..];
        let Some(&first) = buf.first() else { return Ok(None) };
        let fmt = first >> 6;
        let (csid, mut i) = match first & 0x3f {
            0 if buf.len() >= 2 => (u32::from(buf[1]) + 64, 2),
            1 if buf.len() >= 3 => (u32::from(buf[2]) * 256 + u32::from(buf[1]) + 64, 3),
            0 | 1 => return Ok(None),
            x => (u32::from(x), 1),
        };
        let fields = [11, 7, 3, 0][usize::from(fmt)];
        if buf.len() < i + fields {
            return Ok(None);
        }
        if let Some(p) = &self.partial
            && (fmt != 3 || csid != p.csid)
        {
            return Err(GuardError::Interleaved { csid, fmt, open: p.csid });
        }
        let mut header = match (fmt, self.headers.get(&csid)) {
            (0, _) => Header { ts_field: 0, len: 0, type_id: 0 },
            (_, Some(h)) => *h,
            (_, None) => return Err(GuardError::NoPreviousHeader { csid }),
        };
        if fmt == 0 && !self.headers.contains_key(&csid) && self.headers.len() >= MAX_CHUNK_STREAMS {
            return Err(GuardError::TooManyChunkStreams);
        }
        if fmt < 3 {
            header.ts_field = be(&buf[i..i + 3]);
        }
        if fmt < 2 {
            header.len = be(&buf[i + 3..i + 6]);
            header.type_id = buf[i + 6];
        }
        i += fields;
        if header.ts_field >= EXTENDED {
            if buf.len() < i + 4 {
                return Ok(None);
            }
            let ext = be(&buf[i..i + 4]);
            // rml_rtmp takes the delta as `ext - 0xFFFFFF` on a message's first chunk.
            if fmt != 0 && self.partial.is_none() && ext < EXTENDED {
                return Err(GuardError::BadExtendedTimestamp(ext));
            }
            i += 4;
        }
        let got = self.partial.as_ref().map_or(0, |p| p.got);
        if got == 0 && header.len > max_len(header.type_id) {
            return Err(GuardError::TooLarge {
                type_id: header.type_id,
                len: header.len,
                max: max_len(header.type_id),
            });
        }
        // rml_rtmp's rule for a chunk's payload length.
        let payload_len =
            if header.len > self.chunk_size { (header.len - got).min(self.chunk_size) } else { header.len };
        Ok(Some(Chunk { csid, header, payload_at: at + i, payload_len }))
    }

    /// A whole chunk: the message grows, and is checked once it is complete.
    fn take_chunk(&mut self, c: &Chunk) -> Result<(), GuardError> {
        self.headers.insert(c.csid, c.header);
        let payload = &self.pending[c.payload_at..c.payload_at + c.payload_len as usize];
        let mut p = self.partial.take().unwrap_or(Partial { csid: c.csid, got: 0, data: Vec::new() });
        p.got += c.payload_len;
        if kept(c.header.type_id) {
            p.data.extend_from_slice(payload);
        }
        if p.got < c.header.len {
            self.partial = Some(p);
            return Ok(());
        }
        self.message(c.header.type_id, &p.data)
    }

    fn message(&mut self, type_id: u8, data: &[u8]) -> Result<(), GuardError> {
        match type_id {
            1 if data.len() >= 4 => {
                let size = be(&data[..4]);
                // rml_rtmp refuses sizes above 2^31 - 1 itself; tiny or huge ones are refused here.
                if size < 0x8000_0000 {
                    if size == 0 || size > MAX_MEDIA_MESSAGE {
                        return Err(GuardError::BadChunkSize(size));
                    }
                    self.chunk_size = size;
                }
            }
            15 | 18 => {
                scan_amf0(data)?;
            }
            17 | 20 => {
                // rml_rtmp skips the leading 0 of an "AMF3" command that carries AMF0.
                let data = if type_id == 17 && data.first() == Some(&0) { &data[1..] } else { data };
                let values = scan_amf0(data)?;
                if values < 3 {
                    return Err(GuardError::ShortCommand(values));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

enum Frame {
    /// Object or ECMA array: properties until an empty name and the end marker.
    Object,
    /// Strict array: this many values more (fewer if the data ends).
    Array(u32),
}

/// A cursor over AMF0 bytes that refuses to read past the end.
struct Amf<'a>(&'a [u8]);

impl<'a> Amf<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], GuardError> {
        if self.0.len() < n {
            return Err(GuardError::Amf("value runs past the end of the message"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u16(&mut self) -> Result<usize, GuardError> {
        Ok(usize::from(u16::from_be_bytes([self.take(1)?[0], self.take(1)?[0]])))
    }
    fn utf8(&mut self, what: &'static str) -> Result<(), GuardError> {
        let len = self.u16()?;
        std::str::from_utf8(self.take(len)?).map(drop).map_err(|_| GuardError::Amf(what))
    }
}

/// Walks AMF0 `data` the way rml_amf0 reads it, without recursion, and returns how many
/// top-level values it would yield. Stricter than rml_amf0 where that reads past the end.
pub fn scan_amf0(data: &[u8]) -> Result<usize, GuardError> {
    let mut r = Amf(data);
    let mut stack: Vec<Frame> = Vec::new();
    let mut top = 0usize;
    loop {
        // Where the next value comes from: top level, an array slot, or an object property.
        match stack.last_mut() {
            None => {}
            Some(Frame::Array(0)) => {
                stack.pop();
                continue;
            }
            Some(Frame::Array(n)) => *n -= 1,
            Some(Frame::Object) => {
                if r.0.len() >= 2 && r.0[..2] == [0, 0] {
                    r.take(2)?;
                    if r.take(1)?[0] != 9 {
                        return Err(GuardError::Amf("object property without a name"));
                    }
                    stack.pop();
                    continue;
                }
                r.utf8("property name is not UTF-8")?;
            }
        }
        let Some(&marker) = r.0.first() else {
            if matches!(stack.last(), Some(Frame::Object)) {
                return Err(GuardError::Amf("object ends without its end marker"));
            }
            // rml_amf0 ends arrays and the message quietly at the end of the data.
            return Ok(top);
        };
        r.take(1)?;
        let at_top = stack.is_empty();
        match marker {
            0 => drop(r.take(8)?),
            1 => drop(r.take(1)?),
            2 => r.utf8("string is not UTF-8")?,
            3 => stack.push(Frame::Object),
            5 | 6 => {}
            8 => {
                r.take(4)?;
                stack.push(Frame::Object);
            }
            // rml_amf0's "no value": it ends the message at top level, and an array anywhere.
            9 => match stack.last() {
                None => return Ok(top),
                Some(Frame::Array(_)) => {
                    stack.pop();
                    continue;
                }
                Some(Frame::Object) => return Err(GuardError::Amf("object property without a value")),
            },
            10 => {
                let n = be(r.take(4)?);
                stack.push(Frame::Array(n));
            }
            _ => return Err(GuardError::Amf("unknown AMF0 type marker")),
        }
        if stack.len() > MAX_AMF_DEPTH {
            return Err(GuardError::TooDeep);
        }
        top += usize::from(at_top);
    }
}

#[cfg(test)]
mod tests;
