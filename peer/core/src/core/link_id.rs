//! The typed id of a peer link.

/// A peer link as the core knows it: one it opened (`Out`, numbered by the core) or one a peer
/// opened to it (`In`, numbered by whoever accepts connections: the driver, the simulator).
/// Ids are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinkId {
    Out(u64),
    In(u64),
}

impl LinkId {
    pub fn is_outgoing(self) -> bool {
        matches!(self, LinkId::Out(_))
    }
    /// The number within its kind (signalling tokens, logs).
    pub fn number(self) -> u64 {
        match self {
            LinkId::Out(n) | LinkId::In(n) => n,
        }
    }
}

impl std::fmt::Display for LinkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkId::Out(n) => write!(f, "out-{n}"),
            LinkId::In(n) => write!(f, "in-{n}"),
        }
    }
}
