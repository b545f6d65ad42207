//! Errors of the producer library; callers branch on the variant.

use quayside_common::connection::ConnectError;
use quayside_common::job::SpecError;
use quayside_common::{JobId, WireError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("redis {op} failed")]
    Redis {
        op: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error("invalid job: {0}")]
    Invalid(#[from] SpecError),
    #[error("queue {queue} is full (max_depth {max_depth}); job {id} was not enqueued")]
    QueueFull {
        queue: String,
        max_depth: u64,
        id: JobId,
    },
    /// The tenant's queued cap (`tenants.<name>.max_queued`): a temporary refusal; retry later.
    #[error(
        "tenant {tenant} has {queued} jobs queued (max_queued {cap}); job {id} was not enqueued"
    )]
    TenantQueueFull {
        tenant: String,
        queued: u64,
        cap: u64,
        id: JobId,
    },
    #[error("job {0} not found (never enqueued, or its result expired)")]
    NotFound(JobId),
    #[error("batch {0} not found (no job was enqueued under it, or it expired)")]
    BatchNotFound(String),
    #[error("no result for job {id} within {waited_ms} ms")]
    Timeout { id: JobId, waited_ms: u64 },
    #[error("record of job {id} is unreadable")]
    Corrupt {
        id: JobId,
        #[source]
        source: WireError,
    },
    #[error("unexpected reply to {op}: {detail}")]
    Reply { op: &'static str, detail: String },
}

impl Error {
    pub(crate) fn redis(op: &'static str) -> impl FnOnce(redis::RedisError) -> Error {
        move |source| Error::Redis { op, source }
    }
}
