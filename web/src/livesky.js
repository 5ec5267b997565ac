/*! LiveSky-rs browser player: the peer core (WebAssembly, the same Rust as `livesky peer`),
 * WebRTC data channels to other viewers, and Media Source playback (mux.js turns the stream's
 * MPEG-TS chunks into fMP4). Served by every edge at /livesky/livesky.js.
 *
 *   <video id="v" muted autoplay playsinline></video>
 *   <script src="https://EDGE/livesky/livesky.js"></script>
 *   <script>LiveSky.play(document.getElementById('v'), { channel: 'demo' });</script>
 *
 * Options: channel (required), token, upload (default true: the page shares what it plays with
 * other viewers; false: it only receives), uploadKbps (default 1500), bufferMs, lowLatency. */
(function () {
  'use strict';
  const script = document.currentScript;
  const base = new URL('./', script ? script.src : location.href);
  /** Largest send backlog on a data channel before a frame is dropped (the native driver's). */
  const SEND_BUFFER_LIMIT = 2 * 1024 * 1024;
  const GATHER_TIMEOUT_MS = 3000;
  const OPEN_TIMEOUT_MS = 10000;
  /** Media pushed through the transmuxer between flushes (90 kHz): one fMP4 fragment each. */
  const FRAGMENT_TS = 27000;
  /** Media the element holds ahead of its playback position, s. */
  const CUSHION_S = 1.0;
  /** Longest wait between attempts to reach the edge again. */
  const RECONNECT_MAX_MS = 10000;
  const now = () => performance.now();

  let loading = null;
  function load() {
    if (!loading) {
      loading = (async () => {
        if (!window.muxjs) {
          await new Promise((ok, fail) => {
            const s = document.createElement('script');
            s.src = new URL('mux.min.js', base).href;
            s.onload = ok;
            s.onerror = () => fail(new Error('cannot load ' + s.src));
            document.head.appendChild(s);
          });
        }
        const mod = await import(new URL('livesky_peer_web.js', base).href);
        await mod.default({ module_or_path: new URL('livesky_peer_web_bg.wasm', base) });
        return mod;
      })();
    }
    return loading;
  }

  /** Media Source playback of the chunks the core plays, in order: one source buffer per track
   * (mux.js's combined output repeats the video track in a fragment that holds no audio). */
  class Media {
    constructor(video, onError) {
      this.video = video;
      this.onError = onError;
      this.ms = new MediaSource();
      /** By track type ('video', 'audio'): its source buffer (once made) and what waits for it. */
      this.tracks = new Map();
      this.ready = false;
      this.firstAt = null;
      this.flushFrom = null;
      this.started = false;
      this.appended = 0;
      video.src = URL.createObjectURL(this.ms);
      this.opened = false;
      this.ms.addEventListener('sourceopen', () => {
        this.opened = true;
        this.setup();
      }, { once: true });
      this.tx = new window.muxjs.mp4.Transmuxer({ remux: false });
      this.tx.on('data', (seg) => this.fragment(seg));
      this.timer = setInterval(() => this.steer(), 250);
    }

    push(chunk) {
      if (chunk.discontinuity && this.flushFrom !== null) {
        this.tx.flush();
        this.flushFrom = null;
      }
      this.tx.push(chunk.data);
      if (this.flushFrom === null) this.flushFrom = chunk.media_ts;
      if (chunk.media_ts - this.flushFrom >= FRAGMENT_TS) {
        this.tx.flush();
        this.flushFrom = null;
      }
    }

    fragment(seg) {
      let t = this.tracks.get(seg.type);
      if (!t) {
        if (this.ready) return; // a track that appeared after playback began: not playable now
        const info = window.muxjs.mp4.probe.tracks(seg.initSegment)[0];
        t = { sb: null, queue: [seg.initSegment], codec: info ? info.codec : '' };
        this.tracks.set(seg.type, t);
        if (this.firstAt === null) this.firstAt = now();
      }
      t.queue.push(seg.data);
      this.setup();
      this.next();
    }

    /** Source buffers are all made before the first append (browsers refuse one added later):
     * once both tracks were seen, or a second after the first (a stream with one track). */
    setup() {
      if (this.ready || !this.opened || this.tracks.size === 0) return;
      if (this.tracks.size < 2 && now() - this.firstAt < 1000) return;
      this.ready = true;
      for (const [type, t] of this.tracks) {
        let mime = type + '/mp4; codecs="' + t.codec + '"';
        if (!window.MediaSource.isTypeSupported(mime) && type === 'audio') mime = 'audio/mp4; codecs="mp4a.40.2"';
        if (!window.MediaSource.isTypeSupported(mime)) {
          this.onError('this browser cannot play ' + mime);
          this.tracks.delete(type);
          continue;
        }
        t.sb = this.ms.addSourceBuffer(mime);
        t.sb.addEventListener('updateend', () => this.next());
        t.sb.addEventListener('error', () => this.onError('the ' + type + ' buffer failed'));
      }
      this.next();
    }

    next() {
      for (const t of this.tracks.values()) {
        if (!t.sb || t.sb.updating || t.queue.length === 0) continue;
        try {
          t.sb.appendBuffer(t.queue.shift());
          this.appended++;
        } catch (e) {
          if (e.name === 'QuotaExceededError') this.trim(10);
          else this.onError('append: ' + e.message);
        }
      }
    }

    trim(keep) {
      const v = this.video;
      if (v.currentTime < keep + 5) return;
      for (const t of this.tracks.values()) {
        if (!t.sb || t.sb.updating) continue;
        try {
          t.sb.remove(0, v.currentTime - keep);
        } catch (e) {
          /* the next trim tries again */
        }
      }
    }

    /** Where playback is in the buffered media: jump gaps, and keep a small cushion ahead. */
    steer() {
      this.setup();
      const v = this.video;
      const b = v.buffered;
      if (b.length === 0) return;
      const end = b.end(b.length - 1);
      if (!this.started) {
        // The element is fed as the core plays: a second's cushion absorbs the fragmenting.
        if (end - b.start(0) < CUSHION_S) return;
        this.started = true;
        v.currentTime = Math.max(b.start(0), end - CUSHION_S);
        const p = v.play();
        if (p && p.catch) p.catch(() => {});
      }
      let inside = false;
      for (let i = 0; i < b.length; i++) {
        if (v.currentTime >= b.start(i) - 0.05 && v.currentTime < b.end(i)) inside = true;
        else if (v.currentTime < b.start(i)) {
          if (!inside) v.currentTime = b.start(i);
          break;
        }
      }
      // The core already holds the player's buffer: the element needs only a fragment ahead.
      const ahead = end - v.currentTime;
      if (ahead > 3 * CUSHION_S) v.currentTime = end - CUSHION_S;
      v.playbackRate = ahead > 2 * CUSHION_S ? 1.1 : ahead < CUSHION_S / 4 ? 0.95 : 1;
      if (v.paused && ahead > CUSHION_S / 2) {
        const p = v.play();
        if (p && p.catch) p.catch(() => {});
      }
      if (Math.floor(v.currentTime) % 10 === 0) this.trim(30);
    }

    aheadMs() {
      const b = this.video.buffered;
      return b.length === 0 ? 0 : Math.max(0, (b.end(b.length - 1) - this.video.currentTime) * 1000);
    }

    stop() {
      clearInterval(this.timer);
    }
  }

  class Player {
    constructor(video, opts) {
      if (!opts || !opts.channel) throw new Error('LiveSky.play: options need a channel');
      this.video = video;
      this.opts = opts;
      this.upload = opts.upload !== false;
      this.links = new Map();
      this.pending = [];
      this.stun = null;
      this.events = [];
      this.errors = [];
      this.state = 'loading';
      video.addEventListener('error', () => this.error('video: ' + (video.error ? video.error.message || video.error.code : '?')));
    }

    error(msg) {
      this.errors.push(msg);
      this.event('error', msg);
    }

    event(name, detail) {
      this.events.push({ at: Math.round(now()), name: name, detail: detail });
      if (this.events.length > 50) this.events.shift();
      if (this.opts.onEvent) this.opts.onEvent(name, detail);
    }

    async start() {
      const mod = await load();
      const o = this.opts;
      this.peer = new mod.BrowserPeer(
        String(o.channel),
        String(o.token || ''),
        this.upload ? o.uploadKbps || 1500 : 0,
        o.bufferMs || 0,
        !!o.lowLatency,
        now(),
        Date.now(),
      );
      this.media = new Media(this.video, (m) => this.error(m));
      this.attempts = 0;
      this.redirects = 0;
      this.connectEdge(false);
      this.clock = setInterval(() => this.peer.clock(now(), Date.now()), 10000);
      this.pump();
      return this;
    }

    /** The WebSocket to the edge; `rejoin`: after a lost one (the core's buffer played on). */
    connectEdge(rejoin) {
      const url = new URL('ws', base);
      url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
      const ws = new WebSocket(url.href);
      this.ws = ws;
      ws.binaryType = 'arraybuffer';
      this.state = rejoin ? 'reconnecting' : 'connecting';
      ws.onopen = () => {
        this.state = 'joining';
        if (rejoin) this.peer.rejoin(now(), this.redirects);
        for (const m of this.pending.splice(0)) ws.send(m);
        this.pump();
      };
      ws.onmessage = (e) => {
        try {
          this.peer.from_edge(now(), new Uint8Array(e.data));
        } catch (err) {
          this.error(String(err));
          ws.close();
        }
        this.pump();
      };
      ws.onclose = () => {
        if (ws !== this.ws) return;
        this.peer.edge_closed(now());
        this.pump();
        if (this.final) return;
        // Back off, with jitter, so an edge's restart is not met by every page at once.
        const wait = Math.min(RECONNECT_MAX_MS, 1000 * 2 ** this.attempts) * (0.5 + Math.random() / 2);
        this.attempts = Math.min(this.attempts + 1, 10);
        if (!this.state.startsWith('redirected')) this.state = 'edge lost; retrying';
        this.retry = setTimeout(() => this.connectEdge(true), wait);
      };
    }

    pump() {
      let o;
      while ((o = this.peer.poll()) !== undefined) {
        switch (o.t) {
          case 'edge':
            if (this.ws.readyState === WebSocket.OPEN) this.ws.send(o.data);
            else if (this.ws.readyState === WebSocket.CONNECTING) this.pending.push(o.data);
            break;
          case 'connect':
            this.connect(o.link, o.peer);
            break;
          case 'answer':
            this.answer(o);
            break;
          case 'answered':
            this.answered(o.link, o.sdp);
            break;
          case 'send':
            this.send(o.link, o.pieces);
            break;
          case 'close':
            this.drop(o.link);
            break;
          case 'play':
            this.media.push(o);
            break;
          case 'stun':
            this.stun = o.addr;
            break;
          case 'event':
            this.onCoreEvent(o.name, o.detail);
            break;
        }
      }
      clearTimeout(this.timer);
      const wait = Math.max(0, Math.min(this.peer.next_wake_ms(now()), 1000));
      this.timer = setTimeout(() => {
        this.peer.tick(now());
        this.pump();
      }, wait);
    }

    onCoreEvent(name, detail) {
      if (name === 'welcomed') this.attempts = 0;
      if (name === 'started') this.playing = true;
      if (name === 'started' || name === 'welcomed') this.state = this.playing ? 'playing' : 'starting';
      if (name === 'refused' || name === 'played-out') {
        this.final = true;
        this.state = name + (detail ? ': ' + detail : '');
      }
      // The edge names a sibling's client port, which a page cannot dial: it joins this edge
      // again as one already sent on, which an edge keeps (the GSLB picks edges for pages).
      if (name === 'redirected') {
        this.redirects = Math.min(this.redirects + 1, 255);
        this.state = 'redirected (to ' + detail + '); joining here again';
      }
      this.event(name, detail);
    }

    newLink(link) {
      const pc = new RTCPeerConnection({ iceServers: this.stun ? [{ urls: 'stun:' + this.stun }] : [] });
      const l = { pc: pc, dc: null, open: false };
      this.links.set(link, l);
      pc.onconnectionstatechange = () => {
        if (pc.connectionState === 'failed' || pc.connectionState === 'closed') this.down(link);
      };
      setTimeout(() => {
        if (!l.open) this.down(link);
      }, OPEN_TIMEOUT_MS);
      return l;
    }

    gathered(pc) {
      if (pc.iceGatheringState === 'complete') return Promise.resolve();
      return new Promise((ok) => {
        const t = setTimeout(ok, GATHER_TIMEOUT_MS);
        pc.addEventListener('icegatheringstatechange', () => {
          if (pc.iceGatheringState === 'complete') {
            clearTimeout(t);
            ok();
          }
        });
      });
    }

    async connect(link, peer) {
      const l = this.newLink(link);
      this.wire(link, l, l.pc.createDataChannel('livesky', { ordered: true }));
      try {
        await l.pc.setLocalDescription(await l.pc.createOffer());
        await this.gathered(l.pc);
        if (!this.links.has(link)) return;
        this.peer.offer_made(link, peer, l.pc.localDescription.sdp);
        this.pump();
      } catch (e) {
        this.down(link);
      }
    }

    async answer(o) {
      const l = this.newLink(o.link);
      l.pc.ondatachannel = (e) => this.wire(o.link, l, e.channel);
      try {
        await l.pc.setRemoteDescription({ type: 'offer', sdp: o.sdp });
        await l.pc.setLocalDescription(await l.pc.createAnswer());
        await this.gathered(l.pc);
        if (!this.links.has(o.link)) return;
        this.peer.answer_made(o.from, o.token, l.pc.localDescription.sdp);
        this.pump();
      } catch (e) {
        this.down(o.link);
      }
    }

    async answered(link, sdp) {
      const l = this.links.get(link);
      if (!l) return;
      try {
        await l.pc.setRemoteDescription({ type: 'answer', sdp: sdp });
      } catch (e) {
        this.down(link);
      }
    }

    wire(link, l, dc) {
      l.dc = dc;
      dc.binaryType = 'arraybuffer';
      dc.onopen = () => {
        if (!this.links.has(link)) return;
        l.open = true;
        this.peer.link_open(now(), link);
        this.pump();
      };
      dc.onmessage = (e) => {
        this.peer.link_message(now(), link, new Uint8Array(e.data));
        this.pump();
      };
      dc.onclose = () => this.down(link);
    }

    send(link, pieces) {
      const l = this.links.get(link);
      if (!l || !l.open || l.dc.readyState !== 'open') return;
      // Whole frames or none: a frame the send buffer has no room for is dropped (the receiver
      // repairs it or asks its edge), never cut off half way.
      let size = 0;
      for (const p of pieces) size += p.byteLength;
      if (l.dc.bufferedAmount + size > SEND_BUFFER_LIMIT) return;
      try {
        for (const p of pieces) l.dc.send(p);
      } catch (e) {
        this.down(link);
      }
    }

    /** A link went down by itself: the core hears of it. */
    down(link) {
      const l = this.drop(link);
      if (!l) return;
      if (l.open) this.peer.link_closed(now(), link);
      else this.peer.link_failed(now(), link);
      this.pump();
    }

    /** Closes a link (the core closed it, or it went down); what it was, if it was. */
    drop(link) {
      const l = this.links.get(link);
      if (!l) return null;
      this.links.delete(link);
      try {
        l.pc.close();
      } catch (e) {
        /* already closed */
      }
      return l;
    }

    /** Everything the page shows, and what a test reads. */
    status() {
      const s = this.peer ? this.peer.stats() : {};
      const q = this.video.getVideoPlaybackQuality ? this.video.getVideoPlaybackQuality() : null;
      s.state = this.state;
      s.current_time = this.video.currentTime;
      s.element_ahead_ms = this.media ? Math.round(this.media.aheadMs()) : 0;
      if (s.latency_ms !== null && s.latency_ms !== undefined) s.latency_ms += s.element_ahead_ms;
      s.dropped_frames = q ? q.droppedVideoFrames : null;
      s.total_frames = q ? q.totalVideoFrames : null;
      s.fragments = this.media ? this.media.appended : 0;
      s.errors = this.errors.slice();
      s.events = this.events.slice(-10);
      s.links_open = Array.from(this.links.values()).filter((l) => l.open).length;
      return s;
    }

    stop() {
      if (!this.peer) return;
      this.final = true;
      clearTimeout(this.retry);
      this.state = 'left';
      this.peer.leave(now());
      this.pump();
      clearTimeout(this.timer);
      clearInterval(this.clock);
      for (const link of Array.from(this.links.keys())) this.drop(link);
      this.media.stop();
      setTimeout(() => this.ws.close(), 100);
    }
  }

  window.LiveSky = {
    players: [],
    /** Starts playing `options.channel` in `video`; returns the player (see `status()`). */
    play(video, options) {
      const p = new Player(video, options);
      window.LiveSky.players.push(p);
      p.start().catch((e) => p.error(String(e)));
      window.addEventListener('pagehide', () => p.stop());
      return p;
    },
  };
})();
