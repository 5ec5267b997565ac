use std::time::Duration;

use super::*;

/// Chunks `first..=last`, 40 ms each, a keyframe every 25, `len` bytes.
struct Ring {
    first: u64,
    last: u64,
    len: usize,
}

impl RecentChunks for Ring {
    fn first_seq(&self) -> Option<u64> {
        Some(self.first)
    }
    fn last_seq(&self) -> Option<u64> {
        Some(self.last)
    }
    fn meta(&self, seq: u64) -> Option<ChunkMeta> {
        (self.first..=self.last).contains(&seq).then(|| ChunkMeta {
            media_ts: seq * 3600,
            keyframe: seq.is_multiple_of(25),
            len: self.len,
        })
    }
}

fn feeder(bytes_per_sec: f64) -> Feeder {
    Feeder::new(FeederConfig::new(4, bytes_per_sec))
}

fn order(mask: u64, burst_ms: Option<u32>, backfill: u64) -> Order {
    Order { mask, burst_ms, backfill, backfill_from: None }
}

fn drain(f: &mut Feeder) -> Vec<Send> {
    std::iter::from_fn(|| f.poll_output()).collect()
}

#[test]
fn a_burst_starts_at_the_newest_keyframe_old_enough() {
    let ring = Ring { first: 0, last: 400, len: 1000 };
    // 2 s back from chunk 400 (16 s of media) is 350: the keyframe at or before it.
    assert_eq!(burst_start(&ring, 2_000), Some(350));
    assert_eq!(burst_start(&ring, 2_040), Some(325));
    // Longer than the ring holds: its oldest keyframe.
    assert_eq!(burst_start(&ring, 60_000), Some(0));
}

/// (conn, first seq, last seq, count) of each client's burst, in the order they went out.
fn bursts(sent: &[Send]) -> Vec<(ConnId, u64, u64, usize)> {
    let mut out: Vec<(ConnId, u64, u64, usize)> = Vec::new();
    for s in sent.iter().filter(|s| s.kind == Kind::Burst) {
        match out.last_mut() {
            Some(b) if b.0 == s.conn => {
                assert_eq!(s.seq, b.2 + 1, "a burst goes in seq order, no gap");
                b.2 = s.seq;
                b.3 += 1;
            }
            _ => out.push((s.conn, s.seq, s.seq, 1)),
        }
    }
    out
}

#[test]
fn a_burst_goes_whole_when_the_budget_carries_it_else_the_newest_start_run_goes_at_once() {
    let t0 = Instant::now();
    let mut ring = Ring { first: 0, last: 100, len: 1000 };
    // 50 kB a second; 2 s of media (50..=100) is 51 kB, the 1 s start run (75..=100) 26 kB.
    let mut f = Feeder::new(FeederConfig { start_ms: 1_000, ..FeederConfig::new(4, 50_000.0) });
    f.serve(t0, ConnId(1), order(0b1111, Some(2_000), 0), &ring);
    f.serve(t0, ConnId(2), order(0b0001, Some(2_000), 0), &ring);
    // Asking less than the start run gets the newest keyframe run all the same.
    f.serve(t0, ConnId(3), order(0b0001, Some(40), 0), &ring);
    let sent = drain(&mut f);
    assert_eq!(
        bursts(&sent),
        [(ConnId(1), 50, 100, 51), (ConnId(2), 75, 100, 26), (ConnId(3), 75, 100, 26)],
        "the first joiner's whole burst fits the budget within a second, the second's does not: it \
         gets the newest keyframe run at once, budget or not"
    );
    // A new chunk goes to every client fed its substream at once, deep in debt or not.
    ring.last = 101;
    f.new_chunk(t0, 100, &ring);
    let live: Vec<_> = drain(&mut f).into_iter().map(|s| (s.conn, s.seq, s.kind)).collect();
    assert_eq!(live, [(ConnId(1), 100, Kind::Live), (ConnId(2), 100, Kind::Live), (ConnId(3), 100, Kind::Live)]);
    // In debt by 56 kB (51 + 26 + 26 + 3 against 50), -31 kB at 0.5 s: the 52 kB burst would
    // take 1.66 s, so the short run again (27 kB); at 1.8 s the bucket holds 7 kB, enough within 1 s.
    f.serve(t0 + Duration::from_millis(500), ConnId(4), order(0, Some(2_000), 0), &ring);
    f.serve(t0 + Duration::from_millis(1_800), ConnId(5), order(0, Some(2_000), 0), &ring);
    let later = bursts(&drain(&mut f));
    assert_eq!(later, [(ConnId(4), 75, 101, 27), (ConnId(5), 50, 101, 52)]);
}

#[test]
fn backfill_resends_the_newest_chunks_of_the_substreams_taken_over() {
    let t0 = Instant::now();
    let ring = Ring { first: 0, last: 100, len: 1000 };
    let mut f = feeder(1.0);
    f.serve(t0, ConnId(7), order(0b0100, None, 0b0100), &ring);
    let sent = drain(&mut f);
    assert!(sent.iter().all(|s| s.kind == Kind::Backfill && s.seq % 4 == 2));
    // The last 2 s of media (50 chunks of 40 ms: 50..=100), substream 2.
    assert_eq!(sent.first().map(|s| s.seq), Some(50));
    assert_eq!(sent.len(), 13);
}

#[test]
fn a_backfill_resends_from_the_first_chunk_the_client_misses_at_most_15_s_back() {
    let t0 = Instant::now();
    let ring = Ring { first: 0, last: 400, len: 1000 };
    let sent = |from: Option<u64>| {
        let mut f = feeder(1.0);
        f.serve(t0, ConnId(7), Order { backfill_from: from, ..order(0b0100, None, 0b0100) }, &ring);
        let seqs: Vec<u64> = drain(&mut f).iter().map(|s| s.seq).collect();
        assert!(seqs.iter().all(|s| s % 4 == 2), "{seqs:?}");
        (seqs.first().copied(), seqs.len())
    };
    assert_eq!(sent(None), (Some(350), 13), "the last 2 s");
    assert_eq!(sent(Some(200)), (Some(202), 50), "from what it misses");
    assert_eq!(sent(Some(5)), (Some(26), 94), "no more than 15 s back");
}

#[test]
fn forgotten_clients_get_nothing_and_an_empty_ring_sends_no_burst() {
    let t0 = Instant::now();
    let mut ring = Ring { first: 0, last: 100, len: 1000 };
    let mut f = feeder(5_000.0);
    f.serve(t0, ConnId(1), order(0b1111, None, 0), &ring);
    f.forget(ConnId(1));
    ring.last = 101;
    f.new_chunk(t0 + Duration::from_secs(10), 101, &ring);
    assert!(drain(&mut f).is_empty());
    struct Empty;
    impl RecentChunks for Empty {
        fn first_seq(&self) -> Option<u64> {
            None
        }
        fn last_seq(&self) -> Option<u64> {
            None
        }
        fn meta(&self, _: u64) -> Option<ChunkMeta> {
            None
        }
    }
    f.serve(t0, ConnId(2), order(0b1111, Some(15_000), 0b1111), &Empty);
    assert!(drain(&mut f).is_empty());
}
