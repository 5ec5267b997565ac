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

#[test]
fn live_goes_always_bursts_go_with_the_budget_left_earliest_joiner_first() {
    let t0 = Instant::now();
    let mut ring = Ring { first: 0, last: 100, len: 1000 };
    // 20 kB a second: a 50-chunk burst takes 2.5 s of budget.
    let mut f = feeder(20_000.0);
    f.serve(t0, ConnId(1), 0b1111, Some(2_000), 0, &ring);
    f.serve(t0, ConnId(2), 0b0001, Some(2_000), 0, &ring);
    let first = drain(&mut f);
    assert!(first.iter().all(|s| s.conn == ConnId(1) && s.kind == Kind::Burst), "{first:?}");
    assert_eq!(first.len(), 20, "a second's budget");
    assert_eq!(first[0].seq, 50);
    let wake = f.poll_timeout().unwrap();
    assert!(wake > t0 && wake <= t0 + Duration::from_millis(60));
    // A new chunk goes to both at once, budget or not.
    ring.last = 101;
    f.new_chunk(t0, 100, &ring);
    let live: Vec<_> = drain(&mut f).into_iter().filter(|s| s.kind == Kind::Live).collect();
    assert_eq!(live.iter().map(|s| (s.conn, s.seq)).collect::<Vec<_>>(), [(ConnId(1), 100), (ConnId(2), 100)]);
    // Later, the budget refilled: client 1's burst runs out, then client 2's.
    let mut sent = Vec::new();
    for ms in (100..10_000).step_by(100) {
        f.handle_timeout(t0 + Duration::from_millis(ms), &ring);
        sent.extend(drain(&mut f));
    }
    let bursts: Vec<_> = sent.iter().filter(|s| s.kind == Kind::Burst).collect();
    let one = bursts.iter().filter(|s| s.conn == ConnId(1)).count();
    let two = bursts.iter().filter(|s| s.conn == ConnId(2)).count();
    assert_eq!((20 + one, two), (51, 51), "both whole bursts, 50..=100");
    let first_of_two = bursts.iter().position(|s| s.conn == ConnId(2)).unwrap();
    assert!(bursts[..first_of_two].iter().all(|s| s.conn == ConnId(1)), "client 1's burst first");
    assert_eq!(f.poll_timeout(), None, "nothing waits on the budget");
}

#[test]
fn backfill_resends_the_newest_chunks_of_the_substreams_taken_over() {
    let t0 = Instant::now();
    let ring = Ring { first: 0, last: 100, len: 1000 };
    let mut f = feeder(1.0);
    f.serve(t0, ConnId(7), 0b0100, None, 0b0100, &ring);
    let sent = drain(&mut f);
    assert!(sent.iter().all(|s| s.kind == Kind::Backfill && s.seq % 4 == 2));
    // The last 2 s of media (50 chunks of 40 ms: 50..=100), substream 2.
    assert_eq!(sent.first().map(|s| s.seq), Some(50));
    assert_eq!(sent.len(), 13);
}

#[test]
fn a_burst_whose_start_was_evicted_goes_on_from_what_is_held_and_forgotten_clients_get_nothing() {
    let t0 = Instant::now();
    let mut ring = Ring { first: 0, last: 100, len: 1000 };
    let mut f = feeder(5_000.0);
    f.serve(t0, ConnId(1), 0, Some(4_000), 0, &ring);
    assert_eq!(drain(&mut f).len(), 5);
    ring.first = 80;
    f.handle_timeout(t0 + Duration::from_secs(1), &ring);
    assert_eq!(drain(&mut f).first().map(|s| s.seq), Some(80));
    f.forget(ConnId(1));
    f.handle_timeout(t0 + Duration::from_secs(10), &ring);
    ring.last = 101;
    f.new_chunk(t0 + Duration::from_secs(10), 101, &ring);
    assert!(drain(&mut f).is_empty());
}
