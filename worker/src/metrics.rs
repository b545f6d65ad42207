//! Every metric the worker exports: its name (a `pub const`), its description, the histogram
//! buckets, the Prometheus recorder, and [`WorkerMetrics`], the cached handles the hot path
//! records through. Nothing outside this module names a metric or calls a `metrics` macro
//! (`clippy.toml` bans them elsewhere). `docs/metrics.md` explains each one to operators.
//!
//! Labels come from a closed set: `queue`, `priority`, `language` (a key of the worker's
//! language table, or `unknown`), `runner`, `status`, `reason`, `kind`, `version`. Never a job
//! id or error text.
#![allow(
    clippy::disallowed_macros,
    reason = "the one module allowed to call the metrics macros"
)]

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use quayside_common::protocol::DeadLetterReason;
use quayside_common::{Priority, Status};

use crate::queue::QueueSample;
use crate::runner::RunnerError;

// Counters, labelled queue, priority, language, runner unless said otherwise.
/// Jobs this worker started executing (takeovers included).
pub const JOBS_CLAIMED_TOTAL: &str = "quayside_jobs_claimed_total";
/// Jobs that reached a terminal result here, by `status`.
pub const JOBS_FINISHED_TOTAL: &str = "quayside_jobs_finished_total";
/// Attempts that failed for infrastructure reasons and were put back with backoff, by `reason`.
pub const JOBS_RETRIED_TOTAL: &str = "quayside_jobs_retried_total";
/// Jobs and stream entries dead-lettered, by `reason`.
pub const JOBS_DEAD_LETTERED_TOTAL: &str = "quayside_jobs_dead_lettered_total";
/// Jobs refused as invalid (also dead-lettered), by `reason`; labelled queue, priority.
pub const JOBS_REJECTED_TOTAL: &str = "quayside_jobs_rejected_total";
/// Entries taken over after their lease expired; labelled queue.
pub const JOBS_RECLAIMED_TOTAL: &str = "quayside_jobs_reclaimed_total";
/// Running jobs handed back unfinished by a draining worker; labelled queue.
pub const JOBS_HANDED_BACK_TOTAL: &str = "quayside_jobs_handed_back_total";
/// Runner failures by `reason` and `kind`; labelled queue, runner.
pub const RUNNER_ERRORS_TOTAL: &str = "quayside_runner_errors_total";

// Histograms.
/// Time in the runner, compile and run; labelled queue, language, runner.
pub const JOB_DURATION_SECONDS: &str = "quayside_job_duration_seconds";
/// Enqueue to start of this attempt; labelled queue, priority.
pub const JOB_QUEUE_WAIT_SECONDS: &str = "quayside_job_queue_wait_seconds";
/// Time to create and start the sandbox, as the runner reports it; labelled queue, language,
/// runner.
pub const SANDBOX_START_SECONDS: &str = "quayside_sandbox_start_seconds";

// Gauges of this worker; labelled queue.
/// Jobs holding a slot.
pub const JOBS_IN_FLIGHT: &str = "quayside_jobs_in_flight";
/// Configured slots.
pub const WORKER_SLOTS: &str = "quayside_worker_slots";
/// Slots free to claim with.
pub const WORKER_SLOTS_FREE: &str = "quayside_worker_slots_free";
/// 1 while draining after SIGTERM or SIGINT.
pub const WORKER_DRAINING: &str = "quayside_worker_draining";
/// 1 while the worker claims jobs: not draining and its runner's check passes.
pub const WORKER_CLAIMING: &str = "quayside_worker_claiming";
/// Always 1; labelled version, runner.
pub const BUILD_INFO: &str = "quayside_build_info";

// Gauges of the whole queue, sampled by every worker (aggregate with max, not sum).
/// Stream entries (waiting + running), by `priority`.
pub const QUEUE_DEPTH: &str = "quayside_queue_depth";
/// Entries not yet delivered to any worker (consumer-group lag), by `priority`.
pub const QUEUE_LAG: &str = "quayside_queue_lag";
/// Entries delivered and not yet finished, by `priority`.
pub const QUEUE_PENDING: &str = "quayside_queue_pending";
/// Jobs waiting for a retry.
pub const QUEUE_DELAYED: &str = "quayside_queue_delayed";
/// Entries in the dead-letter stream.
pub const QUEUE_DEAD_LETTERS: &str = "quayside_queue_dead_letters";
/// Workers whose heartbeat has not expired.
pub const QUEUE_WORKERS: &str = "quayside_queue_workers";
/// Failed attempts to sample the queue gauges; labelled queue.
pub const QUEUE_SAMPLE_ERRORS_TOTAL: &str = "quayside_queue_sample_errors_total";

