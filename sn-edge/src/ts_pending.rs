//! What an HTTP-TS viewer is owed, and writing it: runs of spool bytes, each sent by one
//! `sendfile` (a viewer's new chunks are usually one run, as the spool appends them in order),
//! or chunks in memory when the spool could not take them, sent by one vectored write.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::AsFd;
use std::sync::Arc;

use bytes::Bytes;
use proto::Chunk;

use crate::ts_spool::{Block, Span};

/// Chunks in memory in one vectored write at most.
const MAX_IOV: usize = 64;

enum Run {
    /// `start..end` of a spool block.
    File { block: Arc<Block>, start: u64, end: u64 },
    /// A chunk's bytes from `start`.
    Mem { bytes: Bytes, start: usize },
}

impl Run {
    fn len(&self) -> u64 {
        match self {
            Run::File { start, end, .. } => end - start,
            Run::Mem { bytes, start } => (bytes.len() - start) as u64,
        }
    }

    /// Drops the first `n` bytes (fewer than it has).
    fn consume(&mut self, n: u64) {
        match self {
            Run::File { start, .. } => *start += n,
            Run::Mem { start, .. } => *start += n as usize,
        }
    }

    /// Keeps only the first `n` bytes.
    fn keep(&mut self, n: u64) {
        match self {
            Run::File { start, end, .. } => *end = *start + n,
            Run::Mem { bytes, start } => bytes.truncate(*start + n as usize),
        }
    }
}

/// A viewer's bytes owed, in stream order.
#[derive(Default)]
pub(crate) struct Pending {
    runs: VecDeque<Run>,
    /// Where each chunk owed ends, in bytes of the viewer's stream, and its media time.
    ends: VecDeque<(u64, u64)>,
    /// Bytes of the stream written, and where the last chunk written whole ended.
    sent: u64,
    done: u64,
}

impl Pending {
    /// Queues `chunk`, from the spool where it has it (`span`).
    pub fn push(&mut self, span: Option<&Span>, chunk: &Chunk) {
        let len = chunk.payload.len() as u64;
        if len == 0 {
            return;
        }
        match (span, self.runs.back_mut()) {
            (Some(s), Some(Run::File { block, end, .. })) if Arc::ptr_eq(block, &s.block) && *end == s.start => {
                *end = s.end;
            }
            (Some(s), _) => self.runs.push_back(Run::File { block: s.block.clone(), start: s.start, end: s.end }),
            (None, _) => self.runs.push_back(Run::Mem { bytes: chunk.payload.clone(), start: 0 }),
        }
        let queued = self.ends.back().map_or(self.sent, |e| e.0);
        self.ends.push_back((queued + len, chunk.header.media_ts));
    }

    /// Chunks owed (whole or begun).
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The media time of the oldest chunk owed.
    pub fn oldest_ts(&self) -> Option<u64> {
        self.ends.front().map(|e| e.1)
    }

    /// Whether part of the oldest chunk owed is written: the stream must go on with its rest.
    pub fn begun(&self) -> bool {
        self.sent > self.done
    }

    /// Drops everything owed but the rest of a chunk begun.
    pub fn keep_begun(&mut self) {
        let Some(&(end, _)) = self.ends.front().filter(|_| self.begun()) else {
            self.runs.clear();
            self.ends.clear();
            return;
        };
        self.ends.truncate(1);
        let mut left = end - self.sent;
        let mut kept = 0;
        for run in self.runs.iter_mut() {
            kept += 1;
            if run.len() >= left {
                run.keep(left);
                break;
            }
            left -= run.len();
        }
        self.runs.truncate(kept);
    }

