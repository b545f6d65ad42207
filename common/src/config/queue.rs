//! The queue and the workers serving it: `queue.*` (names, caps, result TTLs, attempts),
//! `worker.*` (slots, lease, loop intervals, drain) and `retry.*` (backoff after a job's own
//! infrastructure failures).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::{at_least, between, invalid, positive};
use super::ConfigError;
use crate::keys::Keys;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Queue name; every key of the queue is tagged `{name}`.
    pub name: String,
    /// Entries (queued + running) past which enqueueing is refused; 0 = unlimited.
    pub max_depth: u64,
    /// Dead letters kept; the oldest are trimmed past this (their job records stay until TTL).
    pub dlq_max_len: u64,
    /// Entries kept in each job's live log stream.
    pub log_max_entries: u64,
    /// Result TTL for jobs that set none.
    pub default_result_ttl_s: u64,
    /// Smallest result TTL a job may ask for. It must exceed the longest time a worker that
    /// lost a job's lease may still try to write it ([`super::Config::stale_window`]), so a
    /// record is never gone (and its id free again) while such a worker can still act on it,
    /// and waiters always find the result.
    pub min_result_ttl_s: u64,
    /// Largest result TTL a job may ask for.
    pub max_result_ttl_s: u64,
    /// Executions allowed per job when it sets no `max_attempts`.
    pub default_max_attempts: u32,
    /// Largest `max_attempts` a job may ask for.
    pub max_attempts_cap: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            name: "default".into(),
            max_depth: 0,
            dlq_max_len: 100_000,
            log_max_entries: 10_000,
            default_result_ttl_s: 86_400,
            min_result_ttl_s: 3_600,
            max_result_ttl_s: 7 * 86_400,
            default_max_attempts: 3,
            max_attempts_cap: 20,
        }
    }
}

impl QueueConfig {
    /// Checks the queue's own settings; `stale_window` is [`super::Config::stale_window`],
    /// which the result TTL floor must exceed.
    pub(super) fn validate(&self, stale_window: Duration) -> Result<(), ConfigError> {
        Keys::new(&self.name).map_err(|e| invalid("queue.name", e.to_string()))?;
        positive("queue.default_result_ttl_s", self.default_result_ttl_s)?;
        positive("queue.log_max_entries", self.log_max_entries)?;
        positive("queue.dlq_max_len", self.dlq_max_len)?;
        if self.default_result_ttl_s > self.max_result_ttl_s {
            return Err(invalid(
                "queue.default_result_ttl_s",
                "exceeds queue.max_result_ttl_s",
            ));
        }
        let window = stale_window.as_secs();
        if self.min_result_ttl_s <= window {
            return Err(invalid(
                "queue.min_result_ttl_s",
                format!(
                    "must exceed {window} s: the longest a worker that lost a job's lease may \
                     still write it (worker.lease_ms + worker.drain_timeout_ms + the largest \
                     compile and run wall times + {} s runner backstop + the persist give-up)",
                    super::RUNNER_BACKSTOP.as_secs()
                ),
            ));
        }
        if self.default_result_ttl_s < self.min_result_ttl_s {
            return Err(invalid(
                "queue.default_result_ttl_s",
                "is below queue.min_result_ttl_s",
            ));
        }
        if self.default_max_attempts == 0 || self.default_max_attempts > self.max_attempts_cap {
            return Err(invalid(
                "queue.default_max_attempts",
                "must be 1 to queue.max_attempts_cap",
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Consumer name; generated (host-pid-random) when unset. Must be unique per process.
    pub id: Option<String>,
    /// Jobs run at once; the worker never claims more than it has free.
    pub slots: usize,
    /// A claimed job whose lease is not renewed for this long may be taken over.
    pub lease_ms: u64,
    /// How long one blocking wait for new entries lasts before re-checking.
    pub claim_block_ms: u64,
    /// How often to look for entries whose lease expired.
    pub reclaim_interval_ms: u64,
    /// How often to move due retries back to their streams.
    pub promote_interval_ms: u64,
    /// How often to heartbeat into the worker registry.
    pub heartbeat_interval_ms: u64,
    /// 0 = strict priority. N > 0: one claim in N starts from the lowest non-empty priority, so
    /// low priority still moves under sustained high-priority load.
    pub starvation_guard: u32,
    /// On SIGTERM, how long in-flight jobs may run before they are stopped and handed back.
    pub drain_timeout_ms: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            id: None,
            slots: 4,
            lease_ms: 30_000,
            claim_block_ms: 5_000,
            reclaim_interval_ms: 5_000,
            promote_interval_ms: 250,
            heartbeat_interval_ms: 5_000,
            starvation_guard: 20,
            drain_timeout_ms: 25_000,
        }
    }
}

impl WorkerConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        between("worker.slots", self.slots, 1, 1024)?;
        if let Some(id) = &self.id {
            crate::JobId::parse(id).map_err(|e| invalid("worker.id", e.to_string()))?;
        }
        at_least("worker.lease_ms", self.lease_ms, 300)?;
        if self.claim_block_ms == 0 || self.claim_block_ms >= self.lease_ms {
            return Err(invalid(
                "worker.claim_block_ms",
                "must be above 0 and below worker.lease_ms",
            ));
        }
        positive("worker.reclaim_interval_ms", self.reclaim_interval_ms)?;
        positive("worker.promote_interval_ms", self.promote_interval_ms)?;
        positive("worker.heartbeat_interval_ms", self.heartbeat_interval_ms)
    }
}

