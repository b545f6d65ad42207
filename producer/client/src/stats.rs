//! Queue statistics as `quayside stats` and the gateway show them, from the sample every reader
//! takes ([`quayside_common::protocol::stats`]).

use quayside_common::protocol::stats::QueueSample;
use quayside_common::Priority;
use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize)]
pub struct QueueStats {
    pub queue: String,
    pub priorities: Vec<PriorityStats>,
    /// Jobs waiting in the delayed set for a retry.
    pub delayed: u64,
    pub dead_letters: u64,
    /// Whether an operator paused the queue (`quayside pause`): workers claim nothing.
    pub paused: bool,
    /// When it was paused (unix ms); absent while not paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_since_ms: Option<u64>,
    pub workers: Vec<WorkerInfo>,
}

impl QueueStats {
    /// Entries not yet delivered, all priorities.
    pub fn waiting(&self) -> u64 {
        self.priorities.iter().map(|p| p.waiting).sum()
    }

    /// Entries delivered and not yet finished, all priorities.
    pub fn pending(&self) -> u64 {
        self.priorities.iter().map(|p| p.pending).sum()
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PriorityStats {
    pub priority: &'static str,
    /// Entries in the stream (waiting + pending).
    pub depth: u64,
    /// Claimed by a worker, not yet finished.
    pub pending: u64,
    /// Not yet delivered to any worker (the consumer group's lag).
    pub waiting: u64,
}

/// A worker's last heartbeat, as it wrote it.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerInfo(pub serde_json::Value);

impl QueueStats {
    /// The stats of queue `queue` from its sample.
    pub(crate) fn new(queue: &str, sample: QueueSample) -> Self {
        let priorities = Priority::ALL
            .into_iter()
            .map(|p| PriorityStats {
                priority: p.as_label(),
                depth: sample.depth[p.index()],
                pending: sample.pending[p.index()],
                waiting: sample.lag(p),
            })
            .collect();
        Self {
            queue: queue.to_owned(),
            priorities,
            delayed: sample.delayed,
            dead_letters: sample.dead_letters,
            paused: sample.paused_since_ms.is_some(),
            paused_since_ms: sample.paused_since_ms,
            workers: sample.worker_docs.into_iter().map(WorkerInfo).collect(),
        }
    }
}
