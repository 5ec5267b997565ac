use super::*;
use crate::chunker::{ChunkDraft, Chunker, ChunkerConfig};
use crate::psi::{crc32_mpeg2, parse_pat, parse_pmt};
use crate::ts::{self, PID_PAT, Packet, Resync, TS_WRAP};

const SPS: &[u8] = &[0x67, 0x4d, 0x40, 0x1e, 0xe8, 0x82, 0x83, 0xf6];
const PPS: &[u8] = &[0x68, 0xee, 0x3c, 0x80];
const SPS_B: &[u8] = &[0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40];
const SEI: &[u8] = &[0x06, 0x05, 0x11, 0x22, 0x80];
/// AAC-LC, 44.1 kHz, stereo.
const ASC_LC_44K_STEREO: [u8; 2] = [0x12, 0x10];

fn avc_config(sps: &[u8], pps: &[u8]) -> Vec<u8> {
    let mut b = vec![0x17, 0, 0, 0, 0, 1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    b.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    b.extend_from_slice(sps);
    b.push(1);
    b.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    b.extend_from_slice(pps);
    b
}

/// An AVC NALU tag body with 4-byte length prefixes.
fn avc_frame(keyframe: bool, cts: i32, nals: &[&[u8]]) -> Vec<u8> {
    let mut b = vec![if keyframe { 0x17 } else { 0x27 }, 1];
    b.extend_from_slice(&cts.to_be_bytes()[1..]);
    for nal in nals {
        b.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        b.extend_from_slice(nal);
    }
    b
}

/// A slice NAL unit of `len` bytes with no start-code look-alikes inside.
fn slice(nal_type: u8, len: usize) -> Vec<u8> {
    let mut v = vec![0x60 | nal_type];
    v.extend((1..len).map(|i| 0x10 + (i % 200) as u8));
    v
}

fn aac(packet_type: u8, data: &[u8]) -> Vec<u8> {
    let mut b = vec![0xaf, packet_type];
    b.extend_from_slice(data);
    b
}

/// A remuxer that has seen both sequence headers, so nothing is held back at the start.
fn started() -> (FlvToTs, Vec<u8>) {
    let mut m = FlvToTs::new();
    let mut out = Vec::new();
    m.video(0, &avc_config(SPS, PPS), &mut out).unwrap();
    m.audio(0, &aac(0, &ASC_LC_44K_STEREO), &mut out).unwrap();
    (m, out)
}

#[derive(Debug)]
struct Pes {
    pid: u16,
    random_access: bool,
    discontinuity: bool,
    pcr: Option<u64>,
    pts: Option<u64>,
    dts: Option<u64>,
    data: Vec<u8>,
}

impl Pes {
    fn es(&self) -> &[u8] {
        &self.data[9 + usize::from(self.data[8])..]
    }
}

/// PES units and PSI sections (by PID) of a TS, checking packet alignment and the PES length fields.
fn demux(ts_bytes: &[u8]) -> (Vec<Pes>, Vec<(u16, Vec<u8>)>) {
    assert_eq!(ts_bytes.len() % 188, 0, "whole packets");
    let (mut pes, mut sections): (Vec<Pes>, Vec<(u16, Vec<u8>)>) = (Vec::new(), Vec::new());
    for p in ts_bytes.chunks_exact(188) {
        let p: &Packet = p.try_into().unwrap();
        assert_eq!(p[0], 0x47, "sync byte");
        let pid = ts::pid(p);
        let payload = ts::payload(p).expect("every packet we write has payload");
        if pid == PID_PAT || pid == PMT_PID {
            let sec = &payload[1 + usize::from(payload[0])..];
            let len = 3 + ((usize::from(sec[1] & 0x0f) << 8) | usize::from(sec[2]));
            sections.push((pid, sec[..len].to_vec()));
        } else if ts::pusi(p) {
            let (pts, dts) = ts::pes_timestamps(p);
            let (random_access, discontinuity, pcr) = (ts::random_access(p), ts::discontinuity(p), ts::pcr(p));
            pes.push(Pes { pid, random_access, discontinuity, pcr, pts, dts, data: payload.to_vec() });
        } else {
            let last = pes.iter_mut().rev().find(|u| u.pid == pid).expect("continuation after a start");
            last.data.extend_from_slice(payload);
        }
    }
    for u in &pes {
        assert_eq!(u.data[..3], [0, 0, 1]);
        let len = usize::from(u16::from_be_bytes([u.data[4], u.data[5]]));
        if len != 0 || u.pid == AUDIO_PID {
            assert_eq!(len, u.data.len() - 6, "PES length exact: no stuffing inside the payload");
        }
    }
    (pes, sections)
}

/// NAL unit types of an Annex B access unit with 4-byte start codes.
fn nal_types(au: &[u8]) -> Vec<u8> {
    au.windows(5).filter(|w| w[..4] == [0, 0, 0, 1]).map(|w| w[4] & 0x1f).collect()
}

fn chunk(ts_bytes: &[u8]) -> (Vec<ChunkDraft>, Chunker) {
    let mut resync = Resync::default();
    let mut chunker = Chunker::new(ChunkerConfig::default(), None);
    let mut drafts = Vec::new();
    // Awkward read sizes, as a socket would deliver them.
    for piece in ts_bytes.chunks(1000) {
        resync.feed(piece, |p| drafts.extend(chunker.push(p))).unwrap();
    }
    resync.finish(|p| drafts.extend(chunker.push(p)));
    drafts.extend(chunker.finish());
    (drafts, chunker)
}

/// 3 s of 25 fps video (IDR each second, B-frame style composition times) and 44.1 kHz AAC.
fn synthetic_stream(m: &mut FlvToTs, out: &mut Vec<u8>) {
    let mut audio_n = 0u32;
    for frame in 0..75u32 {
        let ms = frame * 40;
        let key = frame % 25 == 0;
        let nal = slice(if key { 5 } else { 1 }, if key { 3000 } else { 400 + frame as usize });
        m.video(ms, &avc_frame(key, if frame % 3 == 1 { 80 } else { 0 }, &[SEI, &nal]), out).unwrap();
        while audio_n * 1024 * 1000 / 44_100 < ms + 40 {
            let data = vec![0x21; 200 + (audio_n % 50) as usize];
            m.audio(audio_n * 1024 * 1000 / 44_100, &aac(1, &data), out).unwrap();
            audio_n += 1;
        }
    }
}

#[test]
fn synthetic_stream_goes_through_resync_and_chunker() {
    let (mut m, mut out) = started();
    synthetic_stream(&mut m, &mut out);
    assert!(out.chunks(188).all(|p| p.len() == 188 && p[0] == 0x47));
    let (drafts, chunker) = chunk(&out);
    assert_eq!(drafts.len(), 75, "one chunk per video access unit");
    assert!(drafts[0].keyframe, "the stream starts at a keyframe");
    assert_eq!(drafts.iter().filter(|d| d.keyframe).count(), 3);
    assert!(drafts.windows(2).all(|w| w[1].media_ts > w[0].media_ts), "media time increases");
    assert_eq!(drafts[1].media_ts - drafts[0].media_ts, 3600, "40 ms at 90 kHz");
    assert!(drafts.iter().all(|d| d.payload.len() % 188 == 0 && d.payload.chunks(188).all(|p| p[0] == 0x47)));
    let cs = chunker.stats();
    assert_eq!((cs.discontinuities, cs.dropped_before_psi, cs.psi_inserted), (0, 0, 0), "{cs:?}");
    let s = m.stats();
    assert_eq!((s.video_frames, s.keyframes, s.dropped_before_config), (75, 3, 0));
    assert!(s.audio_frames > 120);
}

#[test]
fn sps_pps_go_in_band_before_each_idr_and_every_unit_starts_with_an_aud() {
    let (mut m, mut out) = started();
    let idr = slice(5, 500);
    let p = slice(1, 300);
    m.video(0, &avc_frame(true, 0, &[&idr]), &mut out).unwrap();
    m.video(40, &avc_frame(false, 0, &[&[0x09, 0xf0], &p]), &mut out).unwrap();
    m.video(80, &avc_frame(true, 0, &[SEI, &idr]), &mut out).unwrap();
    // A keyframe that carries its own parameter sets (and an AUD) gets no second copy.
    m.video(120, &avc_frame(true, 0, &[&[0x09, 0xf0], SPS, PPS, SEI, &idr]), &mut out).unwrap();
    let (pes, _) = demux(&out);
    let video: Vec<Vec<u8>> = pes.iter().filter(|u| u.pid == VIDEO_PID).map(|u| nal_types(u.es())).collect();
    assert_eq!(video, [vec![9, 7, 8, 5], vec![9, 1], vec![9, 7, 8, 6, 5], vec![9, 7, 8, 6, 5]]);
    let first = pes.iter().find(|u| u.pid == VIDEO_PID).unwrap();
    assert_eq!(first.es()[AUD.len() + 4..][..SPS.len()], *SPS, "the sequence header's SPS");
}

#[test]
fn adts_header_for_aac_lc_44k_stereo() {
    let (mut m, mut out) = started();
    let frame = [0xab; 100];
    m.audio(1000, &aac(1, &frame), &mut out).unwrap();
    let (pes, _) = demux(&out);
    let a = pes.iter().find(|u| u.pid == AUDIO_PID).unwrap();
    assert_eq!(a.es()[..7], [0xff, 0xf1, 0x50, 0x80, 0x0d, 0x7f, 0xfc], "frame_length 107");
    assert_eq!(a.es()[7..], frame);
    assert_eq!((a.pts, a.dts), (Some(90_000), None));
    assert!(a.pcr.is_none(), "PCR is on the video PID when there is video");
    // HE-AAC with explicit SBR signalling: the core AAC-LC stream at 24 kHz, stereo.
    let he = parse_audio_specific_config(&[0x2b, 0x11, 0x88, 0x00]).unwrap();
    assert_eq!(he, AacConfig { object_type: 2, sampling_index: 6, channels: 2 });
}

#[test]
fn continuity_counters_count_per_pid() {
    let (mut m, mut out) = started();
    synthetic_stream(&mut m, &mut out);
    let mut last: std::collections::HashMap<u16, u8> = Default::default();
    for p in out.chunks_exact(188) {
        let p: &Packet = p.try_into().unwrap();
        assert!(ts::has_payload(p));
        if let Some(prev) = last.insert(ts::pid(p), ts::cc(p)) {
            assert_eq!(ts::cc(p), (prev + 1) & 0x0f, "pid {:#x}", ts::pid(p));
        }
    }
    assert_eq!(last.len(), 4, "PAT, PMT, video, audio");
}

#[test]
fn psi_has_valid_crcs_and_precedes_every_keyframe() {
    let (mut m, mut out) = started();
    synthetic_stream(&mut m, &mut out);
    let (pes, sections) = demux(&out);
    assert_eq!(sections.len(), 6, "PAT+PMT before each of 3 keyframes");
    for (pid, sec) in &sections {
        assert_eq!(crc32_mpeg2(sec), 0, "CRC over the section including its CRC");
        if *pid == PID_PAT {
            assert_eq!(parse_pat(sec), Some(vec![PMT_PID]));
        } else {
            let map = parse_pmt(sec).unwrap();
            assert_eq!((map.pcr_pid, map.video_pid, map.video_stream_type), (VIDEO_PID, Some(VIDEO_PID), 0x1b));
            assert_eq!(map.audio_pids, vec![AUDIO_PID]);
        }
    }
    let packets: Vec<&[u8]> = out.chunks(188).collect();
    for (i, p) in packets.iter().enumerate() {
        let p: &Packet = (*p).try_into().unwrap();
        if ts::pid(p) == VIDEO_PID && ts::random_access(p) {
            let before: Vec<u16> = packets[i - 2..i].iter().map(|q| ts::pid((*q).try_into().unwrap())).collect();
            assert_eq!(before, [PID_PAT, PMT_PID]);
        }
    }
    let video: Vec<&Pes> = pes.iter().filter(|u| u.pid == VIDEO_PID).collect();
    assert_eq!(video.iter().filter(|u| u.random_access).count(), 3);
    for u in &video {
        let (pcr, dts) = (u.pcr.expect("PCR in every video PES"), u.dts.or(u.pts).unwrap());
        assert!(pcr <= dts * 300 && !u.discontinuity);
    }
    assert_eq!(video[1].pts.unwrap() - video[1].dts.unwrap(), 80 * 90, "composition time");
    assert_eq!(video[0].dts, None, "PTS only when it equals DTS");
}

#[test]
fn wrong_codecs_are_refused_with_advice() {
    let mut m = FlvToTs::new();
    let mut out = Vec::new();
    let e = m.video(0, &[0x22, 0, 0], &mut out).unwrap_err();
    assert_eq!(e, FlvError::UnsupportedVideoCodec(2));
    let msg = e.to_string();
    assert!(msg.contains("got 2 (Sorenson H.263)") && msg.contains("x264"), "{msg}");
    assert_eq!(m.video(0, &[0x1c, 0, 0, 0, 0], &mut out), Err(FlvError::UnsupportedVideoCodec(12)));
    let hevc = [0x90, b'h', b'v', b'c', b'1', 1, 2, 3];
    assert_eq!(m.video(0, &hevc, &mut out), Err(FlvError::UnsupportedVideoFourCc(*b"hvc1")));
    let e = m.audio(0, &[0x2f, 0xff, 0xfb], &mut out).unwrap_err();
    assert_eq!(e, FlvError::UnsupportedAudioCodec(2));
    assert!(e.to_string().contains("MP3") && e.to_string().contains("AAC"));
    // xHE-AAC (object type 42, escaped), 44.1 kHz stereo.
    assert_eq!(m.audio(0, &aac(0, &[0xf9, 0x48, 0x40]), &mut out), Err(FlvError::UnsupportedAacObjectType(42)));
    assert!(matches!(m.audio(0, &aac(0, &[0x12, 0x00]), &mut out), Err(FlvError::BadAudioConfig { .. })));
    assert!(matches!(m.video(0, &[0x17, 3, 0, 0, 0], &mut out), Err(FlvError::UnknownPacketType { value: 3, .. })));
    assert!(out.is_empty());
}

#[test]
fn truncated_input_is_an_error_and_leaves_output_untouched() {
    let (mut m, mut out) = started();
    let t = |what| Err(FlvError::Truncated { what });
    assert_eq!(m.video(0, &[], &mut out), t("video tag header"));
    assert_eq!(m.audio(0, &[], &mut out), t("audio tag header"));
    assert_eq!(m.video(0, &[0x17, 1, 0], &mut out), t("AVC packet header"));
    assert_eq!(m.audio(0, &[0xaf], &mut out), t("AAC packet header"));
    assert_eq!(m.video(0, &[0x90, b'h'], &mut out), t("enhanced RTMP video header"));
    let mut cut = avc_frame(true, 0, &[&slice(5, 100)]);
    cut.truncate(50);
    assert_eq!(m.video(0, &cut, &mut out), t("AVC NAL unit"));
    assert_eq!(m.video(0, &[0x17, 1, 0, 0, 0, 0, 0], &mut out), t("AVC NAL unit length"));
    assert!(matches!(m.video(0, &avc_config(SPS, PPS)[..12], &mut out), Err(FlvError::BadAvcConfig { .. })));
    assert!(out.is_empty(), "nothing half-written");
    // Every prefix of valid bodies, and pseudo-random bytes: errors or output, never a panic.
    let bodies = [avc_config(SPS, PPS), avc_frame(true, -5, &[SPS, &slice(5, 300)]), aac(0, &[0x2b, 0x11, 0x88, 0])];
    for body in &bodies {
        for n in 0..body.len() {
            let _ = m.video(0, &body[..n], &mut out);
            let _ = m.audio(0, &body[..n], &mut out);
        }
    }
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for i in 0..20_000u32 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 40) as usize;
        let mut body: Vec<u8> = seed.to_le_bytes().iter().cycle().take(len).copied().collect();
        if let Some(b) = body.first_mut() {
            *b = if i % 2 == 0 { 0x17 } else { 0xaf };
        }
        let _ = m.video(i, &body, &mut out);
        let _ = m.audio(i, &body, &mut out);
    }
    assert_eq!(out.len() % 188, 0);
}