/// Retries after infrastructure failures of a job's own (its sandbox could not be created, was
/// killed from outside, ...): exponential backoff with equal jitter (half of each step fixed,
/// half random) over `base * 2^(failures-1)`, capped at `max_ms`, for as long as
/// `give_up_after_ms`. Failures while the runner as a whole is unavailable are not the job's:
/// it is handed back at no cost, and the worker stops claiming until the runner is back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First backoff step.
    pub base_ms: u64,
    /// Largest backoff step.
    pub max_ms: u64,
    /// A job whose first infrastructure failure is this long ago is dead-lettered
    /// (`infra_timeout`) at its next one. Bounds retries by time, not count: quick failures in a
    /// burst cannot use up a job. `max_attempts` counts only executions whose worker died.
    pub give_up_after_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            base_ms: 1_000,
            max_ms: 60_000,
            give_up_after_ms: 600_000,
        }
    }
}

impl RetryConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("retry.base_ms", self.base_ms)?;
        if self.max_ms < self.base_ms {
            return Err(invalid("retry.max_ms", "must be at least retry.base_ms"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::check::assert_refusals;

    #[test]
    fn defaults_are_valid_and_errors_name_the_key() {
        let window = Duration::from_secs(415);
        QueueConfig::default().validate(window).expect("queue");
        WorkerConfig::default().validate().expect("worker");
        RetryConfig::default().validate().expect("retry");
        assert_refusals::<QueueConfig>(
            |q| q.validate(window),
            &[
                (|q| q.name = "a{b".into(), "queue.name"),
                (|q| q.dlq_max_len = 0, "queue.dlq_max_len"),
                (
                    |q| q.default_result_ttl_s = 10 * 86_400,
                    "queue.default_result_ttl_s",
                ),
                (|q| q.min_result_ttl_s = 415, "queue.min_result_ttl_s"),
                (
                    |q| q.default_max_attempts = 21,
                    "queue.default_max_attempts",
                ),
            ],
        );
        assert_refusals(
            WorkerConfig::validate,
            &[
                (|w| w.slots = 1025, "worker.slots"),
                (|w| w.lease_ms = 299, "worker.lease_ms"),
                (|w| w.claim_block_ms = 30_000, "worker.claim_block_ms"),
                (|w| w.promote_interval_ms = 0, "worker.promote_interval_ms"),
                (|w| w.id = Some(String::new()), "worker.id"),
            ],
        );
        assert_refusals(
            RetryConfig::validate,
            &[
                (|r| r.max_ms = 10, "retry.max_ms"),
                (|r| r.base_ms = 0, "retry.base_ms"),
            ],
        );
    }
}
