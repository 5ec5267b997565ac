//! The segmenter's tests: cutting, windows, discontinuities, LL-HLS parts and blocking, and the
//! playlist rules of RFC 8216 / 8216bis and Apple's LL-HLS authoring rules checked over many streams.

use super::*;
use proto::{ChannelId, ChunkHeader};

/// 25 fps chunks, keyframe every `gop` frames.
fn chunk(seq: u64, gop: u64, flags: ChunkFlags) -> Chunk {
    let mut p = vec![0xffu8; 188];
    p[0] = 0x47;
    let mut f = flags;
    if seq.is_multiple_of(gop) {
        f.insert(ChunkFlags::KEYFRAME);
    }
    Chunk {
        header: ChunkHeader {
            channel: ChannelId::new("c").unwrap(),
            seq,
            ingest_ms: 1_796_601_484_000 + seq * 40,
            media_ts: 1_000_000 + seq * 3600,
            flags: f,
        },
        payload: Bytes::from(p),
        signature: None,
    }
}

fn text(s: &Segmenter) -> String {
    String::from_utf8(s.playlist().expect("a playlist").to_vec()).expect("UTF-8")
}

fn feed(s: &mut Segmenter, seqs: impl Iterator<Item = u64>, gop: u64) {
    for q in seqs {
        s.push(&chunk(q, gop, ChunkFlags::empty()));
    }
}

#[test]
fn cuts_at_keyframes_after_the_target_and_slides() {
    let mut s = Segmenter::new(SegmenterConfig::default());
    assert_eq!(s.playlist(), None);
    feed(&mut s, 0..=1000, 50); // 2 s GOP
    let pl = text(&s);
    assert!(pl.starts_with("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n"), "{pl}");
    assert_eq!(pl.matches("#EXTINF:2.000,").count(), 6, "{pl}");
    // 1000 frames = 20 segments done; the window lists the last 6 (14..=19).
    assert!(pl.contains("#EXT-X-MEDIA-SEQUENCE:14\n"), "{pl}");
    assert!(pl.ends_with("19.ts\n"));
    let seg = s.segment(19).unwrap();
    assert_eq!((seg.chunks, seg.body.len()), (50, 50 * 188));
    assert_eq!(&seg.etag[..], format!("\"19-{:x}-{:x}\"", 1_000_000 + 950 * 3600, 50 * 188).as_bytes());
    assert!(s.segment(9).is_none(), "older than window + extra");
    assert!(s.segment(10).is_some(), "kept a little past the window");
    assert!(s.segment(20).is_none(), "still open");
}

#[test]
fn short_gops_are_grouped_long_gops_raise_the_target() {
    let mut s = Segmenter::new(SegmenterConfig::default());
    feed(&mut s, 0..=200, 25); // 1 s GOP → 2 s segments
    assert!(text(&s).contains("#EXTINF:2.000,"));
    let mut s = Segmenter::new(SegmenterConfig::default());
    feed(&mut s, 0..=250, 125); // 5 s GOP
    let pl = text(&s);
    assert!(pl.contains("#EXT-X-TARGETDURATION:5\n") && pl.contains("#EXTINF:5.000,"), "{pl}");
}

#[test]
fn waits_for_a_keyframe_to_start() {
    let mut s = Segmenter::new(SegmenterConfig::default());
    feed(&mut s, 30..=150, 50);
    let seg = s.segment(0).unwrap();
    assert_eq!(seg.chunks, 50, "chunks before the first keyframe are not served");
}

