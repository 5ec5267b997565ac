//! Broadcaster ingest on Tier 0, one module per way a feed arrives: HTTP push ([`http_push`]),
//! RTMP ([`rtmp`], FLV remuxed by [`flv`]), SRT listener and caller ([`srt`]), raw TCP, origin
//! pull and looped clips ([`source`], [`looper`]). Each ends in the channel's [`source::Publisher`],
//! so what follows ingest (resync, chunker, signing, the ring) is the same for every protocol.

pub mod flv;
pub mod http_push;
pub mod looper;
pub mod rtmp;
pub mod source;
pub mod srt;
mod srt_guard;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Runs `session` (a pull from an origin, a call to an encoder) again and again until `stop`,
/// waiting with backoff between tries; a session that carried bytes starts the backoff over.
/// `what` and `from` name it in the log (e.g. "origin pull", the URL).
pub(crate) async fn reconnect_forever<F, Fut, E>(
    what: &str,
    channel: &proto::ChannelId,
    from: &str,
    stop: &CancellationToken,
    mut session: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, E>>,
    E: std::fmt::Display,
{
    let mut backoff = proto::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = session() => r,
        };
        match result {
            Ok(bytes) if bytes > 0 => {
                info!(%channel, from, bytes, what, "stream ended; connecting again");
                backoff.reset();
            }
            Ok(_) => info!(%channel, from, what, "nothing received; connecting again"),
            Err(e) => warn!(%channel, from, what, error = %e, retry_in = ?backoff.peek(), "ingest session failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
