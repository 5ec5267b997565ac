//! One simulated edge: the real client service (admission, tracker, trees, signalling), what it
//! pushes to whom, start bursts within its egress budget, and its per-minute report row.

use std::collections::VecDeque;

use bytes::Bytes;
use livesky_edge_core::admission::AdmissionConfig;
use livesky_edge_core::feeder::{ChunkMeta, Feeder, FeederConfig, RecentChunks};
use livesky_edge_core::model::{ModelParams, Stage};
use livesky_edge_core::service::{ConnId, Output as EdgeOutput, Service, ServiceConfig};
use livesky_peer_core::core::Input as PeerInput;
use proto::peer::FromEdge;
use proto::{ChannelId, Chunk, ChunkFlags, ChunkHeader};

use crate::domain::{EdgeSpec, Ev, MinuteRow, Net};
use crate::engine::Micros;
use crate::scenario::{Mode, Scenario};

pub(crate) fn channel() -> ChannelId {
    ChannelId::new("cpc").unwrap_or_else(|_| unreachable!("a valid literal channel name"))
}

/// The live stream as every edge of a group gets it from its relay SN: a ring of recent chunks.
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

impl RecentChunks for Stream {
    fn first_seq(&self) -> Option<u64> {
        self.ring.front().map(Chunk::seq)
    }
    fn last_seq(&self) -> Option<u64> {
        self.ring.back().map(Chunk::seq)
    }
    fn meta(&self, seq: u64) -> Option<ChunkMeta> {
        let c = self.get(seq)?;
        Some(ChunkMeta { media_ts: c.header.media_ts, keyframe: c.header.is_keyframe(), len: c.payload.len() })
    }
}

pub(crate) struct SimEdge {
    pub spec: EdgeSpec,
    pub service: Service,
    /// What the edge sends each client itself: the product's feeder (start bursts, backfill,
    /// the egress budget).
    feeder: Feeder,
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
            feeder: Feeder::new(FeederConfig::new(sc.stream.substreams, capacity)),
        }
    }

    /// Full for new clients: redirects here would only bounce.
    pub fn full(&self) -> bool {
        self.service.snapshot().stage == Stage::Four
    }

    /// Carries out what the service decided.
    pub fn outputs(&mut self, t: Micros, net: &mut Net, stream: &Stream) {
        while let Some(out) = self.service.poll_output() {
            match out {
                EdgeOutput::Send { conn, msg } => {
                    let i = conn.0 as u32;
                    if net.alive(i) {
                        let d = net.edge_delay(i);
                        net.q.push(t + d, Ev::ToPeer(i, Box::new(PeerInput::FromEdge(msg))));
                    }
                }
                EdgeOutput::Close { conn } => self.forget(conn.0 as u32),
                EdgeOutput::Serve { conn, mut order } => {
                    if !net.alive(conn.0 as u32) {
                        continue;
                    }
                    // A pure mesh has no start burst: only its seeds hear from the edge.
                    order.burst_ms = order.burst_ms.filter(|_| net.sc.mode != Mode::Mesh || order.mask != 0);
                    let now = net.clock.at(t);
                    self.feeder.serve(now, conn, order, stream);
                    self.send_out(t, net, stream);
                }
                // The simulator keeps its own minute rows; an idle edge stays (clients come).
                EdgeOutput::Report(_) | EdgeOutput::Idle => {}
            }
        }
    }

    /// Client `i` is gone from this edge.
    pub fn forget(&mut self, i: u32) {
        self.feeder.forget(ConnId::from(i));
    }

    /// Carries out the feeder's sends: each chunk reaches its client after the edge's delay.
    fn send_out(&mut self, t: Micros, net: &mut Net, stream: &Stream) {
        while let Some(send) = self.feeder.poll_output() {
            let i = send.conn.0 as u32;
            let Some(c) = stream.get(send.seq).cloned() else { continue };
            if !net.alive(i) {
                continue;
            }
            self.row.cdn_bytes += send.len as u64;
            let at = net.arrival(t + net.edge_delay(i), i, send.len);
            net.q.push(at, Ev::ToPeer(i, Box::new(PeerInput::FromEdge(FromEdge::Chunk(c)))));
        }
    }

    /// A new chunk from the core: pushed to every client fed its substream.
    pub fn fan_out(&mut self, t: Micros, net: &mut Net, stream: &Stream, c: &Chunk) {
        let now = net.clock.at(t);
        self.feeder.new_chunk(now, c.seq(), stream);
        self.send_out(t, net, stream);
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