    /// Writes as much as `socket` takes now: the bytes written and the media time of the last
    /// chunk written whole. An error means the viewer is gone.
    pub fn write(&mut self, socket: &impl AsFd) -> io::Result<(usize, Option<u64>)> {
        let (mut total, mut last_ts) = (0, None);
        while let Some(front) = self.runs.front() {
            let (wrote, want) = match front {
                Run::File { block, start, end } => {
                    let want = (end - start) as usize;
                    (block.file().send_to(socket, *start, want), want)
                }
                Run::Mem { .. } => {
                    let mut iov = [IoSlice::new(&[]); MAX_IOV];
                    let mut n = 0;
                    let mut want = 0;
                    for run in self.runs.iter().take(MAX_IOV) {
                        let Run::Mem { bytes, start } = run else { break };
                        iov[n] = IoSlice::new(&bytes[*start..]);
                        want += iov[n].len();
                        n += 1;
                    }
                    (livesky_net::takeover::send_vectored_unwatched(socket, &iov[..n]), want)
                }
            };
            match wrote {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => {
                    total += w;
                    last_ts = self.advance(w as u64).or(last_ts);
                    if w < want {
                        // The socket is full: asking again now would only be told so.
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok((total, last_ts))
    }

    /// Counts `w` bytes written: the media time of the last chunk they finished.
    fn advance(&mut self, mut w: u64) -> Option<u64> {
        self.sent += w;
        while let Some(front) = self.runs.front_mut() {
            let len = front.len();
            if w < len {
                front.consume(w);
                break;
            }
            w -= len;
            self.runs.pop_front();
        }
        let mut last = None;
        while let Some(&(end, ts)) = self.ends.front()
            && end <= self.sent
        {
            self.done = end;
            last = Some(ts);
            self.ends.pop_front();
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    use proto::{ChannelId, ChunkFlags, ChunkHeader};

    use super::*;
    use crate::ts_spool::Spool;

    fn chunk(seq: u64, payload: Vec<u8>) -> Chunk {
        let header = ChunkHeader {
            channel: ChannelId::new("c").unwrap(),
            seq,
            ingest_ms: 1000 + seq,
            media_ts: seq * 3000,
            flags: ChunkFlags::empty(),
        };
        Chunk { header, payload: Bytes::from(payload), signature: None }
    }

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let tx = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (rx, _) = l.accept().unwrap();
        tx.set_nonblocking(true).unwrap();
        (tx, rx)
    }

    fn read(rx: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut out = vec![0; n];
        rx.read_exact(&mut out).unwrap();
        out
    }

    /// Chunks 0..n of `size` bytes, each filled with its seq; every third kept in memory only.
    fn queue(spool: &Spool, pending: &mut Pending, n: u64, size: usize) -> Vec<u8> {
        let mut stream = Vec::new();
        for seq in 0..n {
            let c = chunk(seq, vec![seq as u8; size]);
            let span = if seq % 3 == 2 { None } else { spool.span(&c) };
            pending.push(span.as_ref(), &c);
            stream.extend_from_slice(&c.payload);
        }
        stream
    }

    #[test]
    fn spool_runs_merge_and_the_stream_arrives_in_order() {
        let spool = Spool::new(std::path::Path::new(""), Default::default());
        let mut p = Pending::default();
        let stream = queue(&spool, &mut p, 7, 1000);
        // Chunks 0-1, 3-4 and 6 are spool runs; 2 and 5 are in memory.
        assert_eq!(p.runs.len(), 5);
        let (tx, mut rx) = pair();
        let (n, last) = p.write(&tx).unwrap();
        assert_eq!((n, last), (7000, Some(6 * 3000)));
        assert!(p.is_empty() && !p.begun());
        assert_eq!(read(&mut rx, 7000), stream);
    }

    #[test]
    fn a_full_socket_leaves_a_chunk_begun_and_skipping_keeps_its_rest() {
        let spool = Spool::new(std::path::Path::new(""), Default::default());
        let mut p = Pending::default();
        let stream = queue(&spool, &mut p, 60, 100_000);
        let (tx, mut rx) = pair();
        let (n, last) = p.write(&tx).unwrap();
        assert!(n > 0 && n < stream.len(), "a socket nobody reads took {n} of {} bytes", stream.len());
        let whole = n / 100_000;
        assert_eq!(last, whole.checked_sub(1).map(|k| k as u64 * 3000));
        assert!(p.begun(), "a write that stops in a chunk leaves it begun");
        assert_eq!(p.len(), 60 - whole);
        p.keep_begun();
        assert_eq!(p.len(), 1);
        assert_eq!(p.oldest_ts(), Some(whole as u64 * 3000));
        // The reader drains; what follows is exactly the begun chunk's rest, then the next pushed.
        let next = chunk(99, vec![0xee; 10]);
        p.push(spool.span(&next).as_ref(), &next);
        let mut got = read(&mut rx, n);
        loop {
            let (m, _) = p.write(&tx).unwrap();
            got.extend(read(&mut rx, m));
            if p.is_empty() {
                break;
            }
        }
        let end = (whole + 1) * 100_000;
        assert_eq!(got.len(), end + 10);
        assert_eq!(&got[..end], &stream[..end]);
        assert_eq!(&got[end..], &[0xee; 10]);
    }

    #[test]
    fn skipping_with_nothing_begun_drops_all() {
        let spool = Spool::new(std::path::Path::new(""), Default::default());
        let mut p = Pending::default();
        queue(&spool, &mut p, 4, 10);
        p.keep_begun();
        assert!(p.is_empty() && p.runs.is_empty());
        let c = chunk(9, vec![1; 5]);
        p.push(spool.span(&c).as_ref(), &c);
        let (tx, mut rx) = pair();
        assert_eq!(p.write(&tx).unwrap(), (5, Some(9 * 3000)));
        assert_eq!(read(&mut rx, 5), [1; 5]);
    }
}