#[test]
fn frames_before_their_config_are_dropped_and_counted() {
    let mut m = FlvToTs::new();
    let mut out = Vec::new();
    m.video(0, &avc_frame(true, 0, &[&slice(5, 50)]), &mut out).unwrap();
    m.audio(0, &aac(1, &[1, 2, 3]), &mut out).unwrap();
    m.video(40, &avc_config(SPS, PPS), &mut out).unwrap();
    // An inter frame before the first keyframe references nothing a decoder has.
    m.video(40, &avc_frame(false, 0, &[&slice(1, 50)]), &mut out).unwrap();
    assert_eq!(m.stats().dropped_before_config, 3);
    assert_eq!((m.stats().video_frames, m.stats().audio_frames), (0, 0));
    assert!(out.is_empty());
}

#[test]
fn a_new_sequence_header_mid_stream_takes_effect_at_the_next_keyframe() {
    let (mut m, mut out) = started();
    m.video(0, &avc_frame(true, 0, &[&slice(5, 50)]), &mut out).unwrap();
    m.video(40, &avc_config(SPS, PPS), &mut out).unwrap(); // a repeat changes nothing
    m.video(40, &avc_frame(false, 0, &[&slice(1, 50)]), &mut out).unwrap();
    m.video(80, &avc_config(SPS_B, PPS), &mut out).unwrap(); // encoder restarted
    m.video(80, &avc_frame(false, 0, &[&slice(1, 50)]), &mut out).unwrap();
    m.video(120, &avc_frame(true, 0, &[&slice(5, 50)]), &mut out).unwrap();
    assert_eq!(m.stats().dropped_before_config, 1);
    let (pes, _) = demux(&out);
    let aus: Vec<&[u8]> = pes.iter().map(Pes::es).collect();
    assert_eq!(aus.len(), 3);
    assert_eq!(aus[2][..AUD.len() + 4 + SPS_B.len() + 2], [&AUD[..], &START_CODE, SPS_B, &START_CODE[..2]].concat());
}

