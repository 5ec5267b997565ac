//! What can go wrong serving LiveSky clients, said so the client (in a `Refused`) and the log can
//! tell what to do about it.

use std::time::Duration;

use proto::ChannelId;

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The edge could not open the channel from its upstream (not live, no parent reachable).
    #[error("channel {channel} is not available on this edge: {reason}; try again later or another edge")]
    Channel { channel: ChannelId, reason: String },
    #[error("writing to the client failed: {0}")]
    Write(String),
    #[error("the client did not take what the edge sent within {0:?}")]
    WriteTimeout(Duration),
}
