//! The worker's background chores: heartbeat, the sandbox chores (orphan sweep, removal
//! retries, the leftovers before exit), promotion of due retries, and queue sampling for the
//! gauges. Every long-lived task, these and the others the worker runs (lease renewal, cancel
//! listener, runner gate probe, operations endpoint), starts through [`spawn`], which logs how
//! it ended (taskbroker's `log_task_completion`).

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use quayside_common::now_ms;
use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::context::Context;
use crate::metrics::{Event, WorkerMetrics};
use crate::queue::{log_error, JobQueue};
use crate::runner::SharedRunner;
use crate::shutdown::sleep_or_stop;

/// How often a worker looks for sandboxes of dead workers.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How often sandboxes whose removal failed are tried again.
const REMOVAL_RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// What a long-lived task answers when it ends: nothing, or a result worth logging.
pub trait TaskEnd: Send + 'static {
    /// The error to log, if the task ended with one.
    fn error(&self) -> Option<String>;
}

impl TaskEnd for () {
    fn error(&self) -> Option<String> {
        None
    }
}

impl<E: Display + Send + 'static> TaskEnd for Result<(), E> {
    fn error(&self) -> Option<String> {
        self.as_ref().err().map(ToString::to_string)
    }
}

/// Runs `task` on `tracker` and logs how it ended: returned (debug: they end on the drain),
/// failed, panicked or was aborted (error: a chore the worker relies on is gone).
pub fn spawn<F>(tracker: &TaskTracker, name: &'static str, task: F)
where
    F: Future + Send + 'static,
    F::Output: TaskEnd,
{
    let handle = tracker.spawn(task);
    tracker.spawn(async move { log_task_completion(name, handle.await) });
}

/// The log line of a task that ended (taskbroker's `log_task_completion`).
fn log_task_completion<T: TaskEnd>(task: &'static str, ended: Result<T, JoinError>) {
    match ended {
        Ok(end) => match end.error() {
            None => tracing::debug!(task, "task ended"),
            Some(error) => tracing::error!(task, error, "task failed"),
        },
        Err(e) if e.is_panic() => tracing::error!(task, error = %e, "task panicked"),
        Err(e) => tracing::error!(task, error = %e, "task aborted"),
    }
}

/// Samples the queue's size into the queue gauges every `every`. Every worker samples (so the
/// gauges survive any one worker); dashboards aggregate them with `max`.
pub async fn sample_loop(
    queue: Arc<dyn JobQueue>,
    metrics: Arc<WorkerMetrics>,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        match queue.sample().await {
            Ok(sample) => metrics.set_queue(&sample),
            Err(error) => metrics.emit(Event::SampleFailed(&error)),
        }
        if sleep_or_stop(&stop, every).await {
            return;
        }
    }
}

/// Moves due retries back to their streams every `interval_ms`.
pub async fn promote_loop(queue: Arc<dyn JobQueue>, interval_ms: u64, stop: CancellationToken) {
    let interval = Duration::from_millis(interval_ms);
    loop {
        if let Err(error) = queue.promote(1000).await {
            log_error(&error, "promote due retries");
        }
        if sleep_or_stop(&stop, interval).await {
            return;
        }
    }
}

/// Removes the fleet's sandboxes whose worker is no longer in the registry (it crashed
/// mid-job), this worker's own it no longer uses, and anyone's long past their deadline.
async fn sweep_orphans(ctx: &Context) {
    match ctx.queue.live_workers().await {
        Ok(live) => match ctx.runner.sweep_orphans(&ctx.fleet, &live).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "orphan sweep removed sandboxes"),
            Err(error) => tracing::debug!(error = %error, "cannot sweep sandboxes"),
        },
        Err(error) => log_error(&error, "list live workers"),
    }
}

