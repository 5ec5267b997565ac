//! One simulated edge: the real client service (admission, tracker, trees, signalling), what it
//! pushes to whom, start bursts within its egress budget, and its per-minute report row.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use livesky_edge_core::admission::AdmissionConfig;
use livesky_edge_core::model::{ModelParams, Stage};
use livesky_edge_core::service::{Output as EdgeOutput, Service, ServiceConfig};
use livesky_peer_core::core::Input as PeerInput;
use proto::peer::FromEdge;
use proto::{ChannelId, Chunk, ChunkFlags, ChunkHeader, SubstreamId, TokenBucket};

use crate::domain::{EdgeSpec, Ev, MinuteRow, Net};
use crate::engine::Micros;
use crate::scenario::{Mode, Scenario};

pub(crate) fn channel() -> ChannelId {
    ChannelId::new("cpc").unwrap_or_else(|_| unreachable!("a valid literal channel name"))
}

/// The live stream as every edge of a group gets it from its core SN: a ring of recent chunks.
pub(crate) struct Stream {
    ring: VecDeque<Chunk>,
    next_seq: u64,
    payload: Bytes,
}

impl Stream {
    pub fn new(sc: &Scenario) -> Self {
        let chunk_bytes = (u64::from(sc.stream.kbps) * u64::from(sc.stream.chunk_ms) / 8) as usize;
        Self { ring: VecDeque::new(), next_seq: 0, payload: Bytes::from(vec![0u8; chunk_bytes]) }
    }

    /// The next chunk of the source at virtual time `t`.
    pub fn produce(&mut self, sc: &Scenario, t: Micros) -> Chunk {
        let s = &sc.stream;
        let seq = self.next_seq;
        self.next_seq += 1;
        let c = Chunk {
            header: ChunkHeader {
                channel: channel(),
                seq,
                ingest_ms: t / 1000,
                media_ts: seq * u64::from(s.chunk_ms) * 90,
                flags: if seq.is_multiple_of(u64::from(s.keyframe_every)) {
                    ChunkFlags::KEYFRAME
                } else {
                    ChunkFlags::empty()
                },
            },
            payload: self.payload.clone(),
            signature: None,
        };
        self.ring.push_back(c.clone());
        let keep = (30_000 / s.chunk_ms).max(8) as usize;
        while self.ring.len() > keep {
            self.ring.pop_front();
        }
        c
    }

    fn get(&self, seq: u64) -> Option<&Chunk> {
        let first = self.ring.front()?.seq();
        self.ring.get(usize::try_from(seq.checked_sub(first)?).ok()?)
    }
}

pub(crate) struct SimEdge {
    pub spec: EdgeSpec,
    pub service: Service,
    masks: BTreeMap<u32, u64>,
    bursts: BTreeMap<u32, VecDeque<u64>>,
    budget: TokenBucket,
    pub row: MinuteRow,
}

impl SimEdge {
    /// Edge `local` of a group whose edges are called `names`.
    pub fn new(sc: &Scenario, spec: EdgeSpec, local: usize, names: &[String]) -> Self {
        let e = &sc.edges;
        let nc_star = sc.nc_star();
        // The baselines are the same edge with other limits: the CDN serves everyone it has
        // room for and sends the rest to a sibling (or refuses them); the mesh's edge only
        // seeds a few, builds no trees and redirects nobody.
        let seeds = (nc_star / 50).max(2).min(nc_star);
        let (n1c, nc_star, k_prime, max_clients) = match sc.mode {
            Mode::Hybrid => (e.n1c, nc_star, e.k_prime, usize::MAX),
            Mode::Cdn => (nc_star, nc_star, 1, nc_star as usize),
            Mode::Mesh => (seeds, seeds, 1, usize::MAX),
        };
        let admission = AdmissionConfig {
            n1c,
            nc_star,
            model: ModelParams { alpha: e.alpha, k_prime, lambda: e.lambda, mu: e.mu },
            substreams: sc.stream.substreams,
            media_kbps: sc.stream.kbps,
            upload_cap_factor: e.upload_cap_factor,
            max_clients,
            alpha_from_clients: sc.mode == Mode::Hybrid,
            seed: sc.seed ^ (spec.index as u64).wrapping_mul(0x9e37_79b9),
            ..AdmissionConfig::paper()
        };
        let mut cfg = ServiceConfig::new(channel(), admission);
        cfg.joins_per_ip_per_sec = 1e9;
        cfg.join_burst_per_ip = 1e9;
        cfg.max_burst_ms = sc.clients.buffer_s * 1000;
        if sc.mode != Mode::Mesh {
            cfg.siblings = names.iter().enumerate().filter(|&(j, _)| j != local).map(|(_, n)| n.clone()).collect();
        }
        let capacity = f64::from(e.capacity_mbps) * 125_000.0;
        Self {
            row: MinuteRow { edge: spec.index, ..Default::default() },
            spec,
            service: Service::new(cfg),
            masks: BTreeMap::new(),
            bursts: BTreeMap::new(),
            budget: TokenBucket::new(capacity, capacity),
        }
    }

