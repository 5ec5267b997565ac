//! What a channel's client service counts: admissions, refusals, and the sums of its clients'
//! reports (Q1, Q2, P2P share and the NAT-ed contribution are computed from these).

use proto::nat::NatClass;

/// Where `c` is counted in [`ServiceStats::nat_classes`].
pub fn nat_index(c: NatClass) -> usize {
    NatClass::ALL.iter().position(|&x| x == c).unwrap_or(0)
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServiceStats {
    pub refused_rate: u64,
    pub refused_other: u64,
    pub redirected: u64,
    pub parent_troubles: u64,
    /// Late or silent parents reported for chunks the source has not produced yet (ignored).
    pub troubles_before_source: u64,
    pub signals_relayed: u64,
    /// Signals not relayed: too large, too many, or to a peer the sender was never introduced to.
    pub signals_refused: u64,
    /// Reports with a field beyond what their interval could hold (clamped before summing).
    pub reports_clamped: u64,
    /// Upload confirmations naming a sender the receiver was never introduced to (not credited).
    pub confirmations_refused: u64,
    /// Bad-chunk reports about a peer the reporter was never introduced to (ignored).
    pub bad_chunk_refused: u64,
    /// Reports of chunks that failed their signature check.
    pub bad_chunk_reports: u64,
    /// Clients banned for forwarding such chunks, and joins refused while banned.
    pub bans: u64,
    pub refused_banned: u64,
    /// Clients whose upload claims outran what their receivers confirmed, and the claimed bytes
    /// left out of `reported.bytes_up` for it.
    pub inflated_clients: u64,
    /// Web pages that proved steady upload and may be parents now.
    pub browsers_promoted: u64,
    /// Promoted pages made leaves again (a report late or with a stall).
    pub browsers_demoted: u64,
    /// Bytes native players confirmed receiving from web pages.
    pub page_to_native_bytes: u64,
    pub excluded_bytes_up: u64,
    /// Joins carrying a token client id that is already connected (a cloned install or a
    /// shared token).
    pub duplicate_identities: u64,
    /// Parents made leaves because several children found them late.
    pub demoted: u64,
    /// P2P clients the edge took over (fed every substream) because their reported feed delay
    /// left too little of their latency target.
    pub fed_for_delay: u64,
    /// Sums of the clients' reports.
    pub reported: ReportTotals,
    /// Clients now connected from behind a NAT.
    pub natted_clients: u64,
    /// Clients now connected, by NAT class (in [`NatClass::ALL`] order).
    pub nat_classes: [u64; 4],
    /// NAT measurements whose STUN-learned address was not the connection's: taken as unknown.
    pub nat_mismatches: u64,
    /// Upload reported by NAT-ed clients (the paper's Fig. 13 question: do they contribute?).
    pub natted_bytes_up: u64,
    /// What the connected clients receive from peers now, bytes per second: each one's latest
    /// report. Byte totals arrive in lumps, one per report; this is the NOC's live P2P figure.
    pub p2p_bytes_per_sec: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReportTotals {
    pub played_ms: u64,
    pub stalled_ms: u64,
    pub stalls: u64,
    pub bytes_from_edge: u64,
    pub bytes_from_peers: u64,
    pub bytes_up: u64,
    /// Client-minutes reported: clients report every few seconds, Q2 is per client and minute.
    pub reports: u64,
    /// Client-minutes that had a stall: Q2 = 1 − this / reports.
    pub stalled_reports: u64,
    /// Chunks the clients played, by glass-to-glass latency.
    pub latency: proto::quality::LatencyHistogram,
}
