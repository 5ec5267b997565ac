//! Which edge a client gets (sans-IO): live edges only; the same ISP and region if possible,
//! then the same ISP, then the same region, then any; among those the least loaded relative to
//! capacity, skipping edges that have overflowed for the channel. Edges whose loads are within
//! a band of the best one are ties, broken by a hash of the client and the edge (rendezvous
//! hashing): one client keeps getting the same edge, different clients spread over all of them.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use crate::geo::Location;

/// An edge as the management center last reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeInfo {
    pub id: String,
    pub region: String,
    pub isp: String,
    /// Addresses clients reach it at (A and AAAA answers).
    pub addrs: Vec<IpAddr>,
    /// Its HTTP port (the 302 fallback's target).
    pub http: Option<SocketAddr>,
    /// Its LiveSky client port.
    pub clients: Option<SocketAddr>,
    /// Clients it serves now.
    pub users: u64,
    pub capacity_kbps: u64,
    /// Channels on which it sends new clients away (stage 4 at capacity).
    pub full: BTreeSet<String>,
}

/// How well the chosen edges match the client; also a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Match {
    IspRegion,
    Isp,
    Region,
    Any,
    /// The client's address is not in the prefix database.
    Unknown,
}

impl Match {
    pub fn label(self) -> &'static str {
        match self {
            Match::IspRegion => "isp_region",
            Match::Isp => "isp",
            Match::Region => "region",
            Match::Any => "any",
            Match::Unknown => "unknown",
        }
    }
}

/// What kind of address the answer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    V4,
    V6,
    Http,
    Livesky,
}

