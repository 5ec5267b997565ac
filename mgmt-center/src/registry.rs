//! Who is alive (sans-IO): SNs register with *alive*, prove they live with heartbeats, and are
//! dropped when their link closes or after three heartbeat intervals of silence. Every change
//! bumps the membership version; the driver broadcasts the change to the other SNs.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use proto::NodeId;
use proto::mc::{Gone, Heartbeat, Member, Members, SpaceList};

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

/// What the driver tells the registry (through [`Registry::handle`]).
#[derive(Debug, Clone)]
pub enum Input {
    /// `member` registered on control connection `session`.
    Alive { member: Member, session: u64 },
    /// A heartbeat from `id` on `session`.
    Heartbeat { id: NodeId, session: u64, load: Heartbeat },
    /// Control connection `session` of `id` closed.
    Disconnected { id: NodeId, session: u64 },
    /// The topology changed: each member's `upstream` is now `upstream_of[id]` (missing: none).
    Upstreams(BTreeMap<NodeId, SpaceList<NodeId>>),
}

/// What the registry decided (drained with [`Registry::poll_output`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Membership changed: send `change.message(version)` to every SN.
    Changed { change: Change, version: u64 },
    /// `id` was silent for [`MISSED_HEARTBEATS`] intervals (a `Changed` removing it follows).
    Silent(NodeId),
    /// A heartbeat came on `session`, which no longer registers `id`: close that connection.
    Stale { id: NodeId, session: u64 },
    /// Members' upstreams changed: every SN should get the membership whole.
    Restamped,
}

/// The membership, as the four doors every sans-IO core of LiveSky-rs has (see
/// docs/architecture.md): `handle(now, input)`, `handle_timeout(now)`, `poll_output()`,
/// `poll_timeout()`.
#[derive(Debug)]
pub struct Registry {
    heartbeat: Duration,
    members: BTreeMap<NodeId, Entry>,
    version: u64,
    out: VecDeque<Output>,
}

