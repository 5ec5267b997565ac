//! The DNS global server load balancer (LiveSky §2.2): answers `CHANNEL.ZONE` with the nearest,
//! lightly loaded live edge, locating clients by EDNS Client Subnet or resolver address through a
//! prefix → (region, ISP) map, with an HTTP 302 fallback. The prefix database ([`geo`]), the
//! choice ([`choose`]) and the zone's answers ([`zone`]) are sans-IO; the servers around them
//! ([`server`]) are thin.

pub mod choose;
pub mod client;
pub mod dns;
pub mod feed;
pub mod geo;
mod http;
pub mod metrics;
pub mod server;
pub mod settings;
pub mod zone;

pub use server::{Gslb, GslbError, Responder};

/// A fixed zone, database and edge set for the fuzz target and the benchmarks.
#[doc(hidden)]
pub mod fuzzing {
    use std::collections::{BTreeSet, HashMap};
    use std::net::SocketAddr;

    use crate::choose::EdgeInfo;
    use crate::zone::View;

    pub const GEO: &str =
        "198.51.100.0/24,north,tel\n203.0.113.0/24,south,tel\n2001:db8:1::/48,north,tel\n2001:db8:2::/48,south,uni\n";

    /// Edges e0..e(n-1) in regions north and south on two ISPs, all with IPv4 and IPv6.
    pub fn view(n: usize) -> View {
        let edges = (0..n)
            .map(|i| EdgeInfo {
                id: format!("e{i}"),
                region: if i % 2 == 0 { "north" } else { "south" }.into(),
                isp: if i % 4 < 2 { "tel" } else { "uni" }.into(),
                addrs: vec![
                    std::net::IpAddr::from([192, 0, 2, (i % 250) as u8 + 1]),
                    std::net::IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16 + 1]),
                ],
                http: Some(SocketAddr::from(([192, 0, 2, (i % 250) as u8 + 1], 80))),
                clients: Some(SocketAddr::from(([192, 0, 2, (i % 250) as u8 + 1], 7600))),
                users: (i as u64 * 7) % 50,
                capacity_kbps: 200_000,
                full: if i % 5 == 4 { BTreeSet::from(["demo".to_string()]) } else { BTreeSet::new() },
            })
            .collect();
        View {
            edges: crate::choose::Edges::new(edges),
            channels: HashMap::from([("demo".to_string(), 400), ("live".to_string(), 800)]),
        }
    }

    /// Zone `livesky.test` with [`GEO`] and 8 edges.
    pub fn responder() -> Result<crate::Responder, crate::GslbError> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut s = crate::GslbSettings::new("livesky.test", any, any, "http://127.0.0.1:1".into(), "geo.csv".into());
        s.ns_addrs = vec![std::net::IpAddr::from([192, 0, 2, 53])];
        let geo = crate::geo::GeoDb::parse(GEO, "fuzzing").map_err(crate::GslbError::Geo)?;
        crate::Responder::new(s, geo, view(8))
    }
}
pub use settings::GslbSettings;
