//! One RTMP connection as a sans-IO state machine: the handshake, then the chunk stream through
//! [`ChunkGuard`] into rml_rtmp's server session. Bytes in ([`RtmpSession::handle_input`]),
//! bytes out ([`RtmpSession::take_transmit`]) and events ([`RtmpSession::poll_event`]); the
//! caller decides on connect and publish requests. The tokio driver in [`super`] and the
//! `rtmp_session` fuzz target run exactly this code.
//!
//! Every call into rml_rtmp runs under `catch_unwind`: a panic the guard did not foresee ends
//! this session with [`RtmpSessionError::Panicked`], never the process or another session.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};

use super::guard::{ChunkGuard, GuardError};

#[derive(Debug, thiserror::Error)]
pub enum RtmpSessionError {
    #[error("RTMP handshake failed: {0}")]
    Handshake(String),
    #[error("refused RTMP input: {0}")]
    Guard(#[from] GuardError),
    #[error("bad RTMP message: {0}")]
    Session(String),
    #[error("the RTMP library panicked on this client's input ({0}); session closed")]
    Panicked(String),
    #[error("the session already failed")]
    Failed,
}

enum Stage {
    Handshake(Box<Handshake>),
    Open { rtmp: Box<ServerSession>, guard: ChunkGuard },
    Failed,
}

pub struct RtmpSession {
    stage: Stage,
    transmit: Vec<u8>,
    events: VecDeque<ServerSessionEvent>,
}

impl Default for RtmpSession {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `f` (a call into rml_rtmp), turning a panic into an error.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, RtmpSessionError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let why = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        RtmpSessionError::Panicked(why)
    })
}

impl RtmpSession {
    pub fn new() -> Self {
        Self {
            stage: Stage::Handshake(Box::new(Handshake::new(PeerType::Server))),
            transmit: Vec::new(),
            events: VecDeque::new(),
        }
    }

    /// Whether the handshake is done (the connection then speaks RTMP messages).
    pub fn is_open(&self) -> bool {
        matches!(self.stage, Stage::Open { .. })
    }

    /// Bytes from the client. On error the session is over: close the connection.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<(), RtmpSessionError> {
        let r = self.input(bytes);
        if r.is_err() {
            self.stage = Stage::Failed;
        }
        r
    }

    fn input(&mut self, bytes: &[u8]) -> Result<(), RtmpSessionError> {
        match &mut self.stage {
            Stage::Failed => Err(RtmpSessionError::Failed),
            Stage::Handshake(hs) => {
                let done =
                    guarded(|| hs.process_bytes(bytes))?.map_err(|e| RtmpSessionError::Handshake(format!("{e:?}")))?;
                match done {
                    HandshakeProcessResult::InProgress { response_bytes } => {
                        self.transmit.extend_from_slice(&response_bytes);
                        Ok(())
                    }
                    HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                        self.transmit.extend_from_slice(&response_bytes);
                        let (rtmp, first) = guarded(|| ServerSession::new(ServerSessionConfig::new()))?
                            .map_err(|e| RtmpSessionError::Session(e.to_string()))?;
                        self.stage = Stage::Open { rtmp: Box::new(rtmp), guard: ChunkGuard::new() };
                        self.results(first);
                        self.input(&remaining_bytes)
                    }
                }
            }
            Stage::Open { rtmp, guard } => {
                if bytes.is_empty() {
                    return Ok(());
                }
                guard.feed(bytes)?;
                let results =
                    guarded(|| rtmp.handle_input(bytes))?.map_err(|e| RtmpSessionError::Session(e.to_string()))?;
                self.results(results);
                Ok(())
            }
        }
    }

    fn results(&mut self, results: Vec<ServerSessionResult>) {
        for r in results {
            match r {
                ServerSessionResult::OutboundResponse(p) => self.transmit.extend_from_slice(&p.bytes),
                ServerSessionResult::RaisedEvent(e) => self.events.push_back(e),
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
    }

    /// The next event for the caller (connect and publish requests, media).
    pub fn poll_event(&mut self) -> Option<ServerSessionEvent> {
        self.events.pop_front()
    }

    /// Bytes to send to the client.
    pub fn take_transmit(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.transmit)
    }

    fn with_rtmp(
        &mut self,
        f: impl FnOnce(&mut ServerSession) -> Result<Vec<ServerSessionResult>, rml_rtmp::sessions::ServerSessionError>,
    ) -> Result<(), RtmpSessionError> {
        let Stage::Open { rtmp, .. } = &mut self.stage else { return Err(RtmpSessionError::Failed) };
        let results = guarded(|| f(rtmp))?.map_err(|e| RtmpSessionError::Session(e.to_string()));
        match results {
            Ok(r) => {
                self.results(r);
                Ok(())
            }
            Err(e) => {
                self.stage = Stage::Failed;
                Err(e)
            }
        }
    }

    pub fn accept_request(&mut self, request_id: u32) -> Result<(), RtmpSessionError> {
        self.with_rtmp(|s| s.accept_request(request_id))
    }

    /// Refuses a request with an RTMP status `code` and a description the client shows.
    pub fn reject_request(&mut self, request_id: u32, code: &str, why: &str) -> Result<(), RtmpSessionError> {
        self.with_rtmp(|s| s.reject_request(request_id, code, why))
    }
}