impl Registry {
    pub fn new(heartbeat: Duration) -> Self {
        Self { heartbeat, members: BTreeMap::new(), version: 0, out: VecDeque::new() }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::Alive { member, session } => {
                let id = member.id.clone();
                self.members
                    .insert(id, Entry { member: member.clone(), last_seen: now, session, load: Heartbeat::default() });
                self.changed(Change::Joined(member));
            }
            Input::Heartbeat { id, session, load } => match self.members.get_mut(&id) {
                Some(e) if e.session == session => {
                    e.last_seen = now;
                    if e.load != load {
                        e.load = load;
                    }
                }
                _ => self.out.push_back(Output::Stale { id, session }),
            },
            Input::Disconnected { id, session } => {
                if self.members.get(&id).is_some_and(|e| e.session == session) {
                    self.members.remove(&id);
                    self.changed(Change::Left(id));
                }
            }
            Input::Upstreams(upstream_of) => {
                let mut changed = false;
                for (id, e) in self.members.iter_mut() {
                    let up = upstream_of.get(id).cloned().unwrap_or_default();
                    if e.member.upstream != up {
                        e.member.upstream = up;
                        changed = true;
                    }
                }
                if changed {
                    self.version += 1;
                    self.out.push_back(Output::Restamped);
                }
            }
        }
    }

    /// Removes the SNs silent for more than [`MISSED_HEARTBEATS`] intervals.
    pub fn handle_timeout(&mut self, now: Instant) {
        let limit = self.silence();
        let dead: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.last_seen) > limit)
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            self.members.remove(&id);
            self.out.push_back(Output::Silent(id.clone()));
            self.changed(Change::Left(id));
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When the most silent member dies if it stays silent.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let oldest = self.members.values().map(|e| e.last_seen).min()?;
        Some(oldest + self.silence() + Duration::from_millis(1))
    }

    /// How long a member may stay silent.
    pub fn silence(&self) -> Duration {
        self.heartbeat * MISSED_HEARTBEATS
    }

    fn changed(&mut self, change: Change) {
        self.version += 1;
        self.out.push_back(Output::Changed { change, version: self.version });
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
            upstream: SpaceList::default(),
        }
    }

    fn drain(r: &mut Registry) -> Vec<Output> {
        std::iter::from_fn(|| r.poll_output()).collect()
    }

    fn left(id: &str, version: u64) -> Output {
        Output::Changed { change: Change::Left(member(id).id), version }
    }

    #[test]
    fn silent_members_die_after_three_intervals_and_heartbeats_keep_them() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut r = Registry::new(s);
        r.handle(t0, Input::Alive { member: member("a"), session: 1 });
        r.handle(t0, Input::Alive { member: member("b"), session: 2 });
        assert_eq!(r.version(), 2);
        assert_eq!(drain(&mut r).len(), 2);
        for i in 1..=5 {
            let load = Heartbeat { users: 10, ..Heartbeat::default() };
            r.handle(t0 + s * i, Input::Heartbeat { id: member("a").id, session: 1, load });
        }
        assert_eq!(r.poll_timeout(), Some(t0 + s * 3 + Duration::from_millis(1)), "b is the most silent");
        r.handle_timeout(t0 + s * 3);
        assert!(drain(&mut r).is_empty(), "exactly three intervals is not yet dead");
        r.handle_timeout(t0 + s * 3 + Duration::from_millis(1));
        assert_eq!(drain(&mut r), [Output::Silent(member("b").id), left("b", 3)]);
        assert_eq!(r.full().members, [member("a")]);
        assert_eq!(r.users(&member("a").id), Some(10));
        assert_eq!(r.poll_timeout(), Some(t0 + s * 8 + Duration::from_millis(1)));
        r.handle_timeout(t0 + s * 9);
        assert_eq!(drain(&mut r), [Output::Silent(member("a").id), left("a", 4)]);
        assert!(r.is_empty() && r.poll_timeout().is_none());
    }

    #[test]
    fn a_stale_connection_cannot_remove_or_feed_a_re_registered_member() {
        let t0 = Instant::now();
        let mut r = Registry::new(Duration::from_secs(1));
        r.handle(t0, Input::Alive { member: member("a"), session: 1 });
        r.handle(t0, Input::Alive { member: member("a"), session: 2 });
        drain(&mut r);
        r.handle(t0, Input::Heartbeat { id: member("a").id, session: 1, load: Heartbeat::default() });
        assert_eq!(drain(&mut r), [Output::Stale { id: member("a").id, session: 1 }]);
        r.handle(t0, Input::Disconnected { id: member("a").id, session: 1 });
        assert!(drain(&mut r).is_empty());
        assert_eq!(r.len(), 1);
        r.handle(t0, Input::Disconnected { id: member("a").id, session: 2 });
        assert_eq!(drain(&mut r), [left("a", 3)]);
        r.handle(t0, Input::Disconnected { id: member("a").id, session: 2 });
        assert!(drain(&mut r).is_empty());
    }

    #[test]
    fn new_upstreams_restamp_members_once() {
        let t0 = Instant::now();
        let mut r = Registry::new(Duration::from_secs(1));
        r.handle(t0, Input::Alive { member: member("a"), session: 1 });
        drain(&mut r);
        let t0_id = NodeId::new("t0").unwrap_or_else(|e| panic!("{e}"));
        let ups: BTreeMap<NodeId, SpaceList<NodeId>> = [(member("a").id, vec![t0_id.clone()].into())].into();
        r.handle(t0, Input::Upstreams(ups.clone()));
        assert_eq!(drain(&mut r), [Output::Restamped]);
        assert_eq!(r.get(&member("a").id).map(|m| m.upstream.0.clone()), Some(vec![t0_id]));
        r.handle(t0, Input::Upstreams(ups));
        assert!(drain(&mut r).is_empty(), "nothing changed: no new version");
        assert_eq!(r.version(), 2);
    }
}
