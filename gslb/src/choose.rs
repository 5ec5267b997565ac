//! Which edge a client gets (sans-IO): live edges only; the same ISP and region if possible,
//! then the same ISP, then the same region, then any; among those the least loaded relative to
//! capacity, skipping edges that have overflowed for the channel. Edges whose loads are within
//! a band of the best one are ties, broken by a hash of the client and the edge (rendezvous
//! hashing): one client keeps getting the same edge, different clients spread over all of them.

use std::collections::BTreeSet;
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

    fn of(client: Option<&Location>, e: &EdgeInfo) -> Match {
        let Some(c) = client else { return Match::Unknown };
        match (c.isp == e.isp, c.region == e.region) {
            (true, true) => Match::IspRegion,
            (true, false) => Match::Isp,
            (false, true) => Match::Region,
            (false, false) => Match::Any,
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

/// load = clients / N*c.
pub fn load(e: &EdgeInfo, bitrate_kbps: u32) -> f64 {
    let nc_star = (e.capacity_kbps / u64::from(bitrate_kbps.max(1))).max(1);
    e.users as f64 / nc_star as f64
}

pub fn choose<'a>(edges: &'a [EdgeInfo], ask: &Ask<'_>, policy: &Policy) -> Choice<'a> {
    let usable: Vec<&EdgeInfo> = edges.iter().filter(|e| ask.want.usable(e)).collect();
    // Overflowed edges only when every edge has: each would pass the client on anyway.
    let free: Vec<&EdgeInfo> = usable.iter().copied().filter(|e| !e.full.contains(ask.channel)).collect();
    let pool = if free.is_empty() { usable } else { free };
    let Some(level) = pool.iter().map(|e| Match::of(ask.client, e)).min() else {
        return Choice { edges: Vec::new(), level: Match::Any };
    };
    let mut ranked: Vec<(f64, u64, &EdgeInfo)> = pool
        .into_iter()
        .filter(|e| Match::of(ask.client, e) == level)
        .map(|e| (load(e, ask.bitrate_kbps), rendezvous(ask.key, &e.id), e))
        .collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
    let best = ranked[0].0;
    let band = best + policy.tie_band;
    // Ties by hash, then the rest by load: the second answer is a fallback, never a worse
    // edge than needed.
    let (mut ties, rest): (Vec<_>, Vec<_>) = ranked.into_iter().partition(|r| r.0 <= band);
    ties.sort_by_key(|r| std::cmp::Reverse(r.1));
    let edges = ties.into_iter().chain(rest).take(policy.answers.max(1)).map(|r| r.2).collect();
    Choice { edges, level }
}

/// A key for a client address: its /24 (IPv4) or /56 (IPv6), so clients behind one resolver
/// or subnet agree, as a cache in front of us would make them anyway.
pub fn client_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => mix(u64::from(u32::from(a) >> 8)),
        IpAddr::V6(a) => mix((u128::from(a) >> 72) as u64 ^ 0x6666),
    }
}

fn rendezvous(key: u64, id: &str) -> u64 {
    // FNV-1a over the id: stable across builds and platforms, unlike std's hasher.
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    mix(key ^ h)
}

/// SplitMix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;
