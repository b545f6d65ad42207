//! The queue seam: what the claim loop needs from the job store. [`RedisQueue`] implements it on
//! Redis streams; every state change is one Lua script (see `common/lua/`). [`Observed`] wraps
//! any queue and tells the story of its outages.

mod observed;
mod redis_queue;

use futures_util::stream::BoxStream;
use quayside_common::connection::ConnectError;
use quayside_common::{JobId, JobResult, Priority};

pub use observed::Observed;
pub use redis_queue::RedisQueue;

use crate::logs::LogSink;

/// The fencing handle of one claimed attempt. Only the holder of the job's current token may
/// finish, retry or renew it; a takeover moves the token on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// As found in the entry; may be invalid, which the executor then rejects.
    pub job_id: String,
    pub priority: Priority,
    pub entry: String,
    pub token: u64,
}

/// One job handed to this worker.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub lease: Lease,
    /// Executions started so far, this one included.
    pub attempts: u32,
    pub spec_json: Vec<u8>,
    pub enqueued_at_ms: u64,
    /// Cancellation was requested while the job was held by a previous worker.
    pub cancel_requested: bool,
}

/// An entry the claim step removed without running it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub priority: Priority,
    pub entry: String,
    /// `duplicate` (job already ran or was re-queued), `malformed` (dead-lettered) or
    /// `requeued` (entry deleted while pending; job queued again).
    pub reason: String,
}

/// What one claim call returned.
#[derive(Clone, Debug, Default)]
pub struct ClaimBatch {
    pub claimed: Vec<Claimed>,
    pub dropped: Vec<Dropped>,
    /// When nothing was claimed: each stream's last entry id, to block on.
    pub last_ids: Option<[String; 3]>,
}

/// The queue's size as one worker samples it for the queue gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueSample {
    /// Stream entries (waiting and pending), indexed by [`Priority::index`].
    pub depth: [u64; 3],
    /// Entries delivered to a worker and not yet acknowledged, by priority.
    pub pending: [u64; 3],
    /// Jobs in the delayed set.
    pub delayed: u64,
    /// Entries in the dead-letter stream.
    pub dead_letters: u64,
    /// Workers whose heartbeat has not expired.
    pub workers: u64,
}

/// State of a lease after renewal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    Held,
    /// Held, and the job's cancellation was requested.
    CancelRequested,
    /// Another execution holds the job now; stop and write nothing.
    Lost,
    /// The job's stream entry was deleted (or its consumer group lost), so the job was queued
    /// again under a fresh entry; stop and write nothing.
    Requeued,
}

/// A terminal result to write, fenced by its lease.
#[derive(Clone, Copy, Debug)]
pub struct Completion<'a> {
    pub lease: &'a Lease,
    pub result: &'a JobResult,
    pub ttl_s: u64,
    /// Also add a dead letter.
    pub dead_letter: Option<DeadLetter<'a>>,
}

impl<'a> Completion<'a> {
    pub fn new(lease: &'a Lease, result: &'a JobResult, ttl_s: u64) -> Self {
        Self {
            lease,
            result,
            ttl_s,
            dead_letter: None,
        }
    }

    /// Dead-letters the job with `reason` as well.
    pub fn dead_letter(self, reason: &'a str, error: &'a str) -> Self {
        Self {
            dead_letter: Some(DeadLetter { reason, error }),
            ..self
        }
    }
}

/// A dead letter to add together with a terminal result.
#[derive(Clone, Copy, Debug)]
pub struct DeadLetter<'a> {
    pub reason: &'a str,
    pub error: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("redis {op} failed")]
    Redis {
        op: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error("unexpected reply to {op}: {detail}")]
    Reply { op: &'static str, detail: String },
    /// A batched write failed; every job of the batch gets the same error text.
    #[error("redis {op} failed: {detail}")]
    Batch {
        op: &'static str,
        detail: String,
        /// Redis could not be reached (as [`QueueError::is_unreachable`] tells).
        unreachable: bool,
    },
}

impl QueueError {
    /// Redis cannot be reached or is not ready (refused, reset, timed out, loading its data):
    /// an outage to wait out, as opposed to an error of the call itself.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Connect(_) => true,
            Self::Redis { source, .. } => unreachable(source),
            Self::Reply { detail, .. } => detail.starts_with("no reply within"),
            Self::Batch { unreachable, .. } => *unreachable,
        }
    }
}

