use super::*;
use crate::psi::tests::{pat_packet, pmt_packet};
use crate::resync_all;
use crate::ts::tests::packet;

const PMT: u16 = 0x1000;
const VIDEO: u16 = 0x100;
const AUDIO: u16 = 0x101;

pub(crate) const DEMO_CLIP: &[u8] = include_bytes!("../../../livesky/assets/demo.ts");

/// A PES-start packet with PTS = DTS = `ts90k` and optionally the random-access flag.
fn pes_start(pid: u16, cc: u8, ts90k: u64, rai: bool) -> Packet {
    let mut p = packet(pid, cc);
    p[1] |= 0x40;
    p[3] = 0x30 | (cc & 0x0f);
    p[4] = 1;
    p[5] = if rai { 0x40 } else { 0 };
    let pes = [0u8, 0, 1, 0xe0, 0, 0, 0x80, 0xc0, 10];
    p[6..15].copy_from_slice(&pes);
    for field in [15usize, 20] {
        p[field] = if field == 15 { 0x31 } else { 0x11 };
        p[field + 1] = 0;
        p[field + 2] = 1;
        p[field + 3] = 0;
        p[field + 4] = 1;
    }
    ts::shift_pes_timestamps(&mut p, ts90k);
    assert_eq!(ts::pes_timestamps(&p), (Some(ts90k), Some(ts90k)));
    p
}

fn run(chunker: &mut Chunker, packets: &[Packet]) -> Vec<ChunkDraft> {
    let mut out: Vec<ChunkDraft> = packets.iter().filter_map(|p| chunker.push(p)).collect();
    out.extend(chunker.finish());
    out
}

fn pids(payload: &[u8]) -> Vec<u16> {
    payload.chunks_exact(188).map(|p| ts::pid(p.try_into().unwrap())).collect()
}

fn assert_psi_continuity(ts_bytes: &[u8], pmt_pid: u16) {
    let mut last = [None::<u8>; 2];
    for p in ts_bytes.chunks_exact(188) {
        let p: &Packet = p.try_into().unwrap();
        let slot = match ts::pid(p) {
            PID_PAT => 0,
            x if x == pmt_pid => 1,
            _ => continue,
        };
        if let Some(prev) = last[slot] {
            assert_eq!(ts::cc(p), (prev + 1) & 0x0f, "PSI continuity");
        }
        last[slot] = Some(ts::cc(p));
    }
}

#[test]
fn demo_clip_cuts_one_chunk_per_frame_with_psi_at_keyframes() {
    let packets = resync_all(DEMO_CLIP).unwrap();
    let mut c = Chunker::new(ChunkerConfig::default(), None);
    let chunks = run(&mut c, &packets);
    // 16 s at 25 fps with a 2 s GOP.
    assert_eq!(chunks.len(), 400);
    assert_eq!(chunks.iter().filter(|c| c.keyframe).count(), 8);
    assert!(chunks[0].keyframe);
    assert_eq!(chunks[0].media_ts, 0);
    let pmt_pid = c.psi.pmt_pid.unwrap();
    for ch in chunks.iter().filter(|c| c.keyframe) {
        assert_eq!(&pids(&ch.payload)[..2], &[PID_PAT, pmt_pid], "keyframe chunk starts with PAT, PMT");
    }
    for w in chunks.windows(2) {
        assert_eq!(w[1].media_ts - w[0].media_ts, 3600, "one frame apart");
    }
    assert!(chunks.iter().all(|c| !c.discontinuity));
    // Apart from PSI continuity counters, the chunks are the feed, byte for byte, in order.
    let strip = |bytes: &[u8]| -> Vec<u8> {
        bytes
            .chunks_exact(188)
            .filter(|p| {
                let pid = ts::pid((*p).try_into().unwrap());
                pid != PID_PAT && pid != pmt_pid
            })
            .flatten()
            .copied()
            .collect()
    };
    let joined: Vec<u8> = chunks.iter().flat_map(|c| c.payload.iter().copied()).collect();
    // ffmpeg writes an SDT before its first PAT; packets before the PMT cannot be classified.
    assert_eq!(c.stats().dropped_before_psi, 1);
    let (got, want) = (strip(&joined), strip(&DEMO_CLIP[188..]));
    assert!(got == want, "chunked stream differs from the feed ({} vs {} bytes)", got.len(), want.len());
    assert_eq!(c.stats().psi_inserted, 0, "ffmpeg sends PAT/PMT before each keyframe itself");
    assert_psi_continuity(&joined, pmt_pid);
}

#[test]
fn keyframe_without_tables_gets_them_inserted_with_continuous_counters() {
    let mut feed = vec![pat_packet(0, PMT), pmt_packet(0, PMT, Some(VIDEO), AUDIO)];
    for frame in 0..6u64 {
        let key = frame % 3 == 0;
        feed.push(pes_start(VIDEO, frame as u8, 90_000 + frame * 3600, key));
        feed.push(packet(VIDEO, 0));
        feed.push(pes_start(AUDIO, frame as u8, 90_000 + frame * 3600, false));
    }
    let mut c = Chunker::new(ChunkerConfig::default(), None);
    let chunks = run(&mut c, &feed);
    assert_eq!(chunks.len(), 6);
    assert_eq!(chunks.iter().map(|c| c.keyframe).collect::<Vec<_>>(), [true, false, false, true, false, false]);
    assert_eq!(pids(&chunks[3].payload)[..3], [PID_PAT, PMT, VIDEO]);
    assert_eq!(c.stats().psi_inserted, 1, "only the second keyframe lacked tables");
    let joined: Vec<u8> = chunks.iter().flat_map(|c| c.payload.iter().copied()).collect();
    assert_psi_continuity(&joined, PMT);
}

