//! What every execution, the claim loop and the background chores share: the config, the
//! queue and runner seams, the gate, the in-flight table, the metrics, and the heartbeat nudge.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quayside_common::config::Config;
use tokio::sync::{watch, Notify};

use crate::gate::RunnerGate;
use crate::inflight::InFlight;
use crate::metrics::WorkerMetrics;
use crate::queue::JobQueue;
use crate::runner::{Fleet, SharedRunner};

/// What every execution shares.
#[derive(Debug)]
pub struct Context {
    pub cfg: Arc<Config>,
    pub queue: Arc<dyn JobQueue>,
    pub runner: SharedRunner,
    pub gate: Arc<RunnerGate>,
    pub inflight: Arc<InFlight>,
    pub metrics: Arc<WorkerMetrics>,
    pub worker_id: String,
    /// The fleet this worker belongs to, for the sandboxes' labels and the sweep.
    pub fleet: Fleet,
    pub beat: Arc<Beat>,
}

/// Lets an execution have the registry updated at once (its job left the in-flight count)
/// and wait until it was.
#[derive(Debug)]
pub struct Beat {
    wanted: AtomicU64,
    written: watch::Sender<u64>,
    wake: Notify,
}

impl Default for Beat {
    fn default() -> Self {
        Self {
            wanted: AtomicU64::new(0),
            written: watch::Sender::new(0),
            wake: Notify::new(),
        }
    }
}

impl Beat {
    /// Asks for a heartbeat now and waits (up to `at_most`) until one written after this call
    /// is in Redis.
    pub async fn now(&self, at_most: Duration) {
        let ticket = self.wanted.fetch_add(1, Ordering::AcqRel) + 1;
        self.wake.notify_one();
        let mut written = self.written.subscribe();
        let _ = tokio::time::timeout(at_most, written.wait_for(|w| *w >= ticket)).await;
    }

    /// The newest ticket asked for, and whether a heartbeat written for it is still owed.
    pub(crate) fn asked(&self) -> (u64, bool) {
        let ticket = self.wanted.load(Ordering::Acquire);
        (ticket, ticket > *self.written.borrow())
    }

    /// A heartbeat taken after `ticket` was asked for is in Redis: wakes who waits for it.
    pub(crate) fn written(&self, ticket: u64) {
        self.written.send_replace(ticket);
    }

    /// Resolves when an execution asks for a heartbeat.
    pub(crate) async fn wanted(&self) {
        self.wake.notified().await;
    }
}
