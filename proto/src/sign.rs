//! Chunk signatures (Ed25519, one key pair per channel). Tier 0 signs every chunk it cuts; anyone
//! holding the channel's public key can check that header and payload are what Tier 0 produced.
//!
//! Signed message: a domain tag, the header fields, and SHA-512 of the payload. Hashing the payload
//! separately avoids concatenating header and payload into a fresh buffer for every chunk.

use bytes::BytesMut;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha512};

use crate::chunk::{Chunk, ChunkHeader};

const DOMAIN: &[u8] = b"livesky-chunk-v1\0";

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("chunk {seq} of channel {channel} carries no signature")]
    Missing { channel: String, seq: u64 },
    #[error("chunk {seq} of channel {channel} failed its signature check")]
    Invalid { channel: String, seq: u64 },
    #[error("signature does not match")]
    BadSignature,
    #[error("bad key: {0}")]
    BadKey(String),
}

fn signed_message(header: &ChunkHeader, payload: &[u8]) -> BytesMut {
    let mut msg = BytesMut::with_capacity(DOMAIN.len() + 96 + 64);
    msg.extend_from_slice(DOMAIN);
    header.put_signed_part(&mut msg, payload.len());
    msg.extend_from_slice(&Sha512::digest(payload));
    msg
}

/// Holds a channel's private key (Tier 0 only).
pub struct ChannelSigner {
    key: SigningKey,
}

impl ChannelSigner {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self { key: SigningKey::from_bytes(&seed) }
    }

    /// Parses a 64-hex-digit seed as written in config files.
    pub fn from_hex_seed(hex: &str) -> Result<Self, SignatureError> {
        Ok(Self::from_seed(parse_hex32(hex)?))
    }

    pub fn verifier(&self) -> ChannelVerifier {
        ChannelVerifier { key: self.key.verifying_key() }
    }

    pub fn sign(&self, chunk: &mut Chunk) {
        let msg = signed_message(&chunk.header, &chunk.payload);
        chunk.signature = Some(std::sync::Arc::new(self.key.sign(&msg).to_bytes()));
    }
}

/// Holds a channel's public key (every node and peer that checks chunks).
#[derive(Clone)]
pub struct ChannelVerifier {
    key: VerifyingKey,
}

impl ChannelVerifier {
    pub fn from_hex(hex: &str) -> Result<Self, SignatureError> {
        let bytes = parse_hex32(hex)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|e| SignatureError::BadKey(e.to_string()))?;
        Ok(Self { key })
    }

    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, SignatureError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|e| SignatureError::BadKey(e.to_string()))?;
        Ok(Self { key })
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn to_hex(&self) -> String {
        to_hex(self.key.as_bytes())
    }

    pub fn verify(&self, chunk: &Chunk) -> Result<(), SignatureError> {
        let who = || (chunk.header.channel.to_string(), chunk.header.seq);
        let Some(sig) = &chunk.signature else {
            let (channel, seq) = who();
            return Err(SignatureError::Missing { channel, seq });
        };
        let msg = signed_message(&chunk.header, &chunk.payload);
        self.key.verify(&msg, &Signature::from_bytes(sig)).map_err(|_| {
            let (channel, seq) = who();
            SignatureError::Invalid { channel, seq }
        })
    }
}

/// A node's identity key (an SN's or the management center's), from a 64-hex-digit seed in its
/// config. It signs the control link's challenges; the other side holds the public half.
pub struct NodeKey {
    key: SigningKey,
}

impl NodeKey {
    pub fn from_hex_seed(hex: &str) -> Result<Self, SignatureError> {
        Ok(Self { key: SigningKey::from_bytes(&parse_hex32(hex)?) })
    }
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self { key: SigningKey::from_bytes(&seed) }
    }
    /// A new random key, and its seed as hex (for `keygen`).
    #[cfg(feature = "rand")]
    pub fn generate() -> Result<(Self, String), SignatureError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| SignatureError::BadKey(format!("no randomness: {e}")))?;
        Ok((Self::from_seed(seed), to_hex(&seed)))
    }
    pub fn public_hex(&self) -> String {
        to_hex(self.key.verifying_key().as_bytes())
    }
    /// Signature over `msg`, as hex.
    pub fn sign_hex(&self, msg: &[u8]) -> String {
        to_hex(&self.sign(msg))
    }
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }
    pub fn public(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }
    /// The seed, for code that must derive other keys from it (the MC's TLS certificate).
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }
}

/// An identity's public half: checks [`NodeKey::sign`] signatures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePublicKey(VerifyingKey);

impl NodePublicKey {
    pub fn from_hex(hex: &str) -> Result<Self, SignatureError> {
        Self::from_bytes(&parse_hex32(hex)?)
    }
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, SignatureError> {
        VerifyingKey::from_bytes(bytes).map(Self).map_err(|e| SignatureError::BadKey(e.to_string()))
    }
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
    pub fn verify(&self, msg: &[u8], signature: &[u8; 64]) -> Result<(), SignatureError> {
        self.0.verify(msg, &Signature::from_bytes(signature)).map_err(|_| SignatureError::BadSignature)
    }
}