/// Every name above, for tests and docs checks.
pub const ALL: [&str; 24] = [
    JOBS_CLAIMED_TOTAL,
    JOBS_FINISHED_TOTAL,
    JOBS_RETRIED_TOTAL,
    JOBS_DEAD_LETTERED_TOTAL,
    JOBS_REJECTED_TOTAL,
    JOBS_RECLAIMED_TOTAL,
    JOBS_HANDED_BACK_TOTAL,
    RUNNER_ERRORS_TOTAL,
    JOB_DURATION_SECONDS,
    JOB_QUEUE_WAIT_SECONDS,
    SANDBOX_START_SECONDS,
    JOBS_IN_FLIGHT,
    WORKER_SLOTS,
    WORKER_SLOTS_FREE,
    WORKER_DRAINING,
    WORKER_CLAIMING,
    BUILD_INFO,
    QUEUE_DEPTH,
    QUEUE_LAG,
    QUEUE_PENDING,
    QUEUE_DELAYED,
    QUEUE_DEAD_LETTERS,
    QUEUE_WORKERS,
    QUEUE_SAMPLE_ERRORS_TOTAL,
];

/// Buckets for every `_seconds` histogram: jobs take milliseconds to minutes; queue waits
/// under a backlog can take much longer.
pub const SECONDS_BUCKETS: [f64; 17] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0,
];

/// The `language` label of a job whose spec could not be read or names no configured language.
pub const UNKNOWN_LANGUAGE: &str = "unknown";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder for the process (once; later calls return the same
/// handle) and describes every metric. `None` if another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let built = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
                .map(PrometheusBuilder::install_recorder);
            match built {
                Ok(Ok(handle)) => {
                    describe();
                    Some(handle)
                }
                Ok(Err(error)) | Err(error) => {
                    tracing::warn!(error = %error, "cannot install the metrics recorder; metrics are off");
                    None
                }
            }
        })
        .clone()
}

/// Keeps histograms compact: drains recorded samples into their buckets every few seconds.
pub async fn upkeep(handle: PrometheusHandle, stop: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => handle.run_upkeep(),
        }
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        JOBS_CLAIMED_TOTAL,
        "Jobs this worker started executing, takeovers included."
    );
    describe_counter!(
        JOBS_FINISHED_TOTAL,
        "Jobs that reached a terminal result on this worker, by status."
    );
    describe_counter!(JOBS_RETRIED_TOTAL, "Attempts that failed for infrastructure reasons and were queued again with backoff, by reason.");
    describe_counter!(
        JOBS_DEAD_LETTERED_TOTAL,
        "Jobs and malformed stream entries moved to the dead-letter stream, by reason."
    );
    describe_counter!(
        JOBS_REJECTED_TOTAL,
        "Jobs refused as invalid (bad JSON, schema, limits, unknown language), by reason."
    );
    describe_counter!(
        JOBS_RECLAIMED_TOTAL,
        "Entries this worker took over after their lease expired (their worker died or stalled)."
    );
    describe_counter!(
        JOBS_HANDED_BACK_TOTAL,
        "Jobs handed back unfinished by this worker, attempt refunded (drain, runner unavailable)."
    );
    describe_counter!(
        RUNNER_ERRORS_TOTAL,
        "Runner infrastructure failures, by reason and kind (transient, permanent, cancelled)."
    );
    describe_histogram!(
        JOB_DURATION_SECONDS,
        Unit::Seconds,
        "Time a job spent in the runner (compile and run), by language."
    );
    describe_histogram!(
        JOB_QUEUE_WAIT_SECONDS,
        Unit::Seconds,
        "Time from enqueue to the start of this attempt."
    );
    describe_histogram!(
        SANDBOX_START_SECONDS,
        Unit::Seconds,
        "Time to create and start a job's sandbox (container or pod), as the runner reports it."
    );
    describe_gauge!(JOBS_IN_FLIGHT, "Jobs holding a slot on this worker.");
    describe_gauge!(
        WORKER_SLOTS,
        "Jobs this worker runs at once (worker.slots)."
    );
    describe_gauge!(
        WORKER_SLOTS_FREE,
        "Slots of this worker free to claim with."
    );
    describe_gauge!(
        WORKER_DRAINING,
        "1 while this worker drains after SIGTERM or SIGINT, else 0."
    );
    describe_gauge!(
        WORKER_CLAIMING,
        "1 while this worker claims jobs; 0 while draining or while its runner's check fails."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels say which version and runner this worker is."
    );
    describe_gauge!(
        QUEUE_DEPTH,
        "Entries in the queue's stream (waiting and running), by priority; sampled."
    );
    describe_gauge!(
        QUEUE_LAG,
        "Entries not yet delivered to any worker (consumer-group lag), by priority; sampled."
    );
    describe_gauge!(
        QUEUE_PENDING,
        "Entries delivered to a worker and not yet finished, by priority; sampled."
    );
    describe_gauge!(
        QUEUE_DELAYED,
        "Jobs waiting in the delayed set for a retry; sampled."
    );
    describe_gauge!(
        QUEUE_DEAD_LETTERS,
        "Entries in the dead-letter stream; sampled."
    );
    describe_gauge!(
        QUEUE_WORKERS,
        "Workers whose registry heartbeat has not expired; sampled."
    );
    describe_counter!(
        QUEUE_SAMPLE_ERRORS_TOTAL,
        "Failed attempts to sample the queue gauges (Redis unreachable)."
    );
}

