//! The Quayside worker: claim → execute → report.
//!
//! - [`claim`]: the claim loop. It holds one semaphore permit per slot and never claims more
//!   entries than it holds permits; strict priority with a starvation guard.
//! - [`execute`]: one job: validate its spec, run it on the [`runner`], then finish, retry or
//!   dead-letter it through one fenced [`queue`] script.
//! - [`inflight`]: the running jobs, their lease renewal and cancellation.
//! - [`retry`]: the pure retry/dead-letter decision and backoff.
//! - [`queue`]: the queue seam ([`queue::JobQueue`]) and its Redis implementation.
//! - [`runner`]: the runner seam ([`runner::Runner`]).
//! - [`shutdown`], [`telemetry`]: signals and drain; logs.
//! - [`metrics`]: every metric name, the Prometheus recorder, the hot path's cached handles.
//! - [`health`]: the HTTP listener for `/metrics`, `/healthz` and `/readyz`.
//!
//! [`run`] wires these together and returns after a graceful drain.

pub mod claim;
pub mod execute;
pub mod health;
pub mod inflight;
pub mod logs;
pub mod metrics;
pub mod queue;
pub mod retry;
pub mod runner;
pub mod shutdown;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use quayside_common::config::Config;
use quayside_common::connection::{ConnectError, Redis};
use quayside_common::job::SpecError;
use quayside_common::{now_ms, Keys};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::execute::Context;
use crate::health::Health;
use crate::inflight::{InFlight, StopReason};
use crate::metrics::WorkerMetrics;
use crate::queue::{JobQueue, RedisQueue};
use crate::runner::{RunnerError, SharedRunner};

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid queue name")]
    Queue(#[from] SpecError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("cannot listen on {addr} (metrics.listen_addr)")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("runner {runner} is not ready")]
    Runner {
        runner: &'static str,
        #[source]
        source: RunnerError,
    },
}

/// A unique consumer name: host, pid and a random suffix, so a restarted process never inherits
/// (and never waits on) the pending entries of its predecessor.
pub fn generate_worker_id() -> String {
    let host =
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "host".into());
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(60)
        .collect();
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// Serves the queue until `shutdown` fires, then drains: stops claiming, lets running jobs
/// finish for up to `worker.drain_timeout_ms`, then stops them and hands them back. The
/// operations endpoint (`metrics.listen_addr`) serves from the start to the end of the drain.
///
/// # Errors
/// The queue name is invalid, the listen address cannot be bound or the runner is not ready.
/// Redis being unreachable is not an error: the worker waits for it.
pub async fn run(
    cfg: Config,
    runner: SharedRunner,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let cfg = Arc::new(cfg);
    let worker_id = cfg.worker.id.clone().unwrap_or_else(generate_worker_id);
    let keys = Keys::new(&cfg.queue.name)?;
    let redis = Arc::new(Redis::new(&cfg.redis)?);
    let queue: Arc<dyn JobQueue> = Arc::new(RedisQueue::new(
        redis,
        keys,
        cfg.queue.clone(),
        worker_id.clone(),
    ));
    let exporter = if cfg.metrics.enabled {
        metrics::install()
    } else {
        None
    };
    let metrics = Arc::new(WorkerMetrics::new(
        &cfg.queue.name,
        runner.name(),
        cfg.worker.slots,
        cfg.languages.keys(),
    ));

    // Background tasks live until the drain is over; the listener starts first, so /healthz
    // answers and /readyz says why while Redis or the runner is not there yet.
    let background = CancellationToken::new();
    let chores = TaskTracker::new();
    let served = async {
        if !cfg.metrics.listen_addr.is_empty() {
            let addr = cfg.metrics.listen_addr.clone();
            let parsed = addr.parse().map_err(|e| WorkerError::Listen {
                addr: addr.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
            })?;
            let listener = health::bind(parsed)
                .await
                .map_err(|source| WorkerError::Listen { addr, source })?;
            if let Ok(local) = listener.local_addr() {
                tracing::info!(addr = %local, "serving /metrics, /healthz and /readyz");
            }
            let health = Arc::new(Health {
                queue: Arc::clone(&queue),
                runner: Arc::clone(&runner),
                draining: shutdown.clone(),
                metrics: exporter.clone(),
            });
            chores.spawn(health::serve(listener, health, background.clone()));
        }
        if let Some(handle) = exporter.clone() {
            chores.spawn(metrics::upkeep(handle, background.clone()));
        }
        serve(
            &cfg,
            &worker_id,
            queue.clone(),
            runner,
            metrics,
            exporter.is_some(),
            (&chores, &background),
            shutdown.clone(),
        )
        .await
    }
    .await;
    background.cancel();
    chores.close();
    chores.wait().await;
    tracing::info!("worker stopped");
    served
}

