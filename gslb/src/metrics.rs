//! The GSLB's Prometheus metrics (`livesky_gslb_…`). Label values come from small fixed sets
//! (query types outside the common ones count as `other`) or from the topology (edge ids), so a
//! stream of odd queries cannot grow the series without bound.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use livesky_net::metrics::{counter, gauge, int_gauge};
use prometheus::{GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Registry};

pub struct GslbMetrics {
    pub registry: Registry,
    pub queries: IntCounterVec,
    pub responses: IntCounterVec,
    pub chosen: IntCounterVec,
    pub matched: IntCounterVec,
    pub lookup: Histogram,
    pub edges: IntGaugeVec,
    pub feed_age: GaugeVec,
    pub feed_errors: IntCounterVec,
    pub geo_prefixes: IntGaugeVec,
    pub geo_reloads: IntCounterVec,
    pub redirects: IntCounterVec,
    /// Refused and open connections of the HTTP fallback.
    pub conns: livesky_net::limits::ConnMetrics,
}

impl GslbMetrics {
    pub fn new() -> GslbMetrics {
        let registry = Registry::new_custom(Some("livesky".into()), None).expect("valid registry prefix");
        let r = &registry;
        let lookup = Histogram::with_opts(
            HistogramOpts::new("gslb_lookup_seconds", "Time to locate the client and choose edges")
                .buckets(vec![1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 1e-3, 1e-2]),
        )
        .expect("static metric definition");
        r.register(Box::new(lookup.clone())).expect("metric registered once per registry");
        GslbMetrics {
            queries: counter(r, "gslb_queries_total", "DNS queries by type and transport", &["type", "proto"]),
            responses: counter(r, "gslb_responses_total", "DNS responses by rcode", &["rcode"]),
            chosen: counter(r, "gslb_chosen_total", "Answers (DNS and HTTP) by the edge named first", &["edge"]),
            matched: counter(r, "gslb_match_total", "Answers by how well the edge matched the client", &["level"]),
            lookup,
            edges: int_gauge(r, "gslb_edges", "Live edges the MC reported last", &[]),
            feed_age: gauge(r, "gslb_feed_age_seconds", "Age of the MC's last answer", &[]),
            feed_errors: counter(r, "gslb_feed_errors_total", "Failed polls of the MC", &[]),
            geo_prefixes: int_gauge(r, "gslb_geo_prefixes", "Prefixes in the loaded database", &[]),
            geo_reloads: counter(r, "gslb_geo_reloads_total", "Prefix database loads, by result", &["result"]),
            redirects: counter(r, "gslb_http_redirects_total", "HTTP fallback answers, by result", &["result"]),
            conns: livesky_net::limits::ConnMetrics::register(r),
            registry,
        }
    }

    pub fn render(&self) -> String {
        livesky_net::metrics::render(&self.registry)
    }
}

impl Default for GslbMetrics {
    fn default() -> Self {
        Self::new()
    }
}

pub fn type_label(t: RecordType) -> &'static str {
    match t {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::SOA => "SOA",
        RecordType::NS => "NS",
        RecordType::ANY => "ANY",
        _ => "other",
    }
}

pub fn rcode_label(r: ResponseCode) -> &'static str {
    match r {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::BADVERS => "BADVERS",
        _ => "other",
    }
}
