//! Who is alive (sans-IO): SNs register with *alive*, prove they live with heartbeats, and are
//! dropped when their link closes or after three heartbeat intervals of silence. Every change
//! bumps the membership version; the driver broadcasts the change to the other SNs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proto::NodeId;
use proto::mc::{Gone, Heartbeat, Member, Members};

/// Heartbeat intervals of silence after which an SN is dead.
pub const MISSED_HEARTBEATS: u32 = 3;

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Registered, or registered again (possibly with new addresses).
    Joined(Member),
    Left(NodeId),
}

impl Change {
    /// The change as an incremental `members` message.
    pub fn message(&self, version: u64) -> Members {
        let (members, gone) = match self {
            Change::Joined(m) => (vec![m.clone()], Vec::new()),
            Change::Left(id) => (Vec::new(), vec![Gone { id: id.clone() }]),
        };
        Members { version, full: false, members, gone }
    }
}

#[derive(Debug)]
struct Entry {
    member: Member,
    last_seen: Instant,
    /// The control connection that registered it: a stale connection closing later must not
    /// remove an SN that has since reconnected.
    session: u64,
    /// The last heartbeat.
    load: Heartbeat,
}

#[derive(Debug)]
pub struct Registry {
    heartbeat: Duration,
    members: BTreeMap<NodeId, Entry>,
    version: u64,
}

impl Registry {
    pub fn new(heartbeat: Duration) -> Self {
        Self { heartbeat, members: BTreeMap::new(), version: 0 }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn alive(&mut self, now: Instant, member: Member, session: u64) -> Change {
        self.version += 1;
        let id = member.id.clone();
        self.members.insert(id, Entry { member: member.clone(), last_seen: now, session, load: Heartbeat::default() });
        Change::Joined(member)
    }

    /// False if `id` is not (or no longer) registered through `session`: the link should close.
    pub fn heartbeat(&mut self, now: Instant, id: &NodeId, session: u64, load: &Heartbeat) -> bool {
        match self.members.get_mut(id) {
            Some(e) if e.session == session => {
                e.last_seen = now;
                if e.load != *load {
                    e.load = load.clone();
                }
                true
            }
            _ => false,
        }
    }

    /// The connection `session` of `id` closed.
    pub fn disconnected(&mut self, id: &NodeId, session: u64) -> Option<Change> {
        if self.members.get(id).is_some_and(|e| e.session == session) {
            self.members.remove(id);
            self.version += 1;
            return Some(Change::Left(id.clone()));
        }
        None
    }

    /// SNs silent for [`MISSED_HEARTBEATS`] intervals, removed.
    pub fn sweep(&mut self, now: Instant) -> Vec<Change> {
        let limit = self.heartbeat * MISSED_HEARTBEATS;
        let dead: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.last_seen) > limit)
            .map(|(id, _)| id.clone())
            .collect();
        dead.into_iter()
            .map(|id| {
                self.members.remove(&id);
                self.version += 1;
                Change::Left(id)
            })
            .collect()
    }

    pub fn get(&self, id: &NodeId) -> Option<&Member> {
        self.members.get(id).map(|e| &e.member)
    }

    pub fn users(&self, id: &NodeId) -> Option<u64> {
        self.members.get(id).map(|e| e.load.users)
    }

    /// Members with their last heartbeat.
    pub fn loads(&self) -> impl Iterator<Item = (&Member, &Heartbeat)> {
        self.members.values().map(|e| (&e.member, &e.load))
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values().map(|e| &e.member)
    }

    /// Sets every member's `upstream` to `upstream_of(id)` (after a topology change); true if
    /// any changed (the membership version moves on, and SNs should get it whole).
    pub fn restamp(&mut self, upstream_of: impl Fn(&NodeId) -> String) -> bool {
        let mut changed = false;
        for (id, e) in self.members.iter_mut() {
            let up = upstream_of(id);
            if e.member.upstream != up {
                e.member.upstream = up;
                changed = true;
            }
        }
        self.version += u64::from(changed);
        changed
    }

    pub fn full(&self) -> Members {
        Members { version: self.version, full: true, members: self.members().cloned().collect(), gone: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str) -> Member {
        Member {
            id: NodeId::new(id).unwrap_or_else(|e| panic!("{e}")),
            tier: 1,
            role: proto::config::Role::Relay,
            http: "127.0.0.1:1".parse().unwrap_or_else(|e| panic!("{e}")),
            sn: None,
            clients: None,
            capacity_kbps: 0,
            key: None,
            upstream: String::new(),
        }
    }

    #[test]
    fn silent_members_die_after_three_intervals_and_heartbeats_keep_them() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut r = Registry::new(s);
        r.alive(t0, member("a"), 1);
        r.alive(t0, member("b"), 2);
        assert_eq!(r.version(), 2);
        for i in 1..=5 {
            assert!(r.heartbeat(t0 + s * i, &member("a").id, 1, &Heartbeat { users: 10, ..Heartbeat::default() }));
        }
        assert!(r.sweep(t0 + s * 3).is_empty(), "exactly three intervals is not yet dead");
        assert_eq!(r.sweep(t0 + s * 3 + Duration::from_millis(1)), [Change::Left(member("b").id)]);
        assert_eq!(r.full().members, [member("a")]);
        assert_eq!(r.users(&member("a").id), Some(10));
        assert_eq!(r.version(), 3);
        assert_eq!(r.sweep(t0 + s * 9), [Change::Left(member("a").id)]);
        assert!(r.is_empty());
    }

    #[test]
    fn a_stale_connection_cannot_remove_or_feed_a_re_registered_member() {
        let t0 = Instant::now();
        let mut r = Registry::new(Duration::from_secs(1));
        r.alive(t0, member("a"), 1);
        r.alive(t0, member("a"), 2);
        assert!(!r.heartbeat(t0, &member("a").id, 1, &Heartbeat::default()));
        assert_eq!(r.disconnected(&member("a").id, 1), None);
        assert_eq!(r.len(), 1);
        assert_eq!(r.disconnected(&member("a").id, 2), Some(Change::Left(member("a").id)));
        assert_eq!(r.disconnected(&member("a").id, 2), None);
    }
}