/// The labels of one job, resolved once per attempt: no allocation when recording.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JobLabels {
    pub priority: Priority,
    language: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Family {
    Claimed,
    Finished,
    Retried,
    DeadLettered,
    Rejected,
    RunnerErrors,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Timing {
    Duration,
    QueueWait,
    SandboxStart,
}

type CounterKey = (Family, Option<JobLabels>, &'static str, &'static str);

/// One worker's metric handles. Labelled handles are created on first use and cached, so a
/// job records through a map lookup and an atomic add. With no recorder installed every
/// handle is a no-op.
#[derive(Debug)]
pub struct WorkerMetrics {
    queue: SharedString,
    runner: &'static str,
    /// Sorted configured languages; [`JobLabels`] holds an index into it (`len()` = unknown).
    languages: Vec<SharedString>,
    counters: Mutex<HashMap<CounterKey, Counter>>,
    timings: Mutex<HashMap<(Timing, JobLabels), Histogram>>,
    in_flight: Gauge,
    slots_free: Gauge,
    draining: Gauge,
    claiming: Gauge,
    /// Set with `draining`: claiming stays 0 from then on.
    drained: std::sync::atomic::AtomicBool,
    reclaimed: Counter,
    handed_back: Counter,
    sample_errors: Counter,
    depth: [Gauge; 3],
    lag: [Gauge; 3],
    pending: [Gauge; 3],
    delayed: Gauge,
    dead_letters: Gauge,
    workers: Gauge,
}

impl WorkerMetrics {
    /// Handles for a worker of `queue` with `slots` slots, running the `languages` (sorted) on
    /// `runner`.
    pub fn new<'a>(
        queue: &str,
        runner: &'static str,
        slots: usize,
        languages: impl IntoIterator<Item = &'a String>,
    ) -> Self {
        let queue = SharedString::from(queue.to_owned());
        let q = || queue.clone();
        let by_priority = |name: &'static str| {
            Priority::ALL.map(|p| metrics::gauge!(name, "queue" => q(), "priority" => p.as_label()))
        };
        metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "runner" => runner)
            .set(1.0);
        metrics::gauge!(WORKER_SLOTS, "queue" => q()).set(slots as f64);
        let slots_free = metrics::gauge!(WORKER_SLOTS_FREE, "queue" => q());
        slots_free.set(slots as f64);
        let in_flight = metrics::gauge!(JOBS_IN_FLIGHT, "queue" => q());
        in_flight.set(0.0);
        let draining = metrics::gauge!(WORKER_DRAINING, "queue" => q());
        draining.set(0.0);
        let claiming = metrics::gauge!(WORKER_CLAIMING, "queue" => q());
        claiming.set(0.0);
        let mut languages: Vec<SharedString> = languages
            .into_iter()
            .map(|l| SharedString::from(l.clone()))
            .collect();
        languages.sort();
        Self {
            runner,
            languages,
            counters: Mutex::default(),
            timings: Mutex::default(),
            in_flight,
            slots_free,
            draining,
            claiming,
            drained: std::sync::atomic::AtomicBool::new(false),
            reclaimed: metrics::counter!(JOBS_RECLAIMED_TOTAL, "queue" => q()),
            handed_back: metrics::counter!(JOBS_HANDED_BACK_TOTAL, "queue" => q()),
            sample_errors: metrics::counter!(QUEUE_SAMPLE_ERRORS_TOTAL, "queue" => q()),
            depth: by_priority(QUEUE_DEPTH),
            lag: by_priority(QUEUE_LAG),
            pending: by_priority(QUEUE_PENDING),
            delayed: metrics::gauge!(QUEUE_DELAYED, "queue" => q()),
            dead_letters: metrics::gauge!(QUEUE_DEAD_LETTERS, "queue" => q()),
            workers: metrics::gauge!(QUEUE_WORKERS, "queue" => q()),
            queue,
        }
    }

    /// The labels of a job of `language` (`None` or an unconfigured one: `unknown`).
    pub fn labels(&self, priority: Priority, language: Option<&str>) -> JobLabels {
        let unknown = self.languages.len();
        let index = language
            .and_then(|l| self.languages.binary_search_by(|k| (**k).cmp(l)).ok())
            .unwrap_or(unknown);
        JobLabels {
            priority,
            language: u16::try_from(index).unwrap_or(u16::MAX),
        }
    }

    fn language(&self, l: JobLabels) -> SharedString {
        self.languages
            .get(usize::from(l.language))
            .cloned()
            .unwrap_or(SharedString::const_str(UNKNOWN_LANGUAGE))
    }

    fn count(&self, family: Family, job: Option<JobLabels>, a: &'static str, b: &'static str) {
        let mut counters = self.counters.lock().expect("metrics lock poisoned");
        counters
            .entry((family, job, a, b))
            .or_insert_with(|| self.register(family, job, a, b))
            .increment(1);
    }

    fn register(
        &self,
        family: Family,
        job: Option<JobLabels>,
        a: &'static str,
        b: &'static str,
    ) -> Counter {
        let queue = self.queue.clone();
        let runner = self.runner;
        let (priority, language) = job
            .map(|j| (j.priority.as_label(), self.language(j)))
            .unwrap_or(("", SharedString::const_str(UNKNOWN_LANGUAGE)));
        match family {
            Family::Claimed => {
                metrics::counter!(JOBS_CLAIMED_TOTAL, "queue" => queue, "priority" => priority, "language" => language, "runner" => runner)
            }
            Family::Finished => {
                metrics::counter!(JOBS_FINISHED_TOTAL, "queue" => queue, "priority" => priority, "language" => language, "runner" => runner, "status" => a)
            }
            Family::Retried => {
                metrics::counter!(JOBS_RETRIED_TOTAL, "queue" => queue, "priority" => priority, "language" => language, "runner" => runner, "reason" => a)
            }
            Family::DeadLettered => {
                metrics::counter!(JOBS_DEAD_LETTERED_TOTAL, "queue" => queue, "priority" => priority, "language" => language, "runner" => runner, "reason" => a)
            }
            Family::Rejected => {
                metrics::counter!(JOBS_REJECTED_TOTAL, "queue" => queue, "priority" => priority, "reason" => a)
            }
            Family::RunnerErrors => {
                metrics::counter!(RUNNER_ERRORS_TOTAL, "queue" => queue, "runner" => runner, "reason" => a, "kind" => b)
            }
        }
    }

    fn time(&self, timing: Timing, job: JobLabels, d: Duration) {
        let mut timings = self.timings.lock().expect("metrics lock poisoned");
        timings
            .entry((timing, job))
            .or_insert_with(|| {
                let queue = self.queue.clone();
                let runner = self.runner;
                match timing {
                    Timing::Duration => metrics::histogram!(JOB_DURATION_SECONDS, "queue" => queue, "language" => self.language(job), "runner" => runner),
                    Timing::QueueWait => metrics::histogram!(JOB_QUEUE_WAIT_SECONDS, "queue" => queue, "priority" => job.priority.as_label()),
                    Timing::SandboxStart => metrics::histogram!(SANDBOX_START_SECONDS, "queue" => queue, "language" => self.language(job), "runner" => runner),
                }
            })
            .record(d.as_secs_f64());
    }

    /// A job started executing here, `waited` after it was enqueued.
    pub fn claimed(&self, job: JobLabels, waited: Duration) {
        self.count(Family::Claimed, Some(job), "", "");
        // Queue wait is per priority only: keep the language out of this histogram's series.
        let by_priority = JobLabels {
            language: u16::MAX,
            ..job
        };
        self.time(Timing::QueueWait, by_priority, waited);
    }

    /// A job ended with `status`; rejected and dead jobs are dead-lettered with `reason` too.
    pub fn finished(&self, job: JobLabels, status: Status, dead_letter: Option<DeadLetterReason>) {
        self.count(Family::Finished, Some(job), status.as_str(), "");
        if let Some(reason) = dead_letter {
            self.count(Family::DeadLettered, Some(job), reason.as_str(), "");
            if status == Status::Rejected {
                self.count(Family::Rejected, Some(job), reason.as_str(), "");
            }
        }
    }

    /// The claim step dead-lettered a stream entry that carried no usable job (no job to label).
    pub fn dead_lettered_entry(&self, priority: Priority, reason: DeadLetterReason) {
        let job = JobLabels {
            priority,
            language: u16::MAX,
        };
        self.count(Family::DeadLettered, Some(job), reason.as_str(), "");
        self.count(Family::Rejected, Some(job), reason.as_str(), "");
    }

    /// The runner ran for `ran`, of which the sandbox took `sandbox_start` to start.
    pub fn ran(&self, job: JobLabels, ran: Duration, sandbox_start: Option<Duration>) {
        self.time(Timing::Duration, job, ran);
        if let Some(d) = sandbox_start {
            self.time(Timing::SandboxStart, job, d);
        }
    }

    /// The runner failed with `error`.
    pub fn runner_error(&self, error: &RunnerError) {
        let kind = match error.kind() {
            crate::runner::RunnerErrorKind::Transient => "transient",
            crate::runner::RunnerErrorKind::Permanent => "permanent",
            crate::runner::RunnerErrorKind::Cancelled => "cancelled",
        };
        self.count(Family::RunnerErrors, None, error.as_label(), kind);
    }

    /// An attempt failed with a runner error labelled `reason` and was queued again.
    pub fn retried(&self, job: JobLabels, reason: &'static str) {
        self.count(Family::Retried, Some(job), reason, "");
    }

    pub fn reclaimed(&self, n: usize) {
        self.reclaimed.increment(n as u64);
    }

    pub fn handed_back(&self) {
        self.handed_back.increment(1);
    }

    /// A job took a slot; the gauges move back when the guard drops (panics included).
    pub fn slot_taken(&self) -> SlotGuard {
        self.in_flight.increment(1.0);
        self.slots_free.decrement(1.0);
        SlotGuard {
            in_flight: self.in_flight.clone(),
            slots_free: self.slots_free.clone(),
        }
    }

    pub fn set_draining(&self) {
        self.drained
            .store(true, std::sync::atomic::Ordering::Release);
        self.draining.set(1.0);
        self.claiming.set(0.0);
    }

    /// Whether the runner gate lets this worker claim.
    pub fn set_claiming(&self, on: bool) {
        if !self.drained.load(std::sync::atomic::Ordering::Acquire) {
            self.claiming.set(if on { 1.0 } else { 0.0 });
        }
    }

    pub fn set_queue(&self, s: &QueueSample) {
        for p in Priority::ALL {
            let i = p.index();
            self.depth[i].set(s.depth[i] as f64);
            self.pending[i].set(s.pending[i] as f64);
            self.lag[i].set(s.depth[i].saturating_sub(s.pending[i]) as f64);
        }
        self.delayed.set(s.delayed as f64);
        self.dead_letters.set(s.dead_letters as f64);
        self.workers.set(s.workers as f64);
    }

    pub fn sample_failed(&self) {
        self.sample_errors.increment(1);
    }
}

