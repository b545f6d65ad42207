//! Every metric the worker exports, as data: name, kind, unit, help and label names. The
//! recorder's descriptions, every handle's registration (label names come from here, values
//! from the caller, in this order) and the check that `docs/metrics.md` lists exactly these
//! rows all read [`TABLE`]; nothing else spells a metric.

use metrics::{Counter, Gauge, Histogram, Label, SharedString, Unit};

/// What a metric is, as Prometheus and `docs/metrics.md` name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    /// Given to the recorder with the description (histograms: seconds).
    pub unit: Option<Unit>,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Label names, in the order callers give the values.
    pub labels: &'static [&'static str],
}

const JOB: &[&str] = &["queue", "priority", "language", "runner"];
const JOB_BY_REASON: &[&str] = &["queue", "priority", "language", "runner", "reason"];
const QUEUE: &[&str] = &["queue"];
const BY_PRIORITY: &[&str] = &["queue", "priority"];
const TIMED: &[&str] = &["queue", "language", "runner"];

/// A row; histograms measure seconds, the rest have no unit.
const fn row(
    kind: Kind,
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    let unit = match kind {
        Kind::Histogram => Some(Unit::Seconds),
        Kind::Counter | Kind::Gauge => None,
    };
    Metric {
        name,
        kind,
        unit,
        help,
        labels,
    }
}

// Counters.
pub const JOBS_CLAIMED_TOTAL: Metric = row(
    Kind::Counter,
    "quayside_jobs_claimed_total",
    JOB,
    "Jobs this worker started executing, takeovers included.",
);
pub const JOBS_FINISHED_TOTAL: Metric = row(
    Kind::Counter,
    "quayside_jobs_finished_total",
    &["queue", "priority", "language", "runner", "status"],
    "Jobs that reached a terminal result on this worker, by status.",
);
pub const JOBS_RETRIED_TOTAL: Metric = row(
    Kind::Counter,
    "quayside_jobs_retried_total",
    JOB_BY_REASON,
    "Attempts that failed for infrastructure reasons and were queued again with backoff, by reason.",
);
pub const JOBS_DEAD_LETTERED_TOTAL: Metric = row(
    Kind::Counter,
    "quayside_jobs_dead_lettered_total",
    JOB_BY_REASON,
    "Jobs and malformed stream entries moved to the dead-letter stream, by reason.",
);
pub const JOBS_REJECTED_TOTAL: Metric = row(
    Kind::Counter,
    "quayside_jobs_rejected_total",
    &["queue", "priority", "reason"],
    "Jobs refused as invalid (bad JSON, schema, limits, unknown language), by reason.",
);
pub const JOBS_RECLAIMED_TOTAL: Metric = row(
    Kind::Counter,
    "quayside_jobs_reclaimed_total",
    QUEUE,
    "Entries this worker took over after their lease expired (their worker died or stalled).",
);
pub const JOBS_HANDED_BACK_TOTAL: Metric = row(
    Kind::Counter,
    "quayside_jobs_handed_back_total",
    QUEUE,
    "Jobs handed back unfinished by this worker, attempt refunded (drain, runner unavailable).",
);
pub const RUNNER_ERRORS_TOTAL: Metric = row(
    Kind::Counter,
    "quayside_runner_errors_total",
    &["queue", "runner", "reason", "kind"],
    "Runner infrastructure failures, by reason and kind (transient, permanent, cancelled).",
);

// Histograms.
pub const JOB_DURATION_SECONDS: Metric = row(
    Kind::Histogram,
    "quayside_job_duration_seconds",
    TIMED,
    "Time a job spent in the runner (compile and run), by language.",
);
pub const JOB_QUEUE_WAIT_SECONDS: Metric = row(
    Kind::Histogram,
    "quayside_job_queue_wait_seconds",
    BY_PRIORITY,
    "Time from enqueue to the start of this attempt.",
);
pub const SANDBOX_START_SECONDS: Metric = row(
    Kind::Histogram,
    "quayside_sandbox_start_seconds",
    TIMED,
    "Time to create and start a job's sandbox (container or pod), as the runner reports it.",
);

