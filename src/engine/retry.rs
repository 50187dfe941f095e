//! When to try a failed delivery again: exponential backoff with jitter.

use std::time::Duration;

use rand::Rng;

use crate::compile::RetryPolicy;

/// The wait before attempt `attempt + 1`, after `attempt` failed attempts
/// (1 for the first failure): `initial * 2^(attempt-1)`, capped at `max`,
/// then drawn uniformly from its upper half ("equal jitter"), so that
/// deliveries that failed together do not retry together.
pub fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(32);
    let base = policy
        .initial
        .checked_mul(1u32 << exponent.min(31))
        .unwrap_or(policy.max)
        .min(policy.max);
    let half = base / 2;
    let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped_with_jitter() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        for _ in 0..100 {
            let first = backoff(&policy, 1);
            assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
            let third = backoff(&policy, 3);
            assert!(third >= Duration::from_secs(2) && third <= Duration::from_secs(4));
            let late = backoff(&policy, 30);
            assert!(late >= Duration::from_secs(5) && late <= Duration::from_secs(10));
        }
    }
}
