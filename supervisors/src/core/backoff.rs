//! Restart backoff: an extension beyond OTP, off unless a supervisor's flags ask for it.

use std::time::Duration;

/// Exponential backoff with jitter: attempt `n` waits a uniformly drawn time in
/// `[d/2, d]` where `d = min(max, initial * 2^n)`. A child that stayed up for `reset_after`
/// starts again from attempt 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Backoff {
    /// The delay before restart attempt `attempt` (0-based). `random` is a uniformly
    /// distributed sample supplied by the caller, so the policy stays deterministic.
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let factor = 1u128 << attempt.min(32);
        let nominal = (self.initial.as_nanos().saturating_mul(factor)).min(self.max.as_nanos());
        let half = nominal / 2;
        // `random` scales the jitter linearly: 0 gives d/2, u64::MAX gives d.
        let jitter = half * u128::from(random) / u128::from(u64::MAX);
        let nanos = half + jitter;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(10),
        reset_after: Duration::from_secs(60),
    };

    #[test]
    fn delay_doubles_and_stays_within_jitter_bounds() {
        for attempt in 0..6u32 {
            let nominal = Duration::from_millis(100 * (1 << attempt));
            for random in [0, 1, 12_345, u64::MAX] {
                let delay = POLICY.delay(attempt, random);
                assert!(delay >= nominal / 2 && delay <= nominal, "{attempt} {random} {delay:?}");
            }
        }
    }

    #[test]
    fn delay_is_capped() {
        assert!(POLICY.delay(40, u64::MAX) <= POLICY.max);
        assert!(POLICY.delay(u32::MAX, 7) >= POLICY.max / 2);
    }

    #[test]
    fn same_sample_same_delay() {
        assert_eq!(POLICY.delay(3, 99), POLICY.delay(3, 99));
    }
}