#[test]
fn timestamps_wrap_at_2_pow_33() {
    let pcr_step = |a: &Pes, b: &Pes| (b.pcr.unwrap() + TS_WRAP * 300 - a.pcr.unwrap()) % (TS_WRAP * 300) / 300;
    // The 90 kHz clock wraps 26.5 h into a session: 95_443_718 ms * 90 = 2^33 + 28.
    let (mut m, mut out) = started();
    m.video(95_443_000, &avc_frame(true, 40, &[&slice(5, 50)]), &mut out).unwrap();
    m.video(95_443_718, &avc_frame(false, 40, &[&slice(1, 50)]), &mut out).unwrap();
    let (pes, _) = demux(&out);
    assert_eq!((pes[0].pts, pes[0].dts), (Some(8_589_870_000 + 3600), Some(8_589_870_000)));
    assert_eq!((pes[1].pts, pes[1].dts), (Some(28 + 3600), Some(28)));
    assert_eq!(pcr_step(&pes[0], &pes[1]), 718 * 90, "PCR runs on across the wrap");
    assert!(!pes[1].discontinuity);

    // FLV's own u32 wrap: 2^32 ms * 90 is a multiple of 2^33, so the 90 kHz clock simply runs on.
    let (mut m, mut out) = started();
    m.video(u32::MAX - 1000, &avc_frame(true, 0, &[&slice(5, 50)]), &mut out).unwrap();
    m.video(u32::MAX, &avc_frame(false, 0, &[&slice(1, 50)]), &mut out).unwrap();
    m.video(0, &avc_frame(false, -2, &[&slice(1, 50)]), &mut out).unwrap();
    let (pes, _) = demux(&out);
    let got: Vec<(Option<u64>, Option<u64>)> = pes.iter().map(|u| (u.pts, u.dts)).collect();
    assert_eq!(got[1..], [(Some(TS_WRAP - 90), None), (Some(TS_WRAP - 180), Some(0))]);
    assert_eq!(pcr_step(&pes[1], &pes[2]), 90);
    assert!(!pes[2].discontinuity);

    // An encoder restart (timestamps back to 0) is a PCR discontinuity, flagged.
    m.video(5000, &avc_frame(true, 0, &[&slice(5, 50)]), &mut out).unwrap();
    m.video(0, &avc_frame(true, 0, &[&slice(5, 50)]), &mut out).unwrap();
    let (pes, _) = demux(&out);
    assert_eq!(pes.last().unwrap().pcr, Some(0));
    assert!(pes.last().unwrap().discontinuity);
}

