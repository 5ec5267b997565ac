//! Bans for clients that forward chunks failing the channel's signature check. One report is
//! enough to stop a client feeding anyone (cheap and harmless if the report is false); a ban —
//! disconnect, and no rejoin for a while — needs reports from several distinct clients, so one
//! lying client cannot get honest ones thrown out. A ban holds the client's identity: the client
//! id of its viewer token when the channel uses tokens, else its address.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proto::peer::PeerId;

use super::reporters::Reporters;

pub(super) struct Bans {
    /// Complaints by reporters' identity keys: one identity reconnecting is still one voice.
    reports: Reporters<u64>,
    until: HashMap<String, Instant>,
    need: usize,
    length: Duration,
}

impl Bans {
    pub fn new(need: usize, length: Duration) -> Self {
        Self { reports: Reporters::default(), until: HashMap::new(), need: need.max(1), length }
    }

    /// A client of identity `reporter` (its [`super::links::identity_key`]) says `sender`
    /// forwarded a bad chunk; true when that makes enough distinct identities.
    pub fn report(&mut self, reporter: u64, sender: PeerId) -> bool {
        self.reports.add(sender, reporter).0 >= self.need
    }

    pub fn ban(&mut self, identity: String, now: Instant) {
        self.until.insert(identity, now + self.length);
    }

    /// How much longer `identity` is banned, if it is.
    pub fn remaining(&self, identity: &str, now: Instant) -> Option<Duration> {
        self.until.get(identity).map(|u| u.saturating_duration_since(now)).filter(|d| !d.is_zero())
    }

    pub fn forget(&mut self, peer: PeerId) {
        self.reports.forget(peer);
    }

    pub fn prune(&mut self, now: Instant) {
        self.until.retain(|_, u| *u > now);
    }
}

/// Who a client is for bans: its token's client id (the token was checked before the join got
/// here; open channels pass no token on), else its address.
pub(super) fn identity(token: &str, from: std::net::IpAddr) -> String {
    match proto::token::client_of(token) {
        Some(client) => format!("client:{client}"),
        None => format!("ip:{from}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ban_needs_distinct_reporters_and_runs_out() {
        let t0 = Instant::now();
        let mut b = Bans::new(2, Duration::from_secs(600));
        assert!(!b.report(1, PeerId(9)));
        assert!(!b.report(1, PeerId(9)), "the same reporter twice is one report");
        assert!(b.report(2, PeerId(9)));
        b.ban(identity("", "192.0.2.9".parse().unwrap()), t0);
        assert_eq!(b.remaining("ip:192.0.2.9", t0 + Duration::from_secs(60)), Some(Duration::from_secs(540)));
        assert_eq!(b.remaining("ip:192.0.2.9", t0 + Duration::from_secs(600)), None);
        assert_eq!(identity("100.viewer-7.abcd", "192.0.2.9".parse().unwrap()), "client:viewer-7");
        b.prune(t0 + Duration::from_secs(601));
        assert!(b.until.is_empty());
    }
}
