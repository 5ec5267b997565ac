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
