//! The runner gate: the worker claims jobs only while its runner's backend is available.
//!
//! A runner that is down (engine restarting, API server unreachable, image gone) fails every
//! job in milliseconds; claiming on would burn through the queue. So the gate closes when the
//! runner's [`check`](crate::runner::Runner::check) fails, at start or after a job's
//! infrastructure failure, and a probe reopens it by itself once the check passes again. Jobs
//! that failed while it was closing are not the jobs' fault: they go back at no cost.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Event, WorkerMetrics};
use crate::outage::Outage;
use crate::runner::{RunnerError, SharedRunner};

/// How long one check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Checks while the gate is open: closes it before claims hit an engine that went away idle.
const CHECK_OPEN_EVERY: Duration = Duration::from_secs(10);
/// Checks while the gate is closed, at first; backs off to [`PROBE_MAX`].
const PROBE_FIRST: Duration = Duration::from_millis(500);
const PROBE_MAX: Duration = Duration::from_secs(5);

/// Whether the runner may be given jobs.
#[derive(Debug)]
pub struct RunnerGate {
    runner: SharedRunner,
    outage: Outage,
    open: watch::Sender<bool>,
    metrics: Arc<WorkerMetrics>,
}

impl RunnerGate {
    /// A closed gate: it opens at the first passing check of [`RunnerGate::probe_forever`].
    pub fn new(runner: SharedRunner, metrics: Arc<WorkerMetrics>) -> Self {
        Self {
            outage: Outage::new(if runner.name() == "kubernetes" {
                "the kubernetes runner"
            } else {
                "the docker runner"
            }),
            runner,
            open: watch::Sender::new(false),
            metrics,
        }
    }

    pub fn is_open(&self) -> bool {
        *self.open.borrow()
    }

    /// Why the gate is closed (for `/readyz`), or `None`.
    pub fn closed_because(&self) -> Option<String> {
        if self.is_open() {
            return None;
        }
        Some(match self.outage.down() {
            Some((since, error)) => {
                format!("{error} (since {})", crate::outage::clock(since))
            }
            None => "not checked yet".to_owned(),
        })
    }

    /// Waits until the gate is open. False if `stop` fired first.
    pub async fn wait_open(&self, stop: &CancellationToken) -> bool {
        let mut open = self.open.subscribe();
        tokio::select! {
            _ = stop.cancelled() => false,
            r = open.wait_for(|o| *o) => r.is_ok(),
        }
    }

    /// A job's run failed with `error`. Checks the runner now: when the check fails too the
    /// gate closes and the answer is true (the runner is unavailable: hand the job back at no
    /// cost); when it passes the failure is the job's own.
    pub async fn unavailable(&self, error: &RunnerError) -> bool {
        match self.check().await {
            Ok(()) => false,
            Err(check) => {
                tracing::debug!(job_error = %error, %check, "runner check fails after a job's failure");
                self.close(&check);
                true
            }
        }
    }

    async fn check(&self) -> Result<(), String> {
        match tokio::time::timeout(CHECK_TIMEOUT, self.runner.check()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(quayside_common::error_chain(&e)),
            Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
        }
    }

    fn close(&self, why: &str) {
        self.outage.failed(&why);
        if self.open.send_replace(false) {
            self.metrics.emit(Event::RunnerDown {
                runner: self.runner.name(),
            });
        }
    }

    fn open(&self) {
        self.outage.recovered();
        if !self.open.send_replace(true) {
            self.metrics.emit(Event::RunnerUp {
                runner: self.runner.name(),
            });
        }
    }

    /// Checks the runner until `stop`: every [`CHECK_OPEN_EVERY`] while open, more often
    /// (backing off) while closed.
    pub async fn probe_forever(self: Arc<Self>, stop: CancellationToken) {
        let mut delay = PROBE_FIRST;
        loop {
            match self.check().await {
                Ok(()) => {
                    self.open();
                    delay = PROBE_FIRST;
                }
                Err(why) => {
                    self.close(&why);
                    delay = (delay * 2).min(PROBE_MAX);
                }
            }
            let wait = if self.is_open() {
                CHECK_OPEN_EVERY
            } else {
                delay
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::runner::{Output, RunOutput, RunRequest, Runner};

    /// A runner whose check passes while `up`.
    #[derive(Debug, Default)]
    struct Switch {
        up: AtomicBool,
    }

    #[async_trait::async_trait]
    impl Runner for Switch {
        fn name(&self) -> &'static str {
            "docker"
        }

        async fn check(&self) -> Result<(), RunnerError> {
            if self.up.load(Ordering::Acquire) {
                Ok(())
            } else {
                Err(RunnerError::Unavailable {
                    detail: "connection refused".into(),
                })
            }
        }

        async fn run(
            &self,
            _: &RunRequest,
            _: &Output,
            _: CancellationToken,
        ) -> Result<RunOutput, RunnerError> {
            Err(RunnerError::Cancelled)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_gate_opens_only_while_the_check_passes_and_reopens_by_itself() {
        let runner = Arc::new(Switch::default());
        let metrics = Arc::new(WorkerMetrics::new("q", "docker", 1, &[]));
        let gate = Arc::new(RunnerGate::new(runner.clone(), metrics));
        let stop = CancellationToken::new();
        tokio::spawn(Arc::clone(&gate).probe_forever(stop.clone()));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!gate.is_open(), "closed while the engine is down at start");
        assert!(gate
            .closed_because()
            .is_some_and(|why| why.contains("connection refused")));

        runner.up.store(true, Ordering::Release);
        assert!(gate.wait_open(&stop).await, "opens by itself");
        assert_eq!(gate.closed_because(), None);

        let failure = RunnerError::Api {
            call: "cannot create the sandbox".into(),
            source: None,
        };
        assert!(
            !gate.unavailable(&failure).await,
            "the runner is fine: the job's own failure"
        );
        assert!(gate.is_open());

        runner.up.store(false, Ordering::Release);
        assert!(
            gate.unavailable(&failure).await,
            "the runner is down: not the job's"
        );
        assert!(!gate.is_open(), "closed at once");
        runner.up.store(true, Ordering::Release);
        assert!(gate.wait_open(&stop).await);
        stop.cancel();
    }
}
