//! What to do after a runner failure: a pure decision, tested without I/O.

use quayside_common::config::RetryConfig;
use quayside_common::protocol::DeadLetterReason;

use crate::queue::FailureHistory;
use crate::runner::RunnerErrorKind;

/// The next step for a job whose attempt failed for infrastructure reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Queue it again after this delay.
    Retry { delay_ms: u64 },
    /// Give up: dead-letter with this reason.
    DeadLetter { reason: DeadLetterReason },
}

/// What to do after an infrastructure failure of the job's own (the runner as a whole was
/// healthy): permanent ones are dead-lettered at once; transient ones retry with backoff until
/// the job's first such failure (`history`) is `policy.give_up_after_ms` old, whatever their
/// number, so a burst of quick failures cannot use a job up.
pub fn decide(
    kind: RunnerErrorKind,
    history: FailureHistory,
    now_ms: u64,
    policy: &RetryConfig,
    jitter: f64,
) -> Disposition {
    match kind {
        RunnerErrorKind::Permanent => Disposition::DeadLetter {
            reason: DeadLetterReason::PermanentError,
        },
        RunnerErrorKind::Transient | RunnerErrorKind::Cancelled
            if history
                .failing_since_ms
                .is_some_and(|since| now_ms.saturating_sub(since) >= policy.give_up_after_ms) =>
        {
            Disposition::DeadLetter {
                reason: DeadLetterReason::InfraTimeout,
            }
        }
        RunnerErrorKind::Transient | RunnerErrorKind::Cancelled => Disposition::Retry {
            delay_ms: backoff_ms(history.failures.saturating_add(1), policy, jitter),
        },
    }
}

/// Exponential backoff with "equal jitter": half the step is fixed, half random, so retries of
/// many jobs failing together spread out but never fire at once. `jitter` is in `[0, 1)`.
pub fn backoff_ms(attempt: u32, policy: &RetryConfig, jitter: f64) -> u64 {
    let exp = attempt.saturating_sub(1).min(32);
    let step = policy
        .base_ms
        .saturating_mul(1u64 << exp)
        .min(policy.max_ms);
    let half = step / 2;
    half + (half as f64 * jitter.clamp(0.0, 1.0)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryConfig {
        RetryConfig {
            base_ms: 100,
            max_ms: 1_000,
            give_up_after_ms: 10_000,
        }
    }

    #[test]
    fn backoff_doubles_then_caps() {
        let at = |a| backoff_ms(a, &policy(), 1.0);
        assert_eq!(
            [at(1), at(2), at(3), at(4), at(5), at(60)],
            [100, 200, 400, 800, 1000, 1000]
        );
    }

    #[test]
    fn jitter_stays_within_the_upper_half() {
        for j in [0.0, 0.3, 0.999] {
            let d = backoff_ms(3, &policy(), j);
            assert!((200..=400).contains(&d), "{d}");
        }
    }

    #[test]
    fn transient_retries_until_failing_for_too_long_however_many() {
        let p = policy();
        let history = |since, failures| FailureHistory {
            failing_since_ms: since,
            failures,
        };
        let first = decide(
            RunnerErrorKind::Transient,
            history(None, 0),
            50_000,
            &p,
            1.0,
        );
        assert_eq!(first, Disposition::Retry { delay_ms: 100 });
        assert_eq!(
            decide(
                RunnerErrorKind::Transient,
                history(Some(45_000), 50),
                50_000,
                &p,
                1.0
            ),
            Disposition::Retry { delay_ms: 1_000 },
            "fifty quick failures are not a reason to give up"
        );
        assert_eq!(
            decide(
                RunnerErrorKind::Transient,
                history(Some(40_000), 2),
                50_000,
                &p,
                0.0
            ),
            Disposition::DeadLetter {
                reason: DeadLetterReason::InfraTimeout
            }
        );
    }

    #[test]
    fn permanent_is_dead_lettered_at_once() {
        assert_eq!(
            decide(
                RunnerErrorKind::Permanent,
                FailureHistory::default(),
                0,
                &policy(),
                0.0
            ),
            Disposition::DeadLetter {
                reason: DeadLetterReason::PermanentError
            }
        );
    }
}
