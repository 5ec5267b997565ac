//! The GSLB's query path: any bytes, through hickory's request decoder, our handler (EDNS, Client
//! Subnet, zone, choice) and hickory's encoder. It must never panic, and whatever it answers
//! must be a DNS message with the query's id.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use livesky_gslb::Responder;

fn responder() -> &'static (tokio::runtime::Runtime, Responder) {
    static R: OnceLock<(tokio::runtime::Runtime, Responder)> = OnceLock::new();
    R.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let r = rt.block_on(async { livesky_gslb::fuzzing::responder() }).expect("responder");
        (rt, r)
    })
}

fuzz_target!(|data: &[u8]| {
    let (rt, r) = responder();
    // The first byte picks the source: IPv4 or IPv6, in or out of the prefix database.
    let src: SocketAddr = match data.first().map(|b| b % 3) {
        Some(0) => "198.51.100.7:5353".parse().expect("addr"),
        Some(1) => "[2001:db8:2::1]:5353".parse().expect("addr"),
        _ => "10.9.9.9:5353".parse().expect("addr"),
    };
    let body = data.get(1..).unwrap_or_default();
    if let Some(answer) = rt.block_on(r.answer(body, src)) {
        assert!(answer.len() >= 12, "an answer has a header");
        assert_eq!(answer[..2], body[..2], "the answer carries the query's id");
    }
});