#[test]
fn audio_only_stream_carries_pcr_on_the_audio_pid() {
    let mut m = FlvToTs::new();
    let mut out = Vec::new();
    m.audio(0, &aac(0, &ASC_LC_44K_STEREO), &mut out).unwrap();
    for n in 0..100u32 {
        m.audio(n * 1024 * 1000 / 44_100, &aac(1, &[0x21; 150]), &mut out).unwrap();
    }
    let (pes, sections) = demux(&out);
    let map = parse_pmt(&sections[1].1).unwrap();
    assert_eq!((map.pcr_pid, map.video_pid, map.audio_pids), (AUDIO_PID, None, vec![AUDIO_PID]));
    assert!(pes.iter().all(|u| u.pid == AUDIO_PID && u.pcr.is_some()));
    assert_eq!(pes.len(), 100);
    let (drafts, _) = chunk(&out);
    assert!(drafts.len() >= 20 && drafts[0].keyframe, "100 ms audio slices");
}

#[test]
fn startup_waits_for_both_sequence_headers_like_ffmpeg_sends_them() {
    // ffmpeg -f flv from a TS input: empty AAC header first, the real one after the first video frame.
    let mut m = FlvToTs::new();
    let mut out = Vec::new();
    m.video(0, &avc_config(SPS, PPS), &mut out).unwrap();
    m.audio(0, &aac(0, &[]), &mut out).unwrap();
    m.video(0, &avc_frame(true, 80, &[&slice(5, 500)]), &mut out).unwrap();
    m.video(40, &avc_frame(false, 120, &[&slice(1, 200)]), &mut out).unwrap();
    assert!(out.is_empty(), "held until the stream set is known");
    m.audio(59, &aac(0, &[0x11, 0x88]), &mut out).unwrap();
    m.audio(59, &aac(1, &[0x21; 200]), &mut out).unwrap();
    m.video(80, &avc_frame(false, 40, &[&slice(1, 200)]), &mut out).unwrap();
    let (pes, sections) = demux(&out);
    assert_eq!(sections.len(), 2, "one PAT and one PMT: the stream set never changed");
    assert_eq!(parse_pmt(&sections[1].1).unwrap().audio_pids, vec![AUDIO_PID]);
    assert_eq!(pes.iter().map(|u| u.pid).collect::<Vec<_>>(), [VIDEO_PID, VIDEO_PID, AUDIO_PID, VIDEO_PID]);
    let (drafts, chunker) = chunk(&out);
    assert_eq!(drafts.len(), 3);
    assert_eq!(chunker.stats().discontinuities, 0);
}

