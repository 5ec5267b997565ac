//! The peer player in a web page (LiveSky §2.3 in the browser): the same sans-IO [`PeerCore`]
//! as `livesky peer`, built for `wasm32-unknown-unknown` with wasm-bindgen. The page's thin driver
//! (`web/livesky.js`, served by every edge) owns the clock, the WebSocket to the edge, the
//! `RTCPeerConnection` data channels and the Media Source pipeline, and feeds [`BrowserPeer`];
//! chunk signatures are checked in here before a chunk is played or forwarded.
//!
//! [`PeerCore`]: livesky_peer_core::core::PeerCore

pub mod session;

use js_sys::{Array, Object, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;

use crate::session::{Session, WebConfig, WebOut};

/// One viewer of one channel. Every method takes `now_ms`, the page's `performance.now()`.
#[wasm_bindgen]
pub struct BrowserPeer {
    s: Session,
}

fn obj(fields: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in fields {
        // Setting a property on a fresh plain object cannot fail.
        let _ = Reflect::set(&o, &JsValue::from_str(k), v);
    }
    o.into()
}

fn bytes(b: &[u8]) -> JsValue {
    Uint8Array::from(b).into()
}

fn num(n: impl Into<f64>) -> JsValue {
    JsValue::from_f64(n.into())
}

#[wasm_bindgen]
impl BrowserPeer {
    /// `upload_kbps` 0: the page shares nothing. `buffer_ms` 0: the player's default buffer.
    #[wasm_bindgen(constructor)]
    pub fn new(
        channel: &str,
        token: &str,
        upload_kbps: u32,
        buffer_ms: u32,
        low_latency: bool,
        now_ms: f64,
        unix_ms: f64,
    ) -> Result<BrowserPeer, JsError> {
        let cfg =
            WebConfig { channel: channel.to_string(), token: token.to_string(), upload_kbps, buffer_ms, low_latency };
        Session::new(&cfg, now_ms, unix_ms).map(|s| BrowserPeer { s }).map_err(|e| JsError::new(&e.to_string()))
    }

    pub fn clock(&mut self, now_ms: f64, unix_ms: f64) {
        self.s.clock(now_ms, unix_ms)
    }

    /// One binary WebSocket message from the edge; an error means the connection must close.
    pub fn from_edge(&mut self, now_ms: f64, data: &[u8]) -> Result<(), JsError> {
        self.s.from_edge(now_ms, data).map_err(|e| JsError::new(&e.to_string()))
    }

    pub fn edge_closed(&mut self, now_ms: f64) {
        self.s.edge_closed(now_ms)
    }

    pub fn offer_made(&mut self, link: u32, peer: f64, sdp: &str) {
        self.s.offer_made(link, peer as u64, sdp)
    }

    pub fn answer_made(&mut self, from: f64, token: f64, sdp: &str) {
        self.s.answer_made(from as u64, token as u64, sdp)
    }

    pub fn link_open(&mut self, now_ms: f64, link: u32) {
        self.s.link_open(now_ms, link)
    }

    pub fn link_failed(&mut self, now_ms: f64, link: u32) {
        self.s.link_failed(now_ms, link)
    }

    pub fn link_closed(&mut self, now_ms: f64, link: u32) {
        self.s.link_closed(now_ms, link)
    }

    pub fn link_message(&mut self, now_ms: f64, link: u32, data: &[u8]) {
        self.s.link_message(now_ms, link, data)
    }

    pub fn rejoin(&mut self, now_ms: f64, redirects: u8) {
        self.s.rejoin(now_ms, redirects)
    }

    pub fn leave(&mut self, now_ms: f64) {
        self.s.leave(now_ms)
    }

    pub fn tick(&mut self, now_ms: f64) {
        self.s.tick(now_ms)
    }

    pub fn next_wake_ms(&mut self, now_ms: f64) -> f64 {
        self.s.next_wake_ms(now_ms)
    }

    /// The next thing for the driver to do, as `{t: "edge" | "connect" | "answer" | "answered" |
    /// "send" | "close" | "play" | "stun" | "event", …}`, or `undefined`.
    pub fn poll(&mut self) -> JsValue {
        let Some(o) = self.s.poll() else { return JsValue::UNDEFINED };
        match o {
            WebOut::Edge(b) => obj(&[("t", "edge".into()), ("data", bytes(&b))]),
            WebOut::Connect { link, peer } => {
                obj(&[("t", "connect".into()), ("link", num(link)), ("peer", num(peer as f64))])
            }
            WebOut::Answer { link, from, token, sdp } => obj(&[
                ("t", "answer".into()),
                ("link", num(link)),
                ("from", num(from as f64)),
                ("token", num(token as f64)),
                ("sdp", sdp.into()),
            ]),
            WebOut::Answered { link, sdp } => {
                obj(&[("t", "answered".into()), ("link", num(link)), ("sdp", sdp.into())])
            }
            WebOut::Send { link, pieces } => {
                let arr = Array::new();
                for p in &pieces {
                    arr.push(&bytes(p));
                }
                obj(&[("t", "send".into()), ("link", num(link)), ("pieces", arr.into())])
            }
            WebOut::Close { link } => obj(&[("t", "close".into()), ("link", num(link))]),
            WebOut::Play { seq, media_ts, keyframe, discontinuity, data } => obj(&[
                ("t", "play".into()),
                ("seq", num(seq as f64)),
                ("media_ts", num(media_ts as f64)),
                ("keyframe", keyframe.into()),
                ("discontinuity", discontinuity.into()),
                ("data", bytes(&data)),
            ]),
            WebOut::Stun(a) => obj(&[("t", "stun".into()), ("addr", a.into())]),
            WebOut::Event(name, detail) => {
                obj(&[("t", "event".into()), ("name", name.into()), ("detail", detail.into())])
            }
        }
    }

    /// What the page shows: buffer, P2P share, latency, parents, and the counts behind them.
    pub fn stats(&self) -> JsValue {
        let st = self.s.stats();
        let total = st.bytes_from_edge + st.bytes_from_peers;
        let share = if total == 0 { 0.0 } else { st.bytes_from_peers as f64 / total as f64 };
        let opt = |v: Option<u64>| v.map_or(JsValue::NULL, |v| num(v as f64));
        obj(&[
            ("buffered_ms", num(st.buffered_ms as f64)),
            ("buffer_target_ms", num(st.buffer_target_ms)),
            ("bytes_from_edge", num(st.bytes_from_edge as f64)),
            ("bytes_from_peers", num(st.bytes_from_peers as f64)),
            ("bytes_up", num(st.bytes_up as f64)),
            ("p2p_share", num(share)),
            ("latency_ms", opt(st.latency_ms)),
            ("startup_ms", opt(st.startup.map(|d| d.as_millis() as u64))),
            ("parents", num(st.parents as f64)),
            ("children", num(st.children as f64)),
            ("mesh", num(st.mesh as f64)),
            ("links", num(st.links as f64)),
            ("push", st.push.into()),
            ("played_chunks", num(st.play.played_chunks as f64)),
            ("stalls", num(st.play.stalls as f64)),
            ("stalled_ms", num(st.play.stalled_ms as f64)),
            ("bad_chunks", num(st.bad_chunks as f64)),
            ("verifying", st.verifying.into()),
            ("uploading", self.s.uploading().into()),
        ])
    }
}
