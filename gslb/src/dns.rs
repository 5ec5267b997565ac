//! The DNS front (hickory-server): checks what the wire format leaves to us (opcode, one
//! question, EDNS version, a well-formed Client Subnet), locates the client, asks the [`Zone`]
//! and sends its answer. Undecodable packets never get here: hickory answers FORMERR itself.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::choose::client_key;
use crate::metrics::{rcode_label, type_label};
use crate::server::Shared;
use crate::zone::{Client, Reply};

/// Answers valid for a client's /24 (IPv4) or /56 (IPv6): the tie-break keys on that much.
const SCOPE_V4: u8 = 24;
const SCOPE_V6: u8 = 56;

pub struct Handler(pub(crate) Arc<Shared>);

/// Where a question comes from: the Client Subnet when the resolver sent one, else the resolver.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Origin {
    pub addr: IpAddr,
    /// The scope to echo in the answer's Client Subnet (None: the query had none).
    pub scope: Option<u8>,
}

/// RFC 7871 §7.1.2: a query's SCOPE must be 0 and ADDRESS must have no bits past SOURCE
/// PREFIX-LENGTH; either is FORMERR. SOURCE 0 means "do not use my clients' addresses".
pub fn origin(src: IpAddr, ecs: Option<&ClientSubnet>) -> Result<Origin, ResponseCode> {
    let Some(cs) = ecs else { return Ok(Origin { addr: src, scope: None }) };
    let (source, scope) = (cs.source_prefix(), cs.scope_prefix());
    let masked = mask(cs.addr(), source);
    if scope != 0 || masked != cs.addr() {
        return Err(ResponseCode::FormErr);
    }
    if source == 0 {
        return Ok(Origin { addr: src, scope: Some(0) });
    }
    let cap = if masked.is_ipv4() { SCOPE_V4 } else { SCOPE_V6 };
    Ok(Origin { addr: masked, scope: Some(source.min(cap)) })
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len.min(32))) };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len.min(128))) };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// Resolvers may offer large UDP answers; ours are small, and 1232 avoids fragmentation.
fn response_edns(query: &Edns, ecs: Option<&(ClientSubnet, u8)>) -> Edns {
    let mut e = Edns::new();
    e.set_max_payload(query.max_payload().clamp(512, 1232));
    if let Some(&(cs, scope)) = ecs {
        let mut echo = cs;
        echo.set_scope_prefix(scope);
        e.options_mut().insert(EdnsOption::Subnet(echo));
    }
    e
}

enum Outcome {
    Error(ResponseCode),
    Answer(Reply),
}

impl Handler {
    /// The outcome, and the Client Subnet to echo with its scope (if the query had a valid one).
    fn decide(&self, request: &Request) -> (Outcome, Option<(ClientSubnet, u8)>) {
        let sh = &self.0;
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return (Outcome::Error(ResponseCode::BADVERS), None);
        }
        if request.metadata.op_code != OpCode::Query {
            return (Outcome::Error(ResponseCode::NotImp), None);
        }
        let [q] = request.queries.queries() else { return (Outcome::Error(ResponseCode::FormErr), None) };
        let ecs = match request.edns.as_ref().and_then(|e| e.option(EdnsCode::Subnet)) {
            Some(EdnsOption::Subnet(cs)) => Some(cs),
            _ => None,
        };
        let from = match origin(request.src().ip(), ecs) {
            Ok(o) => o,
            Err(rc) => return (Outcome::Error(rc), None),
        };
        let started = Instant::now();
        let geo = sh.geo();
        let view = sh.view();
        let client = Client { location: geo.lookup(from.addr), key: client_key(from.addr) };
        let reply = sh.zone.answer(q.original().name(), q.query_type(), q.query_class(), &view, &client);
        sh.metrics.lookup.observe(started.elapsed().as_secs_f64());
        if let Some((edge, level)) = &reply.chosen {
            sh.metrics.chosen.with_label_values(&[edge.as_str()]).inc();
            sh.metrics.matched.with_label_values(&[level.label()]).inc();
        }
        (Outcome::Answer(reply), ecs.copied().zip(from.scope))
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut rh: R) -> ResponseInfo {
        let m = &self.0.metrics;
        let proto = match request.protocol() {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
            _ => "other",
        };
        let qtype = request.queries.queries().first().map_or("none", |q| type_label(q.query_type()));
        m.queries.with_label_values(&[qtype, proto]).inc();
        let (outcome, ecs) = self.decide(request);
        let edns = request.edns.as_ref().map(|q| response_edns(q, ecs.as_ref()));
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let rcode;
        let sent = match outcome {
            Outcome::Error(rc) => {
                rcode = rc;
                rh.send_response(builder.error_msg(&request.metadata, rc)).await
            }
            Outcome::Answer(r) => {
                rcode = r.rcode;
                let mut md = Metadata::response_from_request(&request.metadata);
                md.authoritative = r.rcode != ResponseCode::Refused;
                md.response_code = r.rcode;
                let soa: [&hickory_proto::rr::Record; 0] = [];
                rh.send_response(builder.build(md, r.answers.iter(), r.authority.iter(), soa, r.additional.iter()))
                    .await
            }
        };
        m.responses.with_label_values(&[rcode_label(rcode)]).inc();
        sent.unwrap_or_else(|e| {
            tracing::debug!(error = %e, from = %request.src(), "sending a DNS response failed");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            Header { metadata, counts: HeaderCounts::default() }.into()
        })
    }
}

