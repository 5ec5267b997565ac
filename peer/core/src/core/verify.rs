//! Every chunk is checked against the channel's key before it is played or forwarded; when the
//! key rotates (the edge says so), chunks signed with the old one still pass for [`KEY_GRACE`],
//! as some are in flight or buffered upstream when it changes.

use super::*;

impl PeerCore {
    /// The edge announced the channel's key (at a rotation, a new one).
    pub(super) fn rotate_key(&mut self, now: Instant, key: [u8; 32]) {
        if let Ok(v) = ChannelVerifier::from_bytes(&key)
            && self.verifier.as_ref().is_none_or(|cur| cur.to_bytes() != key)
        {
            self.old_verifier = self.verifier.replace(v).map(|old| (old, now + KEY_GRACE));
        }
    }

    /// Whether a chunk passes the channel key (always, when the edge gave none).
    pub(super) fn authentic(&mut self, c: &Chunk) -> bool {
        let old_ok =
            || self.old_verifier.as_ref().is_some_and(|(v, until)| self.last_now < *until && v.verify(c).is_ok());
        match &self.verifier {
            Some(v) if v.verify(c).is_err() && !old_ok() => {
                self.stats.bad_chunks += 1;
                false
            }
            _ => true,
        }
    }
}
