use super::*;
use crate::ingest::rtmp::craft::{self, amf0};
use crate::ingest::rtmp::session::{RtmpSession, RtmpSessionError};
use rml_rtmp::rml_amf0::{self, Amf0Value};
use rml_rtmp::sessions::ServerSessionEvent;

/// A session past its handshake, as a real client drives it.
fn open_session() -> RtmpSession {
    let mut s = RtmpSession::new();
    let (mut client, c0c1) = craft::ClientHandshake::start();
    s.handle_input(&c0c1).expect("C0+C1 accepted");
    let (c2, _) = client.server_bytes(&s.take_transmit()).expect("S0+S1+S2 complete the client's side");
    s.handle_input(&c2).expect("C2 accepted");
    assert!(s.is_open());
    s
}

#[test]
fn a_real_connect_passes_and_raises_the_request() {
    let mut s = open_session();
    s.handle_input(&craft::connect("live")).expect("connect accepted");
    assert!(
        matches!(s.poll_event(), Some(ServerSessionEvent::ConnectionRequested { ref app_name, .. }) if app_name == "live")
    );
}

#[test]
fn amf_nested_20000_deep_is_refused_before_the_library_sees_it() {
    // 20,000 deep is a 100 KB command (over the size cap); 13,000 deep fits in 64 KiB.
    for depth in [MAX_AMF_DEPTH + 1, 13_000, 20_000] {
        let mut p = Vec::new();
        amf0::string(&mut p, "connect");
        amf0::number(&mut p, 1.0);
        amf0::nested_arrays(&mut p, depth);
        let mut s = open_session();
        let e = s.handle_input(&craft::message(3, 20, 0, 0, &p, 128)).unwrap_err();
        let want_size_refusal = depth == 20_000;
        match e {
            RtmpSessionError::Guard(GuardError::TooLarge { type_id: 20, .. }) if want_size_refusal => {}
            RtmpSessionError::Guard(GuardError::TooDeep) if !want_size_refusal => {}
            e => panic!("depth {depth}: {e}"),
        }
        assert!(matches!(s.handle_input(b"more"), Err(RtmpSessionError::Failed)), "a failed session stays failed");
    }
    // Nesting within the cap is fine (and the library reads it).
    let mut p = Vec::new();
    amf0::string(&mut p, "connect");
    amf0::number(&mut p, 1.0);
    amf0::nested_arrays(&mut p, MAX_AMF_DEPTH);
    assert_eq!(scan_amf0(&p), Ok(3));
    let mut s = open_session();
    let r = s.handle_input(&craft::message(3, 20, 0, 0, &p, 128));
    // The library reads it and answers for itself (here: a connect without an app name).
    assert!(matches!(r, Err(RtmpSessionError::Session(_))), "{r:?}");
}

#[test]
fn a_command_with_one_value_is_refused() {
    let mut s = open_session();
    let e = s.handle_input(&craft::command(|p| amf0::string(p, "connect"))).unwrap_err();
    assert!(matches!(e, RtmpSessionError::Guard(GuardError::ShortCommand(1))), "{e}");
    // The "AMF3" command type with its leading zero counts the same way.
    let mut g = ChunkGuard::new();
    let mut p = vec![0];
    amf0::string(&mut p, "connect");
    amf0::number(&mut p, 1.0);
    assert_eq!(g.feed(&craft::message(3, 17, 0, 0, &p, 128)), Err(GuardError::ShortCommand(2)));
}

#[test]
fn a_second_header_that_shortens_a_half_read_message_is_refused() {
    // A 300-byte message whose first 128-byte chunk is in; then a type-0 header on the same
    // chunk stream says 10 bytes: rml_rtmp computes 10 - 128 and panics ("capacity overflow").
    let first = craft::message(4, 9, 1, 0, &[0x17; 300], 128);
    let mut bytes = first[..12 + 128].to_vec();
    bytes.extend_from_slice(&craft::message(4, 9, 1, 0, &[0x17; 10], 128));
    let mut s = open_session();
    let e = s.handle_input(&bytes).unwrap_err();
    assert!(matches!(e, RtmpSessionError::Guard(GuardError::Interleaved { csid: 4, fmt: 0, open: 4 })), "{e}");
    // The same in two reads: the header is refused as soon as it is whole.
    let mut g = ChunkGuard::new();
    g.feed(&first[..12 + 128]).unwrap();
    assert!(matches!(g.feed(&bytes[12 + 128..12 + 128 + 12]), Err(GuardError::Interleaved { .. })));
}