    /// Full for new clients: redirects here would only bounce.
    pub fn full(&self) -> bool {
        self.service.snapshot().stage == Stage::Four
    }

    /// Carries out what the service decided.
    pub fn outputs(&mut self, t: Micros, net: &mut Net, stream: &Stream) {
        for out in self.service.drain() {
            match out {
                EdgeOutput::Send { conn, msg } => {
                    let i = conn as u32;
                    if net.alive(i) {
                        let d = net.edge_delay(i);
                        net.q.push(t + d, Ev::ToPeer(i, Box::new(PeerInput::FromEdge(msg))));
                    }
                }
                EdgeOutput::Close { conn } => self.forget(conn as u32),
                EdgeOutput::Serve { conn, mask, burst_ms, backfill } => {
                    let i = conn as u32;
                    if !net.alive(i) {
                        continue;
                    }
                    self.masks.insert(i, mask);
                    let sc = net.sc;
                    let k = sc.stream.substreams;
                    // A pure mesh has no start burst: only its seeds hear from the edge.
                    let burst_ms = burst_ms.filter(|_| sc.mode != Mode::Mesh || mask != 0);
                    if let Some(ms) = burst_ms {
                        let back = u64::from(ms / sc.stream.chunk_ms);
                        let first = stream.next_seq.saturating_sub(back);
                        let kf = u64::from(sc.stream.keyframe_every);
                        let start = first.div_ceil(kf) * kf;
                        self.bursts.insert(i, (start..stream.next_seq).collect());
                    }
                    if backfill != 0 {
                        // What the client may have missed of substreams it now takes from the edge.
                        let from = stream.next_seq.saturating_sub(u64::from(k) * 2);
                        let missed = stream
                            .ring
                            .iter()
                            .filter(|c| c.seq() >= from && backfill & (1 << SubstreamId::of(c.seq(), k).0) != 0);
                        for c in missed {
                            self.send(t, net, i, c.clone(), true);
                        }
                    }
                }
            }
        }
    }

    /// Client `i` is gone from this edge.
    pub fn forget(&mut self, i: u32) {
        self.masks.remove(&i);
        self.bursts.remove(&i);
    }

    /// Sends a chunk to client `i`: live pushes always (the admission keeps them within
    /// capacity), bursts only with budget left.
    fn send(&mut self, t: Micros, net: &mut Net, i: u32, c: Chunk, force: bool) -> bool {
        let len = c.payload.len() as f64;
        let now = net.clock.at(t);
        if force {
            self.budget.force_take(now, len);
        } else if !self.budget.try_take(now, len) {
            return false;
        }
        self.row.cdn_bytes += c.payload.len() as u64;
        let at = net.arrival(t + net.edge_delay(i), i, c.payload.len());
        net.q.push(at, Ev::ToPeer(i, Box::new(PeerInput::FromEdge(FromEdge::Chunk(c)))));
        true
    }

    /// A new chunk from the core: pushed to every client fed this substream, then start bursts
    /// as far as the budget goes.
    pub fn fan_out(&mut self, t: Micros, net: &mut Net, stream: &Stream, c: &Chunk) {
        let bit = 1u64 << SubstreamId::of(c.seq(), net.sc.stream.substreams).0;
        let targets: Vec<u32> = self.masks.iter().filter(|(_, m)| *m & bit != 0).map(|(&i, _)| i).collect();
        for i in targets {
            self.send(t, net, i, c.clone(), true);
        }
        let waiting: Vec<u32> = self.bursts.keys().copied().collect();
        'clients: for i in waiting {
            while let Some(&seq) = self.bursts.get(&i).and_then(|q| q.front()) {
                if let Some(c) = stream.get(seq).cloned()
                    && !self.send(t, net, i, c, false)
                {
                    break 'clients;
                }
                self.bursts.get_mut(&i).map(|q| q.pop_front());
            }
            self.bursts.remove(&i);
        }
    }

    /// Closes the minute ending at `minute`: the row with the edge's stage, P0 and Nc.
    pub fn close_minute(&mut self, minute: u32) -> MinuteRow {
        let snap = self.service.snapshot();
        let mut row = std::mem::take(&mut self.row);
        row.edge = self.spec.index;
        row.minute = minute;
        row.stage = snap.stage as u8;
        row.p0 = snap.p0;
        row.nc = snap.nc;
        row.refocus = snap.tree.refocus_total;
        self.row.edge = self.spec.index;
        row
    }
}
