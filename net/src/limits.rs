//! Connection caps for every listener: a global cap and a per-address cap, counted at accept time
//! and released when the connection ends. A refused connection is closed at once (HTTP gets a 503
//! first), counted in `livesky_connections_refused_total{listener,reason}`, and logged at most
//! once per 10 s per listener with the count since the last line, so a flood cannot flood the log.
//!
//! The global cap never exceeds three quarters of the process's open-file limit: past it the
//! kernel would refuse `accept` itself, and a new viewer would wait in the backlog unanswered.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, IntGaugeVec, Registry};
pub use proto::limits::Limits;

/// TCP keepalive on a long-lived connection (a broadcaster's feed, an SN link): a peer that
/// vanished without a FIN (power cut, NAT timeout) is noticed in about 30 s even while we only
/// read.
pub fn keepalive(stream: &tokio::net::TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(15))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "cannot set TCP keepalive");
    }
}

/// The metric families every role registers for its listeners.
#[derive(Clone)]
pub struct ConnMetrics {
    pub refused: IntCounterVec,
    pub open: IntGaugeVec,
}

impl ConnMetrics {
    pub fn register(reg: &Registry) -> Self {
        ConnMetrics {
            refused: crate::metrics::counter(
                reg,
                "connections_refused_total",
                "Connections closed at accept (reason: total or per_ip cap) or cut by a timeout (reason: timeout)",
                &["listener", "reason"],
            ),
            open: crate::metrics::int_gauge(reg, "connections_open", "Connections open now", &["listener"]),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many connections")]
    Total,
    #[error("too many connections from one address")]
    PerIp,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Total => "total",
            Refusal::PerIp => "per_ip",
        }
    }
}

struct State {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    refused_since_log: u64,
    last_log: Option<Instant>,
}

/// The caps of one listener, shared by its accept loop and its connections' permits.
#[derive(Clone)]
pub struct ConnLimiter {
    listener: &'static str,
    max_total: usize,
    max_per_ip: usize,
    state: Arc<Mutex<State>>,
    metrics: Option<ConnMetrics>,
}

/// Holds one connection's place; dropping it frees the place.
pub struct ConnPermit {
    limiter: ConnLimiter,
    ip: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut st = self.limiter.lock();
        st.total = st.total.saturating_sub(1);
        if let Some(n) = st.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                st.per_ip.remove(&self.ip);
            }
        }
        if let Some(m) = &self.limiter.metrics {
            m.open.with_label_values(&[self.limiter.listener]).dec();
        }
    }
}

/// The soft open-file limit of this process, where the system says (Linux).
fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

const LOG_EVERY: Duration = Duration::from_secs(10);

impl ConnLimiter {
    pub fn new(listener: &'static str, max_total: usize, max_per_ip: usize) -> Self {
        let fd_cap = open_file_limit().map_or(usize::MAX, |n| (n * 3 / 4).max(16));
        let max_total = max_total.min(fd_cap).max(1);
        let state = State { total: 0, per_ip: HashMap::new(), refused_since_log: 0, last_log: None };
        Self { listener, max_total, max_per_ip: max_per_ip.max(1), state: Arc::new(Mutex::new(state)), metrics: None }
    }

    pub fn with_metrics(mut self, metrics: ConnMetrics) -> Self {
        metrics.open.with_label_values(&[self.listener]).set(0);
        self.metrics = Some(metrics);
        self
    }

    /// The global cap in force (after the open-file limit).
    pub fn max_total(&self) -> usize {
        self.max_total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a connection from `ip`, or why not (counted and logged here).
    pub fn try_acquire(&self, ip: IpAddr) -> Result<ConnPermit, Refusal> {
        let ip = ip.to_canonical();
        let mut st = self.lock();
        let from_ip = st.per_ip.get(&ip).copied().unwrap_or(0);
        let refusal = if st.total >= self.max_total {
            Some(Refusal::Total)
        } else if from_ip >= self.max_per_ip {
            Some(Refusal::PerIp)
        } else {
            None
        };
        if let Some(r) = refusal {
            st.refused_since_log += 1;
            let now = Instant::now();
            if st.last_log.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
                tracing::warn!(
                    listener = self.listener, %ip, reason = %r, refused = st.refused_since_log,
                    open = st.total, max = self.max_total, max_per_ip = self.max_per_ip,
                    "refusing connections (count since the last such line)"
                );
                st.refused_since_log = 0;
                st.last_log = Some(now);
            }
            drop(st);
            self.count(r.label());
            return Err(r);
        }
        st.total += 1;
        *st.per_ip.entry(ip).or_default() += 1;
        drop(st);
        if let Some(m) = &self.metrics {
            m.open.with_label_values(&[self.listener]).inc();
        }
        Ok(ConnPermit { limiter: self.clone(), ip })
    }

    /// Counts a connection this listener ended for `reason` (e.g. `timeout`).
    pub fn count(&self, reason: &str) {
        if let Some(m) = &self.metrics {
            m.refused.with_label_values(&[self.listener, reason]).inc();
        }
    }

    pub fn open(&self) -> usize {
        self.lock().total
    }
}

/// The next connection on `listener` with its place under `limiter` (or why it has none: the
/// caller closes it, after a word where the protocol has one); None once `cancel` fires. Accept
/// errors (out of descriptors, most likely) are logged and retried after 100 ms.
pub async fn accept_capped(
    listener: &tokio::net::TcpListener,
    limiter: &ConnLimiter,
    cancel: &tokio_util::sync::CancellationToken,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr, Result<ConnPermit, Refusal>)> {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return None,
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let permit = limiter.try_acquire(peer.ip());
                    return Some((stream, peer, permit));
                }
                Err(e) => {
                    tracing::warn!(listener = limiter.listener, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_per_address_and_in_all_and_free_on_drop() {
        let l = ConnLimiter::new("test", 3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = l.try_acquire(a).unwrap();
        let _p2 = l.try_acquire(a).unwrap();
        assert_eq!(l.try_acquire(a).err(), Some(Refusal::PerIp));
        // The same address written as IPv4-mapped IPv6 is the same address.
        assert_eq!(l.try_acquire("::ffff:192.0.2.1".parse().unwrap()).err(), Some(Refusal::PerIp));
        let _p3 = l.try_acquire(b).unwrap();
        assert_eq!(l.try_acquire(b).err(), Some(Refusal::Total));
        drop(p1);
        assert_eq!(l.open(), 2);
        assert!(l.try_acquire(a).is_ok());
    }
}
