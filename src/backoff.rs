//! How long to wait before trying again: the one pacing rule for everything the process
//! retries itself (reconnecting to PostgreSQL or Asterisk, leasing, recording outcomes).
//!
//! A job's own retries are timed by the database clock instead (`dialout_retry_delay`
//! in the migrations), like leases and rescue, so replicas with skewed clocks agree.

use std::time::Duration;

/// Exponential backoff: `min * 2^(n-1)` before try `n` (from 1), capped at `max`, the
/// upper half jittered so a fleet of replicas does not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
        }
    }

    /// From a `(min_ms, max_ms)` pair of settings.
    pub fn from_millis(min_ms: u64, max_ms: u64) -> Self {
        Self::new(Duration::from_millis(min_ms), Duration::from_millis(max_ms))
    }

    /// The wait before retry number `n` (from 1; 0 counts as 1).
    pub fn delay(&self, n: u32) -> Duration {
        let doublings = n.saturating_sub(1).min(30);
        let full = self
            .min
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.max);
        let half = full / 2;
        let jitter_ms = rand::random_range(0..=half.as_millis().max(1) as u64);
        (half + Duration::from_millis(jitter_ms)).min(self.max)
    }

    /// A counter of failures in a row, for a loop that retries until it succeeds.
    pub fn pacer(&self) -> Pacer {
        Pacer {
            backoff: *self,
            failures: 0,
        }
    }
}

/// Failures in a row of one retry loop: [`Pacer::failed`] gives the next wait,
/// [`Pacer::succeeded`] starts over.
#[derive(Debug, Clone)]
pub struct Pacer {
    backoff: Backoff,
    failures: u32,
}

impl Pacer {
    /// One more failure: how long to wait before the next try.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.backoff.delay(self.failures)
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_and_jittered_in_the_upper_half() {
        let b = Backoff::from_millis(100, 5000);
        for n in 1..40u32 {
            let full = Duration::from_millis(100)
                .saturating_mul(2u32.saturating_pow(n - 1))
                .min(Duration::from_secs(5));
            for _ in 0..20 {
                let d = b.delay(n);
                assert!(d >= full / 2 && d <= full, "try {n}: {d:?}");
            }
        }
        assert!(b.delay(0) <= Duration::from_millis(100));
    }

    #[test]
    fn a_pacer_counts_failures_and_starts_over_on_success() {
        let mut p = Backoff::from_millis(100, 100_000).pacer();
        assert!(p.failed() <= Duration::from_millis(100));
        p.failed();
        let third = p.failed();
        assert!(third >= Duration::from_millis(200), "{third:?}");
        assert_eq!(p.failures(), 3);
        p.succeeded();
        assert!(p.failed() <= Duration::from_millis(100));
    }
}
