//! TLS on the SN↔MC control link (rustls, TLS 1.3 only, the ring provider already in the build).
//! The link carries configs with stream keys and channel signing seeds, and every SN's key: it
//! must be private, and an SN must talk to its MC and no other.
//!
//! Keys come from the identities already there: the MC presents a self-signed certificate for
//! its Ed25519 identity key, and an SN checks the handshake's signature against the MC's public
//! key it pins (`--mc-public-key`), not against the certificate — possession of the pinned key is
//! the proof, whatever the certificate says. Inside the tunnel the SN proves its own identity
//! with the existing challenge (alive / welcome).

use std::sync::Arc;

use proto::{NodeKey, NodePublicKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The name in the MC's certificate and in the SNs' handshake (never resolved).
const SERVER_NAME: &str = "livesky-mc";

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("the MC's certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("server name: {0}")]
    Name(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An Ed25519 seed as PKCS#8 v1 (RFC 8410), the form rustls and rcgen take keys in.
fn pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    der.extend_from_slice(seed);
    der
}

/// The MC's side: a self-signed certificate for its identity key.
pub fn acceptor(key: &NodeKey) -> Result<TlsAcceptor, TlsSetupError> {
    let pk = PrivatePkcs8KeyDer::from(pkcs8(&key.seed()));
    let pair = rcgen::KeyPair::try_from(&pk)?;
    let cert = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])?.self_signed(&pair)?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], PrivateKeyDer::Pkcs8(pk))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// An SN's side: only an MC holding `pinned`'s private key completes the handshake (None:
/// development only, any MC).
pub fn connector(pinned: Option<NodePublicKey>) -> Result<TlsConnector, TlsSetupError> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedMc { pinned }))
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Setup(#[from] TlsSetupError),
    /// The peer does not hold the pinned key: an impostor, or the wrong `--mc-public-key`.
    #[error("the management center did not prove it holds the pinned key: {0}")]
    NotTheMc(String),
    #[error("TLS handshake with the management center: {0}")]
    Handshake(std::io::Error),
}

/// An SN's end of a control link over `stream`: TLS 1.3 with the MC holding `pinned`, framed
/// for [`proto::mc::McMessage`]s.
pub async fn connect(
    stream: tokio::net::TcpStream,
    pinned: Option<NodePublicKey>,
) -> Result<crate::mclink::McLink, ConnectError> {
    let name = server_name()?;
    match connector(pinned)?.connect(name, stream).await {
        Ok(tls) => Ok(tokio_util::codec::Framed::new(Box::new(tls), proto::mc::mc_codec())),
        Err(e) if e.to_string().contains("pinned") => Err(ConnectError::NotTheMc(e.to_string())),
        Err(e) => Err(ConnectError::Handshake(e)),
    }
}

/// The name SNs ask for in the handshake.
pub fn server_name() -> Result<ServerName<'static>, TlsSetupError> {
    ServerName::try_from(SERVER_NAME).map_err(|e| TlsSetupError::Name(e.to_string()))
}

#[derive(Debug)]
struct PinnedMc {
    pinned: Option<NodePublicKey>,
}

impl ServerCertVerifier for PinnedMc {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The certificate is only a carrier: the handshake signature checked below against the
        // pinned key is what proves the peer is the MC.
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("the control link speaks TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        _cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let Some(key) = self.pinned else { return Ok(HandshakeSignatureValid::assertion()) };
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(rustls::Error::General("the MC must sign with its Ed25519 identity key".into()));
        }
        let sig: [u8; 64] =
            dss.signature().try_into().map_err(|_| rustls::Error::General("malformed Ed25519 signature".into()))?;
        key.verify(message, &sig)
            .map(|()| HandshakeSignatureValid::assertion())
            .map_err(|_| rustls::Error::General("the peer does not hold the pinned MC key".into()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A TLS session between an acceptor with `mc` and a connector pinning `pinned`: what the
    /// SN side read, or the handshake error.
    async fn session(mc: &NodeKey, pinned: Option<NodePublicKey>) -> Result<Vec<u8>, String> {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = acceptor(mc).map_err(|e| e.to_string())?;
        let server = tokio::spawn(async move {
            if let Ok(mut s) = acceptor.accept(a).await {
                let _ = s.write_all(b"config with secrets").await;
                let _ = s.shutdown().await;
            }
        });
        let name = server_name().map_err(|e| e.to_string())?;
        let mut c = connector(pinned).map_err(|e| e.to_string())?.connect(name, b).await.map_err(|e| e.to_string())?;
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.map_err(|e| e.to_string())?;
        let _ = server.await;
        Ok(got)
    }

    #[tokio::test]
    async fn only_the_pinned_mc_completes_the_handshake() {
        let mc = NodeKey::from_seed([7; 32]);
        let public = NodePublicKey::from_bytes(&mc.public()).unwrap();
        assert_eq!(session(&mc, Some(public)).await.unwrap(), b"config with secrets");
        let impostor = NodeKey::from_seed([8; 32]);
        let e = session(&impostor, Some(public)).await.unwrap_err();
        assert!(e.contains("pinned"), "{e}");
    }
}
