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
}

impl RunnerGate {
    /// A closed gate: it opens at the first passing check of [`RunnerGate::probe_forever`].
    pub fn new(runner: SharedRunner) -> Self {
        Self {
            outage: Outage::new(if runner.name() == "kubernetes" {
                "the kubernetes runner"
            } else {
                "the docker runner"
            }),
            runner,
            open: watch::Sender::new(false),
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
            tracing::warn!(
                runner = self.runner.name(),
                "not claiming jobs until the runner is back"
            );
        }
    }

    fn open(&self) {
        self.outage.recovered();
        if !self.open.send_replace(true) {
            tracing::info!(runner = self.runner.name(), "runner ready; claiming jobs");
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