/// Sweeps orphans every [`SWEEP_INTERVAL`] and retries failed sandbox removals every
/// [`REMOVAL_RETRY_INTERVAL`], until `stop`. The first sweep runs at once (what a previous
/// process with this worker's id left goes first), the second once a worker that died just
/// before this one started has left the registry (its sandboxes are spared while it is in it).
pub async fn sandbox_loop(ctx: Arc<Context>, stop: CancellationToken) {
    let mut sweep_due = tokio::time::Instant::now();
    let mut next_gap = Duration::from_millis(registry_ttl_ms(&ctx.cfg)) + Duration::from_secs(1);
    loop {
        let left = ctx.runner.retry_removals().await;
        if left > 0 {
            tracing::debug!(left, "sandboxes still to remove");
        }
        if tokio::time::Instant::now() >= sweep_due {
            sweep_orphans(&ctx).await;
            sweep_due =
                tokio::time::Instant::now() + std::mem::replace(&mut next_gap, SWEEP_INTERVAL);
        }
        if sleep_or_stop(&stop, REMOVAL_RETRY_INTERVAL).await {
            return;
        }
    }
}

/// How long a draining worker keeps trying to remove sandboxes whose removal failed.
const LEFTOVER_PATIENCE: Duration = Duration::from_secs(10);

/// Before exit: removes what this worker failed to remove, as far as the runner allows.
pub async fn remove_leftovers(runner: &SharedRunner) {
    let give_up = tokio::time::Instant::now() + LEFTOVER_PATIENCE;
    loop {
        let left = runner.retry_removals().await;
        if left == 0 {
            return;
        }
        if tokio::time::Instant::now() >= give_up {
            tracing::warn!(
                left,
                "exiting with sandboxes this worker could not remove; the fleet's sweep will"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How long (ms) a worker stays in the registry after its last heartbeat.
fn registry_ttl_ms(cfg: &quayside_common::config::Config) -> u64 {
    cfg.worker.heartbeat_interval_ms.saturating_mul(3)
}

/// Keeps this worker's entry in the registry fresh: every `heartbeat_interval_ms`, within a
/// second of its in-flight count changing, and at once when an execution asks ([`Beat`]).
/// It also keeps the queue's fleet id in place.
pub async fn heartbeat_loop(ctx: Arc<Context>, stop: CancellationToken) {
    let every = Duration::from_millis(ctx.cfg.worker.heartbeat_interval_ms);
    let check = every.min(Duration::from_secs(1));
    let started = now_ms();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut sent: Option<usize> = None;
    let mut due = tokio::time::Instant::now();
    loop {
        let (ticket, asked) = ctx.beat.asked();
        let in_flight = ctx.inflight.len();
        if asked || sent != Some(in_flight) || tokio::time::Instant::now() >= due {
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
            let ttl_ms = registry_ttl_ms(&ctx.cfg);
            let periodic = tokio::time::Instant::now() >= due;
            match ctx
                .queue
                .heartbeat(&doc.to_string(), ttl_ms, periodic)
                .await
            {
                Ok(()) => {
                    sent = Some(in_flight);
                    ctx.beat.written(ticket);
                    if tokio::time::Instant::now() >= due {
                        // Puts the fleet id back should Redis have lost it.
                        if let Err(error) = ctx.queue.fleet_id().await {
                            log_error(&error, "keep the fleet id");
                        }
                    }
                }
                Err(error) => log_error(&error, "heartbeat"),
            }
            if tokio::time::Instant::now() >= due {
                due = tokio::time::Instant::now() + every;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(check) => {}
            _ = ctx.beat.wanted() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use super::*;

    /// Collects the log lines written while it is the default subscriber.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn each_ending_is_logged_as_what_it_was_and_the_tracker_waits_for_it() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let tracker = TaskTracker::new();
        spawn(&tracker, "returns", async {});
        spawn(&tracker, "fails", async { Err::<(), _>("broken") });
        spawn(&tracker, "panics", async {
            if std::hint::black_box(true) {
                panic!("on purpose");
            }
        });
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .expect("all three ended");
        let text = String::from_utf8(lines.0.lock().expect("lock").clone()).expect("utf-8");
        for (task, line) in [
            ("returns", "task ended"),
            ("fails", "task failed"),
            ("panics", "task panicked"),
        ] {
            assert!(
                text.lines()
                    .any(|l| l.contains(line) && l.contains(&format!("task=\"{task}\""))),
                "{task}: {text}"
            );
        }
        assert!(text.contains("error=\"broken\""), "{text}");
    }
}
