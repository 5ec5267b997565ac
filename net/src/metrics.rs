//! Prometheus helpers every role uses: registering a family on a role's own registry (several roles
//! may share a process), summing series, and the text exposition.

use prometheus::{CounterVec, Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

pub fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    reg.register(Box::new(c.clone())).expect("metric registered once per registry");
    c
}

/// A counter of a quantity that is not a count (seconds).
pub fn float_counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> CounterVec {
    let c = CounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    reg.register(Box::new(c.clone())).expect("metric registered once per registry");
    c
}

pub fn int_gauge(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    reg.register(Box::new(g.clone())).expect("metric registered once per registry");
    g
}

pub fn gauge(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    reg.register(Box::new(g.clone())).expect("metric registered once per registry");
    g
}

/// Sum of every series of a counter or gauge family.
pub fn total(metric: &impl prometheus::core::Collector) -> u64 {
    let mut sum = 0.0;
    for family in metric.collect() {
        for m in family.get_metric() {
            sum += m.get_counter().get_value() + m.get_gauge().get_value();
        }
    }
    sum.max(0.0) as u64
}

/// Sum of the series of a counter family whose `channel` label is `channel`.
pub fn total_for(metric: &IntCounterVec, channel: &str) -> u64 {
    let mut sum = 0;
    for family in prometheus::core::Collector::collect(metric) {
        for m in family.get_metric() {
            if m.get_label().iter().any(|l| l.name() == "channel" && l.value() == channel) {
                sum += m.get_counter().get_value() as u64;
            }
        }
    }
    sum
}

/// The text exposition of everything in `reg`.
pub fn render(reg: &Registry) -> String {
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&reg.gather(), &mut buf) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    String::from_utf8(buf).unwrap_or_default()
}
