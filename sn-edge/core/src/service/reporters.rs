//! Complaints about a client counted by distinct complainers: the edge acts on what several
//! clients say (a parent that cannot be reached, that sends nothing, that forwards forgeries),
//! never on one client's word, so one liar cannot get honest clients demoted or banned.

use proto::DetMap;
use proto::peer::PeerId;

#[derive(Default)]
pub(super) struct Reporters {
    about: DetMap<PeerId, Vec<PeerId>>,
}

impl Reporters {
    /// `reporter` complains about `peer`: how many distinct clients now have, and whether this
    /// one is new (the same client twice is one complaint).
    pub fn add(&mut self, peer: PeerId, reporter: PeerId) -> (usize, bool) {
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
        assert_eq!(r.add(9, 1), (1, true));
        assert_eq!(r.add(9, 1), (1, false));
        assert_eq!(r.add(9, 2), (2, true));
        assert_eq!(r.add(8, 1), (1, true));
        r.forget(9);
        assert_eq!(r.add(9, 3), (1, true));
    }
}
