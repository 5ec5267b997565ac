//! The MC's Prometheus metrics (`livesky_mc_…`).

use livesky_net::metrics::{counter, int_gauge};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use proto::config::Role;

use crate::registry::Change;
use crate::server::State;

pub struct McMetrics {
    pub registry: Registry,
    pub members: IntGaugeVec,
    pub config_version: IntGauge,
    pub sn_config_version: IntGaugeVec,
    pub registrations: IntCounter,
    pub refused: IntCounterVec,
    /// API requests refused for a missing or wrong bearer token, by endpoint.
    pub api_refused: IntCounterVec,
    pub deaths: IntCounter,
    pub reloads: IntCounterVec,
    pub pushes: IntCounterVec,
    pub push_bytes: IntCounterVec,
    pub report_rows: IntCounter,
    /// Refused and open connections of the HTTP API and the control port.
    pub conns: livesky_net::limits::ConnMetrics,
}

fn one<T: prometheus::core::Collector + Clone + 'static>(reg: &Registry, m: T) -> T {
    reg.register(Box::new(m.clone())).expect("metric registered once per registry");
    m
}

impl McMetrics {
    pub fn new() -> McMetrics {
        let registry = Registry::new_custom(Some("livesky".into()), None).expect("valid registry prefix");
        let r = &registry;
        McMetrics {
            members: int_gauge(r, "mc_members", "SNs registered and alive, by role", &["role"]),
            config_version: one(
                r,
                IntGauge::with_opts(Opts::new("mc_config_version", "Version of the running config"))
                    .expect("static metric definition"),
            ),
            sn_config_version: int_gauge(r, "mc_sn_config_version", "Config version each SN acknowledged", &["node"]),
            registrations: one(
                r,
                IntCounter::with_opts(Opts::new("mc_registrations_total", "SN registrations accepted"))
                    .expect("static metric definition"),
            ),
            refused: counter(r, "mc_refused_total", "SN connections refused, by reason", &["reason"]),
            api_refused: counter(
                r,
                "mc_api_refused_total",
                "API requests refused for a missing or wrong bearer token, by endpoint",
                &["endpoint"],
            ),
            deaths: one(
                r,
                IntCounter::with_opts(Opts::new("mc_deaths_total", "SNs declared dead after three silent heartbeats"))
                    .expect("static metric definition"),
            ),
            reloads: counter(r, "mc_config_reloads_total", "Topology reloads, applied or rejected", &["result"]),
            pushes: counter(r, "mc_config_pushes_total", "Config documents sent, snapshot or update", &["kind"]),
            push_bytes: counter(r, "mc_config_push_bytes_total", "XML bytes of config documents sent", &["kind"]),
            report_rows: one(
                r,
                IntCounter::with_opts(Opts::new("mc_report_rows_total", "Report rows stored (each once)"))
                    .expect("static metric definition"),
            ),
            conns: livesky_net::limits::ConnMetrics::register(r),
            registry,
        }
    }

    /// Gauges that follow the registry and the store.
    pub(crate) fn refresh(&self, st: &State) {
        self.config_version.set(st.store.version() as i64);
        for role in [Role::Relay, Role::Edge] {
            self.members
                .with_label_values(&[role.as_str()])
                .set(st.registry.members().filter(|m| m.role == role).count() as i64);
        }
    }

    /// After one SN joined or left: cheap with thousands of SNs (no series rebuilt).
    pub(crate) fn membership(&self, st: &State, change: &Change) {
        self.refresh(st);
        if let Change::Left(id) = change {
            let _ = self.sn_config_version.remove_label_values(&[id.as_str()]);
        }
    }

    pub fn render(&self) -> String {
        livesky_net::metrics::render(&self.registry)
    }
}

impl Default for McMetrics {
    fn default() -> Self {
        Self::new()
    }
}
