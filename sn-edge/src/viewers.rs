//! Who may watch a channel at this edge: anyone, or viewers holding a token signed for the
//! channel by its issuer (`proto::token`). The same check guards legacy HTTP players and LiveSky
//! joins; it is a pure function of the channel's config, the token and the time.

use proto::ChannelId;
use proto::token::{TokenClaims, TokenError, verify};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ViewerPolicy {
    #[default]
    Open,
    /// Tokens required, signed by `key` (None: the config named no issuer, so nobody gets in).
    Token { key: Option<String> },
}

impl ViewerPolicy {
    pub fn of(c: &sn_core::ChannelConfig) -> Self {
        if c.require_token { ViewerPolicy::Token { key: c.token_key.clone() } } else { ViewerPolicy::Open }
    }

    /// `Ok(None)` for an open channel, `Ok(Some(claims))` for a valid token, else why not.
    pub fn check(&self, channel: &ChannelId, token: &str, now_unix_s: u64) -> Result<Option<TokenClaims>, TokenError> {
        match self {
            ViewerPolicy::Open => Ok(None),
            // Fail closed: a channel marked private stays private when its issuer key is missing.
            ViewerPolicy::Token { key: None } => {
                Err(TokenError::BadKey("the channel requires tokens but names no issuer key".into()))
            }
            ViewerPolicy::Token { key: Some(k) } => verify(k, channel, token, now_unix_s).map(Some),
        }
    }
}

pub use livesky_net::clock::unix_s as unix_now_s;

#[cfg(test)]
mod tests {
    use super::*;
    use proto::NodeKey;

    #[test]
    fn open_channels_ignore_tokens_and_private_ones_need_a_valid_one() {
        let ch = ChannelId::new("live").unwrap();
        let k = NodeKey::from_seed([9; 32]);
        let t = proto::token::issue(&k, &ch, "v", 100).unwrap();
        assert_eq!(ViewerPolicy::Open.check(&ch, "", 50), Ok(None));
        let private = ViewerPolicy::Token { key: Some(k.public_hex()) };
        assert_eq!(private.check(&ch, &t, 50).unwrap().map(|c| c.client), Some("v".into()));
        assert_eq!(private.check(&ch, "", 50), Err(TokenError::Missing));
        assert!(matches!(private.check(&ch, &t, 100), Err(TokenError::Expired { .. })));
        assert!(matches!(ViewerPolicy::Token { key: None }.check(&ch, &t, 50), Err(TokenError::BadKey(_))));
    }
}
