//! Viewer tokens: a content provider's backend gets one per viewer from the management center's
//! API (or signs its own with a key the channel names), and hands it to the player; edges check it
//! before serving a channel that requires one. A token is `EXPIRY.CLIENT.SIGNATURE`: expiry in
//! Unix seconds, the client id the viewer is known by, and an Ed25519 signature over the channel,
//! the expiry and the client id, so a token for one channel opens no other and cannot be
//! stretched. Checking needs only the issuer's public key and the current time (passed in).

use crate::name::ChannelId;
use crate::sign::{NodeKey, SignatureError, verify_node_signature};

/// Longest client id a token may carry.
pub const MAX_CLIENT_ID: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no viewer token: this channel requires one (`?token=…` or the player's --token)")]
    Missing,
    #[error("malformed viewer token: {0}")]
    Malformed(&'static str),
    #[error("viewer token expired at {expired} (now {now}, Unix seconds): ask the provider for a new one")]
    Expired { expired: u64, now: u64 },
    #[error("viewer token is not signed for this channel by its issuer")]
    BadSignature,
    #[error("the channel's token key is unusable: {0}")]
    BadKey(String),
    #[error("client id must be 1..={MAX_CLIENT_ID} characters of A-Z a-z 0-9 _ - : @")]
    BadClientId,
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    pub client: String,
    pub expires: u64,
}

fn valid_client(client: &str) -> bool {
    (1..=MAX_CLIENT_ID).contains(&client.len())
        && client.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'@'))
}

fn message(channel: &ChannelId, expires: u64, client: &str) -> Vec<u8> {
    format!("livesky-viewer-token/1\0{channel}\0{expires}\0{client}").into_bytes()
}

/// A token for `client` to watch `channel` until `expires` (Unix seconds).
pub fn issue(key: &NodeKey, channel: &ChannelId, client: &str, expires: u64) -> Result<String, TokenError> {
    if !valid_client(client) {
        return Err(TokenError::BadClientId);
    }
    Ok(format!("{expires}.{client}.{}", key.sign_hex(&message(channel, expires, client))))
}

/// The expiry, client id and signature of `EXPIRY.CLIENT.SIGNATURE`, unchecked.
fn split(token: &str) -> Result<(&str, &str, &str), TokenError> {
    let (expiry, rest) = token.split_once('.').ok_or(TokenError::Malformed("expected EXPIRY.CLIENT.SIGNATURE"))?;
    let (client, sig) = rest.rsplit_once('.').ok_or(TokenError::Malformed("expected EXPIRY.CLIENT.SIGNATURE"))?;
    Ok((expiry, client, sig))
}

/// The client id a token names, if it names a well-formed one (its signature is not checked:
/// for tokens [`verify`] already passed).
pub fn client_of(token: &str) -> Option<&str> {
    split(token.trim()).ok().map(|(_, client, _)| client).filter(|c| valid_client(c))
}

/// Checks `token` for `channel` against the issuer's public key (64 hex digits) at `now` (Unix
/// seconds).
pub fn verify(public_hex: &str, channel: &ChannelId, token: &str, now: u64) -> Result<TokenClaims, TokenError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    let (expiry, client, sig) = split(token)?;
    let expires: u64 = expiry.parse().map_err(|_| TokenError::Malformed("expiry is not a number"))?;
    if !valid_client(client) {
        return Err(TokenError::Malformed("bad client id"));
    }
    match verify_node_signature(public_hex, &message(channel, expires, client), sig) {
        Ok(()) => {}
        Err(SignatureError::BadKey(e)) => return Err(TokenError::BadKey(e)),
        Err(_) => return Err(TokenError::BadSignature),
    }
    // After the signature: an expired token is reported as such only when it is genuine.
    if now >= expires {
        return Err(TokenError::Expired { expired: expires, now });
    }
    Ok(TokenClaims { client: client.to_string(), expires })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(s: &str) -> ChannelId {
        ChannelId::new(s).unwrap()
    }

    #[test]
    fn a_token_opens_its_channel_until_it_expires() {
        let k = NodeKey::from_seed([3; 32]);
        let pk = k.public_hex();
        let t = issue(&k, &ch("live"), "viewer-7", 1_000).unwrap();
        assert_eq!(
            verify(&pk, &ch("live"), &t, 999).unwrap(),
            TokenClaims { client: "viewer-7".into(), expires: 1_000 }
        );
        assert_eq!(verify(&pk, &ch("live"), &t, 1_000), Err(TokenError::Expired { expired: 1_000, now: 1_000 }));
        assert_eq!(verify(&pk, &ch("other"), &t, 10), Err(TokenError::BadSignature), "another channel");
        let other = NodeKey::from_seed([4; 32]).public_hex();
        assert_eq!(verify(&other, &ch("live"), &t, 10), Err(TokenError::BadSignature), "another issuer");
    }

    #[test]
    fn altered_or_garbled_tokens_are_refused() {
        let k = NodeKey::from_seed([3; 32]);
        let pk = k.public_hex();
        let t = issue(&k, &ch("live"), "v1", 1_000).unwrap();
        // Stretching the expiry or taking over another client's token breaks the signature.
        let stretched = t.replacen("1000.", "9999.", 1);
        assert_eq!(verify(&pk, &ch("live"), &stretched, 10), Err(TokenError::BadSignature));
        let renamed = t.replacen(".v1.", ".v2.", 1);
        assert_eq!(verify(&pk, &ch("live"), &renamed, 10), Err(TokenError::BadSignature));
        assert_eq!(verify(&pk, &ch("live"), "", 10), Err(TokenError::Missing));
        for junk in ["x", "1.2", "a.b.c", "1..ff", "1.v1.zz", "1.v 1.ff", "1.é.ff", &"9".repeat(40)] {
            assert!(
                matches!(verify(&pk, &ch("live"), junk, 10), Err(TokenError::Malformed(_) | TokenError::BadSignature)),
                "{junk}"
            );
        }
        assert!(matches!(verify("nothex", &ch("live"), &t, 10), Err(TokenError::BadKey(_))));
        assert_eq!(issue(&k, &ch("live"), "a.b", 1), Err(TokenError::BadClientId), "a dot would split the token");
        assert_eq!(issue(&k, &ch("live"), "", 1), Err(TokenError::BadClientId));
    }
}
