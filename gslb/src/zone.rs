//! The zone's answers (sans-IO): which records a question gets, given the edges the MC reports
//! and where the client is. `CHANNEL.ZONE` gets the chosen edges; the apex has SOA and NS
//! (`ns1.ZONE`, with its addresses); everything else under the zone is NXDOMAIN; names outside
//! it are REFUSED, as are classes other than IN.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};

use crate::choose::{Ask, Edges, Match, Policy, Want, choose};
use crate::geo::Location;

/// What the MC last said: live edges and channel rates.
#[derive(Debug, Default)]
pub struct View {
    pub edges: Edges,
    /// Lowercased channel id → bitrate.
    pub channels: HashMap<String, u32>,
}

/// Where the question comes from.
#[derive(Debug, Clone)]
pub struct Client<'a> {
    pub location: Option<&'a Location>,
    pub key: u64,
}

#[derive(Debug, Default, PartialEq)]
pub struct Reply {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
    /// For channel answers: the edge answered first and how well it matched.
    pub chosen: Option<(String, Match)>,
}

#[derive(Debug)]
pub struct Zone {
    origin: LowerName,
    ns_name: Name,
    soa: Record,
    ns: Record,
    ns_addrs: Vec<IpAddr>,
    ttl: u32,
    wildcard: bool,
    default_bitrate_kbps: u32,
    policy: Policy,
}

/// The zone's name as an FQDN, refusing anything that is not a DNS name.
pub fn zone_name(zone: &str) -> Result<Name, String> {
    let text = if zone.ends_with('.') { zone.to_string() } else { format!("{zone}.") };
    let name = Name::from_str(&text).map_err(|e| format!("`{zone}` is not a DNS name: {e}"))?;
    if name.is_root() {
        return Err("the root is not a CDN zone".into());
    }
    Ok(name)
}

impl Zone {
    pub fn new(s: &crate::settings::GslbSettings) -> Result<Zone, String> {
        let origin = zone_name(&s.zone)?;
        let label = |l: &str| Name::from_ascii(l).and_then(|n| n.append_domain(&origin)).map_err(|e| e.to_string());
        let ns_name = label("ns1")?;
        // Serial: seconds since 2020 at start, so a restarted GSLB never goes back.
        let serial = (livesky_net::clock::unix_s().saturating_sub(1_577_836_800) as u32).max(1);
        let soa = SOA::new(ns_name.clone(), label("hostmaster")?, serial, 3600, 600, 86_400, s.ttl);
        Ok(Zone {
            soa: Record::from_rdata(origin.clone(), s.ttl, RData::SOA(soa)),
            ns: Record::from_rdata(origin.clone(), 3600, RData::NS(NS(ns_name.clone()))),
            origin: LowerName::new(&origin),
            ns_name,
            ns_addrs: s.ns_addrs.clone(),
            ttl: s.ttl,
            wildcard: s.wildcard,
            default_bitrate_kbps: s.default_bitrate_kbps,
            policy: Policy { answers: s.answers, tie_band: s.tie_band },
        })
    }

    pub fn origin(&self) -> &LowerName {
        &self.origin
    }

    /// The channel a name under the zone stands for, and its rate: a known channel, or with
    /// `wildcard` any single label.
    pub fn channel(&self, name: &LowerName, view: &View) -> Option<(String, u32)> {
        if name.num_labels() != self.origin.num_labels() + 1 || !self.origin.zone_of(name) {
            return None;
        }
        let label = String::from_utf8_lossy(name.iter().next()?).into_owned();
        match view.channels.get(&label) {
            Some(&rate) => Some((label, rate)),
            None if self.wildcard && proto::ChannelId::new(&label).is_ok() => Some((label, self.default_bitrate_kbps)),
            None => None,
        }
    }

    /// `qname` keeps the client's spelling (answers echo it, for 0x20 case randomisation).
    pub fn answer(&self, qname: &Name, qtype: RecordType, qclass: DNSClass, view: &View, client: &Client<'_>) -> Reply {
        let name = LowerName::new(qname);
        if qclass != DNSClass::IN || !self.origin.zone_of(&name) {
            return Reply { rcode: ResponseCode::Refused, ..Reply::default() };
        }
        let mut r = Reply::default();
        if name == self.origin {
            match qtype {
                RecordType::SOA => r.answers.push(self.soa.clone()),
                RecordType::NS => {
                    r.answers.push(self.ns.clone());
                    r.additional = self.glue(RecordType::ANY);
                }
                _ => r.authority.push(self.soa.clone()),
            }
            return r;
        }
        if name == LowerName::new(&self.ns_name) {
            r.answers = self.glue(qtype);
        } else if let Some((channel, rate)) = self.channel(&name, view) {
            let mut any_edge = false;
            for (t, want) in [(RecordType::A, Want::V4), (RecordType::AAAA, Want::V6)] {
                if qtype != t && qtype != RecordType::ANY {
                    continue;
                }
                let ask = Ask { client: client.location, channel: &channel, bitrate_kbps: rate, key: client.key, want };
                let c = choose(&view.edges, &ask, &self.policy);
                any_edge |= !c.edges.is_empty();
                if r.chosen.is_none()
                    && let Some(first) = c.edges.first()
                {
                    r.chosen = Some((first.id.clone(), c.level));
                }
                for e in c.edges {
                    let ip = e.addrs.iter().copied().find(|a| a.is_ipv4() == (want == Want::V4));
                    if let Some(ip) = ip {
                        r.answers.push(Record::from_rdata(qname.clone(), self.ttl, RData::from(ip)));
                    }
                }
            }
            let asked_addresses = matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY);
            if asked_addresses && !any_edge && view.edges.is_empty() {
                // No live edge at all: nothing true to say, and a cached negative answer would
                // keep viewers away after the edges come back.
                return Reply { rcode: ResponseCode::ServFail, ..Reply::default() };
            }
        } else {
            r.rcode = ResponseCode::NXDomain;
        }
        if r.answers.is_empty() {
            r.authority.push(self.soa.clone());
        }
        r
    }

    /// `ns1.ZONE`'s addresses of type `qtype` (ANY: all).
    fn glue(&self, qtype: RecordType) -> Vec<Record> {
        self.ns_addrs
            .iter()
            .filter(|a| match qtype {
                RecordType::A => a.is_ipv4(),
                RecordType::AAAA => a.is_ipv6(),
                RecordType::ANY => true,
                _ => false,
            })
            .map(|&a| {
                let data = match a {
                    IpAddr::V4(v4) => RData::A(A(v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                };
                Record::from_rdata(self.ns_name.clone(), 3600, data)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
