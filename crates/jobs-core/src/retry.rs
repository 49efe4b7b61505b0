//! How long a failed attempt waits before the next one.

use std::time::Duration;

/// Exponential backoff with jitter: attempt n waits `base * 2^(n-1)`, capped at `cap`,
/// then scaled by a random factor in `[1 - jitter, 1]` so retries of a burst of
/// failures spread out instead of returning together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    /// Fraction of the delay that is randomized, 0.0..=1.0.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(3600),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (1-based).
    pub fn backoff(&self, attempt: i32) -> Duration {
        let exponent = attempt.clamp(1, 64) as u32 - 1;
        let factor = 2u32.checked_pow(exponent).unwrap_or(u32::MAX);
        let full = self
            .base
            .checked_mul(factor)
            .unwrap_or(self.cap)
            .min(self.cap);
        let jitter = self.jitter.clamp(0.0, 1.0);
        full.mul_f64(1.0 - jitter * fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_until_the_cap() {
        let policy = RetryPolicy {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(60),
            jitter: 0.0,
        };
        let delays: Vec<u64> = (1..=7).map(|a| policy.backoff(a).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(
            policy.backoff(1_000).as_secs(),
            60,
            "huge attempts do not overflow"
        );
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let policy = RetryPolicy {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(10),
            jitter: 0.5,
        };
        let delays: Vec<Duration> = (0..200).map(|_| policy.backoff(1)).collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= Duration::from_secs(5) && *d <= Duration::from_secs(10))
        );
        assert!(
            delays.iter().any(|d| *d != delays[0]),
            "jitter varies the delay"
        );
    }
}
