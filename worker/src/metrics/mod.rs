//! Every metric the worker exports and how it is recorded:
//!
//! - [`table`]: each metric as data (name, kind, unit, help, labels); the descriptions, the
//!   registrations and the docs check derive from it;
//! - [`event`]: typed events, each writing its log line and moving its metrics together;
//! - here: the histogram buckets, the Prometheus recorder, and [`WorkerMetrics`], the cached
//!   handles the hot path records through.
//!
//! Nothing outside this module names a metric or calls a `metrics` macro (`clippy.toml` bans
//! them elsewhere). `docs/metrics.md` explains each one to operators. Labels come from a closed
//! set: `queue`, `priority`, `language` (a key of the worker's language table, or `unknown`),
//! `runner`, `status`, `reason`, `kind`, `version`. Never a job id or error text.
#![allow(
    clippy::disallowed_macros,
    reason = "the one module allowed to call the metrics macros"
)]

mod event;
mod pool;
mod table;
mod tenants;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, SharedString};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use quayside_common::config::{TenantConfig, DEFAULT_LABEL, OTHER_LABEL};
use quayside_common::Priority;

pub use event::{Event, HandBack};
pub use pool::{Miss, PoolMetrics};
pub use table::*;

use crate::queue::QueueSample;

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

/// Describes every metric of the table to the recorder.
fn describe() {
    for metric in &TABLE {
        metric.describe();
    }
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
    paused: Gauge,
    webhooks_pending: Gauge,
    webhooks_dead: Gauge,
    /// Configured tenants (label values and caps of the tenant gauges).
    tenants: BTreeMap<String, TenantConfig>,
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
        let q = || [queue.clone()];
        let by_priority = |m: Metric| {
            Priority::ALL.map(|p| m.gauge([queue.clone(), SharedString::const_str(p.as_label())]))
        };
        let version = SharedString::const_str(env!("CARGO_PKG_VERSION"));
        BUILD_INFO
            .gauge([version, SharedString::const_str(runner)])
            .set(1.0);
        WORKER_SLOTS.gauge(q()).set(slots as f64);
        let slots_free = WORKER_SLOTS_FREE.gauge(q());
        slots_free.set(slots as f64);
        let in_flight = JOBS_IN_FLIGHT.gauge(q());
        in_flight.set(0.0);
        let draining = WORKER_DRAINING.gauge(q());
        draining.set(0.0);
        let claiming = WORKER_CLAIMING.gauge(q());
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
            reclaimed: JOBS_RECLAIMED_TOTAL.counter(q()),
            handed_back: JOBS_HANDED_BACK_TOTAL.counter(q()),
            sample_errors: QUEUE_SAMPLE_ERRORS_TOTAL.counter(q()),
            depth: by_priority(QUEUE_DEPTH),
            lag: by_priority(QUEUE_LAG),
            pending: by_priority(QUEUE_PENDING),
            delayed: QUEUE_DELAYED.gauge(q()),
            dead_letters: QUEUE_DEAD_LETTERS.gauge(q()),
            workers: QUEUE_WORKERS.gauge(q()),
            paused: QUEUE_PAUSED.gauge(q()),
            webhooks_pending: QUEUE_WEBHOOKS_PENDING.gauge(q()),
            webhooks_dead: QUEUE_WEBHOOKS_DEAD.gauge(q()),
            tenants: BTreeMap::new(),
            queue,
        }
    }

    /// Tenant gauges labelled with these tenants (`tenants.<name>`), `default` and `other`.
    #[must_use]
    pub fn with_tenants(mut self, tenants: BTreeMap<String, TenantConfig>) -> Self {
        for (name, t) in &tenants {
            if t.max_running > 0 {
                TENANT_RUNNING_CAP
                    .gauge([self.queue.clone(), SharedString::from(name.clone())])
                    .set(f64::from(t.max_running));
            }
        }
        // The per-tenant counters start at 0 for every label the config allows, so a rate
        // over them reads 0 rather than nothing before the first event.
        let labels = [DEFAULT_LABEL, OTHER_LABEL]
            .into_iter()
            .chain(tenants.keys().map(String::as_str));
        for label in labels {
            let l = |v: &'static str| {
                [
                    self.queue.clone(),
                    SharedString::from(label.to_owned()),
                    SharedString::const_str(v),
                ]
            };
            for reason in ["running_cap", "paused"] {
                TENANT_CLAIMS_SKIPPED_TOTAL.counter(l(reason)).absolute(0);
            }
            for outcome in ["delivered", "retried", "dead"] {
                WEBHOOKS_TOTAL.counter(l(outcome)).absolute(0);
            }
        }
        self.tenants = tenants;
        self
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
        let s = SharedString::const_str;
        let queue = self.queue.clone();
        let runner = s(self.runner);
        let (priority, language) = job
            .map(|j| (s(j.priority.as_label()), self.language(j)))
            .unwrap_or((s(""), s(UNKNOWN_LANGUAGE)));
        match family {
            Family::Claimed => JOBS_CLAIMED_TOTAL.counter([queue, priority, language, runner]),
            Family::Finished => {
                JOBS_FINISHED_TOTAL.counter([queue, priority, language, runner, s(a)])
            }
            Family::Retried => {
                JOBS_RETRIED_TOTAL.counter([queue, priority, language, runner, s(a)])
            }
            Family::DeadLettered => {
                JOBS_DEAD_LETTERED_TOTAL.counter([queue, priority, language, runner, s(a)])
            }
            Family::Rejected => JOBS_REJECTED_TOTAL.counter([queue, priority, s(a)]),
            Family::RunnerErrors => RUNNER_ERRORS_TOTAL.counter([queue, runner, s(a), s(b)]),
        }
    }

    fn time(&self, timing: Timing, job: JobLabels, d: Duration) {
        let mut timings = self.timings.lock().expect("metrics lock poisoned");
        timings
            .entry((timing, job))
            .or_insert_with(|| {
                let queue = self.queue.clone();
                let runner = SharedString::const_str(self.runner);
                match timing {
                    Timing::Duration => {
                        JOB_DURATION_SECONDS.histogram([queue, self.language(job), runner])
                    }
                    Timing::QueueWait => JOB_QUEUE_WAIT_SECONDS
                        .histogram([queue, SharedString::const_str(job.priority.as_label())]),
                    Timing::SandboxStart => {
                        SANDBOX_START_SECONDS.histogram([queue, self.language(job), runner])
                    }
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

    /// The runner ran for `ran`, of which the sandbox took `sandbox_start` to start.
    pub fn ran(&self, job: JobLabels, ran: Duration, sandbox_start: Option<Duration>) {
        self.time(Timing::Duration, job, ran);
        if let Some(d) = sandbox_start {
            self.time(Timing::SandboxStart, job, d);
        }
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
    fn set_claiming(&self, on: bool) {
        if !self.drained.load(std::sync::atomic::Ordering::Acquire) {
            self.claiming.set(if on { 1.0 } else { 0.0 });
        }
    }

    pub fn set_queue(&self, s: &QueueSample) {
        for p in Priority::ALL {
            let i = p.index();
            self.depth[i].set(s.depth[i] as f64);
            self.pending[i].set(s.pending[i] as f64);
            self.lag[i].set(s.lag(p) as f64);
        }
        self.delayed.set(s.delayed as f64);
        self.dead_letters.set(s.dead_letters as f64);
        self.workers.set(s.workers as f64);
        self.paused.set(if s.paused_since_ms.is_some() {
            1.0
        } else {
            0.0
        });
        self.webhooks_pending.set(s.webhooks_pending as f64);
        self.webhooks_dead.set(s.webhooks_dead as f64);
        self.set_tenants(s);
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
mod tests;