/// Whether a Redis error means the server is not there (or not ready yet).
pub fn unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(e.code(), Some("LOADING" | "MASTERDOWN" | "TRYAGAIN"))
}

/// Logs a failed queue call: at debug when Redis is unreachable (the queue's [`Outage`]
/// already told that story), at warn otherwise.
///
/// [`Outage`]: crate::outage::Outage
pub fn log_error(error: &QueueError, what: &'static str) {
    if error.is_unreachable() {
        tracing::debug!(error = %error, what, "queue call failed: redis unreachable");
    } else {
        tracing::warn!(error = %error, what, "queue call failed");
    }
}

/// How far a job has got with infrastructure failures of its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailureHistory {
    /// When its first infrastructure failure was recorded (unix ms), if any.
    pub failing_since_ms: Option<u64>,
    /// How many were recorded.
    pub failures: u32,
}

/// The job store as the worker sees it.
#[async_trait::async_trait]
pub trait JobQueue: std::fmt::Debug + Send + Sync + 'static {
    /// Creates the consumer group on every stream if missing.
    async fn prepare(&self) -> Result<(), QueueError>;
    /// Claims up to `count` new entries, taking streams in `order`. A stream whose consumer
    /// group is missing (stream deleted, group destroyed) gets it again before this returns.
    async fn claim(&self, count: usize, order: &[Priority]) -> Result<ClaimBatch, QueueError>;
    /// Takes over up to `count` entries whose lease has been idle for `min_idle_ms` (and
    /// re-creates missing groups, as [`JobQueue::claim`]).
    async fn reclaim(&self, count: usize, min_idle_ms: u64) -> Result<ClaimBatch, QueueError>;
    /// Blocks up to `block_ms` until an entry newer than `after` arrives in any stream.
    async fn wait_for_entries(&self, after: &[String; 3], block_ms: u64) -> Result<(), QueueError>;
    /// Writes the terminal result, fenced. `Ok(false)`: the lease was lost, nothing written.
    async fn finish(&self, done: Completion<'_>) -> Result<bool, QueueError>;
    /// Puts the job back after `delay_ms`, fenced; `refund` un-counts this attempt.
    async fn retry(
        &self,
        lease: &Lease,
        delay_ms: u64,
        error: &str,
        refund: bool,
    ) -> Result<bool, QueueError>;
    /// Puts the job back after `delay_ms` for an infrastructure failure of its own: refunds
    /// the attempt and records the failure in its [`FailureHistory`], fenced.
    async fn retry_infra(
        &self,
        lease: &Lease,
        delay_ms: u64,
        error: &str,
    ) -> Result<bool, QueueError>;
    /// The job's infrastructure failures so far.
    async fn failure_history(&self, lease: &Lease) -> Result<FailureHistory, QueueError>;
    /// The fleet id of this queue on this Redis: created once (random), then read. Also puts
    /// it back if the key was lost.
    async fn fleet_id(&self) -> Result<String, QueueError>;
    /// Renews every lease in one step.
    async fn renew(&self, leases: &[Lease]) -> Result<Vec<LeaseState>, QueueError>;
    /// Moves due retries back to their streams, and gives a record to jobs a raw producer
    /// added with a plain `XADD` (so they can be seen and cancelled while queued); returns how
    /// many retries moved.
    async fn promote(&self, limit: usize) -> Result<u64, QueueError>;
    /// Heartbeats into the worker registry.
    async fn heartbeat(&self, doc: &str, ttl_ms: u64) -> Result<(), QueueError>;
    /// Ids of the workers in the registry (heartbeat not expired).
    async fn live_workers(&self) -> Result<Vec<String>, QueueError>;
    /// Ids of running jobs whose cancellation is requested, as they are requested.
    async fn cancel_requests(&self) -> Result<BoxStream<'static, String>, QueueError>;
    /// Round trip to the store, for readiness.
    async fn ping(&self) -> Result<(), QueueError>;
    /// Depths, pending, delayed, dead letters and live workers, in one round trip.
    async fn sample(&self) -> Result<QueueSample, QueueError>;
    /// The live log of claimed job `id`, fenced by its lease.
    fn log_sink(&self, id: &JobId, lease: &Lease) -> LogSink;
}
