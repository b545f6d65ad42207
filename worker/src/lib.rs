//! The Quayside worker: claim → execute → report.
//!
//! - [`claim`]: the claim loop. It holds one semaphore permit per slot and never claims more
//!   entries than it holds permits; strict priority with a starvation guard.
//! - [`execute`]: one job: validate its spec, run it on the [`runner`], decide its [`report`].
//! - [`report`]: an attempt's outcome (finish, dead-letter, retry, hand back), written fenced
//!   through the [`queue`], counted and logged once Redis took it; the live log.
//! - [`logs`]: the fenced writer of a job's log stream that the live log writes through.
//! - [`inflight`]: the running jobs, their lease renewal and cancellation.
//! - [`gate`]: claims only while the runner is available; a probe reopens it.
//! - [`retry`]: the pure retry/dead-letter decision and backoff.
//! - [`upkeep`]: heartbeat, orphan sweep and removal retries, promotion, queue sampling; the
//!   one `spawn` every long-lived task starts through, which logs how it ended.
//! - [`outage`]: one log story per outage of Redis or the runner.
//! - [`queue`]: the queue seam ([`queue::JobQueue`]) and its Redis implementation.
//! - [`runner`]: the runner seam ([`runner::Runner`]).
//! - [`shutdown`], [`telemetry`]: signals and drain; logs.
//! - [`metrics`]: every metric name, the Prometheus recorder, the hot path's cached handles.
//! - [`health`]: the HTTP listener for `/metrics`, `/healthz` and `/readyz`.
//!
//! [`run`] wires these together and returns after a graceful drain.

