//! Mesh pull repair (sans-IO): neighbours tell each other which chunks they hold (compact buffer
//! maps); a chunk still missing close to its playback deadline — after its tree parent should
//! long have delivered it — is requested from a neighbour that holds it. One request per chunk at
//! a time, spread over neighbours; a request that times out or is answered "not have" is retried
//! with another neighbour.

use proto::DetMap;
use std::time::Duration;

// std's `Instant` on native targets; `performance.now()` in a browser, where std's panics.
use web_time::Instant;

use bytes::Bytes;

use crate::core::LinkId;

#[derive(Debug, Clone)]
pub struct RepairConfig {
    /// How far ahead of playback missing chunks are repaired (0 disables repair).
    pub window_ms: u32,
    /// A chunk that plays within this and is not held while a later one is, is asked for at
    /// once: its deadline is too close to wait until every substream has passed it.
    pub lead_ms: u32,
    /// A request unanswered this long is asked elsewhere.
    pub request_timeout: Duration,
    /// Requests in flight at most.
    pub max_inflight: usize,
}

impl Default for RepairConfig {
    fn default() -> Self {
        Self { window_ms: 5_000, lead_ms: 1_000, request_timeout: Duration::from_millis(700), max_inflight: 64 }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RepairStats {
    pub requests: u64,
    pub repaired: u64,
    pub timeouts: u64,
    pub not_have: u64,
    /// Requests we answered for neighbours.
    pub served: u64,
    /// Buffer maps held, one per linked peer that sent one.
    pub maps_held: usize,
}

struct Map {
    first: u64,
    bits: Bytes,
}

impl Map {
    fn has(&self, seq: u64) -> bool {
        let Some(i) = seq.checked_sub(self.first) else { return false };
        let (byte, bit) = ((i / 8) as usize, i % 8);
        self.bits.get(byte).is_some_and(|b| b & (1 << bit) != 0)
    }
}

/// Builds a buffer map: bit i set when `first + i` is among `held`. Walks what is held rather
/// than asking about every seq of the span: a buffer holds a few of the 256.
pub fn buffer_map(first: u64, span: usize, held: impl IntoIterator<Item = u64>) -> Bytes {
    let mut bits = vec![0u8; span.div_ceil(8)];
    for s in held {
        if let Some(i) = s.checked_sub(first).and_then(|i| usize::try_from(i).ok()).filter(|&i| i < span) {
            bits[i / 8] |= 1 << (i % 8);
        }
    }
    Bytes::from(bits)
}

pub struct Repair {
    cfg: RepairConfig,
    maps: DetMap<LinkId, Map>,
    inflight: DetMap<u64, (LinkId, Instant)>,
    tried: DetMap<u64, Vec<LinkId>>,
    stats: RepairStats,
}

impl Repair {
    pub fn new(cfg: RepairConfig) -> Self {
        Self {
            cfg,
            maps: DetMap::default(),
            inflight: DetMap::default(),
            tried: DetMap::default(),
            stats: RepairStats::default(),
        }
    }

    pub fn config(&self) -> &RepairConfig {
        &self.cfg
    }

    pub fn stats(&self) -> RepairStats {
        RepairStats { maps_held: self.maps.len(), ..self.stats }
    }

    pub fn count_served(&mut self) {
        self.stats.served += 1;
    }

    pub fn on_map(&mut self, link: LinkId, first: u64, bits: Bytes) {
        self.maps.insert(link, Map { first, bits });
    }

    /// The newest chunk any neighbour's map shows.
    pub fn newest_known(&self) -> Option<u64> {
        self.maps
            .values()
            .filter_map(|m| {
                let last = m.bits.iter().enumerate().rev().find(|(_, b)| **b != 0)?;
                Some(m.first + last.0 as u64 * 8 + u64::from(7 - last.1.leading_zeros() as u8))
            })
            .max()
    }

    pub fn link_gone(&mut self, link: LinkId) {
        self.maps.remove(&link);
        self.inflight.retain(|_, (l, _)| *l != link);
    }

    /// A chunk arrived on `link`; true if it answers our request (so it should be taken).
    pub fn on_chunk(&mut self, link: LinkId, seq: u64) -> bool {
        match self.inflight.get(&seq) {
            Some((l, _)) if *l == link => {
                self.inflight.remove(&seq);
                self.tried.remove(&seq);
                self.stats.repaired += 1;
                true
            }
            _ => false,
        }
    }

    /// A chunk arrived another way: no need to ask for it any more.
    pub fn got(&mut self, seq: u64) {
        self.inflight.remove(&seq);
        self.tried.remove(&seq);
    }

    pub fn on_not_have(&mut self, link: LinkId, seq: u64) {
        if self.inflight.get(&seq).is_some_and(|(l, _)| *l == link) {
            self.inflight.remove(&seq);
            self.stats.not_have += 1;
            self.tried.entry(seq).or_default().push(link);
        }
    }

    /// Requests to send now for the `missing` chunks (most urgent first).
    pub fn plan(&mut self, now: Instant, missing: &[u64], out: &mut Vec<(LinkId, u64)>) {
        // Expired requests are retried elsewhere.
        let expired: Vec<(u64, LinkId)> =
            self.inflight.iter().filter(|(_, (_, at))| now >= *at).map(|(&s, (l, _))| (s, *l)).collect();
        for (seq, link) in expired {
            self.inflight.remove(&seq);
            self.stats.timeouts += 1;
            self.tried.entry(seq).or_default().push(link);
        }
        let lowest = missing.first().copied().unwrap_or(u64::MAX);
        self.tried.retain(|&s, _| s >= lowest);
        let mut load: DetMap<LinkId, usize> = DetMap::default();
        for (l, _) in self.inflight.values() {
            *load.entry(*l).or_default() += 1;
        }
        for &seq in missing {
            if self.inflight.len() >= self.cfg.max_inflight {
                break;
            }
            if self.inflight.contains_key(&seq) {
                continue;
            }
            let tried = self.tried.get(&seq);
            let holder = self
                .maps
                .iter()
                .filter(|(l, m)| m.has(seq) && !tried.is_some_and(|t| t.contains(l)))
                .min_by_key(|(l, _)| (load.get(*l).copied().unwrap_or(0), **l))
                .map(|(l, _)| *l);
            if let Some(link) = holder {
                *load.entry(link).or_default() += 1;
                self.inflight.insert(seq, (link, now + self.cfg.request_timeout));
                self.stats.requests += 1;
                out.push((link, seq));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_of(first: u64, seqs: &[u64]) -> Bytes {
        buffer_map(first, 64, seqs.iter().copied())
    }

    #[test]
    fn asks_a_holder_once_spreads_load_and_retries_elsewhere() {
        let t0 = Instant::now();
        let mut r = Repair::new(RepairConfig::default());
        r.on_map(LinkId::In(1), 100, map_of(100, &[105, 106, 107]));
        r.on_map(LinkId::In(2), 100, map_of(100, &[105, 106]));
        let mut out = Vec::new();
        r.plan(t0, &[105, 106, 107, 108], &mut out);
        // 108 nobody has; 105 and 106 go to different neighbours; 107 only link 1 has.
        out.sort();
        assert_eq!(out, [(LinkId::In(1), 105), (LinkId::In(1), 107), (LinkId::In(2), 106)]);
        out.clear();
        r.plan(t0 + Duration::from_millis(100), &[105, 106, 107], &mut out);
        assert!(out.is_empty(), "no duplicate requests while in flight");
        // Link 2 does not have 106 after all; link 1 times out on 105.
        r.on_not_have(LinkId::In(2), 106);
        r.plan(t0 + Duration::from_millis(800), &[105, 106, 107], &mut out);
        out.sort();
        assert_eq!(out, [(LinkId::In(1), 106), (LinkId::In(2), 105)], "retried with the other neighbour");
        assert_eq!(r.stats().timeouts, 2, "105 and 107 timed out");
        assert!(r.on_chunk(LinkId::In(2), 105), "the answer is taken");
        assert!(!r.on_chunk(LinkId::In(2), 105), "a second copy is not");
        assert!(!r.on_chunk(LinkId::In(3), 106), "unrequested chunks are not taken");
    }

    #[test]
    fn maps_encode_bits_in_order() {
        let m = Map { first: 10, bits: buffer_map(10, 20, (0..40).filter(|s| s % 3 == 0)) };
        assert!(m.has(12) && m.has(27) && !m.has(13) && !m.has(9) && !m.has(30));
    }
}
