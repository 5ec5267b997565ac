//! The peer player (LiveSky §2.3, §3.2): a sans-IO core that joins an edge, fills a playback buffer
//! from the edge's start burst, receives per-substream pushed chunks from tree parents, repairs gaps
//! by pulling from mesh neighbours, and caps its upload; plus the IO driver (TCP to the edge, WebRTC
//! data channels to peers, local HTTP output). Not built yet: see the peer player issue.
