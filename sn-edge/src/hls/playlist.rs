//! The live playlist's text: RFC 8216 media playlist, plus RFC 8216bis low-latency tags
//! (`EXT-X-SERVER-CONTROL`, `EXT-X-PART-INF`, `EXT-X-PART`, `EXT-X-PRELOAD-HINT`) when parts are on.

use std::fmt::Write;

use super::{Part, Segmenter};

/// Players of the low-latency playlist sit this many part targets behind its end (RFC 8216bis
/// asks for at least two; Apple's rules and hls.js use three).
const PART_HOLD_BACK_PARTS: u64 = 3;
/// Parts are listed for the segments in this many target durations from the end (RFC 8216bis:
/// "at least" the last three; older ones "SHOULD be removed").
const PARTS_LISTED_TARGETS: u64 = 3;

fn secs(t90k: u64) -> f64 {
    t90k as f64 / 90_000.0
}

pub(super) fn render(s: &Segmenter) -> Option<String> {
    if s.done.is_empty() {
        return None;
    }
    let listed = s.done.len().min(s.cfg.window);
    let hidden = s.done.len() - listed;
    let disc_seq = s.dropped_discontinuities + s.done.iter().take(hidden).filter(|g| g.discontinuity).count() as u64;
    // The target never shrinks, as RFC 8216 requires it to stay constant for the playlist.
    let target = s.max_duration_90k.div_ceil(90_000);
    let low_latency = s.cfg.part_90k > 0;
    let mut out = String::with_capacity(256 + listed * if low_latency { 300 } else { 40 });
    out.push_str("#EXTM3U\n");
    if low_latency {
        let part = secs(s.cfg.part_90k);
        let _ = write!(
            out,
            "#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:{target}\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3},HOLD-BACK={:.3}\n\
             #EXT-X-PART-INF:PART-TARGET={part:.3}\n",
            part * PART_HOLD_BACK_PARTS as f64,
            (3 * target) as f64,
        );
    } else {
        let _ = write!(out, "#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n");
    }
    let _ = write!(out, "#EXT-X-MEDIA-SEQUENCE:{}\n#EXT-X-DISCONTINUITY-SEQUENCE:{disc_seq}\n", s.done[hidden].msn);
    // Parts are listed for the segments that end within the last few target durations.
    let open_span = s.open.as_ref().map_or(0, |o| o.last_ts - o.start_ts);
    let mut from_end = open_span;
    let mut with_parts = 0;
    for g in s.done.iter().rev().take(listed) {
        if from_end >= PARTS_LISTED_TARGETS * target * 90_000 {
            break;
        }
        with_parts += 1;
        from_end += g.duration_90k;
    }
    for (i, g) in s.done.iter().skip(hidden).enumerate() {
        if g.discontinuity {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if i == 0 || g.discontinuity {
            date_time(&mut out, g.ingest_ms);
        }
        if low_latency && i + with_parts >= listed {
            parts(&mut out, g.msn, &g.parts);
        }
        let _ = write!(out, "#EXTINF:{:.3},\n{}.ts\n", secs(g.duration_90k), g.msn);
    }
    if s.ended {
        out.push_str("#EXT-X-ENDLIST\n");
    } else if low_latency {
        let (msn, next) = match &s.open {
            Some(o) => {
                if o.discontinuity {
                    out.push_str("#EXT-X-DISCONTINUITY\n");
                    date_time(&mut out, o.ingest_ms);
                }
                parts(&mut out, o.msn, &o.parts);
                (o.msn, o.parts.len())
            }
            None => (s.next_msn, 0),
        };
        let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{msn}.{next}.ts\"");
    }
    Some(out)
}

fn parts(out: &mut String, msn: u64, parts: &[std::sync::Arc<Part>]) {
    for (i, p) in parts.iter().enumerate() {
        let _ = write!(out, "#EXT-X-PART:DURATION={:.3},URI=\"{msn}.{i}.ts\"", secs(p.duration_90k));
        out.push_str(if p.independent { ",INDEPENDENT=YES\n" } else { "\n" });
    }
}

/// `#EXT-X-PROGRAM-DATE-TIME` in ISO 8601 UTC with milliseconds.
fn date_time(out: &mut String, unix_ms: u64) {
    let (secs_of_day, days) = ((unix_ms / 1000) % 86_400, (unix_ms / 1000 / 86_400) as i64);
    let (y, m, d) = proto::calendar::civil_from_days(days);
    let _ = writeln!(
        out,
        "#EXT-X-PROGRAM-DATE-TIME:{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60,
        unix_ms % 1000
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_iso_8601_utc() {
        let mut out = String::new();
        date_time(&mut out, 0);
        date_time(&mut out, 951_782_400_123); // 2000-02-29 00:00:00.123
        date_time(&mut out, 1_796_601_484_000);
        assert_eq!(
            out,
            "#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:00.000Z\n\
             #EXT-X-PROGRAM-DATE-TIME:2000-02-29T00:00:00.123Z\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-12-06T23:58:04.000Z\n"
        );
    }
}