// The Docker runner's warm pool.
const POOL: &[&str] = &["queue", "language"];
pub const POOL_CONTAINERS: Metric = row(
    Kind::Gauge,
    "quayside_pool_containers",
    POOL,
    "Warm containers waiting for a job on this worker, by language.",
);
pub const POOL_HITS_TOTAL: Metric = row(
    Kind::Counter,
    "quayside_pool_hits_total",
    POOL,
    "Jobs that ran in a warm container.",
);
pub const POOL_MISSES_TOTAL: Metric = row(
    Kind::Counter,
    "quayside_pool_misses_total",
    &["queue", "language", "reason"],
    "Jobs of a pooled language that took the cold path: limits, empty, failed.",
);
pub const POOL_REFILL_SECONDS: Metric = row(
    Kind::Histogram,
    "quayside_pool_refill_seconds",
    POOL,
    "Time to create, attach and start one warm container.",
);

// Gauges of this worker.
pub const JOBS_IN_FLIGHT: Metric = row(
    Kind::Gauge,
    "quayside_jobs_in_flight",
    QUEUE,
    "Jobs holding a slot on this worker.",
);
pub const WORKER_SLOTS: Metric = row(
    Kind::Gauge,
    "quayside_worker_slots",
    QUEUE,
    "Jobs this worker runs at once (worker.slots).",
);
pub const WORKER_SLOTS_FREE: Metric = row(
    Kind::Gauge,
    "quayside_worker_slots_free",
    QUEUE,
    "Slots of this worker free to claim with.",
);
pub const WORKER_DRAINING: Metric = row(
    Kind::Gauge,
    "quayside_worker_draining",
    QUEUE,
    "1 while this worker drains after SIGTERM or SIGINT, else 0.",
);
pub const WORKER_CLAIMING: Metric = row(
    Kind::Gauge,
    "quayside_worker_claiming",
    QUEUE,
    "1 while this worker claims jobs; 0 while draining or while its runner's check fails.",
);
pub const BUILD_INFO: Metric = row(
    Kind::Gauge,
    "quayside_build_info",
    &["version", "runner"],
    "Always 1; the labels say which version and runner this worker is.",
);

// Gauges of the whole queue, sampled by every worker (aggregate with max, not sum).
pub const QUEUE_DEPTH: Metric = row(
    Kind::Gauge,
    "quayside_queue_depth",
    BY_PRIORITY,
    "Entries in the queue's stream (waiting and running), by priority; sampled.",
);
pub const QUEUE_LAG: Metric = row(
    Kind::Gauge,
    "quayside_queue_lag",
    BY_PRIORITY,
    "Entries not yet delivered to any worker (consumer-group lag), by priority; sampled.",
);
pub const QUEUE_PENDING: Metric = row(
    Kind::Gauge,
    "quayside_queue_pending",
    BY_PRIORITY,
    "Entries delivered to a worker and not yet finished, by priority; sampled.",
);
pub const QUEUE_DELAYED: Metric = row(
    Kind::Gauge,
    "quayside_queue_delayed",
    QUEUE,
    "Jobs waiting in the delayed set for a retry; sampled.",
);
pub const QUEUE_DEAD_LETTERS: Metric = row(
    Kind::Gauge,
    "quayside_queue_dead_letters",
    QUEUE,
    "Entries in the dead-letter stream; sampled.",
);
pub const QUEUE_WORKERS: Metric = row(
    Kind::Gauge,
    "quayside_queue_workers",
    QUEUE,
    "Workers whose registry heartbeat has not expired; sampled.",
);
pub const QUEUE_PAUSED: Metric = row(
    Kind::Gauge,
    "quayside_queue_paused",
    QUEUE,
    "1 while an operator has the queue paused (no worker claims), else 0; sampled.",
);
const BY_TENANT: &[&str] = &["queue", "tenant"];
pub const TENANT_QUEUED: Metric = row(
    Kind::Gauge,
    "quayside_tenant_queued",
    BY_TENANT,
    "Jobs of the tenant waiting to run; tenants not in the config fold into `other`; sampled.",
);
pub const TENANT_RUNNING: Metric = row(
    Kind::Gauge,
    "quayside_tenant_running",
    BY_TENANT,
    "Jobs of the tenant claimed and not yet finished, fleet-wide; sampled.",
);
pub const TENANT_RUNNING_CAP: Metric = row(
    Kind::Gauge,
    "quayside_tenant_running_cap",
    BY_TENANT,
    "The tenant's max_running, for configured tenants that have one.",
);
pub const TENANT_PAUSED: Metric = row(
    Kind::Gauge,
    "quayside_tenant_paused",
    BY_TENANT,
    "1 while an operator has the tenant paused (workers skip its jobs), else 0; sampled.",
);
pub const TENANT_CLAIMS_SKIPPED_TOTAL: Metric = row(
    Kind::Counter,
    "quayside_tenant_claims_skipped_total",
    &["queue", "tenant", "reason"],
    "Claims of this worker that passed over a tenant with queued work, by reason: running_cap \
     (at its max_running) or paused.",
);
pub const WEBHOOKS_TOTAL: Metric = row(
    Kind::Counter,
    "quayside_webhooks_total",
    &["queue", "tenant", "outcome"],
    "Completion-webhook attempts this worker made, by outcome: delivered (2xx), retried \
     (will be tried again), dead (given up: retry time over, or the target refused).",
);
pub const QUEUE_WEBHOOKS_PENDING: Metric = row(
    Kind::Gauge,
    "quayside_queue_webhooks_pending",
    QUEUE,
    "Completion webhooks waiting to be delivered (due, being sent, or waiting to retry); sampled.",
);
pub const QUEUE_WEBHOOKS_DEAD: Metric = row(
    Kind::Gauge,
    "quayside_queue_webhooks_dead",
    QUEUE,
    "Entries in the webhook dead-letter stream; sampled.",
);
pub const QUEUE_SAMPLE_ERRORS_TOTAL: Metric = row(
    Kind::Counter,
    "quayside_queue_sample_errors_total",
    QUEUE,
    "Failed attempts to sample the queue gauges (Redis unreachable).",
);

