//! What a joined client says: heartbeats, leaving, parent trouble (re-parenting, and demotion
//! when several children agree), signalling (only to peers it was introduced to), reports
//! (clamped, confirmations checked) and bad-chunk reports (bans by distinct identities).

use super::*;

impl Service {
    /// A client's NAT test result: the tracker matches it only with peers it can link with. The
    /// address STUN saw must be the one its connection comes from; if not (another route for UDP,
    /// or a made-up result) the class is taken as unknown, which only costs it peer parents.
    fn nat_measured(&mut self, now: Instant, peer: PeerId, class: NatClass, mapped: Option<SocketAddr>) {
        let Some(c) = self.clients.get_mut(&peer) else { return };
        let class = match mapped {
            Some(m) if m.ip() != c.from.ip() => {
                self.stats.nat_mismatches += 1;
                tracing::debug!(channel = %self.cfg.channel, %peer, from = %c.from, %m, "STUN-learned address is not the connection's");
                NatClass::Unknown
            }
            _ => class,
        };
        self.stats.nat_classes[nat_index(c.nat)] -= 1;
        self.stats.nat_classes[nat_index(class)] += 1;
        c.nat = class;
        c.stun_addr = mapped;
        let reach = Reach::new(class, c.from.ip());
        self.place_measured(now, peer, reach);
    }

    pub(super) fn message(&mut self, now: Instant, conn: ConnId, peer: PeerId, msg: ToEdge) {
        match msg {
            ToEdge::Heartbeat => {}
            ToEdge::Nat { class, mapped } => self.nat_measured(now, peer, class, mapped),
            ToEdge::Leave => {
                self.conns.remove(&conn);
                self.forget(peer);
                self.out.push_back(Output::Close { conn });
            }
            ToEdge::ParentTrouble { substream, parent, trouble, missing_from } => {
                self.stats.parent_troubles += 1;
                let current = self.admission.tracker().feeds(peer).and_then(|f| f.get(usize::from(substream)).copied());
                if current != Some(Feed::Peer(parent)) {
                    return; // stale: the client was moved already
                }
                // A child hears nothing from any parent: the edge knows whether its source has
                // produced what the child misses (a paused broadcast is nobody's fault).
                if matches!(trouble, Trouble::Late | Trouble::Silent)
                    && let (Some(m), Some(last)) = (missing_from, self.source_last_seq)
                    && last < m
                {
                    self.stats.troubles_before_source += 1;
                    return;
                }
                // Where a takeover by the edge resends from (checked against the ring by the feeder).
                if let (Some(seq), Some(c)) = (missing_from, self.clients.get_mut(&peer)) {
                    c.backfill_from = Some(c.backfill_from.map_or(seq, |b| b.min(seq)));
                }
                let (books, need) = match trouble {
                    Trouble::Unreachable => (&mut self.unreachable, self.cfg.unreachable_reports),
                    Trouble::Silent => (&mut self.silent, self.cfg.silent_reports),
                    Trouble::Late | Trouble::Lost => {
                        self.admission.tracker_mut().reparent(peer, substream);
                        return;
                    }
                };
                let (reporters, new) = books.add(parent, peer);
                if new && trouble == Trouble::Silent && reporters == need {
                    tracing::info!(channel = %self.cfg.channel, %parent, "children get nothing from this parent: made a leaf");
                    self.stats.demoted += 1;
                }
                if reporters >= need {
                    self.admission.mark_unreachable(parent);
                }
                self.admission.tracker_mut().reparent(peer, substream);
            }
            ToEdge::Signal { to, kind, payload } => {
                let allowed = payload.len() <= MAX_SIGNAL_BYTES
                    && self.links.linked(peer, to)
                    && self.clients.get_mut(&peer).is_some_and(|c| c.signals.try_take(now, 1.0));
                match self.clients.get(&to) {
                    Some(c) if allowed => {
                        self.stats.signals_relayed += 1;
                        self.out.push_back(Output::Send {
                            conn: c.conn,
                            msg: FromEdge::Signal { from: peer, kind, payload },
                        });
                    }
                    _ => self.stats.signals_refused += 1,
                }
            }
            ToEdge::Report(mut r) => {
                // Whether a page reports on time is judged on the edge's clock, before the report moves it.
                let gap = self
                    .clients
                    .get(&peer)
                    .filter(|c| c.reported)
                    .map(|c| now.saturating_duration_since(c.last_report));
                self.sanitize_report(now, peer, &mut r);
                let verdict = self.accounting.report(peer, &r, now);
                self.browser_proof(peer, &r, verdict == accounting::Verdict::Counted, gap);
                match verdict {
                    accounting::Verdict::Counted => {}
                    verdict => {
                        if let accounting::Verdict::Flagged { earlier } = verdict {
                            tracing::warn!(channel = %self.cfg.channel, %peer, claimed = earlier + r.bytes_up, "upload claims outrun what receivers confirm; excluded from the figures");
                            self.stats.inflated_clients += 1;
                            self.stats.reported.bytes_up = self.stats.reported.bytes_up.saturating_sub(earlier);
                            self.stats.excluded_bytes_up += earlier;
                        }
                        self.stats.excluded_bytes_up += r.bytes_up;
                        r.bytes_up = 0;
                    }
                }
                if let Some(c) = self.clients.get_mut(&peer) {
                    if c.natted {
                        self.stats.natted_bytes_up = self.stats.natted_bytes_up.saturating_add(r.bytes_up);
                    }
                    if let Some(ms) = r.startup_ms
                        && !c.startup_counted
                    {
                        c.startup_counted = true;
                        if self.startups.len() < MAX_STARTUPS {
                            self.startups.push(ms);
                        }
                    }
                }
                self.weigh_delay(peer, r.delay_ms);
                self.add_report(peer, r);
            }
            ToEdge::BadChunk { from, seq } => {
                // A client forwarded a chunk that failed its signature check: it never feeds anyone
                // again (its children re-parented when they dropped it), and once enough distinct
                // clients say so it is banned.
                // Only a peer the edge put in touch with the sender can have had chunks from it;
                // reporters are counted by identity, so one client with many connections is one.
                let rotating = self.key_changed.is_some_and(|t| now.saturating_duration_since(t) < KEY_GRACE);
                if !self.links.linked(peer, from) {
                    self.stats.bad_chunk_refused += 1;
                    return;
                }
                let reporter = self.clients.get(&peer).map_or(peer.0, |c| c.identity_key);
                if self.clients.contains_key(&from) && !rotating {
                    self.stats.bad_chunk_reports += 1;
                    tracing::warn!(channel = %self.cfg.channel, reporter = %peer, sender = %from, seq, "chunk failed its signature check");
                    self.admission.mark_unreachable(from);
                    if self.bans.report(reporter, from) {
                        self.ban(now, from);
                    }
                }
            }
            ToEdge::Join(_) => self.refuse(conn, "joined twice on one connection".into()),
        }
    }