/// A response handler that encodes into memory under UDP's size rules (for [`crate::server::Responder`]).
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<std::sync::Mutex<Option<Vec<u8>>>>);

impl Captured {
    pub fn take(&self) -> Option<Vec<u8>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Captured {
    async fn send_response<'a>(
        &mut self,
        response: hickory_server::zone_handler::MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, hickory_server::net::NetError> {
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = hickory_proto::serialize::binary::BinEncoder::new(&mut bytes);
        encoder.set_max_size(512);
        let info = response.destructive_emit(&mut encoder).map_err(hickory_server::net::NetError::from)?;
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes);
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(s: &str, source: u8, scope: u8) -> ClientSubnet {
        ClientSubnet::new(s.parse().expect("ip"), source, scope)
    }

    /// The whole path (decoder, handler, encoder) as the fuzz target drives it.
    #[tokio::test]
    async fn the_responder_answers_through_hickorys_own_decoder_and_encoder() {
        use hickory_proto::op::{Message, Query};
        use hickory_proto::rr::{Name, RecordType};
        let r = crate::fuzzing::responder().expect("responder");
        let ask = |name: &str, t: RecordType, ecs: Option<ClientSubnet>| {
            let mut m = Message::query();
            m.add_query(Query::query(Name::from_ascii(name).expect("name"), t));
            if let Some(cs) = ecs {
                let mut e = Edns::new();
                e.options_mut().insert(EdnsOption::Subnet(cs));
                m.set_edns(e);
            }
            m.to_vec().expect("encodes")
        };
        let src = "192.0.2.99:5353".parse().expect("addr");
        let decode = |b: Option<Vec<u8>>| Message::from_vec(&b.expect("an answer")).expect("decodes");
        let south = Some(cs("203.0.113.0", 24, 0));
        let m = decode(r.answer(&ask("demo.livesky.test.", RecordType::A, south), src).await);
        assert_eq!(m.response_code, ResponseCode::NoError);
        // South on the same ISP first: e1 (192.0.2.2); e3 is south but on the other ISP.
        assert_eq!(m.answers[0].data.to_string(), "192.0.2.2");
        let m = decode(r.answer(&ask("x.y.livesky.test.", RecordType::A, None), src).await);
        assert_eq!(m.response_code, ResponseCode::NXDomain);
        assert_eq!(r.answer(&[0u8; 5], src).await, None, "no header: no answer");
        assert!(r.metrics().contains("livesky_gslb_responses_total{rcode=\"NXDOMAIN\"} 1"));
    }

    #[test]
    fn client_subnet_rules() {
        let src: IpAddr = "192.0.2.53".parse().expect("ip");
        assert_eq!(origin(src, None), Ok(Origin { addr: src, scope: None }));
        let o = origin(src, Some(&cs("198.51.100.0", 24, 0))).expect("valid");
        assert_eq!((o.addr.to_string(), o.scope), ("198.51.100.0".into(), Some(24)));
        // Wider than our key: echoed as is; narrower: capped at /24.
        assert_eq!(origin(src, Some(&cs("198.51.0.0", 16, 0))).map(|o| o.scope), Ok(Some(16)));
        assert_eq!(origin(src, Some(&cs("198.51.100.7", 32, 0))).map(|o| o.scope), Ok(Some(24)));
        assert_eq!(origin(src, Some(&cs("2001:db8::", 64, 0))).map(|o| o.scope), Ok(Some(56)));
        // Source 0: the resolver's own address, scope 0.
        assert_eq!(origin(src, Some(&cs("0.0.0.0", 0, 0))), Ok(Origin { addr: src, scope: Some(0) }));
        assert_eq!(origin(src, Some(&cs("198.51.100.7", 24, 0))), Err(ResponseCode::FormErr));
        assert_eq!(origin(src, Some(&cs("198.51.100.0", 24, 8))), Err(ResponseCode::FormErr));
    }
}
