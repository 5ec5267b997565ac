//! Upstream subscription and failover for one channel on one SN (sans-IO).
//!
//! A downstream SN subscribes on demand to the first reachable candidate: its parents in lower
//! tiers in preference order, then same-tier peers (§2.1). On parent loss, refusal, or a stall
//! (no chunk for `stall_timeout` while the source is live) it moves to the next candidate and
//! resumes from the seq after the last one it accepted, so downstream sees no gap and no
//! duplicate. After a full round of failures it backs off and starts again at the preferred parent.
//!
//! The four doors every core has (docs/architecture.md): [`Upstream::handle`] takes inputs with the
//! time (and [`Upstream::on_chunk`], on the hot path, answers at once whether to keep a chunk),
//! [`Upstream::poll_output`] yields what the driver must do, [`Upstream::poll_timeout`] says when
//! to call [`Upstream::handle_timeout`]. No sockets, clocks or tasks inside.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use proto::{NodeId, RefuseCode, SourceStatus, StartAt};

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Silence while the source is live that counts as a stalled parent (the design's 1 s).
    pub stall_timeout: Duration,
    /// Time allowed from starting a connection to the parent's SubscribeOk.
    pub connect_timeout: Duration,
    /// Silence of any kind (no chunk, no keepalive) after which the link is dead.
    pub idle_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Where the very first subscription starts; later ones resume at the next seq.
    pub initial_start: StartAt,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            stall_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(3),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(5),
            initial_start: StartAt::Live,
        }
    }
}