    /// A client's reported feed delay goes to the tracker (parents are chosen within their
    /// children's budgets); a P2P client on a tight target whose feeds reach it later than
    /// [`LATE_SHARE`] of it is fed by the edge, if the edge has room.
    fn weigh_delay(&mut self, peer: PeerId, delay_ms: Option<u32>) {
        self.admission.tracker_mut().set_delay(peer, delay_ms);
        let (Some(delay), Some(target)) = (delay_ms, self.clients.get(&peer).and_then(|c| c.target_ms)) else { return };
        let tracker = self.admission.tracker_mut();
        if tracker.is_push(peer) || u64::from(delay) * LATE_SHARE.1 <= u64::from(target) * LATE_SHARE.0 {
            return;
        }
        if tracker.feed_directly(peer) {
            self.stats.fed_for_delay += 1;
            tracing::debug!(channel = %self.cfg.channel, %peer, delay, target, "feeds too late for the client's target; the edge feeds it");
        }
    }

    /// A new client's latency target (the channel's, or its own buffer if shorter), when it is
    /// tight enough to budget: its parents may then be at most half of it behind ingest.
    pub(super) fn tight_target(&self, join: &Join) -> Option<u32> {
        let target = self.cfg.target_latency_ms.map_or(join.buffer_ms, |t| t.min(join.buffer_ms));
        (target <= BUDGETED_TARGET_MS).then_some(target)
    }

    /// Counts a page's report towards its proof (see [`BrowserProof`]); a late report (`gap`
    /// since its previous one), a stall or an upload claim receivers did not vouch for starts it
    /// over — and makes a page that had proved itself a leaf again (a tab sent to the background,
    /// a phone that lost its signal), its children re-parented.
    fn browser_proof(&mut self, peer: PeerId, r: &proto::peer::PeerReport, counted: bool, gap: Option<Duration>) {
        let Some(c) = self.clients.get_mut(&peer) else { return };
        let Some(proof) = c.browser.as_mut() else { return };
        let steady = counted && r.stalls == 0 && gap.is_none_or(|g| g <= BROWSER_REPORT_GAP);
        if !steady {
            proof.steady = 0;
            if proof.promoted {
                proof.promoted = false;
                self.admission.tracker_mut().make_leaf(peer);
                self.stats.browsers_demoted += 1;
                tracing::info!(channel = %self.cfg.channel, %peer, "a web page stopped being steady: a leaf again");
            }
            return;
        }
        proof.steady = proof.steady.saturating_add(1);
        if proof.promoted || proof.steady < BROWSER_PROOF_REPORTS {
            return;
        }
        proof.promoted = true;
        let slots = self.admission.slots_for(Some(proof.offered_kbps));
        self.admission.tracker_mut().set_slots(peer, slots);
        self.stats.browsers_promoted += 1;
        tracing::info!(channel = %self.cfg.channel, %peer, slots, "a web page proved steady upload: it may be a parent now");
    }
}

/// A page's reports further apart than this (it reports every 10 s; a background tab's timers
/// are throttled to once a minute) break its proof.
const BROWSER_REPORT_GAP: Duration = Duration::from_secs(15);

/// Latency targets up to this get parent delay budgets; above it a tree K' deep delivers in
/// time anyway, and budgets would only keep new clients from becoming parents.
const BUDGETED_TARGET_MS: u32 = 6_000;
/// A client whose feed delay passes this share of its target (3/4) is fed by the edge.
const LATE_SHARE: (u64, u64) = (3, 4);