#[test]
fn gaps_and_source_changes_are_discontinuities() {
    let mut s = Segmenter::new(SegmenterConfig { window: 3, keep_extra: 0, ..SegmenterConfig::default() });
    feed(&mut s, 0..=120, 50);
    feed(&mut s, 150..=260, 50); // 121..149 never arrived
    let pl = text(&s);
    assert_eq!(pl.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{pl}");
    assert!(pl.contains("#EXTINF:0.840,"), "closed early with its own length: {pl}");
    feed(&mut s, 261..=600, 50);
    let pl = text(&s);
    assert!(pl.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{pl}");
    assert!(!pl.contains("#EXT-X-DISCONTINUITY\n"));
    let mut s = Segmenter::new(SegmenterConfig::default());
    feed(&mut s, 0..=60, 50);
    s.push(&chunk(61, 61, ChunkFlags::DISCONTINUITY));
    feed(&mut s, 62..=200, 61);
    assert!(text(&s).contains("#EXT-X-DISCONTINUITY\n"));
}

#[test]
fn an_ended_broadcast_closes_its_last_segment_and_the_playlist() {
    let mut s = Segmenter::new(SegmenterConfig::default());
    feed(&mut s, 0..=120, 50);
    let before = s.segments();
    s.end();
    assert_eq!(s.segments(), before + 1, "the open segment is listed too");
    let pl = text(&s);
    assert!(pl.ends_with("#EXT-X-ENDLIST\n"), "{pl}");
    s.push(&chunk(121, 121, ChunkFlags::DISCONTINUITY | ChunkFlags::KEYFRAME));
    assert!(!text(&s).contains("ENDLIST"), "a new broadcast reopens the playlist");
}

#[test]
fn players_start_once_two_segments_are_whole_or_the_broadcast_is_over() {
    let mut s = Segmenter::new(SegmenterConfig::default());
    feed(&mut s, 0..=50, 50);
    assert!(s.playlist().is_some() && !s.startable(), "one segment: listed, not yet startable");
    feed(&mut s, 51..=100, 50);
    assert!(s.startable());
    let mut short = Segmenter::new(SegmenterConfig::default());
    feed(&mut short, 0..=60, 50);
    short.end();
    assert!(short.startable(), "an ended broadcast plays whatever it has");
}

fn low_latency() -> Segmenter {
    Segmenter::new(SegmenterConfig { part_90k: 45_000, ..SegmenterConfig::default() })
}

#[test]
fn parts_are_cut_at_chunks_within_the_part_target_and_listed_near_the_end() {
    let mut s = low_latency();
    feed(&mut s, 0..=1010, 50); // 20 segments done, the 21st has 10 frames
    let pl = text(&s);
    assert!(pl.starts_with("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n"), "{pl}");
    assert!(pl.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500,HOLD-BACK=6.000\n"), "{pl}");
    assert!(pl.contains("#EXT-X-PART-INF:PART-TARGET=0.500\n"), "{pl}");
    // 50 frames of 40 ms: parts of 12, 12, 12, 12 and 2 frames, the first independent.
    let seg = s.segment(19).unwrap();
    let durations: Vec<u64> = seg.parts.iter().map(|p| p.duration_90k).collect();
    assert_eq!(durations, [43_200, 43_200, 43_200, 43_200, 7_200]);
    assert_eq!(seg.parts.iter().map(|p| p.body.len()).sum::<usize>(), seg.body.len());
    assert_eq!(seg.parts.iter().filter(|p| p.independent).count(), 1);
    assert!(seg.parts[0].independent && seg.parts[0].body[..] == seg.body[..12 * 188]);
    assert!(pl.contains("#EXT-X-PART:DURATION=0.480,URI=\"19.0.ts\",INDEPENDENT=YES\n"), "{pl}");
    assert!(pl.contains("#EXT-X-PART:DURATION=0.080,URI=\"19.4.ts\"\n#EXTINF:2.000,\n19.ts\n"), "{pl}");
    // Parts for about the last three target durations only; the open segment's follow, then
    // the hint for its next part.
    assert!(pl.contains("\"17.0.ts\"") && !pl.contains("\"16.0.ts\""), "{pl}");
    assert!(pl.ends_with("19.ts\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"20.0.ts\"\n"), "10 frames: no part yet: {pl}");
    feed(&mut s, 1011..=1013, 50);
    let pl = text(&s);
    assert!(pl.ends_with("#EXT-X-PART:DURATION=0.480,URI=\"20.0.ts\",INDEPENDENT=YES\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"20.1.ts\"\n"), "{pl}");
    // The first listed segment carries its ingest wall-clock time.
    assert!(pl.contains("#EXT-X-MEDIA-SEQUENCE:14\n#EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXT-X-PROGRAM-DATE-TIME:2026-12-06T23:58:32.000Z\n"), "{pl}");
}

#[test]
fn blocking_requests_wait_for_the_part_or_segment_they_name() {
    let mut s = low_latency();
    assert_eq!(s.ready(0, None), Ready::Later, "no playlist yet");
    feed(&mut s, 0..=62, 50); // segment 0 done; segment 1 has part 0 (12 frames) open
    assert_eq!(s.ready(0, None), Ready::Now);
    assert_eq!(s.ready(1, Some(0)), Ready::Now);
    assert_eq!(s.ready(1, Some(1)), Ready::Later);
    assert_eq!(s.ready(1, None), Ready::Later, "segment 1 is not complete");
    assert_eq!(s.ready(2, Some(0)), Ready::Later);
    assert_eq!(s.ready(3, None), Ready::TooFar);
    assert!(matches!(s.part(1, 0), PartAt::Here(_)));
    assert!(matches!(s.part(1, 1), PartAt::Soon), "the hinted part");
    assert!(matches!(s.part(2, 0), PartAt::Soon));
    assert!(matches!(s.part(1, 9), PartAt::Never));
    assert!(matches!(s.part(0, 4), PartAt::Here(_)));
    assert!(matches!(s.part(0, 5), PartAt::Never), "segment 0 closed with five parts");
    let v = s.version();
    feed(&mut s, 63..=63, 50);
    assert_eq!(s.version(), v, "no part closed: nothing published");
    feed(&mut s, 64..=75, 50);
    assert!(s.version() > v);
    assert_eq!(s.ready(1, Some(1)), Ready::Now);
    s.end();
    assert_eq!(s.ready(2, Some(0)), Ready::Now, "an ended playlist answers at once");
    assert!(matches!(s.part(2, 0), PartAt::Never));
}

#[test]
fn plain_hls_has_no_low_latency_tags() {
    let mut s = Segmenter::new(SegmenterConfig::default());
    feed(&mut s, 0..=120, 50);
    let pl = text(&s);
    assert!(!pl.contains("PART") && !pl.contains("SERVER-CONTROL") && !pl.contains("PRELOAD"), "{pl}");
    assert!(s.segment(0).unwrap().parts.is_empty());
    assert!(matches!(s.part(2, 0), PartAt::Never));
}

/// A chunk at media time `ts`.
fn chunk_at(seq: u64, ts: u64, keyframe: bool) -> Chunk {
    let mut c = chunk(seq, u64::MAX, ChunkFlags::empty());
    c.header.media_ts = ts;
    if keyframe {
        c.header.flags.insert(ChunkFlags::KEYFRAME);
    }
    c
}

/// Attribute `name` of a tag line (`NAME=` after the `:` or a `,`).
fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = [':', ','].iter().find_map(|sep| line.find(&format!("{sep}{name}=")))?;
    let rest = &line[at + name.len() + 2..];
    match rest.strip_prefix('"') {
        Some(q) => q.split('"').next(),
        None => rest.split(',').next(),
    }
}

fn secs(line: &str, name: &str) -> f64 {
    attr(line, name).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} in {line}"))
}

/// The rules a low-latency playlist must keep, as RFC 8216 / 8216bis and Apple's HLS authoring
/// specification (the rules `mediastreamvalidator` checks) write them.
fn check_low_latency_rules(pl: &str) {
    let tag = |name: &str| pl.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {pl}"));
    let target: f64 = tag("#EXT-X-TARGETDURATION:")[22..].parse().unwrap();
    let part_target = secs(tag("#EXT-X-PART-INF:"), "PART-TARGET");
    let control = tag("#EXT-X-SERVER-CONTROL:");
    assert_eq!(attr(control, "CAN-BLOCK-RELOAD"), Some("YES"));
    // 8216bis 4.4.3.8: PART-HOLD-BACK at least twice the part target (Apple: at least three
    // times); HOLD-BACK at least three target durations.
    assert!(secs(control, "PART-HOLD-BACK") >= 3.0 * part_target - 1e-9, "{control}");
    assert!(secs(control, "HOLD-BACK") >= 3.0 * target, "{control}");
    let mut msn: u64 = tag("#EXT-X-MEDIA-SEQUENCE:")[22..].parse().unwrap();
    let mut parts: Vec<(u64, u64, f64, bool)> = Vec::new();
    let mut with_parts = Vec::new();
    let mut hint = None;
    for line in pl.lines() {
        if line.starts_with("#EXT-X-PART:") {
            let p = line;
            let uri = attr(p, "URI").unwrap();
            let (m, i) = uri.trim_end_matches(".ts").split_once('.').unwrap();
            let (m, i): (u64, u64) = (m.parse().unwrap(), i.parse().unwrap());
            let d = secs(p, "DURATION");
            // 8216bis 4.4.4.9: a part is no longer than the part target.
            assert!(d > 0.0 && d <= part_target + 1e-9, "{line}");
            assert_eq!((m, i), (msn, parts.len() as u64), "parts are numbered in order: {line}\n{pl}");
            parts.push((m, i, d, attr(p, "INDEPENDENT") == Some("YES")));
        } else if let Some(d) = line.strip_prefix("#EXTINF:") {
            let d: f64 = d.trim_end_matches(',').parse().unwrap();
            // 8216 4.3.3.1: each duration, rounded, is at most the target.
            assert!(d.round() <= target, "{line} over the target {target}");
            if !parts.is_empty() {
                // The parts of a segment are the segment.
                let sum: f64 = parts.iter().map(|p| p.2).sum();
                assert!((sum - d).abs() < 0.001 * parts.len() as f64 + 1e-9, "parts {sum} vs segment {d}\n{pl}");
                check_parts(&parts, part_target, true);
                with_parts.push(msn);
            }
            parts.clear();
        } else if let Some(uri) = line.strip_suffix(".ts").filter(|l| !l.starts_with('#')) {
            assert_eq!(uri.parse::<u64>().unwrap(), msn, "segments are numbered in order\n{pl}");
            msn += 1;
        } else if line.starts_with("#EXT-X-PRELOAD-HINT:") {
            assert_eq!(attr(line, "TYPE"), Some("PART"));
            hint = attr(line, "URI").map(str::to_string);
        }
    }
    check_parts(&parts, part_target, false);
    // Parts are listed for the last segment at least, and the hint names the next part.
    assert!(with_parts.last() == Some(&(msn - 1)), "the newest segment lists its parts\n{pl}");
    assert_eq!(hint, Some(format!("{msn}.{}.ts", parts.len())), "{pl}");
}

/// Apple's authoring rules: a part other than a segment's last lasts at least 85 % of the part
/// target, and a segment starts with an independent part.
fn check_parts(parts: &[(u64, u64, f64, bool)], part_target: f64, closed: bool) {
    if let Some(first) = parts.first() {
        assert!(first.3, "a segment's first part is independent: {parts:?}");
    }
    let whole = if closed { parts.len().saturating_sub(1) } else { parts.len() };
    for p in &parts[..whole] {
        assert!(p.2 >= 0.85 * part_target - 1e-9, "part {p:?} under 85 % of {part_target}");
    }
}

#[test]
fn low_latency_playlists_keep_the_written_rules_over_many_streams() {
    // Frame steps: 25, 30 and 60 fps video; audio-only 100 ms slices. GOPs under, at and over the
    // segment target; part targets from a third of a second to a second.
    let mut checked = 0;
    for step in [3600u64, 3000, 1500, 9000] {
        for gop_90k in [90_000u64, 180_000, 270_000, 450_000] {
            for part_90k in [30_000u64, 45_000, 90_000] {
                let mut s = Segmenter::new(SegmenterConfig { part_90k, ..SegmenterConfig::default() });
                let gop = gop_90k / step;
                let mut seq = 0;
                for i in 0..(60 * 90_000 / step) {
                    // A gap of a few chunks half way: a discontinuity, a new segment.
                    if i == 30 * 90_000 / step {
                        seq += 5;
                    }
                    s.push(&chunk_at(seq, 1_000_000 + i * step, i % gop == 0));
                    seq += 1;
                    if s.playlist().is_some() {
                        check_low_latency_rules(&text(&s));
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 10_000, "{checked} playlists checked");
}
