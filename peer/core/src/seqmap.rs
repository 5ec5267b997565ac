//! Chunks by sequence number in a ring. Seqs held by a buffer are dense and move forward, so a
//! deque indexed by `seq - base` gives O(1) insert, lookup and eviction from the front, where a
//! B-tree searched and shifted big values on every one (the buffer map alone asks for 256 seqs).

use std::collections::VecDeque;

use proto::Chunk;

pub struct SeqMap {
    /// Seq of `slots[0]`.
    base: u64,
    /// First and last are `Some` whenever the map is not empty.
    slots: VecDeque<Option<Chunk>>,
    /// Widest span of seqs held; a chunk further ahead pushes the oldest out.
    max_span: u64,
}

impl SeqMap {
    pub fn new(max_span: u64) -> Self {
        Self { base: 0, slots: VecDeque::new(), max_span: max_span.max(1) }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn index(&self, seq: u64) -> Option<usize> {
        usize::try_from(seq.checked_sub(self.base)?).ok().filter(|&i| i < self.slots.len())
    }

    pub fn get(&self, seq: u64) -> Option<&Chunk> {
        self.slots.get(self.index(seq)?)?.as_ref()
    }

    pub fn contains_key(&self, seq: u64) -> bool {
        self.get(seq).is_some()
    }

    /// Adds `c` at `seq` unless one is held there; false if it was.
    pub fn insert(&mut self, seq: u64, c: Chunk) -> bool {
        if self.slots.is_empty() {
            self.base = seq;
            self.slots.push_back(Some(c));
            return true;
        }
        if seq < self.base {
            let gap = self.base - seq;
            let span = gap.saturating_add(self.slots.len() as u64);
            if span > self.max_span {
                // Older than anything worth keeping next to what is held.
                return false;
            }
            for _ in 1..gap {
                self.slots.push_front(None);
            }
            self.slots.push_front(Some(c));
            self.base = seq;
            return true;
        }
        if let Some(i) = self.index(seq) {
            if self.slots[i].is_some() {
                return false;
            }
            self.slots[i] = Some(c);
            return true;
        }
        // Past the end: make room, dropping the oldest if the span would get too wide.
        if seq - self.base >= self.max_span {
            let keep_from = seq - (self.max_span - 1);
            while !self.slots.is_empty() && self.base < keep_from {
                self.slots.pop_front();
                self.base += 1;
            }
            self.trim_front();
            if self.slots.is_empty() {
                self.base = seq;
                self.slots.push_back(Some(c));
                return true;
            }
        }
        while self.base + (self.slots.len() as u64) < seq {
            self.slots.push_back(None);
        }
        self.slots.push_back(Some(c));
        true
    }

    fn trim_front(&mut self) {
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
    }

    fn trim_back(&mut self) {
        while let Some(None) = self.slots.back() {
            self.slots.pop_back();
        }
    }

    pub fn first(&self) -> Option<(u64, &Chunk)> {
        Some((self.base, self.slots.front()?.as_ref()?))
    }

    pub fn last(&self) -> Option<(u64, &Chunk)> {
        let c = self.slots.back()?.as_ref()?;
        Some((self.base + self.slots.len() as u64 - 1, c))
    }

    pub fn pop_first(&mut self) -> Option<(u64, Chunk)> {
        let c = self.slots.pop_front()??;
        let seq = self.base;
        self.base += 1;
        self.trim_front();
        Some((seq, c))
    }

    /// Chunks held from `seq` on, in order.
    pub fn range_from(&self, seq: u64) -> impl Iterator<Item = (u64, &Chunk)> {
        let skip = usize::try_from(seq.saturating_sub(self.base)).unwrap_or(usize::MAX);
        let base = self.base;
        self.slots.iter().enumerate().skip(skip).filter_map(move |(i, c)| Some((base + i as u64, c.as_ref()?)))
    }

    /// Chunks held up to `seq`, newest first.
    pub fn rev_to(&self, seq: u64) -> impl Iterator<Item = (u64, &Chunk)> {
        let end = match seq.checked_sub(self.base) {
            Some(i) => usize::try_from(i).map_or(self.slots.len(), |i| (i + 1).min(self.slots.len())),
            None => 0,
        };
        let base = self.base;
        self.slots.range(..end).enumerate().rev().filter_map(move |(i, c)| Some((base + i as u64, c.as_ref()?)))
    }

    pub fn retain(&mut self, mut keep: impl FnMut(u64, &Chunk) -> bool) {
        let base = self.base;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|c| !keep(base + i as u64, c)) {
                *slot = None;
            }
        }
        self.trim_front();
        self.trim_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proto::{ChannelId, ChunkFlags, ChunkHeader};

    fn chunk(seq: u64) -> Chunk {
        Chunk {
            header: ChunkHeader {
                channel: ChannelId::new("c").unwrap(),
                seq,
                ingest_ms: 0,
                media_ts: seq,
                flags: ChunkFlags::empty(),
            },
            payload: Bytes::new(),
            signature: None,
        }
    }

    fn seqs(m: &SeqMap) -> Vec<u64> {
        m.range_from(0).map(|(s, _)| s).collect()
    }

    #[test]
    fn holds_what_a_btree_would_in_any_arrival_order() {
        let mut m = SeqMap::new(100);
        let mut model = std::collections::BTreeSet::new();
        // A deterministic shuffle of 10..60 with duplicates.
        for k in 0..120u64 {
            let seq = 10 + (k * 37) % 50;
            assert_eq!(m.insert(seq, chunk(seq)), model.insert(seq), "insert {seq}");
            assert_eq!(m.first().map(|(s, _)| s), model.first().copied());
            assert_eq!(m.last().map(|(s, _)| s), model.last().copied());
        }
        assert_eq!(seqs(&m), model.iter().copied().collect::<Vec<_>>());
        assert_eq!(m.rev_to(30).map(|(s, _)| s).collect::<Vec<_>>(), (10..=30).rev().collect::<Vec<_>>());
        assert_eq!(m.range_from(55).map(|(s, _)| s).collect::<Vec<_>>(), (55..60).collect::<Vec<_>>());
        m.retain(|s, _| s % 2 == 1);
        assert_eq!(m.first().map(|(s, _)| s), Some(11));
        assert_eq!(m.last().map(|(s, _)| s), Some(59));
        assert!(!m.contains_key(12) && m.contains_key(13));
        assert_eq!(m.pop_first().map(|(s, _)| s), Some(11));
        assert_eq!(m.first().map(|(s, _)| s), Some(13), "the hole at 12 is skipped");
        assert_eq!(m.get(13).map(|c| c.seq()), Some(13));
        assert!(m.get(1_000).is_none() && m.get(0).is_none());
    }

    #[test]
    fn a_chunk_far_ahead_pushes_the_oldest_out_and_a_stale_one_is_refused() {
        let mut m = SeqMap::new(10);
        for s in 100..105 {
            m.insert(s, chunk(s));
        }
        assert!(m.insert(112, chunk(112)));
        assert_eq!(seqs(&m), [103, 104, 112], "span kept within 10");
        assert!(m.insert(1_000_000, chunk(1_000_000)));
        assert_eq!(seqs(&m), [1_000_000]);
        assert!(!m.insert(5, chunk(5)), "far behind: refused");
        assert!(m.insert(999_995, chunk(999_995)));
        assert_eq!(m.first().map(|(s, _)| s), Some(999_995));
        m.retain(|_, _| false);
        assert!(m.is_empty() && m.first().is_none() && m.pop_first().is_none());
        assert!(m.insert(7, chunk(7)));
        assert_eq!(seqs(&m), [7]);
    }
}
