//! Writing an attempt's outcome back: one [`Report`] per claimed attempt, written fenced by its
//! lease, retried while Redis is unreachable, and told as its [`Event`] (log line and counter)
//! only once Redis took it (a refused write was not this worker's to report).
//!
//! - [`live_log`]: the runner's output, forwarded to the job's log stream while it runs.

pub mod live_log;

use std::future::Future;
use std::time::{Duration, Instant};

use quayside_common::protocol::DeadLetterReason;
use quayside_common::{JobResult, Status};

use crate::context::Context;
use crate::metrics::{Event, HandBack, JobLabels};
use crate::queue::{Charge, Completion, Lease, QueueError, Retry, Write};

/// Why a job's terminal result comes with a dead letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadLetterCause {
    /// The job was refused as invalid (malformed entry, spec the worker does not run).
    Rejected(DeadLetterReason),
    /// Attempts started and none finished: its workers kept dying.
    WorkersKeptDying { max_attempts: u32 },
    /// The runner failed in a way no retry changes, or for too long.
    RunnerGaveUp(DeadLetterReason),
}

/// Why a job goes back without spending its attempt (owned; see [`HandBack`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandBackCause {
    /// The worker is draining and the job did not finish within the grace period.
    Drain,
    /// The runner reported a cancel nobody asked for (a runner bug).
    UnaskedCancel,
    /// The runner failed and its check fails too: not the job's failure. Claims stop until
    /// the runner is back.
    RunnerUnavailable { error: String },
}

/// How one attempt ends, as the queue is told.
#[derive(Clone, Debug, PartialEq)]
pub enum Report {
    /// Its terminal result: the program's verdict, or `cancelled`.
    Finish(JobResult),
    /// Its terminal result, with a dead letter carrying the result's error.
    DeadLetter {
        result: JobResult,
        cause: DeadLetterCause,
    },
    /// Queued again after `delay_ms` for an infrastructure failure of its own (`failures` so
    /// far, this one included; `reason` is the runner error's label).
    Retry {
        delay_ms: u64,
        error: String,
        failures: u32,
        reason: &'static str,
    },
    /// Put back at no cost after `delay_ms`.
    HandBack { cause: HandBackCause, delay_ms: u64 },
    /// Nothing to write: another worker took the job over.
    Abandon,
}

impl Report {
    /// Writes the report under `lease` (a terminal result kept for `ttl_s`), then emits its
    /// event if Redis took it.
    pub async fn write(self, ctx: &Context, lease: &Lease, job: JobLabels, ttl_s: u64) {
        match self {
            Self::Abandon => ctx.metrics.emit(Event::LeaseLost),
            Self::Finish(result) => {
                let event = if result.status == Status::Cancelled {
                    Event::Cancelled { job }
                } else {
                    Event::Finished {
                        job,
                        status: result.status,
                        exit_code: result.exit_code,
                    }
                };
                conclude(ctx, lease, &result, ttl_s, event).await;
            }
            Self::DeadLetter { result, cause } => {
                let error = result.error.as_deref().unwrap_or("");
                let event = match cause {
                    DeadLetterCause::Rejected(reason) => Event::Rejected { job, reason, error },
                    DeadLetterCause::WorkersKeptDying { max_attempts } => {
                        Event::WorkersKeptDying { job, max_attempts }
                    }
                    DeadLetterCause::RunnerGaveUp(reason) => {
                        Event::RunnerGaveUp { job, reason, error }
                    }
                };
                conclude(ctx, lease, &result, ttl_s, event).await;
            }
            Self::Retry {
                delay_ms,
                error,
                failures,
                reason,
            } => {
                let retry = Retry {
                    delay_ms,
                    error: &error,
                    charge: Charge::InfraFailure,
                };
                if persist(ctx, lease, "retry", || ctx.queue.retry(lease, retry)).await {
                    ctx.metrics.emit(Event::Retried {
                        job,
                        reason,
                        error: &error,
                        delay_ms,
                        failures,
                    });
                }
            }
            Self::HandBack { cause, delay_ms } => {
                let why = match &cause {
                    HandBackCause::Drain => HandBack::Drain,
                    HandBackCause::UnaskedCancel => HandBack::UnaskedCancel,
                    HandBackCause::RunnerUnavailable { error } => {
                        HandBack::RunnerUnavailable { error }
                    }
                };
                let retry = Retry {
                    delay_ms,
                    error: why.why(),
                    charge: Charge::Refund,
                };
                if persist(ctx, lease, "hand back", || ctx.queue.retry(lease, retry)).await {
                    ctx.metrics.emit(Event::HandedBack(why));
                }
            }
        }
    }
}

/// Writes the job's terminal result, with the dead letter `ended` calls for (carrying the
/// result's error), and emits `ended` once Redis took it.
async fn conclude(ctx: &Context, lease: &Lease, result: &JobResult, ttl_s: u64, ended: Event<'_>) {
    let error = result.error.as_deref().unwrap_or("");
    let dead_letter = ended.dead_letter();
    let written = persist(ctx, lease, "finish", || {
        let done = Completion::new(lease, result, ttl_s);
        ctx.queue.finish(match dead_letter {
            Some(reason) => done.dead_letter(reason, error),
            None => done,
        })
    })
    .await;
    if written {
        ctx.metrics.emit(ended);
    }
}

/// Runs a fenced write until Redis takes it or refuses it. Redis being unreachable is not a
/// reason to drop a result: retry with backoff for a bounded time, after which the lease has
/// long expired and another worker owns the job. True when the write was taken.
async fn persist<F, Fut>(ctx: &Context, lease: &Lease, what: &'static str, mut write: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Write, QueueError>>,
{
    let give_up = Instant::now() + ctx.cfg.persist_give_up();
    let mut delay = Duration::from_millis(50);
    loop {
        match write().await {
            Ok(Write::Taken) => return true,
            Ok(Write::Fenced) => {
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
