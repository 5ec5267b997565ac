//! Exponential backoff for every retry loop (upstream links, the MC link, origin pulls, SRT
//! callers and listeners): start at `min`, double after each failure up to `max`, start over after
//! a success. Pure arithmetic: the caller sleeps.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max: max.max(min), current: min }
    }

    /// The wait before the next attempt; the one after is twice as long (at most `max`).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        d
    }

    /// The wait the next [`Backoff::next_delay`] returns.
    pub fn peek(&self) -> Duration {
        self.current
    }

    /// After a success: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.current = self.min;
    }

    /// Waits the longest from now on (e.g. after a refusal that retrying soon will not change).
    pub fn hold_off(&mut self) {
        self.current = self.max;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_its_cap_and_starts_over_after_a_success() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        let got: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(got, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        b.reset();
        assert_eq!(b.next_delay(), ms(100));
        b.hold_off();
        assert_eq!(b.peek(), ms(500));
    }
}
