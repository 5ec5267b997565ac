//! What a node knows of the other SNs: where each listens for SN links, its identity key, and
//! which nodes it may subscribe to (its parents and same-tier peers). Filled from the topology
//! file, then kept current by the management center's membership (which carries each SN's key
//! as the MC knows it). SN links are authenticated against it: a node proves its identity with
//! its key, and a parent takes only the children the topology names.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use proto::{NodeId, NodePublicKey};

use proto::config::Topology;

#[derive(Debug, Default, Clone)]
struct NodeInfo {
    addr: Option<SocketAddr>,
    key: Option<NodePublicKey>,
    /// The nodes it may subscribe to: its parents and same-tier peers.
    upstream: Option<Vec<NodeId>>,
}

#[derive(Debug, Default)]
pub struct AddressBook {
    map: RwLock<HashMap<NodeId, NodeInfo>>,
}

impl AddressBook {
    pub fn from_topology(t: &Topology) -> Arc<AddressBook> {
        let book = AddressBook::default();
        for n in &t.nodes {
            let key = n.identity_key.as_deref().and_then(|k| NodePublicKey::from_hex(k).ok());
            let upstream = Some(n.parents.iter().chain(&n.peers).cloned().collect());
            book.write().insert(n.id.clone(), NodeInfo { addr: n.sn_listen, key, upstream });
        }
        Arc::new(book)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<NodeId, NodeInfo>> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<NodeId, NodeInfo>> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set(&self, id: NodeId, addr: SocketAddr) {
        self.write().entry(id).or_default().addr = Some(addr);
    }
    /// The node left: its address goes (its key and place in the topology stay).
    pub fn remove(&self, id: &NodeId) {
        if let Some(i) = self.write().get_mut(id) {
            i.addr = None;
        }
    }
    pub fn get(&self, id: &NodeId) -> Option<SocketAddr> {
        self.read().get(id).and_then(|i| i.addr)
    }

    pub fn set_key(&self, id: NodeId, key: NodePublicKey) {
        self.write().entry(id).or_default().key = Some(key);
    }
    pub fn key(&self, id: &NodeId) -> Option<NodePublicKey> {
        self.read().get(id).and_then(|i| i.key)
    }

    /// `id`'s parents and same-tier peers, as the management center now says.
    pub fn set_upstream(&self, id: NodeId, upstream: Vec<NodeId>) {
        self.write().entry(id).or_default().upstream = Some(upstream);
    }

    /// Whether the topology names `parent` as a parent or same-tier peer of `child`.
    pub fn may_subscribe(&self, child: &NodeId, parent: &NodeId) -> bool {
        self.read().get(child).and_then(|i| i.upstream.as_ref()).is_some_and(|u| u.contains(parent))
    }
}
