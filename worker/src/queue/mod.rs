//! The queue seam: what the claim loop needs from the job store. [`RedisQueue`] implements it on
//! Redis streams; every state change is one Lua script (`common/lua/`), sent as its typed call
//! ([`quayside_common::protocol`]). [`Observed`] wraps any queue and tells the story of its
//! outages.

mod log_sink;
mod observed;
mod redis_queue;

use futures_util::stream::BoxStream;
use quayside_common::connection::ConnectError;
use quayside_common::protocol::CallError;
use quayside_common::{JobId, Priority};

pub use log_sink::{LogSink, LogSource, LogWriter};
pub use observed::Observed;
pub use quayside_common::protocol::claim::{ClaimBatch, Claimed, DropReason, Dropped};
pub use quayside_common::protocol::finish::{Completion, DeadLetter};
pub use quayside_common::protocol::renew::LeaseState;
pub use quayside_common::protocol::retry::{Charge, Retry};
pub use quayside_common::protocol::stats::QueueSample;
pub use quayside_common::protocol::{Lease, Write};
pub use redis_queue::RedisQueue;

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

impl From<CallError> for QueueError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Redis { op, source } => Self::Redis { op, source },
            CallError::Reply(r) => Self::Reply {
                op: r.script,
                detail: r.detail,
            },
        }
    }
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
    async fn wait_for_entries(&self, after: &[String; 4], block_ms: u64) -> Result<(), QueueError>;
    /// Writes the terminal result, fenced.
    async fn finish(&self, done: Completion<'_>) -> Result<Write, QueueError>;
    /// Puts the job back, fenced; [`Charge::InfraFailure`] records the failure in the job's
    /// [`FailureHistory`].
    async fn retry(&self, lease: &Lease, retry: Retry<'_>) -> Result<Write, QueueError>;
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
    async fn heartbeat(&self, doc: &str, ttl_ms: u64, sweep: bool) -> Result<(), QueueError>;
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