#[test]
fn video_only_stream_starts_after_the_hold_and_audio_may_join_later() {
    let mut m = FlvToTs::new();
    let mut out = Vec::new();
    m.video(0, &avc_config(SPS, PPS), &mut out).unwrap();
    for f in 0..25u32 {
        m.video(f * 40, &avc_frame(f == 0, 0, &[&slice(if f == 0 { 5 } else { 1 }, 100)]), &mut out).unwrap();
    }
    assert!(out.is_empty());
    m.video(1000, &avc_frame(false, 0, &[&slice(1, 100)]), &mut out).unwrap();
    let (pes, sections) = demux(&out);
    assert_eq!(pes.len(), 26, "everything held is written, in order");
    assert_eq!(parse_pmt(&sections[1].1).unwrap().audio_pids, Vec::<u16>::new());
    m.audio(1020, &aac(0, &ASC_LC_44K_STEREO), &mut out).unwrap();
    m.audio(1020, &aac(1, &[0x21; 100]), &mut out).unwrap();
    let (_, sections) = demux(&out);
    let pmt = &sections.last().unwrap().1;
    assert_eq!((pmt[5] >> 1) & 0x1f, 1, "a new PMT version");
    assert_eq!(parse_pmt(pmt).unwrap().audio_pids, vec![AUDIO_PID]);
}

