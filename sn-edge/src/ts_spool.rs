//! A channel's recent HTTP-TS stream in memory files ([`PageFile`]), so that viewers' sockets
//! take it by `sendfile` rather than by a copy from the edge's memory for every viewer
//! (issue 25: the copy was a fifth of an edge's serving CPU). Each chunk is written to the
//! spool once per channel, whoever asks first; every viewer then sends the same pages.
//!
//! A chunk's bytes are appended to the current block and never written again; a full block is
//! left to the viewers still owing bytes from it and freed with the last of them. A chunk is
//! known by its seq and checked by its Tier-0 cut time and length, so a channel whose seqs start
//! over never sends an old chunk's bytes for a new one.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use livesky_net::pagefile::PageFile;
use proto::Chunk;
use tracing::warn;

/// A block's size: a fresh one per ~20 s of a 400 kbit/s stream, per second of an 8 Mbit/s one.
const BLOCK: u64 = 1 << 20;
/// Chunks the spool's index keeps, newest first: more than a viewer may lag before it skips.
const KEEP_CHUNKS: usize = 2048;
/// Bytes the index keeps at most (a fast stream reaches this before [`KEEP_CHUNKS`]: 16 s of
/// 8 Mbit/s). Each block the index still refers to holds a file descriptor.
const KEEP_BYTES: u64 = 16 << 20;
/// After a block could not be made, how long chunks go by plain writes before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Chunks a group remembers where to find.
const RECENT: usize = 512;

/// One block of the spool.
#[derive(Debug)]
pub(crate) struct Block {
    file: PageFile,
    /// Where its chunks are counted.
    counter: prometheus::IntCounter,
}

impl Block {
    pub fn file(&self) -> &PageFile {
        &self.file
    }
}

/// Where a chunk's bytes are: `start..end` of `block`.
#[derive(Debug, Clone)]
pub(crate) struct Span {
    pub block: Arc<Block>,
    pub start: u64,
    pub end: u64,
}

/// Which chunk a span holds: its seq names it, its cut time and length confirm it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Id {
    seq: u64,
    ingest_ms: u64,
    len: u64,
}

impl Id {
    fn of(c: &Chunk) -> Self {
        Self { seq: c.seq(), ingest_ms: c.header.ingest_ms, len: c.payload.len() as u64 }
    }
}

/// Chunks put in a spool, by where they went (`livesky_edge_spool_chunks_total`).
#[derive(Clone)]
pub(crate) struct Counters {
    pub file: prometheus::IntCounter,
    pub memory_file: prometheus::IntCounter,
    pub none: prometheus::IntCounter,
}

#[cfg(test)]
impl Default for Counters {
    /// Counters registered nowhere.
    fn default() -> Self {
        let new = || prometheus::IntCounter::new("spool_chunks", "test").expect("a valid name");
        Self { file: new(), memory_file: new(), none: new() }
    }
}

/// A channel's spool, shared by its fan-out groups.
pub(crate) struct Spool(Mutex<Inner>);

struct Inner {
    /// Where blocks are made (failing that, in memory).
    dir: PathBuf,
    /// Whether the directory failed already (told once).
    dir_failed: bool,
    counters: Counters,
    /// The block being filled, and how far.
    current: Option<(Arc<Block>, u64)>,
    index: BTreeMap<u64, (Id, Span)>,
    /// Bytes of the chunks indexed.
    indexed: u64,
    /// No block is tried before this, after one could not be made.
    broken_until: Option<Instant>,
}

impl Spool {
    /// A spool making its blocks in `dir` (empty: the system's temporary directory).
    pub fn new(dir: &Path, counters: Counters) -> Self {
        let dir = if dir.as_os_str().is_empty() { std::env::temp_dir() } else { dir.to_path_buf() };
        let inner = Inner {
            dir,
            dir_failed: false,
            counters,
            current: None,
            index: BTreeMap::new(),
            indexed: 0,
            broken_until: None,
        };
        Self(Mutex::new(inner))
    }