/// Holds one slot in the in-flight and free-slot gauges.
#[derive(Debug)]
pub struct SlotGuard {
    in_flight: Gauge,
    slots_free: Gauge,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.in_flight.decrement(1.0);
        self.slots_free.increment(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        for name in ALL {
            assert!(name.starts_with("quayside_"), "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
            assert!(
                !name.ends_with("_ms") && !name.contains("millis"),
                "{name}: base units"
            );
        }
        let unique: std::collections::HashSet<_> = ALL.iter().collect();
        assert_eq!(unique.len(), ALL.len());
    }

    #[test]
    fn languages_resolve_to_a_closed_set() {
        let langs = ["python".to_owned(), "c".to_owned()];
        let m = WorkerMetrics::new("q", "script", 2, &langs);
        let c = m.labels(Priority::High, Some("c"));
        assert_eq!(&*m.language(c), "c");
        assert_eq!(
            &*m.language(m.labels(Priority::High, Some("python"))),
            "python"
        );
        for other in [Some("cobol"), Some("../etc"), None] {
            assert_eq!(
                &*m.language(m.labels(Priority::Low, other)),
                UNKNOWN_LANGUAGE
            );
        }
    }

    #[test]
    fn recording_without_a_recorder_is_harmless() {
        let m = WorkerMetrics::new("q", "script", 2, &["c".to_owned()]);
        let j = m.labels(Priority::Normal, Some("c"));
        m.claimed(j, Duration::from_millis(3));
        m.finished(j, Status::Rejected, Some(DeadLetterReason::InvalidSpec));
        m.ran(j, Duration::from_secs(1), Some(Duration::from_millis(200)));
        drop(m.slot_taken());
    }
}
