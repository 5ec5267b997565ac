//! A token bucket on caller-supplied time: peers cap their upload with it (LiveSky §3.2, 150 % of
//! the stream rate), edges bound their egress and the join rate per source address.

use std::time::Duration;

// std's `Instant` on native targets; `performance.now()` in a browser, where std's panics.
use web_time::Instant;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_sec: f64,
    depth: f64,
    tokens: f64,
    at: Option<Instant>,
}

impl TokenBucket {
    /// `rate_per_sec` tokens per second, holding at most `depth` (starts full).
    pub fn new(rate_per_sec: f64, depth: f64) -> Self {
        Self { rate_per_sec: rate_per_sec.max(0.0), depth: depth.max(0.0), tokens: depth.max(0.0), at: None }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(at) = self.at {
            let dt = now.saturating_duration_since(at).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate_per_sec).min(self.depth);
        }
        self.at = Some(now);
    }

    /// Takes `n` tokens if there are that many.
    pub fn try_take(&mut self, now: Instant, n: f64) -> bool {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens even if that leaves a debt (traffic that must go now, e.g. live push).
    pub fn force_take(&mut self, now: Instant, n: f64) {
        self.refill(now);
        self.tokens -= n;
    }

    /// When `n` tokens will be available (now, if they are).
    pub fn ready_at(&mut self, now: Instant, n: f64) -> Instant {
        self.refill(now);
        if self.tokens >= n || self.rate_per_sec == 0.0 {
            return now;
        }
        now + Duration::from_secs_f64((n - self.tokens) / self.rate_per_sec)
    }

    /// Takes `n` tokens once the bucket holds them, or once it is full if `n` is more than it
    /// can ever hold (the rest becomes a debt): a unit larger than the depth still goes, paced.
    pub fn try_take_oversized(&mut self, now: Instant, n: f64) -> bool {
        let now_part = n.min(self.depth);
        if !self.try_take(now, now_part) {
            return false;
        }
        self.tokens -= n - now_part;
        true
    }

    /// When [`Self::try_take_oversized`] will take `n`.
    pub fn ready_at_oversized(&mut self, now: Instant, n: f64) -> Instant {
        self.ready_at(now, n.min(self.depth))
    }

    /// New rate and depth from `now` on; what the bucket holds (or owes) stays, within the depth.
    pub fn set_rate(&mut self, now: Instant, rate_per_sec: f64, depth: f64) {
        self.refill(now);
        self.rate_per_sec = rate_per_sec.max(0.0);
        self.depth = depth.max(0.0);
        self.tokens = self.tokens.min(self.depth);
    }

    pub fn tokens(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_at_the_rate_up_to_the_depth() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, 500.0);
        assert!(b.try_take(t0, 500.0));
        assert!(!b.try_take(t0, 1.0));
        assert!(b.try_take(t0 + Duration::from_millis(100), 100.0));
        assert!(!b.try_take(t0 + Duration::from_millis(100), 1.0));
        assert_eq!(b.tokens(t0 + Duration::from_secs(10)), 500.0, "capped at depth");
        b.force_take(t0 + Duration::from_secs(10), 800.0);
        assert_eq!(b.ready_at(t0 + Duration::from_secs(10), 100.0), t0 + Duration::from_millis(10_400));
    }

    /// A 1 Mbit/s uplink's bucket holds 125 kB; a 4K keyframe chunk (or a simulated second of a
    /// 3 Mbit/s stream) is bigger: it waited for tokens the bucket can never hold, for ever.
    #[test]
    fn a_unit_larger_than_the_depth_goes_once_the_bucket_is_full_and_is_paid_for() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, 500.0);
        assert!(b.try_take(t0, 200.0));
        assert!(!b.try_take_oversized(t0, 1500.0), "not full yet");
        assert_eq!(b.ready_at_oversized(t0, 1500.0), t0 + Duration::from_millis(200));
        assert!(b.try_take_oversized(t0 + Duration::from_millis(200), 1500.0));
        // 1000 owed: the next small unit waits a second longer.
        assert_eq!(b.ready_at(t0 + Duration::from_millis(200), 10.0), t0 + Duration::from_millis(1_210));
    }

    #[test]
    fn a_new_rate_applies_from_then_on() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, 1000.0);
        assert!(b.try_take(t0, 1000.0));
        b.set_rate(t0, 100.0, 500.0);
        assert_eq!(b.ready_at(t0, 50.0), t0 + Duration::from_millis(500));
        assert!((b.tokens(t0 + Duration::from_secs(10)) - 500.0).abs() < 1e-9, "capped at the new depth");
    }
}