    /// Where `chunk`'s bytes are, written now if they were not yet; `None` if no memory file can
    /// be made (the viewer is then written from the chunk itself).
    pub fn span(&self, chunk: &Chunk) -> Option<Span> {
        let id = Id::of(chunk);
        let mut inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, span)) = inner.index.get(&id.seq)
            && *known == id
        {
            return Some(span.clone());
        }
        let Some(span) = inner.append(&chunk.payload) else {
            inner.counters.none.inc();
            return None;
        };
        span.block.counter.inc();
        inner.indexed += id.len;
        if let Some((old, _)) = inner.index.insert(id.seq, (id, span.clone())) {
            inner.indexed -= old.len;
        }
        inner.prune();
        Some(span)
    }
}

impl Inner {
    fn append(&mut self, bytes: &[u8]) -> Option<Span> {
        let len = bytes.len() as u64;
        let fits = self.current.as_ref().is_some_and(|(_, fill)| fill + len <= BLOCK || *fill == 0);
        if !fits {
            self.current = Some((self.new_block()?, 0));
        }
        let (block, fill) = self.current.as_mut()?;
        let start = *fill;
        if let Err(e) = block.file.write_at(bytes, start) {
            self.broken(&e);
            return None;
        }
        *fill += len;
        Some(Span { block: block.clone(), start, end: start + len })
    }

    fn new_block(&mut self) -> Option<Arc<Block>> {
        if self.broken_until.is_some_and(|t| Instant::now() < t) {
            return None;
        }
        let c = &self.counters;
        let made = match PageFile::new_in(&self.dir, &vec![0; BLOCK as usize]) {
            Ok(f) => Ok((f, c.file.clone())),
            Err(e) => {
                if !std::mem::replace(&mut self.dir_failed, true) {
                    warn!(dir = %self.dir.display(), error = %e, "cannot make HTTP-TS spool files here (check edge.ts_spool_dir); keeping them in memory");
                }
                PageFile::new().map(|f| (f, c.memory_file.clone()))
            }
        };
        match made {
            Ok((file, counter)) => Some(Arc::new(Block { file, counter })),
            Err(e) => {
                self.broken(&e);
                None
            }
        }
    }

    fn broken(&mut self, e: &std::io::Error) {
        warn!(error = %e, "cannot write HTTP-TS chunks to the spool; viewers get plain writes for {RETRY_AFTER:?}");
        self.current = None;
        self.broken_until = Some(Instant::now() + RETRY_AFTER);
    }

    fn prune(&mut self) {
        while self.index.len() > KEEP_CHUNKS || self.indexed > KEEP_BYTES {
            let Some((_, (id, _))) = self.index.pop_first() else { break };
            self.indexed -= id.len;
        }
    }
}

/// The spans a fan-out group looked up last, by seq: its viewers read the same few chunks on
/// every tick, and ask here without a lock.
pub(crate) struct Recent {
    base: u64,
    spans: VecDeque<Option<(Id, Span)>>,
}

impl Default for Recent {
    fn default() -> Self {
        Self { base: 0, spans: VecDeque::with_capacity(RECENT) }
    }
}

impl Recent {
    /// `chunk`'s span, from here or else from the spool.
    pub fn span(&mut self, spool: &Spool, chunk: &Chunk) -> Option<&Span> {
        let id = Id::of(chunk);
        let known = |r: &Self| {
            let i = id.seq.checked_sub(r.base)?;
            r.spans.get(usize::try_from(i).ok()?)?.as_ref().filter(|(k, _)| *k == id).map(|_| i as usize)
        };
        if let Some(i) = known(self) {
            return self.spans[i].as_ref().map(|(_, s)| s);
        }
        let span = spool.span(chunk)?;
        Some(self.remember(id, span))
    }