/// Every metric, in the order `docs/metrics.md` lists them.
pub const TABLE: [Metric; 37] = [
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
    POOL_CONTAINERS,
    POOL_HITS_TOTAL,
    POOL_MISSES_TOTAL,
    POOL_REFILL_SECONDS,
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
    QUEUE_PAUSED,
    TENANT_QUEUED,
    TENANT_RUNNING,
    TENANT_RUNNING_CAP,
    TENANT_PAUSED,
    TENANT_CLAIMS_SKIPPED_TOTAL,
    WEBHOOKS_TOTAL,
    QUEUE_WEBHOOKS_PENDING,
    QUEUE_WEBHOOKS_DEAD,
    QUEUE_SAMPLE_ERRORS_TOTAL,
];

/// Every metric's name, in table order.
pub const ALL: [&str; TABLE.len()] = {
    let mut names = [""; TABLE.len()];
    let mut i = 0;
    while i < TABLE.len() {
        names[i] = TABLE[i].name;
        i += 1;
    }
    names
};

impl Metric {
    /// Gives the recorder this metric's unit and help text.
    pub fn describe(&self) {
        let (name, help) = (self.name, self.help);
        metrics::with_recorder(|r| match self.kind {
            Kind::Counter => r.describe_counter(name.into(), self.unit, help.into()),
            Kind::Gauge => r.describe_gauge(name.into(), self.unit, help.into()),
            Kind::Histogram => r.describe_histogram(name.into(), self.unit, help.into()),
        });
    }

    /// One series' labels: the table's names with `values`, in order.
    fn series(&self, values: impl IntoIterator<Item = SharedString>) -> Vec<Label> {
        let labels: Vec<Label> = self
            .labels
            .iter()
            .zip(values)
            .map(|(k, v)| Label::new(*k, v))
            .collect();
        debug_assert_eq!(
            labels.len(),
            self.labels.len(),
            "{}: label values",
            self.name
        );
        labels
    }

    /// The counter of the series with label `values` (in [`Metric::labels`] order).
    pub fn counter(&self, values: impl IntoIterator<Item = SharedString>) -> Counter {
        debug_assert_eq!(self.kind, Kind::Counter, "{}", self.name);
        metrics::counter!(self.name, self.series(values))
    }

    /// The gauge of the series with label `values`.
    pub fn gauge(&self, values: impl IntoIterator<Item = SharedString>) -> Gauge {
        debug_assert_eq!(self.kind, Kind::Gauge, "{}", self.name);
        metrics::gauge!(self.name, self.series(values))
    }

    /// The histogram of the series with label `values`.
    pub fn histogram(&self, values: impl IntoIterator<Item = SharedString>) -> Histogram {
        debug_assert_eq!(self.kind, Kind::Histogram, "{}", self.name);
        metrics::histogram!(self.name, self.series(values))
    }
}