/// (tag type, timestamp ms, body) of each tag in an FLV file.
fn flv_tags(file: &[u8]) -> Vec<(u8, u32, &[u8])> {
    assert_eq!(&file[..3], b"FLV");
    let mut pos = u32::from_be_bytes(file[5..9].try_into().unwrap()) as usize;
    let mut tags = Vec::new();
    // Each tag: PreviousTagSize (4), type (1), size (3), timestamp (3 + 1 extended), stream id (3).
    while let Some(h) = file.get(pos + 4..pos + 15) {
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let ts = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let body = &file[pos + 15..pos + 15 + size];
        tags.push((h[0] & 0x1f, ts, body));
        pos += 15 + size;
    }
    tags
}

fn ffmpeg_available() -> bool {
    if std::process::Command::new("ffmpeg").arg("-version").output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "CI must install ffmpeg (see .ci/run)");
    eprintln!("ffmpeg not installed: skipping the FLV real-clip check");
    false
}

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Per-stream hashes of every decoded frame, without timestamps (the FLV timeline starts at 0).
fn decoded_frame_hashes(path: &str) -> Vec<String> {
    let out =
        run("ffmpeg", &["-nostdin", "-v", "error", "-i", path, "-map", "0:v", "-map", "0:a", "-f", "framemd5", "-"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines = text.lines().filter(|l| !l.starts_with('#'));
    lines
        .map(|l| l.split(',').map(str::trim).enumerate().filter(|(i, _)| *i == 0 || *i >= 4))
        .map(|f| f.map(|(_, v)| v).collect())
        .collect()
}

/// The bundled real H.264+AAC clip, turned into FLV by ffmpeg as an RTMP publisher would send it,
/// remuxed back to TS: ffmpeg decodes it without a complaint, to the same frames as the original.
#[test]
fn real_clip_via_flv_decodes_cleanly_and_identically() {
    if !ffmpeg_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("livesky-flv-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let clip = concat!(env!("CARGO_MANIFEST_DIR"), "/../livesky/assets/demo.ts");
    let (flv, remuxed) = (dir.join("clip.flv"), dir.join("remuxed.ts"));
    let (flv, remuxed) = (flv.to_str().unwrap(), remuxed.to_str().unwrap());
    run("ffmpeg", &["-nostdin", "-v", "error", "-y", "-i", clip, "-c", "copy", "-f", "flv", flv]);

    let file = std::fs::read(flv).unwrap();
    let mut m = FlvToTs::new();
    let mut out = Vec::new();
    for (tag_type, ts, body) in flv_tags(&file) {
        match tag_type {
            8 => m.audio(ts, body, &mut out).unwrap(),
            9 => m.video(ts, body, &mut out).unwrap(),
            _ => {}
        }
    }
    std::fs::write(remuxed, &out).unwrap();
    let s = m.stats();
    assert_eq!((s.video_frames, s.keyframes, s.dropped_before_config), (400, 8, 0), "{s:?}");

    let check = run("ffmpeg", &["-nostdin", "-v", "error", "-i", remuxed, "-f", "null", "-"]);
    assert_eq!(String::from_utf8_lossy(&check.stderr), "", "ffmpeg complains about the remuxed TS");
    let (original, ours) = (decoded_frame_hashes(clip), decoded_frame_hashes(remuxed));
    assert!(original.len() > 1000, "{} frames", original.len());
    assert_eq!(original, ours, "decoded video and audio differ from the original");

    let (drafts, chunker) = chunk(&out);
    assert_eq!(drafts.len(), 400);
    assert_eq!(drafts.iter().filter(|d| d.keyframe).count(), 8);
    assert_eq!(chunker.stats().discontinuities, 0);
    let _ = std::fs::remove_dir_all(&dir);
}