#[allow(
    clippy::too_many_arguments,
    reason = "the pieces run() built; a struct for one call would only rename them"
)]
async fn serve(
    cfg: &Arc<Config>,
    worker_id: &str,
    queue: Arc<dyn JobQueue>,
    runner: SharedRunner,
    metrics: Arc<WorkerMetrics>,
    sample: bool,
    (chores, background): (&TaskTracker, &CancellationToken),
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    runner.check().await.map_err(|source| WorkerError::Runner {
        runner: runner.name(),
        source,
    })?;
    while let Err(error) = queue.prepare().await {
        tracing::warn!(error = %error, "redis not ready; retrying");
        if claim::sleep_or_stop(&shutdown, Duration::from_secs(1)).await {
            return Ok(());
        }
    }
    tracing::info!(worker = %worker_id, queue = %cfg.queue.name, slots = cfg.worker.slots, runner = runner.name(), "worker started");

    let inflight = Arc::new(InFlight::default());
    let ctx = Arc::new(Context {
        cfg: Arc::clone(cfg),
        queue: Arc::clone(&queue),
        runner: Arc::clone(&runner),
        inflight: Arc::clone(&inflight),
        metrics: Arc::clone(&metrics),
        worker_id: worker_id.to_owned(),
    });

    chores.spawn(Arc::clone(&inflight).renew_forever(
        Arc::clone(&queue),
        Duration::from_millis(cfg.worker.lease_ms / 3),
        background.clone(),
    ));
    chores.spawn(Arc::clone(&inflight).listen_for_cancels(Arc::clone(&queue), background.clone()));
    chores.spawn(promote_loop(
        Arc::clone(&queue),
        cfg.worker.promote_interval_ms,
        background.clone(),
    ));
    chores.spawn(heartbeat_loop(Arc::clone(&ctx), background.clone()));
    if sample {
        chores.spawn(sample_loop(
            Arc::clone(&queue),
            Arc::clone(&metrics),
            Duration::from_millis(cfg.metrics.sample_interval_ms),
            background.clone(),
        ));
    }

    let jobs = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(cfg.worker.slots));
    claim::claim_loop(Arc::clone(&ctx), slots, jobs.clone(), shutdown).await;

    metrics.set_draining();
    tracing::info!(
        running = inflight.len(),
        grace_ms = cfg.worker.drain_timeout_ms,
        "draining: no new claims"
    );
    jobs.close();
    let grace = Duration::from_millis(cfg.worker.drain_timeout_ms);
    if tokio::time::timeout(grace, jobs.wait()).await.is_err() {
        tracing::warn!(
            running = inflight.len(),
            "grace period over; stopping running jobs and handing them back"
        );
        inflight.stop_all(StopReason::Drain);
        jobs.wait().await;
    }
    Ok(())
}

/// Samples the queue's size into the queue gauges every `every`. Every worker samples (so the
/// gauges survive any one worker); dashboards aggregate them with `max`.
async fn sample_loop(
    queue: Arc<dyn JobQueue>,
    metrics: Arc<WorkerMetrics>,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        match queue.sample().await {
            Ok(sample) => metrics.set_queue(&sample),
            Err(error) => {
                metrics.sample_failed();
                tracing::debug!(error = %error, "cannot sample queue gauges");
            }
        }
        if claim::sleep_or_stop(&stop, every).await {
            return;
        }
    }
}

/// Moves due retries back to their streams every `interval_ms`.
async fn promote_loop(queue: Arc<dyn JobQueue>, interval_ms: u64, stop: CancellationToken) {
    let interval = Duration::from_millis(interval_ms);
    loop {
        if let Err(error) = queue.promote(1000).await {
            tracing::warn!(error = %error, "cannot promote due retries");
        }
        if claim::sleep_or_stop(&stop, interval).await {
            return;
        }
    }
}

/// How often a worker looks for sandboxes of dead workers.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Removes sandboxes whose worker is no longer in the registry (it crashed mid-job).
async fn sweep_orphans(ctx: &Context) {
    match ctx.queue.live_workers().await {
        Ok(live) => match ctx.runner.sweep_orphans(&live).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "removed sandboxes of dead workers"),
            Err(error) => tracing::warn!(error = %error, "cannot sweep sandboxes of dead workers"),
        },
        Err(error) => tracing::warn!(error = %error, "cannot list live workers"),
    }
}

/// Keeps this worker's entry in the registry fresh: every `heartbeat_interval_ms`, and within a
/// second of its in-flight count changing, so `quayside stats` shows what runs now. Now and then
/// it also sweeps dead workers' sandboxes.
async fn heartbeat_loop(ctx: Arc<Context>, stop: CancellationToken) {
    let every = Duration::from_millis(ctx.cfg.worker.heartbeat_interval_ms);
    let check = every.min(Duration::from_secs(1));
    let started = now_ms();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut sent: Option<usize> = None;
    let mut due = tokio::time::Instant::now();
    let mut sweep_due = tokio::time::Instant::now();
    loop {
        let in_flight = ctx.inflight.len();
        if sent != Some(in_flight) || tokio::time::Instant::now() >= due {
            let doc = serde_json::json!({
                "id": ctx.worker_id,
                "host": host.trim(),
                "pid": std::process::id(),
                "version": env!("CARGO_PKG_VERSION"),
                "runner": ctx.runner.name(),
                "slots": ctx.cfg.worker.slots,
                "in_flight": in_flight,
                "started_at_ms": started,
                "heartbeat_at_ms": now_ms(),
            });
            let ttl_ms = ctx.cfg.worker.heartbeat_interval_ms * 3;
            match ctx.queue.heartbeat(&doc.to_string(), ttl_ms).await {
                Ok(()) => sent = Some(in_flight),
                Err(error) => tracing::warn!(error = %error, "cannot heartbeat"),
            }
            due = tokio::time::Instant::now() + every;
        }
        if tokio::time::Instant::now() >= sweep_due {
            sweep_orphans(&ctx).await;
            sweep_due = tokio::time::Instant::now() + SWEEP_INTERVAL;
        }
        if claim::sleep_or_stop(&stop, check).await {
            return;
        }
    }
}