#[test]
fn packets_before_the_pmt_are_dropped_and_counted() {
    let feed = [
        packet(VIDEO, 0),
        packet(AUDIO, 0),
        pat_packet(0, PMT),
        pmt_packet(0, PMT, Some(VIDEO), AUDIO),
        pes_start(VIDEO, 1, 0, true),
    ];
    let mut c = Chunker::new(ChunkerConfig::default(), None);
    let chunks = run(&mut c, &feed);
    assert_eq!(c.stats().dropped_before_psi, 2);
    assert_eq!(chunks.len(), 1);
    assert_eq!(pids(&chunks[0].payload), [PID_PAT, PMT, VIDEO]);
}

#[test]
fn audio_only_feed_is_sliced_every_100ms_with_a_keyframe_each_second() {
    let mut feed = vec![pat_packet(0, PMT), pmt_packet(0, PMT, None, AUDIO)];
    // AAC frames of 1920 ticks (1024 samples at 48 kHz) for 3 s.
    for i in 0..141u64 {
        feed.push(pes_start(AUDIO, i as u8, i * 1920, false));
    }
    let mut c = Chunker::new(ChunkerConfig::default(), None);
    let chunks = run(&mut c, &feed);
    let durations: Vec<u64> = chunks.windows(2).map(|w| w[1].media_ts - w[0].media_ts).collect();
    assert!(durations.iter().all(|&d| (9_000..9_000 + 1920).contains(&d)), "{durations:?}");
    let keys: Vec<u64> = chunks.iter().filter(|c| c.keyframe).map(|c| c.media_ts).collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
    for ch in chunks.iter().filter(|c| c.keyframe) {
        assert_eq!(pids(&ch.payload)[..2], [PID_PAT, PMT]);
    }
}

#[test]
fn oversized_access_unit_is_cut_into_bounded_continuations() {
    let cfg = ChunkerConfig { max_chunk_bytes: 10 * 188, ..ChunkerConfig::default() };
    let mut feed = vec![pat_packet(0, PMT), pmt_packet(0, PMT, Some(VIDEO), AUDIO), pes_start(VIDEO, 0, 0, true)];
    feed.extend((0..35).map(|i| packet(VIDEO, i as u8)));
    feed.push(pes_start(VIDEO, 4, 3600, false));
    let mut c = Chunker::new(cfg, None);
    let chunks = run(&mut c, &feed);
    assert!(chunks.iter().all(|c| c.payload.len() <= 10 * 188));
    assert_eq!(chunks.iter().map(|c| c.payload.len()).sum::<usize>(), feed.len() * 188);
    assert!(chunks[0].keyframe && !chunks[1].keyframe);
    assert!(c.stats().cut_by_size >= 3);
}

#[test]
fn timestamp_jumps_and_takeovers_keep_media_time_monotonic() {
    let mut feed = vec![pat_packet(0, PMT), pmt_packet(0, PMT, Some(VIDEO), AUDIO)];
    feed.push(pes_start(VIDEO, 0, 1_000_000, true));
    feed.push(pes_start(VIDEO, 1, 1_003_600, false));
    feed.push(pes_start(VIDEO, 2, 50, true)); // encoder restarted
    feed.push(pes_start(VIDEO, 3, 3650, false));
    let mut c = Chunker::new(ChunkerConfig::default(), Some(7_200_000));
    let chunks = run(&mut c, &feed);
    let ts: Vec<u64> = chunks.iter().map(|c| c.media_ts).collect();
    assert_eq!(ts, [7_203_600, 7_207_200, 7_210_800, 7_214_400]);
    assert_eq!(chunks.iter().map(|c| c.discontinuity).collect::<Vec<_>>(), [true, false, true, false]);
}

#[test]
fn garbage_pmt_pid_packets_do_not_grow_memory() {
    let mut c = Chunker::new(ChunkerConfig::default(), None);
    c.push(&pat_packet(0, PMT));
    for i in 0..10_000u32 {
        c.push(&packet(PMT, i as u8));
    }
    assert!(c.pmt_building.len() <= 8);
}

#[test]
fn av_drift_is_newest_video_minus_newest_audio_across_the_33_bit_wrap() {
    let mut c = Chunker::new(ChunkerConfig::default(), None);
    let psi = [pat_packet(0, PMT), pmt_packet(0, PMT, Some(VIDEO), AUDIO)];
    run(&mut c, &psi);
    assert_eq!(c.av_drift_ms(), None, "no timestamps yet");
    let mut c = Chunker::new(ChunkerConfig::default(), None);
    let wrap = 1u64 << 33;
    // Video 200 ms ahead of audio, then audio just before the wrap and video just after it.
    let packets = [psi[0], psi[1], pes_start(VIDEO, 0, 90_000 + 18_000, true), pes_start(AUDIO, 0, 90_000, false)];
    for p in &packets {
        c.push(p);
    }
    assert_eq!(c.av_drift_ms(), Some(200));
    c.push(&pes_start(AUDIO, 1, wrap - 9_000, false));
    c.push(&pes_start(VIDEO, 1, 9_000, false));
    assert_eq!(c.av_drift_ms(), Some(200), "100 ms after the wrap against 100 ms before it");
    c.push(&pes_start(AUDIO, 2, 27_000, false));
    assert_eq!(c.av_drift_ms(), Some(-200), "audio ahead");
}