pub mod claim;
pub mod context;
pub mod execute;
pub mod gate;
pub mod health;
pub mod inflight;
pub mod metrics;
pub mod outage;
pub mod queue;
pub mod report;
pub mod retry;
pub mod runner;
pub mod shutdown;
pub mod telemetry;
pub mod upkeep;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use quayside_common::config::Config;
use quayside_common::connection::{ConnectError, Redis};
use quayside_common::job::SpecError;
use quayside_common::Keys;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::context::Context;
use crate::gate::RunnerGate;
use crate::health::Health;
use crate::inflight::{InFlight, StopReason};
use crate::metrics::WorkerMetrics;
use crate::queue::{log_error, JobQueue, Observed, RedisQueue};
use crate::runner::{Fleet, SharedRunner};

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
/// The queue name is invalid or the listen address cannot be bound. Redis or the runner being
/// unavailable is not an error: the worker waits for them (`/readyz` says why).
pub async fn run(
    cfg: Config,
    runner: SharedRunner,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let cfg = Arc::new(cfg);
    let worker_id = cfg.worker.id.clone().unwrap_or_else(generate_worker_id);
    let keys = Keys::new(&cfg.queue.name)?;
    let redis = Arc::new(Redis::new(&cfg.redis)?);
    let observed = Observed::new(
        RedisQueue::new(
            Arc::clone(&redis),
            keys.clone(),
            cfg.queue.clone(),
            worker_id.clone(),
        )
        .with_tenants(cfg.tenants.clone()),
    );
    let redis_outage = observed.outage();
    let queue: Arc<dyn JobQueue> = Arc::new(observed);
    let exporter = if cfg.metrics.enabled {
        metrics::install()
    } else {
        None
    };
    let metrics = Arc::new(
        WorkerMetrics::new(
            &cfg.queue.name,
            runner.name(),
            cfg.worker.slots,
            cfg.languages.keys(),
        )
        .with_tenants(cfg.tenants.clone()),
    );
    let gate = Arc::new(RunnerGate::new(Arc::clone(&runner), Arc::clone(&metrics)));

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
                redis: redis_outage,
                runner: Arc::clone(&runner),
                gate: Arc::clone(&gate),
                draining: shutdown.clone(),
                metrics: exporter.clone(),
            });
            upkeep::spawn(
                &chores,
                "health endpoint",
                health::serve(listener, health, background.clone()),
            );
        }
        if let Some(handle) = exporter.clone() {
            upkeep::spawn(
                &chores,
                "metrics upkeep",
                metrics::upkeep(handle, background.clone()),
            );
        }
        upkeep::spawn(
            &chores,
            "runner gate probe",
            Arc::clone(&gate).probe_forever(background.clone()),
        );
        if cfg.webhooks.send {
            let sender = webhook::Sender {
                cfg: Arc::clone(&cfg),
                redis: Arc::clone(&redis),
                keys: keys.clone(),
                metrics: Arc::clone(&metrics),
            };
            upkeep::spawn(&chores, "webhook sender", sender.run(background.clone()));
        }
        serve(
            &cfg,
            &worker_id,
            queue.clone(),
            (runner, gate),
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
    (runner, gate): (SharedRunner, Arc<RunnerGate>),
    metrics: Arc<WorkerMetrics>,
    sample: bool,
    (chores, background): (&TaskTracker, &CancellationToken),
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    // Redis first (the queue's outage log says what is wrong, once), then the fleet id.
    let fleet_id = loop {
        match queue.prepare().await {
            Ok(()) => match queue.fleet_id().await {
                Ok(id) => break id,
                Err(error) => log_error(&error, "read the fleet id"),
            },
            Err(error) => log_error(&error, "prepare the queue"),
        }
        if shutdown::sleep_or_stop(&shutdown, Duration::from_secs(1)).await {
            return Ok(());
        }
    };
    let fleet = Fleet {
        queue: cfg.queue.name.clone(),
        id: fleet_id,
    };
    tracing::info!(worker = %worker_id, queue = %cfg.queue.name, fleet = %fleet.id, slots = cfg.worker.slots, runner = runner.name(), "worker started");

    runner.warm_up(&fleet).await;
    let inflight = Arc::new(InFlight::default());
    let ctx = Arc::new(Context {
        cfg: Arc::clone(cfg),
        queue: Arc::clone(&queue),
        runner: Arc::clone(&runner),
        gate,
        inflight: Arc::clone(&inflight),
        metrics: Arc::clone(&metrics),
        worker_id: worker_id.to_owned(),
        fleet,
        beat: Arc::default(),
    });

    let renew = Duration::from_millis(cfg.worker.lease_ms / 3);
    let renewals =
        Arc::clone(&inflight).renew_forever(Arc::clone(&queue), renew, background.clone());
    upkeep::spawn(chores, "lease renewal", renewals);
    let cancels = Arc::clone(&inflight).listen_for_cancels(Arc::clone(&queue), background.clone());
    upkeep::spawn(chores, "cancel listener", cancels);
    let promote = upkeep::promote_loop(
        Arc::clone(&queue),
        cfg.worker.promote_interval_ms,
        background.clone(),
    );
    upkeep::spawn(chores, "promote", promote);
    let heartbeat = upkeep::heartbeat_loop(Arc::clone(&ctx), background.clone());
    upkeep::spawn(chores, "heartbeat", heartbeat);
    let sandboxes = upkeep::sandbox_loop(Arc::clone(&ctx), background.clone());
    upkeep::spawn(chores, "sandbox sweep", sandboxes);
    if sample {
        let every = Duration::from_millis(cfg.metrics.sample_interval_ms);
        let sampler = upkeep::sample_loop(
            Arc::clone(&queue),
            Arc::clone(&metrics),
            every,
            background.clone(),
        );
        upkeep::spawn(chores, "queue sampler", sampler);
    }

    let jobs = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(cfg.worker.slots));
    claim::claim_loop(Arc::clone(&ctx), slots, jobs.clone(), shutdown).await;

    metrics.set_draining();
    // No job starts from here on: warm sandboxes would only wait to be removed.
    runner.cool_down().await;
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
    upkeep::remove_leftovers(&runner).await;
    Ok(())
}
