//! Complaints about a client counted by distinct complainers: the edge acts on what several
//! clients say (a parent that cannot be reached, that sends nothing, that forwards forgeries),
//! never on one client's word, so one liar cannot get honest clients demoted or banned.

use proto::DetMap;
use proto::peer::PeerId;

pub(super) struct Reporters<R = PeerId> {
    about: DetMap<PeerId, Vec<R>>,
}

impl<R> Default for Reporters<R> {
    fn default() -> Self {
        Self { about: DetMap::default() }
    }
}

impl<R: PartialEq> Reporters<R> {
    /// `reporter` complains about `peer`: how many distinct clients now have, and whether this
    /// one is new (the same client twice is one complaint).
    pub fn add(&mut self, peer: PeerId, reporter: R) -> (usize, bool) {
        let r = self.about.entry(peer).or_default();
        let new = !r.contains(&reporter);
        if new {
            r.push(reporter);
        }
        (r.len(), new)
    }

    /// `peer` left: complaints about it go with it.
    pub fn forget(&mut self, peer: PeerId) {
        self.about.remove(&peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complaints_count_distinct_reporters_and_leave_with_their_subject() {
        let mut r = Reporters::default();
        assert_eq!(r.add(PeerId(9), 1), (1, true));
        assert_eq!(r.add(PeerId(9), 1), (1, false));
        assert_eq!(r.add(PeerId(9), 2), (2, true));
        assert_eq!(r.add(PeerId(8), 1), (1, true));
        r.forget(PeerId(9));
        assert_eq!(r.add(PeerId(9), 3), (1, true));
    }
}