/// Whether `public_hex` is a usable Ed25519 public key.
pub fn check_public_key(public_hex: &str) -> Result<(), SignatureError> {
    VerifyingKey::from_bytes(&parse_hex32(public_hex)?).map(|_| ()).map_err(|e| SignatureError::BadKey(e.to_string()))
}

/// Checks a hex signature made by [`NodeKey::sign_hex`] against a hex public key.
pub fn verify_node_signature(public_hex: &str, msg: &[u8], signature_hex: &str) -> Result<(), SignatureError> {
    let key = VerifyingKey::from_bytes(&parse_hex32(public_hex)?).map_err(|e| SignatureError::BadKey(e.to_string()))?;
    let sig = signature_hex.trim();
    // ASCII first: slicing a string from the network at byte 64 must not land inside a character.
    if sig.len() != 128 || !sig.is_ascii() {
        return Err(SignatureError::BadSignature);
    }
    let (a, b) = (parse_hex32(&sig[..64]), parse_hex32(&sig[64..]));
    let (Ok(a), Ok(b)) = (a, b) else { return Err(SignatureError::BadSignature) };
    let mut bytes = [0u8; 64];
    bytes[..32].copy_from_slice(&a);
    bytes[32..].copy_from_slice(&b);
    key.verify(msg, &Signature::from_bytes(&bytes)).map_err(|_| SignatureError::BadSignature)
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex32(hex: &str) -> Result<[u8; 32], SignatureError> {
    let hex = hex.trim();
    if !hex.is_ascii() {
        return Err(SignatureError::BadKey("expected hex digits, got other characters".into()));
    }
    if hex.len() != 64 {
        return Err(SignatureError::BadKey(format!("expected 64 hex digits, got {}", hex.len())));
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| SignatureError::BadKey(format!("non-hex digit near position {}", 2 * i)))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::tests::sample_chunk;
    use bytes::Bytes;

    #[test]
    fn sign_then_verify_and_detect_tampering() {
        let signer = ChannelSigner::from_seed([9; 32]);
        let verifier = ChannelVerifier::from_hex(&signer.verifier().to_hex()).unwrap();
        let mut c = sample_chunk(10, 4);
        assert!(matches!(verifier.verify(&c), Err(SignatureError::Missing { .. })));
        signer.sign(&mut c);
        verifier.verify(&c).unwrap();

        let mut payload = c.payload.to_vec();
        payload[200] ^= 1;
        let tampered = Chunk { payload: Bytes::from(payload), ..c.clone() };
        assert!(matches!(verifier.verify(&tampered), Err(SignatureError::Invalid { .. })));

        let mut reseq = c.clone();
        reseq.header.seq += 1;
        assert!(verifier.verify(&reseq).is_err());

        let other = ChannelSigner::from_seed([8; 32]).verifier();
        assert!(other.verify(&c).is_err());
    }

    #[test]
    fn node_keys_sign_and_strangers_fail() {
        let k = NodeKey::from_seed([3; 32]);
        let sig = k.sign_hex(b"hello");
        verify_node_signature(&k.public_hex(), b"hello", &sig).unwrap();
        // Multi-byte characters where hex is expected: an error, not a slice through a character.
        let wide = format!("{}é{}", &sig[..63], &sig[65..]);
        assert_eq!(wide.len(), 128);
        assert!(verify_node_signature(&k.public_hex(), b"hello", &wide).is_err());
        assert!(verify_node_signature(&format!("é{}", &k.public_hex()[2..]), b"hello", &sig).is_err());
        assert!(verify_node_signature(&k.public_hex(), b"hellO", &sig).is_err());
        let other = NodeKey::from_seed([4; 32]);
        assert!(verify_node_signature(&other.public_hex(), b"hello", &sig).is_err());
        for junk in ["", "zz", &"0".repeat(128), &sig[..126]] {
            assert!(verify_node_signature(&k.public_hex(), b"hello", junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn keys_round_trip_as_bytes() {
        let signer = ChannelSigner::from_seed([7; 32]);
        let mut c = sample_chunk(3, 2);
        signer.sign(&mut c);
        let v = ChannelVerifier::from_bytes(&signer.verifier().to_bytes()).unwrap();
        v.verify(&c).unwrap();
        // Signing the same chunk twice gives the same signature (deterministic Ed25519).
        let mut again = sample_chunk(3, 2);
        signer.sign(&mut again);
        assert_eq!(again.signature, c.signature);
    }

    #[test]
    fn bad_hex_keys_are_errors() {
        assert!(ChannelSigner::from_hex_seed("abc").is_err());
        assert!(ChannelSigner::from_hex_seed(&"zz".repeat(32)).is_err());
        assert!(ChannelSigner::from_hex_seed(&"0a".repeat(32)).is_ok());
    }
}