/// Identifies one connection attempt, so events from a link already given up are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptId(pub u64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    ConnectFailed {
        attempt: AttemptId,
        reason: String,
    },
    Accepted {
        attempt: AttemptId,
        source: SourceStatus,
    },
    Refused {
        attempt: AttemptId,
        code: RefuseCode,
        reason: String,
    },
    SourceState {
        attempt: AttemptId,
        source: SourceStatus,
    },
    /// Any other message (keepalive) proving the link is alive.
    Alive {
        attempt: AttemptId,
    },
    Closed {
        attempt: AttemptId,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Open a link to `candidate` and subscribe from `start`.
    Connect { attempt: AttemptId, candidate: NodeId, start: StartAt },
    /// Drop this link (failover, or the channel is no longer wanted).
    Close { attempt: AttemptId, reason: FailReason },
    /// The subscription is established (again) on `candidate`.
    Active { candidate: NodeId },
    /// Every candidate said it does not know the channel.
    NotFound,
    /// Whether the source is producing, as the active parent reports it.
    Source(SourceStatus),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailReason {
    Stalled,
    Silent,
    ConnectTimeout,
    Unwanted,
}

/// What to do with a received chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Accept, but seqs `missing_from..seq` never arrived (the parent no longer had them).
    AcceptAfterGap {
        missing_from: u64,
    },
    /// Already delivered: drop it.
    Duplicate,
    /// From a link no longer in use: drop it.
    Stale,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamStats {
    pub attempts: u64,
    pub failovers: u64,
    pub stalls: u64,
    pub duplicates: u64,
    pub gaps: u64,
    pub missing_chunks: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Idle,
    Connecting { attempt: AttemptId, cand: usize, since: Instant },
    Active { attempt: AttemptId, cand: usize, last_chunk: Instant, last_msg: Instant, source_live: bool },
    Backoff { until: Instant },
    NotFound,
}

pub struct Upstream {
    cfg: UpstreamConfig,
    candidates: Vec<NodeId>,
    state: State,
    next_seq: Option<u64>,
    next_attempt: u64,
    /// Candidates tried in the current round, and how many of them said NotFound.
    tried: usize,
    not_found: usize,
    backoff: proto::backoff::Backoff,
    actions: VecDeque<Output>,
    stats: UpstreamStats,
}

impl Upstream {
    pub fn new(cfg: UpstreamConfig, candidates: Vec<NodeId>) -> Self {
        let backoff = proto::backoff::Backoff::new(cfg.backoff_min, cfg.backoff_max);
        Self {
            cfg,
            candidates,
            state: State::Idle,
            next_seq: None,
            next_attempt: 0,
            tried: 0,
            not_found: 0,
            backoff,
            actions: VecDeque::new(),
            stats: UpstreamStats::default(),
        }
    }

    pub fn stats(&self) -> UpstreamStats {
        self.stats
    }

    /// The seq the next accepted chunk must carry, once any chunk was accepted.
    pub fn next_seq(&self) -> Option<u64> {
        self.next_seq
    }

    /// Seeds the resume point (a node that already holds chunks in its ring).
    pub fn resume_after(&mut self, last_seq: u64) {
        self.next_seq = Some(last_seq + 1);
    }

    pub fn active_candidate(&self) -> Option<&NodeId> {
        match &self.state {
            State::Active { cand, .. } => self.candidates.get(*cand),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.state == State::NotFound
    }

    pub fn start(&mut self, now: Instant) {
        if matches!(self.state, State::Idle | State::NotFound) {
            self.tried = 0;
            self.not_found = 0;
            self.connect(now, 0);
        }
    }

    pub fn stop(&mut self) {
        self.close_current(FailReason::Unwanted);
        self.state = State::Idle;
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.actions.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Idle | State::NotFound => None,
            State::Connecting { since, .. } => Some(*since + self.cfg.connect_timeout),
            State::Backoff { until } => Some(*until),
            State::Active { last_chunk, last_msg, source_live, .. } => {
                let silent = *last_msg + self.cfg.idle_timeout;
                Some(if *source_live { silent.min(*last_chunk + self.cfg.stall_timeout) } else { silent })
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state.clone() {
            State::Connecting { cand, since, .. } if now >= since + self.cfg.connect_timeout => {
                self.fail(now, cand, FailReason::ConnectTimeout, false);
            }
            State::Backoff { until } if now >= until => {
                self.tried = 0;
                self.not_found = 0;
                self.connect(now, 0);
            }
            State::Active { cand, last_chunk, last_msg, source_live, .. } => {
                if now >= last_msg + self.cfg.idle_timeout {
                    self.fail(now, cand, FailReason::Silent, false);
                } else if source_live && now >= last_chunk + self.cfg.stall_timeout {
                    self.stats.stalls += 1;
                    self.fail(now, cand, FailReason::Stalled, false);
                }
            }
            _ => {}
        }
    }

    pub fn handle(&mut self, now: Instant, input: Input) {
        let attempt = match &input {
            Input::ConnectFailed { attempt, .. }
            | Input::Accepted { attempt, .. }
            | Input::Refused { attempt, .. }
            | Input::SourceState { attempt, .. }
            | Input::Alive { attempt }
            | Input::Closed { attempt, .. } => *attempt,
        };
        let Some(cand) = self.current_cand(attempt) else { return };
        match input {
            Input::Accepted { source, .. } => {
                if !matches!(self.state, State::Connecting { .. }) {
                    return;
                }
                let source_live = source.is_live();
                self.state = State::Active { attempt, cand, last_chunk: now, last_msg: now, source_live };
                self.tried = 0;
                self.not_found = 0;
                self.backoff.reset();
                // Source state first: whoever wakes on Active must already see it.
                self.actions.push_back(Output::Source(source));
                self.actions.push_back(Output::Active { candidate: self.candidates[cand].clone() });
            }
            Input::SourceState { source, .. } => {
                let live = source.is_live();
                if let State::Active { source_live, last_chunk, last_msg, .. } = &mut self.state {
                    if live && !*source_live {
                        // Grace: the stall clock starts when the source comes back.
                        *last_chunk = now;
                    }
                    *source_live = live;
                    *last_msg = now;
                    self.actions.push_back(Output::Source(source));
                }
            }
            Input::Alive { .. } => {
                if let State::Active { last_msg, .. } = &mut self.state {
                    *last_msg = now;
                }
            }
            Input::Refused { code, .. } => {
                self.fail(now, cand, FailReason::Stalled, code == RefuseCode::NotFound);
            }
            Input::ConnectFailed { .. } | Input::Closed { .. } => {
                self.fail(now, cand, FailReason::Stalled, false);
            }
        }
    }

    /// Every received chunk passes here; only `Accept*` chunks go on to the ring and downstream.
    pub fn on_chunk(&mut self, now: Instant, attempt: AttemptId, seq: u64) -> Verdict {
        let State::Active { attempt: current, last_chunk, last_msg, .. } = &mut self.state else {
            return Verdict::Stale;
        };
        if *current != attempt {
            return Verdict::Stale;
        }
        *last_msg = now;
        let verdict = match self.next_seq {
            Some(next) if seq < next => {
                self.stats.duplicates += 1;
                return Verdict::Duplicate;
            }
            Some(next) if seq > next => {
                self.stats.gaps += 1;
                self.stats.missing_chunks += seq - next;
                Verdict::AcceptAfterGap { missing_from: next }
            }
            _ => Verdict::Accept,
        };
        *last_chunk = now;
        self.next_seq = Some(seq + 1);
        verdict
    }

    fn current_cand(&self, attempt: AttemptId) -> Option<usize> {
        match &self.state {
            State::Connecting { attempt: a, cand, .. } | State::Active { attempt: a, cand, .. } if *a == attempt => {
                Some(*cand)
            }
            _ => None,
        }
    }

    fn close_current(&mut self, reason: FailReason) {
        if let State::Connecting { attempt, .. } | State::Active { attempt, .. } = self.state {
            self.actions.push_back(Output::Close { attempt, reason });
        }
    }

    fn fail(&mut self, now: Instant, cand: usize, reason: FailReason, not_found: bool) {
        let was_active = matches!(self.state, State::Active { .. });
        self.close_current(reason);
        if was_active {
            self.stats.failovers += 1;
            // The round restarts: every candidate gets a chance before backing off.
            self.tried = 0;
            self.not_found = 0;
        }
        self.tried += 1;
        self.not_found += usize::from(not_found);
        if self.tried >= self.candidates.len() {
            if self.not_found == self.candidates.len() {
                self.state = State::NotFound;
                self.actions.push_back(Output::NotFound);
                return;
            }
            let until = now + self.backoff.next_delay();
            self.state = State::Backoff { until };
            return;
        }
        self.connect(now, (cand + 1) % self.candidates.len());
    }

    fn connect(&mut self, now: Instant, cand: usize) {
        let Some(candidate) = self.candidates.get(cand).cloned() else {
            self.state = State::NotFound;
            self.actions.push_back(Output::NotFound);
            return;
        };
        let attempt = AttemptId(self.next_attempt);
        self.next_attempt += 1;
        self.stats.attempts += 1;
        let start = self.next_seq.map_or(self.cfg.initial_start, StartAt::Seq);
        self.state = State::Connecting { attempt, cand, since: now };
        self.actions.push_back(Output::Connect { attempt, candidate, start });
    }
}

#[cfg(test)]
mod tests;