impl Want {
    fn usable(self, e: &EdgeInfo) -> bool {
        match self {
            Want::V4 => e.addrs.iter().any(IpAddr::is_ipv4),
            Want::V6 => e.addrs.iter().any(IpAddr::is_ipv6),
            Want::Http => e.http.is_some(),
            Want::Livesky => e.clients.is_some(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Policy {
    /// At most this many edges per answer.
    pub answers: usize,
    /// Loads (fractions of capacity) within this of the best count as ties.
    pub tie_band: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { answers: 2, tie_band: 0.05 }
    }
}

/// The request being answered.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub client: Option<&'a Location>,
    pub channel: &'a str,
    /// The channel's rate, for N*c = capacity / rate.
    pub bitrate_kbps: u32,
    /// Identifies the client (e.g. its subnet) for the tie-break.
    pub key: u64,
    pub want: Want,
}

#[derive(Debug, PartialEq)]
pub struct Choice<'a> {
    /// Best first; empty when no live edge can serve the request.
    pub edges: Vec<&'a EdgeInfo>,
    pub level: Match,
}

/// The edges as choices are made from them: what a choice reads of each edge packed in one
/// small array (places numbered, ids pre-hashed), so a query walks a few kilobytes of
/// integers instead of chasing every edge's strings and vectors.
#[derive(Debug, Default)]
pub struct Edges {
    list: Vec<EdgeInfo>,
    slots: Vec<Slot>,
    regions: HashMap<String, u32>,
    isps: HashMap<String, u32>,
    classes: std::sync::Mutex<HashMap<ClassKey, std::sync::Arc<Candidates>>>,
}

#[derive(Debug, Clone)]
struct Slot {
    region: u32,
    isp: u32,
    /// Bit per [`Want`] it can serve.
    kinds: u8,
    /// Some channel has overflowed here (then the edge's set is asked).
    any_full: bool,
    users: u64,
    capacity_kbps: u64,
    id_hash: u64,
}

fn kind_bit(w: Want) -> u8 {
    match w {
        Want::V4 => 1,
        Want::V6 => 2,
        Want::Http => 4,
        Want::Livesky => 8,
    }
}

impl Edges {
    pub fn new(list: Vec<EdgeInfo>) -> Edges {
        let mut regions = HashMap::new();
        let mut isps = HashMap::new();
        let number = |m: &mut HashMap<String, u32>, k: &str| {
            let n = m.len() as u32;
            *m.entry(k.to_string()).or_insert(n)
        };
        let slots = list
            .iter()
            .map(|e| Slot {
                region: number(&mut regions, &e.region),
                isp: number(&mut isps, &e.isp),
                kinds: [Want::V4, Want::V6, Want::Http, Want::Livesky]
                    .into_iter()
                    .filter(|w| w.usable(e))
                    .fold(0, |k, w| k | kind_bit(w)),
                any_full: !e.full.is_empty(),
                users: e.users,
                capacity_kbps: e.capacity_kbps,
                // FNV-1a over the id: stable across builds and platforms, unlike std's hasher.
                id_hash: e
                    .id
                    .bytes()
                    .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)),
            })
            .collect();
        Edges { list, slots, regions, isps, classes: Default::default() }
    }

    pub fn list(&self) -> &[EdgeInfo] {
        &self.list
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// load = clients / N*c.
pub fn load(e: &EdgeInfo, bitrate_kbps: u32) -> f64 {
    load_of(e.users, e.capacity_kbps, bitrate_kbps)
}

fn load_of(users: u64, capacity_kbps: u64, bitrate_kbps: u32) -> f64 {
    let nc_star = (capacity_kbps / u64::from(bitrate_kbps.max(1))).max(1);
    users as f64 / nc_star as f64
}

/// Who can answer for one kind of request: the best match level and its edges, the ties of
/// the least loaded (in the tie band) and the rest by load. It depends on the client's place,
/// the channel and the address kind, not on the client: computed once per MC update for each
/// such class, then each query only hashes the ties.
#[derive(Debug)]
struct Candidates {
    level: Match,
    ties: Vec<usize>,
    /// The next best by load, as many as an answer can hold.
    rest: Vec<usize>,
}

/// (region, ISP) numbers of the client, the channel, the address kind and the channel's rate.
type ClassKey = (Option<(Option<u32>, Option<u32>)>, String, u8, u32);

/// Classes cached at most between two MC updates (a wildcard zone makes channels unbounded).
const MAX_CLASSES: usize = 4096;
/// Most records an answer may hold (`answers` is validated to at most this).
const MAX_ANSWERS: usize = 8;

fn candidates(edges: &Edges, client: Option<(Option<u32>, Option<u32>)>, ask: &Ask<'_>, policy: &Policy) -> Candidates {
    let level_of = |s: &Slot| {
        let Some((region, isp)) = client else { return Match::Unknown };
        match (isp == Some(s.isp), region == Some(s.region)) {
            (true, true) => Match::IspRegion,
            (true, false) => Match::Isp,
            (false, true) => Match::Region,
            (false, false) => Match::Any,
        }
    };
    let bit = kind_bit(ask.want);
    let free = |i: usize| !edges.slots[i].any_full || !edges.list[i].full.contains(ask.channel);
    // Overflowed edges only when every edge has: each would pass the client on anyway.
    let any_free = edges.slots.iter().enumerate().any(|(i, s)| s.kinds & bit != 0 && free(i));
    let pool = || edges.slots.iter().enumerate().filter(move |&(i, s)| s.kinds & bit != 0 && (!any_free || free(i)));
    let Some(level) = pool().map(|(_, s)| level_of(s)).min() else {
        return Candidates { level: Match::Any, ties: Vec::new(), rest: Vec::new() };
    };
    let mut at_level: Vec<(f64, usize)> = pool()
        .filter(|(_, s)| level_of(s) == level)
        .map(|(i, s)| (load_of(s.users, s.capacity_kbps, ask.bitrate_kbps), i))
        .collect();
    at_level.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let band = at_level.first().map_or(0.0, |b| b.0) + policy.tie_band;
    let split = at_level.partition_point(|(l, _)| *l <= band);
    let ties = at_level[..split].iter().map(|(_, i)| *i).collect();
    let rest = at_level[split..].iter().take(MAX_ANSWERS).map(|(_, i)| *i).collect();
    Candidates { level, ties, rest }
}

pub fn choose<'a>(edges: &'a Edges, ask: &Ask<'_>, policy: &Policy) -> Choice<'a> {
    let client = ask.client.map(|l| (edges.regions.get(&l.region).copied(), edges.isps.get(&l.isp).copied()));
    let key: ClassKey = (client, ask.channel.to_string(), kind_bit(ask.want), ask.bitrate_kbps);
    let cached = edges.classes.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
    let c = match cached {
        Some(c) => c,
        None => {
            let c = std::sync::Arc::new(candidates(edges, client, ask, policy));
            let mut classes = edges.classes.lock().unwrap_or_else(|e| e.into_inner());
            if classes.len() >= MAX_CLASSES {
                classes.clear();
            }
            classes.insert(key, c.clone());
            c
        }
    };
    // Ties by the client's hash (the best `answers` of them), then the rest by load: the second
    // answer is a fallback, never a worse edge than needed.
    let k = policy.answers.clamp(1, MAX_ANSWERS);
    let mut top: Vec<(std::cmp::Reverse<u64>, usize)> = Vec::with_capacity(k + 1);
    for &i in &c.ties {
        let h = std::cmp::Reverse(mix(ask.key ^ edges.slots[i].id_hash));
        if top.len() == k && top.last().is_some_and(|(r, _)| h >= *r) {
            continue;
        }
        let at = top.partition_point(|(r, _)| *r <= h);
        top.insert(at, (h, i));
        top.truncate(k);
    }
    let picked = top.into_iter().map(|(_, i)| i).chain(c.rest.iter().copied()).take(k);
    Choice { edges: picked.map(|i| &edges.list[i]).collect(), level: c.level }
}

/// A key for a client address: its /24 (IPv4) or /56 (IPv6), so clients behind one resolver
/// or subnet agree, as a cache in front of us would make them anyway.
pub fn client_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => mix(u64::from(u32::from(a) >> 8)),
        IpAddr::V6(a) => mix((u128::from(a) >> 72) as u64 ^ 0x6666),
    }
}

use proto::rng::mix;

#[cfg(test)]
mod tests;
