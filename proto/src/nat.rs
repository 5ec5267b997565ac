//! NAT behaviour (RFC 4787 terms) and which pairs of peers can link through it. A peer finds its
//! own with RFC 5780 tests against its edge's STUN server, which answers on two ports: does its
//! mapping change with the destination (endpoint-dependent mapping: "symmetric"), and does its
//! router let in packets from a port it never sent to (endpoint-independent filtering)?
//!
//! The tracker matches children to parents with [`NatClass::can_link`] instead of learning from
//! failed ICE attempts: a symmetric child behind a port-restricted parent would wait for ICE to
//! give up on every try, and its failure reports would bar a parent that everyone else can reach.

use std::net::SocketAddr;

/// What a peer's NAT lets through, as far as linking to other peers goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NatClass {
    /// Not measured (yet, or it cannot be: a web page). The tracker treats it as [`Symmetric`]
    /// (links only to [`Open`] peers) until the peer says otherwise: a wrong guess costs a failed
    /// link, a cautious one only an edge feed for the first second.
    ///
    /// [`Symmetric`]: NatClass::Symmetric
    /// [`Open`]: NatClass::Open
    #[default]
    Unknown,
    /// No NAT, or one that lets in whatever reaches the mapped port once it exists (full cone),
    /// or from any port of an address already contacted (address-restricted): anyone can link.
    Open,
    /// One mapping for every destination, but only the exact address and port contacted may
    /// answer (port-restricted cone): links with any peer except one behind a symmetric NAT.
    Restricted,
    /// A new mapping per destination (endpoint-dependent): the address STUN saw is not the one a
    /// peer would see, so it links only with [`NatClass::Open`] peers.
    Symmetric,
}

impl NatClass {
    /// Whether peers behind `self` and `other` can open a link (both sides send ICE checks at
    /// once, so each side's packets open its own router for the other's). Peers behind the same
    /// router reach each other on their LAN whatever it is: callers check that first.
    pub fn can_link(self, other: NatClass) -> bool {
        use NatClass::*;
        matches!((self.assumed(), other.assumed()), (Open, _) | (_, Open) | (Restricted, Restricted))
    }

    /// What the tracker counts on: an unmeasured peer may be behind the worst NAT.
    fn assumed(self) -> NatClass {
        match self {
            NatClass::Unknown => NatClass::Symmetric,
            c => c,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NatClass::Unknown => "unknown",
            NatClass::Open => "open",
            NatClass::Restricted => "restricted",
            NatClass::Symmetric => "symmetric",
        }
    }

    pub const ALL: [NatClass; 4] = [NatClass::Unknown, NatClass::Open, NatClass::Restricted, NatClass::Symmetric];

    pub(crate) fn to_u8(self) -> u8 {
        match self {
            NatClass::Unknown => 0,
            NatClass::Open => 1,
            NatClass::Restricted => 2,
            NatClass::Symmetric => 3,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Option<NatClass> {
        NatClass::ALL.get(usize::from(v)).copied()
    }
}

impl std::fmt::Display for NatClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the RFC 5780 tests saw, for [`classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NatProbe {
    /// Test I: the mapped address the STUN server's primary port saw (None: no answer at all).
    pub mapped: Option<SocketAddr>,
    /// The same socket's mapped address as the server's other port saw it (None: no answer).
    pub mapped_other: Option<SocketAddr>,
    /// Test II: an answer came back from the other port to a request sent to the primary one.
    pub other_port_answered: bool,
}

/// The class the tests show. Without an answer to test I (UDP blocked) or to the mapping test
/// the class stays unknown: guessing "open" would make the peer a parent nobody reaches.
pub fn classify(p: &NatProbe) -> NatClass {
    let Some(mapped) = p.mapped else { return NatClass::Unknown };
    match p.mapped_other {
        Some(other) if other != mapped => NatClass::Symmetric,
        _ if p.other_port_answered => NatClass::Open,
        Some(_) => NatClass::Restricted,
        None => NatClass::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Option<SocketAddr> {
        s.parse().ok()
    }

    #[test]
    fn link_matrix() {
        use NatClass::*;
        let ok = [(Open, Open), (Open, Restricted), (Open, Symmetric), (Open, Unknown), (Restricted, Restricted)];
        for x in NatClass::ALL {
            for y in NatClass::ALL {
                let want = ok.contains(&(x, y)) || ok.contains(&(y, x));
                assert_eq!(x.can_link(y), want, "{x} with {y}");
            }
        }
    }

    #[test]
    fn rfc5780_outcomes() {
        let m = a("198.51.100.7:40000");
        // Full cone: same mapping, the other port gets in.
        assert_eq!(classify(&NatProbe { mapped: m, mapped_other: m, other_port_answered: true }), NatClass::Open);
        // Port-restricted cone.
        assert_eq!(
            classify(&NatProbe { mapped: m, mapped_other: m, other_port_answered: false }),
            NatClass::Restricted
        );
        // Symmetric: another mapping for the other port, whatever the filter did.
        let other = a("198.51.100.7:40001");
        for answered in [false, true] {
            let p = NatProbe { mapped: m, mapped_other: other, other_port_answered: answered };
            assert_eq!(classify(&p), NatClass::Symmetric);
        }
        // Nothing measured, or the mapping test unanswered while the filter test failed.
        assert_eq!(classify(&NatProbe::default()), NatClass::Unknown);
        assert_eq!(
            classify(&NatProbe { mapped: m, mapped_other: None, other_port_answered: false }),
            NatClass::Unknown
        );
        // The other port got in, though its own mapping test was lost: nothing filters.
        assert_eq!(classify(&NatProbe { mapped: m, mapped_other: None, other_port_answered: true }), NatClass::Open);
    }

    #[test]
    fn wire_round_trip() {
        for c in NatClass::ALL {
            assert_eq!(NatClass::from_u8(c.to_u8()), Some(c));
        }
        assert_eq!(NatClass::from_u8(9), None);
    }
}
