//! Writing an attempt's outcome back: one [`Report`] per claimed attempt, written fenced by its
//! lease, retried while Redis is unreachable, and counted and logged only once Redis took it
//! (a refused write was not this worker's to count).
//!
//! - [`live_log`]: the runner's output, forwarded to the job's log stream while it runs.

pub mod live_log;

use std::future::Future;
use std::time::{Duration, Instant};

use quayside_common::{JobResult, Status};

use crate::execute::Context;
use crate::metrics::JobLabels;
use crate::queue::{Completion, Lease, QueueError};

/// Why a job is dead-lettered: the `reason` of its dead letter and of
/// `quayside_jobs_dead_lettered_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// The entry's payload cannot be read as this job (the decode error's label: `not_json`,
    /// `bad_version`, `bad_schema`, `missing_field`, `id_mismatch`, `invalid_spec`).
    Malformed(&'static str),
    /// The spec is not one this worker runs (admission, or the runner's own limits).
    InvalidSpec,
    /// Attempts started and none finished: its workers kept dying.
    AttemptsExhausted,
    /// The runner failed in a way no retry changes.
    PermanentError,
    /// Its infrastructure failures went on for longer than `retry.give_up_after_ms`.
    InfraTimeout,
}

impl DeadLetterReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed(label) => label,
            Self::InvalidSpec => "invalid_spec",
            Self::AttemptsExhausted => "attempts_exhausted",
            Self::PermanentError => "permanent_error",
            Self::InfraTimeout => "infra_timeout",
        }
    }
}

/// Why a job goes back without spending its attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandBack {
    /// The worker is draining and the job did not finish within the grace period.
    Drain,
    /// The runner failed and its check fails too: not the job's failure. Back after
    /// `delay_ms`; claims stop until the runner is back.
    RunnerDown { error: String, delay_ms: u64 },
    /// The runner reported a cancel nobody asked for (a runner bug).
    UnaskedCancel,
}

/// How one attempt ends, as the queue is told.
#[derive(Clone, Debug, PartialEq)]
pub enum Report {
    /// Its terminal result (succeeded, failed, timed out, cancelled…).
    Finish(JobResult),
    /// Its terminal result, with a dead letter carrying the result's error.
    DeadLetter {
        result: JobResult,
        reason: DeadLetterReason,
    },
    /// Queued again after `delay_ms` for an infrastructure failure of its own (`failures`
    /// so far, this one included; `label` names the runner error for the metric).
    Retry {
        delay_ms: u64,
        error: String,
        failures: u32,
        label: &'static str,
    },
    /// Put back at no cost.
    HandBack(HandBack),
    /// Nothing to write: another worker took the job over.
    Abandon,
}

impl Report {
    /// Writes the report under `lease` (a terminal result kept for `ttl_s`), then counts and
    /// logs it if Redis took it.
    pub async fn write(self, ctx: &Context, lease: &Lease, labels: JobLabels, ttl_s: u64) {
        match self {
            Self::Abandon => {
                tracing::warn!("abandoning result: the job was taken over by another worker");
            }
            Self::Finish(result) => {
                let done = Completion::new(lease, &result, ttl_s);
                if persist(ctx, lease, "finish", || ctx.queue.finish(done)).await {
                    ctx.metrics.finished(labels, result.status, None);
                    if result.status == Status::Cancelled {
                        tracing::info!("job cancelled");
                    } else {
                        tracing::info!(status = %result.status, exit_code = ?result.exit_code, "job finished");
                    }
                }
            }
            Self::DeadLetter { result, reason } => {
                let error = result.error.as_deref().unwrap_or("");
                let done =
                    Completion::new(lease, &result, ttl_s).dead_letter(reason.as_str(), error);
                if persist(ctx, lease, "finish", || ctx.queue.finish(done)).await {
                    ctx.metrics
                        .finished(labels, result.status, Some(reason.as_str()));
                    dead_lettered(reason, error);
                }
            }
            Self::Retry {
                delay_ms,
                error,
                failures,
                label,
            } => {
                let write = || ctx.queue.retry_infra(lease, delay_ms, &error);
                if persist(ctx, lease, "retry", write).await {
                    ctx.metrics.retried(labels, label);
                    tracing::warn!(error = %error, delay_ms, failures, "runner failed; retrying");
                }
            }
            Self::HandBack(why) => {
                let (error, delay_ms) = match &why {
                    HandBack::Drain => ("worker drained before the job finished", 0),
                    HandBack::RunnerDown { error, delay_ms } => (error.as_str(), *delay_ms),
                    HandBack::UnaskedCancel => ("runner stopped the job by itself", 0),
                };
                let write = || ctx.queue.retry(lease, delay_ms, error, true);
                if persist(ctx, lease, "hand back", write).await {
                    ctx.metrics.handed_back();
                    match why {
                        HandBack::Drain => tracing::info!("handing job back: worker is draining"),
                        HandBack::RunnerDown { error, .. } => tracing::info!(
                            error = %error,
                            "runner unavailable; handing the job back at no cost"
                        ),
                        HandBack::UnaskedCancel => {
                            tracing::info!("handed back the job its runner stopped by itself");
                        }
                    }
                }
            }
        }
    }
}

/// The log line of a dead letter Redis took.
fn dead_lettered(reason: DeadLetterReason, error: &str) {
    match reason {
        DeadLetterReason::AttemptsExhausted => {
            tracing::error!(error, "dead-lettering job whose workers keep dying");
        }
        DeadLetterReason::PermanentError | DeadLetterReason::InfraTimeout => {
            let reason = reason.as_str();
            tracing::error!(error, reason, "runner failed; dead-lettering");
        }
        DeadLetterReason::Malformed(_) | DeadLetterReason::InvalidSpec => {
            let reason = reason.as_str();
            tracing::warn!(reason, error, "rejecting malformed job");
        }
    }
}

/// Runs a fenced write until Redis takes it or refuses it. Redis being unreachable is not a
/// reason to drop a result: retry with backoff for a bounded time, after which the lease has
/// long expired and another worker owns the job. True when the write was taken.
async fn persist<F, Fut>(ctx: &Context, lease: &Lease, what: &'static str, mut write: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, QueueError>>,
{
    let give_up = Instant::now() + ctx.cfg.persist_give_up();
    let mut delay = Duration::from_millis(50);
    loop {
        match write().await {
            Ok(true) => return true,
            Ok(false) => {
                tracing::warn!(job_id = %lease.job_id, token = lease.token, what, "write refused: this worker no longer holds the job");
                return false;
            }
            Err(error) if Instant::now() < give_up => {
                // An unreachable Redis is the queue's outage story; other errors are news.
                if error.is_unreachable() {
                    tracing::debug!(job_id = %lease.job_id, what, error = %error, "cannot write to redis; retrying");
                } else {
                    tracing::warn!(job_id = %lease.job_id, what, error = %error, retry_in_ms = delay.as_millis() as u64, "cannot write to redis; retrying");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(error) => {
                tracing::error!(job_id = %lease.job_id, what, error = %error, "giving up on write; the job will be reclaimed when its lease expires");
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_reasons_keep_their_labels() {
        let all = [
            (DeadLetterReason::Malformed("not_json"), "not_json"),
            (DeadLetterReason::InvalidSpec, "invalid_spec"),
            (DeadLetterReason::AttemptsExhausted, "attempts_exhausted"),
            (DeadLetterReason::PermanentError, "permanent_error"),
            (DeadLetterReason::InfraTimeout, "infra_timeout"),
        ];
        for (reason, label) in all {
            assert_eq!(reason.as_str(), label);
        }
    }
}
