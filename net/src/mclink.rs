//! The byte stream and message sending of an SN↔MC control link (TLS over TCP, [`crate::mc_tls`];
//! the messages are [`proto::mc::McMessage`]).

use proto::mc::{McCodec, McMessage};

/// A control link's byte stream: TLS over TCP ([`crate::mc_tls`]).
pub trait LinkIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> LinkIo for T {}

/// One end of a control link (the MC's or an SN's).
pub type McLink = tokio_util::codec::Framed<Box<dyn LinkIo>, McCodec>;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("control link write failed: {0}")]
    Link(#[from] proto::CodecError),
    #[error("control link write took longer than 10 s")]
    Timeout,
}

/// Writes one message; a peer that does not take it within 10 s counts as gone.
pub async fn send(link: &mut McLink, m: McMessage) -> Result<(), SendError> {
    use futures_util::SinkExt;
    match tokio::time::timeout(std::time::Duration::from_secs(10), link.send(m)).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(SendError::Timeout),
    }
}
