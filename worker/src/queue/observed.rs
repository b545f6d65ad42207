//! A queue whose outages are told once: every call's outcome goes to an [`Outage`], so callers
//! log an unreachable Redis at debug and the outage itself says what is down, since when, and
//! when it is back.

use std::sync::Arc;

use futures_util::stream::BoxStream;
use quayside_common::{JobId, Priority};

use super::log_sink::LogSink;
use super::{
    ClaimBatch, Completion, FailureHistory, JobQueue, Lease, LeaseState, QueueError, QueueSample,
    Retry, Write,
};
use crate::outage::Outage;

/// Wraps `Q`, reporting unreachable-Redis failures and recoveries to its [`Outage`].
#[derive(Debug)]
pub struct Observed<Q> {
    inner: Q,
    outage: Arc<Outage>,
}

impl<Q: JobQueue> Observed<Q> {
    pub fn new(inner: Q) -> Self {
        Self {
            inner,
            outage: Arc::new(Outage::new("redis")),
        }
    }

    /// Whether Redis answers, as this queue's calls find it.
    pub fn outage(&self) -> Arc<Outage> {
        Arc::clone(&self.outage)
    }

    fn seen<T>(&self, result: Result<T, QueueError>) -> Result<T, QueueError> {
        match &result {
            Ok(_) => self.outage.recovered(),
            Err(e) if e.is_unreachable() => self.outage.failed(e),
            Err(_) => {}
        }
        result
    }
}

#[async_trait::async_trait]
impl<Q: JobQueue> JobQueue for Observed<Q> {
    async fn prepare(&self) -> Result<(), QueueError> {
        self.seen(self.inner.prepare().await)
    }

    async fn claim(&self, count: usize, order: &[Priority]) -> Result<ClaimBatch, QueueError> {
        self.seen(self.inner.claim(count, order).await)
    }

    async fn reclaim(&self, count: usize, min_idle_ms: u64) -> Result<ClaimBatch, QueueError> {
        self.seen(self.inner.reclaim(count, min_idle_ms).await)
    }

    async fn wait_for_entries(&self, after: &[String; 4], block_ms: u64) -> Result<(), QueueError> {
        self.seen(self.inner.wait_for_entries(after, block_ms).await)
    }

    async fn finish(&self, done: Completion<'_>) -> Result<Write, QueueError> {
        self.seen(self.inner.finish(done).await)
    }

    async fn retry(&self, lease: &Lease, retry: Retry<'_>) -> Result<Write, QueueError> {
        self.seen(self.inner.retry(lease, retry).await)
    }

    async fn failure_history(&self, lease: &Lease) -> Result<FailureHistory, QueueError> {
        self.seen(self.inner.failure_history(lease).await)
    }

    async fn fleet_id(&self) -> Result<String, QueueError> {
        self.seen(self.inner.fleet_id().await)
    }

    async fn renew(&self, leases: &[Lease]) -> Result<Vec<LeaseState>, QueueError> {
        self.seen(self.inner.renew(leases).await)
    }

    async fn promote(&self, limit: usize) -> Result<u64, QueueError> {
        self.seen(self.inner.promote(limit).await)
    }

    async fn heartbeat(&self, doc: &str, ttl_ms: u64, sweep: bool) -> Result<(), QueueError> {
        self.seen(self.inner.heartbeat(doc, ttl_ms, sweep).await)
    }

    async fn live_workers(&self) -> Result<Vec<String>, QueueError> {
        self.seen(self.inner.live_workers().await)
    }

    async fn cancel_requests(&self) -> Result<BoxStream<'static, String>, QueueError> {
        self.seen(self.inner.cancel_requests().await)
    }

    async fn ping(&self) -> Result<(), QueueError> {
        self.seen(self.inner.ping().await)
    }

    async fn sample(&self) -> Result<QueueSample, QueueError> {
        self.seen(self.inner.sample().await)
    }

    fn log_sink(&self, job_id: &JobId, lease: &Lease) -> LogSink {
        self.inner
            .log_sink(job_id, lease)
            .reporting_to(Arc::clone(&self.outage))
    }
}