    fn remember(&mut self, id: Id, span: Span) -> &Span {
        let far = id.seq < self.base || id.seq - self.base >= (RECENT as u64) * 2;
        if far || self.spans.is_empty() {
            // Out of the window (a start far back, seqs begun again): it starts over here.
            self.spans.clear();
            self.base = id.seq;
        }
        let i = (id.seq - self.base) as usize;
        while self.spans.len() <= i {
            self.spans.push_back(None);
        }
        while self.spans.len() > RECENT {
            self.spans.pop_front();
            self.base += 1;
        }
        let i = (id.seq - self.base) as usize;
        let slot = &mut self.spans[i];
        &slot.insert((id, span)).1
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proto::{ChannelId, ChunkFlags, ChunkHeader};

    use super::*;

    fn chunk(seq: u64, ingest_ms: u64, payload: &'static [u8]) -> Chunk {
        let header = ChunkHeader {
            channel: ChannelId::new("c").unwrap(),
            seq,
            ingest_ms,
            media_ts: seq * 3000,
            flags: ChunkFlags::empty(),
        };
        Chunk { header, payload: Bytes::from_static(payload), signature: None }
    }

    fn spool() -> Spool {
        Spool::new(Path::new(""), Counters::default())
    }

    fn read(span: &Span) -> Vec<u8> {
        let mut out = vec![0; (span.end - span.start) as usize];
        std::os::unix::fs::FileExt::read_exact_at(&clone_file(span), &mut out, span.start).unwrap();
        out
    }

    fn clone_file(span: &Span) -> std::fs::File {
        let fd = std::os::fd::AsFd::as_fd(span.block.file()).try_clone_to_owned().unwrap();
        std::fs::File::from(fd)
    }

    #[test]
    fn a_chunk_is_written_once_and_found_again() {
        let spool = spool();
        let a = spool.span(&chunk(1, 10, b"aaaa")).unwrap();
        let b = spool.span(&chunk(2, 11, b"bb")).unwrap();
        let a2 = spool.span(&chunk(1, 10, b"aaaa")).unwrap();
        assert!(Arc::ptr_eq(&a.block, &b.block));
        assert_eq!((a.start, a.end, b.start, b.end), (0, 4, 4, 6));
        assert_eq!((a2.start, a2.end), (0, 4), "found, not written again");
        assert_eq!(read(&b), b"bb");
    }

    #[test]
    fn a_directory_that_cannot_hold_files_leaves_them_in_memory() {
        let counters = Counters::default();
        let spool = Spool::new(Path::new("/nonexistent/livesky-spool"), counters.clone());
        let span = spool.span(&chunk(1, 1, b"still sent")).unwrap();
        assert_eq!(read(&span), b"still sent");
        assert!(spool.0.lock().unwrap().dir_failed);
        assert_eq!((counters.file.get(), counters.memory_file.get(), counters.none.get()), (0, 1, 0));
    }

    #[test]
    fn a_seq_begun_again_is_a_new_chunk() {
        let spool = spool();
        spool.span(&chunk(1, 10, b"old")).unwrap();
        let fresh = spool.span(&chunk(1, 99, b"new")).unwrap();
        assert_eq!(read(&fresh), b"new");
        let mut recent = Recent::default();
        assert_eq!(read(recent.span(&spool, &chunk(1, 99, b"new")).unwrap()), b"new");
        assert_eq!(read(recent.span(&spool, &chunk(1, 5, b"eld")).unwrap()), b"eld");
    }

    #[test]
    fn a_full_block_is_followed_by_a_new_one() {
        static BIG: [u8; 700 << 10] = [1; 700 << 10];
        let spool = spool();
        let a = spool.span(&chunk(1, 1, &BIG)).unwrap();
        let b = spool.span(&chunk(2, 2, &BIG)).unwrap();
        assert!(!Arc::ptr_eq(&a.block, &b.block));
        assert_eq!(b.start, 0);
        assert_eq!(read(&b).len(), BIG.len());
    }

    #[test]
    fn the_index_keeps_the_newest_chunks() {
        let spool = spool();
        for seq in 0..(KEEP_CHUNKS as u64 + 10) {
            spool.span(&chunk(seq, seq, b"x")).unwrap();
        }
        let inner = spool.0.lock().unwrap();
        assert_eq!(inner.index.len(), KEEP_CHUNKS);
        assert_eq!(inner.index.first_key_value().map(|(k, _)| *k), Some(10));
        assert_eq!(inner.indexed, KEEP_CHUNKS as u64);
    }

    #[test]
    fn recent_keeps_a_window_and_starts_over_far_away() {
        let spool = spool();
        let mut recent = Recent::default();
        for seq in 100..(100 + RECENT as u64 + 50) {
            recent.span(&spool, &chunk(seq, seq, b"y")).unwrap();
        }
        assert_eq!(recent.spans.len(), RECENT);
        assert_eq!(recent.base, 150);
        recent.span(&spool, &chunk(7, 7, b"z")).unwrap();
        assert_eq!((recent.base, recent.spans.len()), (7, 1));
    }
}
