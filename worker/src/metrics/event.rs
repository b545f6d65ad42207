//! Things that happen to a job or to this worker, as typed events: one [`WorkerMetrics::emit`]
//! per happening writes its log line and moves its metrics together, so a log line never
//! disagrees with a counter (vector's internal events). Events about a write (a job ended, was
//! retried or handed back) are emitted once Redis took the write: a refused write was not this
//! worker's to report.
//!
//! Log lines keep the target of the module that reported them before events existed, so
//! `RUST_LOG` filters and log queries keep working.

use quayside_common::protocol::claim::{DropReason, Dropped};
use quayside_common::protocol::DeadLetterReason;
use quayside_common::Status;

use super::{Family, JobLabels, WorkerMetrics};
use crate::queue::QueueError;
use crate::runner::{RunnerError, RunnerErrorKind};

const CLAIM: &str = "quayside_worker::claim";
const EXECUTE: &str = "quayside_worker::execute";
const GATE: &str = "quayside_worker::gate";
const UPKEEP: &str = "quayside_worker::upkeep";

/// One happening worth a log line and a metric.
#[derive(Debug)]
pub enum Event<'a> {
    /// This worker took over `jobs` entries whose lease had expired.
    Reclaimed { jobs: usize },
    /// The claim step removed an entry without running it.
    EntryDropped(&'a Dropped),
    /// A job ended with the program's verdict (or its output limit, timeout...).
    Finished {
        job: JobLabels,
        status: Status,
        exit_code: Option<i64>,
    },
    /// A job was cancelled while it ran.
    Cancelled { job: JobLabels },
    /// A job was refused as invalid and dead-lettered.
    Rejected {
        job: JobLabels,
        reason: DeadLetterReason,
        error: &'a str,
    },
    /// A job's workers died `max_attempts` times; it was dead-lettered.
    WorkersKeptDying { job: JobLabels, max_attempts: u32 },
    /// The runner failed in a way a retry cannot fix (or for too long); the job was
    /// dead-lettered.
    RunnerGaveUp {
        job: JobLabels,
        reason: DeadLetterReason,
        error: &'a str,
    },
    /// An attempt failed for infrastructure reasons (`reason`: the runner error's label) and
    /// the job was queued again after `delay_ms`.
    Retried {
        job: JobLabels,
        reason: &'static str,
        error: &'a str,
        delay_ms: u64,
        failures: u32,
    },
    /// A running job was put back unfinished, its attempt refunded.
    HandedBack(HandBack<'a>),
    /// The runner failed to run a job (what became of the job is its own event).
    RunnerFailed(&'a RunnerError),
    /// The job was taken over by another worker while it ran; its result is dropped.
    LeaseLost,
    /// The runner's check failed: this worker stops claiming.
    RunnerDown { runner: &'static str },
    /// The runner's check passes again: this worker claims.
    RunnerUp { runner: &'static str },
    /// The queue gauges could not be sampled.
    SampleFailed(&'a QueueError),
}

/// Why a running job was handed back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandBack<'a> {
    /// The worker drains (SIGTERM) and the job did not finish in time.
    Drain,
    /// The runner reported a cancel nobody asked for.
    UnaskedCancel,
    /// The runner as a whole is unavailable: not the job's failure.
    RunnerUnavailable { error: &'a str },
}

impl HandBack<'_> {
    /// The error recorded with the job.
    pub fn why(&self) -> &str {
        match self {
            Self::Drain => "worker drained before the job finished",
            Self::UnaskedCancel => "runner stopped the job by itself",
            Self::RunnerUnavailable { error } => error,
        }
    }
}

impl Event<'_> {
    /// The dead letter a job's ending adds, if any.
    pub fn dead_letter(&self) -> Option<DeadLetterReason> {
        match self {
            Self::Rejected { reason, .. } | Self::RunnerGaveUp { reason, .. } => Some(*reason),
            Self::WorkersKeptDying { .. } => Some(DeadLetterReason::AttemptsExhausted),
            _ => None,
        }
    }
}

impl WorkerMetrics {
    /// Writes the event's log line and moves its metrics.
    pub fn emit(&self, event: Event<'_>) {
        let dead_letter = event.dead_letter();
        match event {
            Event::Reclaimed { jobs } => {
                self.reclaimed.increment(jobs as u64);
                tracing::info!(target: CLAIM, jobs, "took over jobs whose lease expired");
            }
            Event::EntryDropped(d) => self.dropped(d),
            Event::Finished {
                job,
                status,
                exit_code,
            } => {
                tracing::info!(target: EXECUTE, status = %status, exit_code = ?exit_code, "job finished");
                self.finished(job, status, None);
            }
            Event::Cancelled { job } => {
                tracing::info!(target: EXECUTE, "job cancelled");
                self.finished(job, Status::Cancelled, None);
            }
            Event::Rejected { job, reason, error } => {
                tracing::warn!(target: EXECUTE, reason = reason.as_str(), error = %error, "rejecting malformed job");
                self.finished(job, Status::Rejected, dead_letter);
            }
            Event::WorkersKeptDying { job, max_attempts } => {
                tracing::error!(target: EXECUTE, max_attempts, "dead-lettering job whose workers keep dying");
                self.finished(job, Status::Dead, dead_letter);
            }
            Event::RunnerGaveUp { job, reason, error } => {
                tracing::error!(target: EXECUTE, error = %error, reason = reason.as_str(), "runner failed; dead-lettering");
                self.finished(job, Status::Dead, dead_letter);
            }
            Event::Retried {
                job,
                reason,
                error,
                delay_ms,
                failures,
            } => {
                tracing::warn!(target: EXECUTE, error = %error, delay_ms, failures, "runner failed; retrying");
                self.count(Family::Retried, Some(job), reason, "");
            }
            Event::HandedBack(why) => {
                match why {
                    HandBack::Drain => {
                        tracing::info!(target: EXECUTE, "handing job back: worker is draining")
                    }
                    HandBack::UnaskedCancel => tracing::error!(
                        target: EXECUTE,
                        "runner reported a cancel nobody asked for; handing the job back"
                    ),
                    HandBack::RunnerUnavailable { error } => tracing::info!(
                        target: EXECUTE,
                        error = %error,
                        "runner unavailable; handing the job back at no cost"
                    ),
                }
                self.handed_back.increment(1);
            }
            Event::RunnerFailed(error) => {
                let kind = match error.kind() {
                    RunnerErrorKind::Transient => "transient",
                    RunnerErrorKind::Permanent => "permanent",
                    RunnerErrorKind::Cancelled => "cancelled",
                };
                self.count(Family::RunnerErrors, None, error.as_label(), kind);
            }
            Event::LeaseLost => tracing::warn!(
                target: EXECUTE,
                "abandoning result: the job was taken over by another worker"
            ),
            Event::RunnerDown { runner } => {
                self.set_claiming(false);
                tracing::warn!(target: GATE, runner, "not claiming jobs until the runner is back");
            }
            Event::RunnerUp { runner } => {
                self.set_claiming(true);
                tracing::info!(target: GATE, runner, "runner ready; claiming jobs");
            }
            Event::SampleFailed(error) => {
                self.sample_errors.increment(1);
                tracing::debug!(target: UPKEEP, error = %error, "cannot sample queue gauges");
            }
        }
    }

    /// A job ended with `status`; rejected and dead jobs are dead-lettered with `reason` too.
    fn finished(&self, job: JobLabels, status: Status, dead_letter: Option<DeadLetterReason>) {
        self.count(Family::Finished, Some(job), status.as_str(), "");
        if let Some(reason) = dead_letter {
            self.count(Family::DeadLettered, Some(job), reason.as_str(), "");
            if status == Status::Rejected {
                self.count(Family::Rejected, Some(job), reason.as_str(), "");
            }
        }
    }

    fn dropped(&self, d: &Dropped) {
        match d.reason {
            DropReason::DeadLettered(reason) => {
                // An entry with no usable job: no language to label.
                let job = JobLabels {
                    priority: d.priority,
                    language: u16::MAX,
                };
                self.count(Family::DeadLettered, Some(job), reason.as_str(), "");
                self.count(Family::Rejected, Some(job), reason.as_str(), "");
                tracing::warn!(target: CLAIM, entry = %d.entry, priority = d.priority.as_label(), "dead-lettered a malformed stream entry");
            }
            DropReason::Requeued => {
                tracing::warn!(target: CLAIM, entry = %d.entry, "stream entry was deleted while pending; its job was queued again");
            }
            DropReason::Duplicate => {
                tracing::debug!(target: CLAIM, entry = %d.entry, reason = "duplicate", "skipped a duplicate entry");
            }
        }
    }
}