#[test]
fn sizes_and_timestamps_the_library_cannot_take_are_refused() {
    let mut g = ChunkGuard::new();
    let big = craft::message(4, 9, 1, 0, &[], 128);
    let mut header = big.clone();
    header[4..7].copy_from_slice(&(MAX_MEDIA_MESSAGE + 1).to_be_bytes()[1..]);
    assert!(matches!(g.feed(&header), Err(GuardError::TooLarge { type_id: 9, .. })));
    let mut g = ChunkGuard::new();
    let mut header = craft::message(3, 20, 0, 0, &[], 128);
    header[4..7].copy_from_slice(&(MAX_CONTROL_MESSAGE + 1).to_be_bytes()[1..]);
    assert!(matches!(g.feed(&header), Err(GuardError::TooLarge { type_id: 20, .. })));
    // Type 1 header with an extended timestamp below 0xFFFFFF: rml_rtmp subtracts and panics.
    let mut g = ChunkGuard::new();
    g.feed(&craft::message(4, 9, 1, 0, &[1, 2], 128)).unwrap();
    let mut t1 = vec![0x44, 0xFF, 0xFF, 0xFF, 0, 0, 2, 9];
    t1.extend_from_slice(&5u32.to_be_bytes());
    assert_eq!(g.feed(&t1), Err(GuardError::BadExtendedTimestamp(5)));
    // A continuation on a stream that never started.
    assert_eq!(ChunkGuard::new().feed(&[0xC5]), Err(GuardError::NoPreviousHeader { csid: 5 }));
    // Chunk size 0.
    let mut g = ChunkGuard::new();
    assert_eq!(g.feed(&craft::message(2, 1, 0, 0, &0u32.to_be_bytes(), 128)), Err(GuardError::BadChunkSize(0)));
}

#[test]
fn a_set_chunk_size_is_followed_like_the_library_follows_it() {
    let mut g = ChunkGuard::new();
    g.feed(&craft::message(2, 1, 0, 0, &4096u32.to_be_bytes(), 128)).unwrap();
    // A 3000-byte video message in one 4096-byte chunk; fed a byte at a time.
    let msg = craft::message(6, 9, 1, 40, &[0x27; 3000], 4096);
    for b in &msg {
        g.feed(std::slice::from_ref(b)).unwrap();
    }
    assert!(g.partial.is_none() && g.pending.is_empty());
    // Then a type-3 header starting a new message of the same shape.
    let mut again = vec![0xC6];
    again.extend_from_slice(&[0x27; 3000]);
    g.feed(&again).unwrap();
    assert!(g.pending.is_empty());
}

#[test]
fn too_many_chunk_streams_are_refused() {
    let mut g = ChunkGuard::new();
    let mut bytes = Vec::new();
    for csid in 0..=MAX_CHUNK_STREAMS as u8 {
        // Two-byte basic headers: csid 64 + n.
        let mut m = craft::message(4, 9, 1, 0, &[1], 128);
        m[0] = 0;
        m.insert(1, csid);
        bytes.extend_from_slice(&m);
    }
    assert_eq!(g.feed(&bytes), Err(GuardError::TooManyChunkStreams));
}

/// The scanner counts top-level values exactly as rml_amf0 yields them, for everything
/// rml_amf0 writes.
#[test]
fn the_amf0_scanner_agrees_with_rml_amf0() {
    use std::collections::HashMap;
    let obj = Amf0Value::Object(HashMap::from([
        ("app".to_string(), Amf0Value::Utf8String("live".into())),
        ("n".to_string(), Amf0Value::StrictArray(vec![Amf0Value::Number(1.0), Amf0Value::Null])),
    ]));
    let cases: Vec<Vec<Amf0Value>> = vec![
        vec![],
        vec![Amf0Value::Utf8String("connect".into()), Amf0Value::Number(1.0), obj.clone()],
        vec![Amf0Value::Boolean(true), Amf0Value::Undefined, Amf0Value::StrictArray(vec![obj.clone(), obj])],
        vec![Amf0Value::StrictArray(vec![]), Amf0Value::Object(HashMap::new())],
    ];
    for values in cases {
        let bytes = rml_amf0::serialize(&values).unwrap();
        assert_eq!(scan_amf0(&bytes), Ok(values.len()), "{values:?}");
        let back = rml_amf0::deserialize(&mut std::io::Cursor::new(&bytes)).unwrap();
        assert_eq!(back.len(), values.len());
    }
    // A top-level end marker ends the values (rml_amf0 stops there too).
    let mut p = Vec::new();
    amf0::number(&mut p, 1.0);
    p.push(9);
    amf0::number(&mut p, 2.0);
    assert_eq!(scan_amf0(&p), Ok(1));
    assert_eq!(rml_amf0::deserialize(&mut std::io::Cursor::new(&p)).unwrap().len(), 1);
    // A strict array cut short by the end of the data ends quietly in both.
    let p = [10u8, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(scan_amf0(&p), Ok(1));
    assert_eq!(rml_amf0::deserialize(&mut std::io::Cursor::new(&p[..])).unwrap().len(), 1);
}
