//! A joining client (LiveSky §3.1): version and channel checks, drains, bans, the per-address
//! join rate, admission (direct, P2P, or a sibling), then its welcome, mesh neighbours and
//! start burst.

use super::*;

impl Service {
    pub(super) fn join(&mut self, now: Instant, conn: ConnId, from: SocketAddr, join: Join, browser: bool) {
        if self.conns.contains_key(&conn) {
            self.refuse(conn, "joined twice on one connection".into());
            return;
        }
        if join.version != CLIENT_PROTOCOL_VERSION {
            self.refuse(
                conn,
                format!(
                    "client protocol {} is not supported; this edge speaks {CLIENT_PROTOCOL_VERSION}",
                    join.version
                ),
            );
            return;
        }
        if join.channel != self.cfg.channel {
            self.refuse(conn, format!("this service carries channel {}, not {}", self.cfg.channel, join.channel));
            return;
        }
        if self.draining {
            self.send_away(conn);
            return;
        }
        let identity = bans::identity(&join.token, from.ip());
        if identity.starts_with("client:") && self.identities.contains_key(&identity) {
            // NetSession §6.2: one identity on two machines at once.
            self.stats.duplicate_identities += 1;
            tracing::warn!(channel = %self.cfg.channel, %identity, %from, "a second client with the same viewer identity");
        }
        if let Some(left) = self.bans.remaining(&identity, now) {
            self.stats.refused_banned += 1;
            self.refuse(
                conn,
                format!("banned for {} s more: forwarded chunks that failed the signature check", left.as_secs()),
            );
            return;
        }
        let (rate, burst) = (self.cfg.joins_per_ip_per_sec, self.cfg.join_burst_per_ip);
        let bucket = self.join_limits.entry(from.ip()).or_insert_with(|| TokenBucket::new(rate, burst));
        if !bucket.try_take(now, 1.0) {
            self.stats.refused_rate += 1;
            self.out.push_back(Output::Send {
                conn,
                msg: FromEdge::Refused { reason: "too many joins from your address; retry in a few seconds".into() },
            });
            self.out.push_back(Output::Close { conn });
            return;
        }
        // A client another edge already sent here stays (in the trees, past N*c if need be):
        // when the whole group is full, bouncing it on only delays its start.
        let sibling_available = join.redirects == 0 && self.sibling_available();
        // What the client offers, 0 included (no children); `None` (the cap) is for callers that
        // cannot ask.
        let upload = Some(if browser { 0 } else { join.upload_kbps });
        let reachable = join.listen.is_some();
        let target_ms = self.tight_target(&join);
        let reach = Reach::new(join.nat, from.ip());
        let admit =
            self.admission.join_within(now, upload, reachable, sibling_available, target_ms.map(|t| t / 2), reach);
        tracing::debug!(channel = %self.cfg.channel, ?admit, redirects = join.redirects, stage = ?self.admission.snapshot().stage, "join");
        let peer = match admit {
            Admit::Push(p) | Admit::P2p(p) | Admit::Pending(p) => p,
            Admit::Redirect => {
                match self.sibling() {
                    Some(to) => {
                        self.stats.redirected += 1;
                        let reason = format!("edge is in stage {:?}; use a sibling", self.admission.snapshot().stage);
                        self.out.push_back(Output::Send { conn, msg: FromEdge::Redirect { to, reason } });
                        self.out.push_back(Output::Close { conn });
                    }
                    None => self.refuse(conn, "edge is full and knows no other edge; retry later".into()),
                }
                return;
            }
        };
        self.conns.insert(conn, Some(peer));
        let natted = join.listen.is_none_or(|l| l.ip() != from.ip());
        self.stats.natted_clients += u64::from(natted);
        self.stats.nat_classes[nat_index(join.nat)] += 1;
        self.accounting.join(peer, now);
        *self.identities.entry(identity.clone()).or_default() += 1;
        // Other peers are told to reach it at the address it connects from: a made-up listen
        // address would send them to someone else's host.
        let listen = join.listen.map(|l| SocketAddr::new(from.ip(), l.port()));
        let client = Client {
            conn,
            listen,
            mask: 0,
            natted,
            startup_counted: false,
            target_ms,
            identity_key: links::identity_key(&identity),
            identity,
            last_report: now,
            reported: false,
            minute_ms: 0,
            minute_stalled: false,
            p2p_rate: 0,
            backfill_from: None,
            unfed_since: None,
            redirects: join.redirects,
            signals: TokenBucket::new(SIGNALS_PER_SEC, SIGNAL_BURST),
            browser: browser.then_some(BrowserProof { offered_kbps: join.upload_kbps, steady: 0, promoted: false }),
            page: browser,
            from,
            nat: join.nat,
            stun_addr: None,
        };
        self.clients.insert(peer, client);
        let push = self.admission.tracker().is_push(peer);
        let welcome = Welcome {
            peer,
            channel: self.cfg.channel.clone(),
            substreams: self.cfg.admission.substreams,
            media_kbps: self.cfg.admission.media_kbps,
            push,
            public_addr: Some(from),
            stun: self.cfg.stun,
            upload_slots: self.admission.tracker().slots(peer).map_or(0, |(_, s)| s),
            channel_key: self.cfg.channel_key,
            target_latency_ms: self.cfg.target_latency_ms,
        };
        self.out.push_back(Output::Send { conn, msg: FromEdge::Welcome(welcome) });
        if let Some(last_seq) = self.ended {
            self.out.push_back(Output::Send { conn, msg: FromEdge::Ended { last_seq } });
        }
        let mesh: Vec<(PeerId, SocketAddr)> = self
            .admission
            .tracker_mut()
            .mesh_for(peer)
            .into_iter()
            .filter_map(|p| self.clients.get(&p).and_then(|c| c.listen).map(|a| (p, a)))
            .collect();
        // Each neighbour accepts a link only from peers introduced to it.
        for (p, _) in &mesh {
            self.introduce(peer, *p);
        }
        self.out.push_back(Output::Send { conn, msg: FromEdge::Neighbours(mesh) });
        // The start burst: the client's buffer (capped), from a keyframe, every substream.
        let asked = self.cfg.target_latency_ms.map_or(join.buffer_ms, |t| join.buffer_ms.min(t));
        let burst = asked.clamp(1_000, self.cfg.max_burst_ms);
        let mask = self.edge_mask(peer);
        if let Some(c) = self.clients.get_mut(&peer) {
            c.mask = mask;
        }
        let order = crate::feeder::Order { mask, burst_ms: Some(burst), ..Default::default() };
        self.out.push_back(Output::Serve { conn, order });
    }

    pub(super) fn edge_mask(&self, peer: PeerId) -> u64 {
        self.admission
            .tracker()
            .feeds(peer)
            .map(|f| f.iter().enumerate().filter(|(_, f)| **f == Feed::Edge).fold(0u64, |m, (s, _)| m | (1u64 << s)))
            .unwrap_or(0)
    }
}
