//! Versions of the operators' topology and what each SN has acknowledged (sans-IO). Every accepted
//! reload is a new version; an SN that acknowledged version `v` gets the update from `v` to now
//! while `v` is still in the history, else a full snapshot.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use proto::NodeId;
use proto::config::Topology;
use proto::mc::{ConfigXml, SnConfig};

/// Versions kept for updates; an SN further behind gets a snapshot.
pub const HISTORY: usize = 32;

#[derive(Debug)]
pub struct ConfigStore {
    current: (u64, Arc<Topology>),
    /// Recent versions, the current one last.
    history: VecDeque<(u64, Arc<Topology>)>,
    acked: BTreeMap<NodeId, u64>,
}

impl ConfigStore {
    pub fn new(topology: Topology) -> Self {
        Self::starting_at(1, topology)
    }

    /// The first version is `version` (after a restart: one past the last one handed out).
    pub fn starting_at(version: u64, topology: Topology) -> Self {
        let current = (version.max(1), Arc::new(topology));
        Self { history: VecDeque::from([current.clone()]), current, acked: BTreeMap::new() }
    }

    pub fn version(&self) -> u64 {
        self.current.0
    }

    pub fn topology(&self) -> Arc<Topology> {
        self.current.1.clone()
    }

    /// Makes `topology` the running config; returns its version.
    pub fn replace(&mut self, topology: Topology) -> u64 {
        let v = self.version() + 1;
        self.current = (v, Arc::new(topology));
        self.history.push_back(self.current.clone());
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
        v
    }

    /// What [`ConfigView::doc_for`] needs, cheap to take: deriving documents for a thousand SNs
    /// happens outside the MC's lock.
    pub fn view(&self, have: u64) -> ConfigView {
        let old = (have < self.current.0).then(|| self.history.iter().find(|(v, _)| *v == have).cloned()).flatten();
        ConfigView { current: self.current.clone(), old }
    }

    pub fn doc_for(&self, id: &NodeId, have: u64) -> Option<ConfigXml> {
        self.view(have).doc_for(id, have)
    }

    /// The full document of SN `id` now.
    pub fn snapshot_for(&self, id: &NodeId) -> Option<ConfigXml> {
        SnConfig::derive(&self.topology(), id, self.version()).map(|c| c.snapshot())
    }

    pub fn ack(&mut self, id: &NodeId, version: u64) {
        self.acked.insert(id.clone(), version);
    }

    pub fn acked(&self, id: &NodeId) -> Option<u64> {
        self.acked.get(id).copied()
    }
}

/// The current topology and, if still known, the one an SN holds.
pub struct ConfigView {
    current: (u64, Arc<Topology>),
    old: Option<(u64, Arc<Topology>)>,
}

impl ConfigView {
    /// What SN `id` needs to reach the current version from `have` (0: nothing): `None` when it
    /// is current (or not in the topology), an update when `have` is known, else a snapshot.
    pub fn doc_for(&self, id: &NodeId, have: u64) -> Option<ConfigXml> {
        let (now, topo) = &self.current;
        if have == *now {
            return None;
        }
        let cur = SnConfig::derive(topo, id, *now)?;
        let old = self.old.as_ref().filter(|(v, _)| *v == have).and_then(|(v, t)| SnConfig::derive(t, id, *v));
        Some(match old {
            Some(old) => cur.diff_from(&old),
            None => cur.snapshot(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = r#"
[[channel]]
id = "a"
source = { kind = "push" }
[[node]]
id = "t0"
tier = 0
sn_listen = "127.0.0.1:7400"
http_listen = "127.0.0.1:7480"
"#;

    fn topo(text: &str) -> Topology {
        Topology::parse(text, "t.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn updates_from_known_versions_snapshots_otherwise() {
        let t0 = NodeId::new("t0").unwrap_or_else(|e| panic!("{e}"));
        let mut s = ConfigStore::new(topo(T));
        let first = s.doc_for(&t0, 0).unwrap_or_else(|| panic!("doc"));
        assert_eq!((first.version, first.base), (1, None));
        assert!(s.doc_for(&t0, 1).is_none(), "current: nothing to send");
        s.replace(topo(&format!("{T}\n[[channel]]\nid = \"b\"\nsource = {{ kind = \"push\" }}\n")));
        let up = s.doc_for(&t0, 1).unwrap_or_else(|| panic!("update"));
        assert_eq!((up.version, up.base), (2, Some(1)));
        assert_eq!(up.channels.len(), 1);
        assert_eq!(up.channels[0].id.as_str(), "b");
        assert!(up.node.is_none());
        // A version from before the history (or from another MC's life): snapshot.
        for v in 3..(3 + HISTORY as u64) {
            assert_eq!(s.replace(topo(T)), v);
        }
        let snap = s.doc_for(&t0, 1).unwrap_or_else(|| panic!("snapshot"));
        assert_eq!(snap.base, None);
        let snap = s.doc_for(&t0, 999).unwrap_or_else(|| panic!("snapshot"));
        assert_eq!(snap.base, None);
        let stranger = NodeId::new("nobody").unwrap_or_else(|e| panic!("{e}"));
        assert!(s.doc_for(&stranger, 0).is_none());
    }
}
