//! The Quayside producer library: enqueue jobs, wait for results, follow logs, cancel, manage
//! the dead-letter queue and read queue statistics.
//!
//! The client library alone: the HTTP gateway that serves the same operations
//! (`quayside-gateway`, `quayside serve`) and the `quayside` CLI (`quayside-cli`) are crates of
//! their own beside it in `producer/`, so a service that only enqueues compiles neither.
//!
//! - `enqueue`: one job or many, checked against the limits first, pipelined.
//! - `jobs`: a job's record, adopting raw `XADD` entries, cancelling.
//! - `logs`: waiting for a result, reading and following the live log.
//! - `batch`: batches as a whole (status, events, cancel).
//! - `dead_letters`, `stats`, `check`: the operator's side (dead-letter queue, queue
//!   statistics, the consistency check); `set_paused` pauses and resumes claiming.
//!
//! ```no_run
//! # async fn demo() -> Result<(), quayside_producer::Error> {
//! use quayside_common::{config::Config, JobKind, JobSpec};
//! let producer = quayside_producer::Producer::new(&Config::load(None).expect("config"))?;
//! let spec = JobSpec::new(JobKind::Run, "python", [("main.py".into(), "print(42)".into())].into());
//! producer.enqueue(&spec).await?;
//! let result = producer.wait(&spec.id, None).await?;
//! println!("{}: {}", result.status, result.stdout.lossy());
//! # Ok(()) }
//! ```

mod batch;
mod check;
mod dead_letters;
mod enqueue;
mod error;
mod jobs;
mod logs;
mod record;
mod stats;

use std::sync::Arc;

use quayside_common::config::{Config, LimitsConfig, QueueConfig};
use quayside_common::connection::Redis;
use quayside_common::protocol::pause::{Pause, Scope};
use quayside_common::protocol::stats::Sample;
use quayside_common::protocol::{Call, CallError};
use quayside_common::Keys;

pub use batch::{batch_member_id, BatchCancelled, BatchEvent, BatchStatus, NAME_LABEL};
pub use check::{CheckReport, Finding};
pub use dead_letters::DeadLetterEntry;
pub use enqueue::Enqueued;
pub use error::Error;
pub use jobs::{JobStatus, SpecSummary};
pub use logs::LogEntry;
pub use quayside_common::protocol::cancel::CancelOutcome;
pub use quayside_common::protocol::pause::Change as PauseChange;
pub use quayside_common::protocol::repair::Problem;
pub use quayside_common::protocol::replay::ReplayOutcome;
pub use stats::{PriorityStats, QueueStats, TenantStats, WebhookStats, WorkerInfo};
/// A handle on one queue. Cheap to clone; share it.
#[derive(Clone, Debug)]
pub struct Producer {
    redis: Arc<Redis>,
    keys: Keys,
    queue: QueueConfig,
    /// The caps and floors a job is checked against before it is sent (the workers check
    /// again, with their language table).
    limits: LimitsConfig,
    /// The configured tenants (their queued caps are enforced at enqueue).
    tenants: std::collections::BTreeMap<String, quayside_common::config::TenantConfig>,
    /// The webhook rules a job's `callback` is checked against.
    webhooks: quayside_common::config::WebhooksConfig,
}

impl Producer {
    /// Connects lazily to the queue named in `cfg`.
    ///
    /// # Errors
    /// Invalid queue name or Redis URL.
    pub fn new(cfg: &Config) -> Result<Self, Error> {
        Ok(Self {
            redis: Arc::new(Redis::new(&cfg.redis)?),
            keys: Keys::new(&cfg.queue.name)?,
            queue: cfg.queue.clone(),
            limits: cfg.limits.clone(),
            tenants: cfg.tenants.clone(),
            webhooks: cfg.webhooks.clone(),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn conn(&self) -> Result<redis::aio::MultiplexedConnection, Error> {
        Ok(self.redis.conn().await?)
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, Error> {
        let mut conn = self.conn().await?;
        cmd.query_async(&mut conn)
            .await
            .map_err(|e| self.redis_error(op, e))
    }

    /// A failed command: drops the shared connection if the error means it is broken (so the
    /// next call reconnects, e.g. after a Redis restart), and names the operation.
    fn redis_error(&self, op: &'static str, source: redis::RedisError) -> Error {
        self.redis.note_error(&source);
        Error::Redis { op, source }
    }

    /// A failed script call or sample, as [`Producer::redis_error`] for Redis's own errors.
    fn call_error(&self, e: CallError) -> Error {
        match e {
            CallError::Redis { op, source } => self.redis_error(op, source),
            CallError::Reply(r) => Error::Reply {
                op: r.script,
                detail: r.detail,
            },
        }
    }

    async fn run<R>(&self, call: &Call<R>) -> Result<R, Error> {
        let mut conn = self.conn().await?;
        call.run(&mut conn).await.map_err(|e| self.call_error(e))
    }

    /// Pauses (`paused = true`) or resumes the queue: while paused no worker claims from it
    /// (running jobs finish; enqueues are still accepted). The state lives in Redis, so it
    /// outlives worker and Redis restarts.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn set_paused(&self, paused: bool) -> Result<PauseChange, Error> {
        let mut conn = self.conn().await?;
        Pause::apply(&mut conn, &self.keys, Scope::Queue, paused)
            .await
            .map_err(|e| self.call_error(e))
    }

    /// Pauses or resumes one tenant (`default`: the default tenant): workers skip its lanes
    /// and serve other tenants; its running jobs finish, its enqueues are accepted.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a tenant id that is not one; Redis unreachable.
    pub async fn set_tenant_paused(
        &self,
        tenant: &str,
        paused: bool,
    ) -> Result<PauseChange, Error> {
        if tenant != quayside_common::config::DEFAULT_LABEL {
            quayside_common::job::check_tenant(tenant)?;
        }
        let mut conn = self.conn().await?;
        Pause::apply(&mut conn, &self.keys, Scope::Tenant(tenant), paused)
            .await
            .map_err(|e| self.call_error(e))
    }

    /// Depths, pending entries, lag, delayed and dead-letter counts, and live workers.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn stats(&self) -> Result<QueueStats, Error> {
        let mut conn = self.conn().await?;
        let sample = Sample { worker_docs: true }
            .read(&mut conn, &self.keys)
            .await
            .map_err(|e| self.call_error(e))?;
        Ok(QueueStats::new(self.keys.queue(), sample, &self.tenants))
    }
}
