//! RTMP ingest: raw client bytes through the real session code (`sn_core::rtmp::RtmpSession`:
//! handshake, the chunk guard, rml_rtmp's session), accepting every connect and publish
//! request and remuxing the media the way Tier 0 does. Never a panic: libFuzzer aborts on any,
//! even one the session would catch, so the guard must keep rml_rtmp away from every input it
//! cannot take.
//!
//! Input: byte 0 bit 0 set = start after a real client handshake (so the fuzzer spends its time
//! on chunk streams), else the bytes are the handshake too; then records of a u16 LE length and
//! that many bytes, each one read from the socket.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rml_rtmp::sessions::ServerSessionEvent;
use sn_core::flv::FlvToTs;
use sn_core::rtmp::{RtmpSession, craft};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else { return };
    let mut s = RtmpSession::new();
    if mode & 1 == 1 {
        let (mut client, c0c1) = craft::ClientHandshake::start();
        if s.handle_input(&c0c1).is_err() {
            return;
        }
        let Some((c2, _)) = client.server_bytes(&s.take_transmit()) else { return };
        if s.handle_input(&c2).is_err() {
            return;
        }
    }
    let mut remux = FlvToTs::new();
    let mut ts = Vec::new();
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let (read, tail) = rest[2..].split_at(len);
        rest = tail;
        if s.handle_input(read).is_err() {
            return;
        }
        let _ = s.take_transmit();
        while let Some(e) = s.poll_event() {
            let r = match e {
                ServerSessionEvent::ConnectionRequested { request_id, .. }
                | ServerSessionEvent::PublishStreamRequested { request_id, .. } => s.accept_request(request_id),
                ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => {
                    let _ = remux.video(timestamp.value, &data, &mut ts);
                    Ok(())
                }
                ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => {
                    let _ = remux.audio(timestamp.value, &data, &mut ts);
                    Ok(())
                }
                _ => Ok(()),
            };
            if r.is_err() {
                return;
            }
        }
        assert_eq!(ts.len() % 188, 0, "the remux writes whole TS packets");
        ts.clear();
    }
});
