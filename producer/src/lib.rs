//! The Quayside producer library: enqueue jobs, wait for results, follow logs, cancel, manage
//! the dead-letter queue and read queue statistics.
//!
//! [`gateway`] serves the same operations over HTTP (`quayside serve`).
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
mod error;
pub mod gateway;
mod record;
mod stats;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt as _;
use quayside_common::admission;
use quayside_common::config::{Config, LimitsConfig, QueueConfig};
use quayside_common::connection::Redis;
use quayside_common::protocol::adopt::Adopt;
use quayside_common::protocol::cancel::Cancel;
use quayside_common::protocol::enqueue::{Enqueue, EnqueueAnswer};
use quayside_common::protocol::replay::Replay;
use quayside_common::protocol::stats::Sample;
use quayside_common::protocol::{Call, CallError};
use quayside_common::{JobId, JobResult, JobSpec, Keys, Priority, Status};
use serde::Serialize;

pub use batch::{batch_member_id, BatchCancelled, BatchEvent, BatchStatus, NAME_LABEL};
pub use check::{CheckReport, Finding};
pub use error::Error;
pub use quayside_common::protocol::cancel::CancelOutcome;
pub use quayside_common::protocol::repair::Problem;
pub use quayside_common::protocol::replay::ReplayOutcome;
pub use stats::{PriorityStats, QueueStats, WorkerInfo};

/// Jobs per enqueue script call; calls are pipelined on one connection.
const ENQUEUE_CHUNK: usize = 256;
/// Enqueue script calls in flight at once.
const ENQUEUE_IN_FLIGHT: usize = 8;

/// A handle on one queue. Cheap to clone; share it.
#[derive(Clone, Debug)]
pub struct Producer {
    redis: Arc<Redis>,
    keys: Keys,
    queue: QueueConfig,
    /// The caps and floors a job is checked against before it is sent (the workers check
    /// again, with their language table).
    limits: LimitsConfig,
}

/// What enqueueing one job did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    pub id: JobId,
    /// False when a job with this id already existed (idempotent enqueue): nothing was added.
    pub created: bool,
    /// `queued` for a new job, the existing job's state otherwise; `None` (left out of JSON)
    /// for a member of its batch whose record has expired: it ran and ended long ago, and the
    /// batch still counts it, so nothing was added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<Status>,
}

/// A job's record as stored.
#[derive(Clone, Debug, Serialize)]
pub struct JobStatus {
    pub id: JobId,
    pub state: Status,
    pub attempts: u32,
    pub priority: Option<Priority>,
    pub worker: Option<String>,
    pub batch: Option<String>,
    pub enqueued_at_ms: Option<u64>,
    pub last_error: Option<String>,
    pub cancel_requested: bool,
    /// The spec's labels (e.g. `name`, which `quayside batch` sets to the job's path).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub result: Option<JobResult>,
}

/// One entry of a job's live log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    /// `stdout`, `stderr`, `compile`, `system`, or `end` (the last entry; `data` is the status).
    pub source: String,
    #[serde(serialize_with = "lossy")]
    pub data: Vec<u8>,
    /// The entry's id in the log stream: pass it to [`Producer::logs_after`] to resume after it.
    /// Empty for an `end` the follower synthesized (the job logged nothing more).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub entry: String,
}

fn lossy<S: serde::Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(data))
}

/// One dead letter.
#[derive(Clone, Debug, Serialize)]
pub struct DeadLetterEntry {
    /// Stream entry id in the dead-letter stream; pass it to [`Producer::dlq_replay`].
    pub entry: String,
    pub job_id: String,
    pub reason: String,
    pub error: String,
    pub attempts: String,
    pub at_ms: u64,
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

    /// Enqueues one job. Enqueueing an id that exists returns that job's state and adds nothing.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a malformed spec, [`Error::QueueFull`] past `queue.max_depth`.
    pub async fn enqueue(&self, spec: &JobSpec) -> Result<Enqueued, Error> {
        let mut out = self.enqueue_many(std::slice::from_ref(spec)).await?;
        out.pop().ok_or_else(|| Error::Reply {
            op: "enqueue",
            detail: "no answer".into(),
        })
    }

    /// Enqueues many jobs: validated first (shape, then the `limits` caps and floors of this
    /// producer's config: what needs no language table), then sent in script calls of 256
    /// jobs, pipelined.
    ///
    /// # Errors
    /// The first invalid spec (nothing is sent then), or [`Error::QueueFull`] naming the first
    /// job refused (jobs before it were enqueued).
    pub async fn enqueue_many(&self, specs: &[JobSpec]) -> Result<Vec<Enqueued>, Error> {
        for s in specs {
            s.validate_shape()?;
            admission::check_sizes(&self.limits, &self.queue, s)?;
        }
        let calls: Vec<_> = specs
            .chunks(ENQUEUE_CHUNK)
            .map(|specs| {
                Enqueue {
                    specs,
                    max_depth: self.queue.max_depth,
                    default_ttl_s: self.queue.default_result_ttl_s,
                }
                .call(&self.keys)
            })
            .collect();
        let conn = self.conn().await?;
        // A few chunks in flight keep the pipe full without queueing seconds of work in Redis.
        // Futures collected before streaming them: a closure inside the stream type makes the
        // future not provably `Send` for every lifetime, which an axum handler needs.
        let sent: Vec<_> = calls
            .iter()
            .map(|call| {
                let mut c = conn.clone();
                async move { call.run(&mut c).await }
            })
            .collect();
        let replies: Vec<_> = stream::iter(sent)
            .buffered(ENQUEUE_IN_FLIGHT)
            .collect()
            .await;
        let mut out = Vec::with_capacity(specs.len());
        for (chunk, reply) in specs.chunks(ENQUEUE_CHUNK).zip(replies) {
            let answers = reply.map_err(|e| self.call_error(e))?;
            for (spec, answer) in chunk.iter().zip(answers) {
                out.push(self.enqueued(spec, answer)?);
            }
        }
        Ok(out)
    }

    fn enqueued(&self, spec: &JobSpec, answer: EnqueueAnswer) -> Result<Enqueued, Error> {
        let (created, state) = match answer {
            EnqueueAnswer::New { .. } => (true, Some(Status::Queued)),
            EnqueueAnswer::Exists(state) => (false, Some(state)),
            EnqueueAnswer::Expired => (false, None),
            EnqueueAnswer::Full => {
                return Err(Error::QueueFull {
                    queue: self.keys.queue().to_owned(),
                    max_depth: self.queue.max_depth,
                    id: spec.id.clone(),
                })
            }
        };
        Ok(Enqueued {
            id: spec.id.clone(),
            created,
            state,
        })
    }

    /// The job's record, or `None` if unknown (never enqueued, or expired).
    ///
    /// # Errors
    /// Redis unreachable, or a stored result that does not decode.
    pub async fn status(&self, id: &JobId) -> Result<Option<JobStatus>, Error> {
        let read = redis::cmd("HGETALL").arg(self.keys.job(id)).clone();
        let fields: HashMap<String, Vec<u8>> = self.query("HGETALL", &read).await?;
        if !fields.is_empty() || self.adopt_raw_entries().await? == 0 {
            return record::parse(id, &fields);
        }
        // A raw producer's job may have been waiting without a record: it has one now.
        let fields: HashMap<String, Vec<u8>> = self.query("HGETALL", &read).await?;
        record::parse(id, &fields)
    }

    /// Gives a record to every job a raw producer added with a plain `XADD` that no worker has
    /// seen yet (`adopt.lua`), so it can be seen and cancelled while queued. Returns how many
    /// records were made.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn adopt_raw_entries(&self) -> Result<u64, Error> {
        const PER_CALL: u64 = 1_000;
        let mut made = 0;
        // Bounded: a backlog of a million raw entries with no worker up is read in 300 calls.
        let call = Adopt { limit: PER_CALL }.call(&self.keys);
        for _ in 0..300 {
            let adopted = self.run(&call).await?;
            made += adopted.made;
            if adopted.read < PER_CALL {
                break;
            }
        }
        Ok(made)
    }

    /// Waits for the job's terminal result without polling: subscribes to its completion
    /// channel, then reads the record (so a result written in between is not missed). Redis
    /// restarts are waited out: the result is safe in Redis.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown id, [`Error::Timeout`] when `timeout` passes first.
    pub async fn wait(&self, id: &JobId, timeout: Option<Duration>) -> Result<JobResult, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.wait_once(id, deadline).await {
                // Redis went away (restart, failover): the result is safe in Redis, so wait on.
                Err(Error::Connect(_) | Error::Redis { .. })
                    if deadline.is_none_or(|d| Instant::now() + backoff < d) =>
                {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    async fn wait_once(&self, id: &JobId, deadline: Option<Instant>) -> Result<JobResult, Error> {
        let started = Instant::now();
        let mut pubsub = self.redis.pubsub().await?;
        pubsub
            .subscribe(self.keys.done_channel(id))
            .await
            .map_err(Error::redis("SUBSCRIBE"))?;
        loop {
            match self.status(id).await? {
                None => return Err(Error::NotFound(id.clone())),
                Some(JobStatus {
                    result: Some(r),
                    state,
                    ..
                }) if state.is_terminal() => return Ok(r),
                Some(_) => {}
            }
            let mut messages = pubsub.on_message();
            let next = messages.next();
            let got = match deadline {
                Some(d) => {
                    match tokio::time::timeout(d.saturating_duration_since(Instant::now()), next)
                        .await
                    {
                        Ok(m) => m,
                        Err(_) => {
                            return Err(Error::Timeout {
                                id: id.clone(),
                                waited_ms: started.elapsed().as_millis() as u64,
                            })
                        }
                    }
                }
                None => next.await,
            };
            if got.is_none() {
                return Err(Error::Redis {
                    op: "wait",
                    source: redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "subscription closed",
                    )),
                });
            }
        }
    }

    /// The job's log entries from the start. With `follow`, keeps reading live (blocking reads)
    /// until the job ends; without, stops at what exists now. The last entry of a followed log
    /// is always `end` with the job's status (jobs that printed nothing have no log stream, so
    /// the follower confirms the end from the record after a second of silence).
    pub fn logs(&self, id: &JobId, follow: bool) -> BoxStream<'static, Result<LogEntry, Error>> {
        self.logs_after(id, follow, None)
    }

    /// Like [`Producer::logs`], from the entry after `after` (a [`LogEntry::entry`] seen
    /// before), so a reader that lost its connection resumes without repeats or gaps.
    pub fn logs_after(
        &self,
        id: &JobId,
        follow: bool,
        after: Option<String>,
    ) -> BoxStream<'static, Result<LogEntry, Error>> {
        let this = self.clone();
        let id = id.clone();
        let after = after.unwrap_or_else(|| "0-0".to_owned());
        pumped(256, move |tx| async move {
            if let Err(e) = this.pump_logs(&id, follow, after, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        })
    }

    async fn pump_logs(
        &self,
        id: &JobId,
        follow: bool,
        mut last: String,
        tx: &tokio::sync::mpsc::Sender<Result<LogEntry, Error>>,
    ) -> Result<(), Error> {
        if self.status(id).await?.is_none() {
            return Err(Error::NotFound(id.clone()));
        }
        let key = self.keys.logs(id);
        let mut conn = self.redis.dedicated().await?;
        let mut confirmed_end = false;
        loop {
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT").arg(512);
            if follow && !confirmed_end {
                cmd.arg("BLOCK").arg(1000);
            }
            cmd.arg("STREAMS").arg(&key).arg(&last);
            let bound = Duration::from_millis(1000) + self.redis.command_timeout();
            let reply: Option<redis::streams::StreamReadReply> =
                tokio::time::timeout(bound, cmd.query_async(&mut conn))
                    .await
                    .map_err(|_| Error::Reply {
                        op: "XREAD",
                        detail: format!("no reply within {} ms", bound.as_millis()),
                    })?
                    .map_err(Error::redis("XREAD"))?;
            let entries: Vec<_> = reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default();
            if entries.is_empty() {
                if !follow {
                    return Ok(());
                }
                if confirmed_end {
                    // Terminal and nothing more was logged: a silent job, or one whose log
                    // expired. Say how it ended.
                    let status = self
                        .status(id)
                        .await?
                        .map(|s| s.state.as_str().to_owned())
                        .unwrap_or_default();
                    let _ = tx
                        .send(Ok(LogEntry {
                            source: "end".into(),
                            data: status.into_bytes(),
                            entry: String::new(),
                        }))
                        .await;
                    return Ok(());
                }
                // A second of silence: has the job ended? Then drain once more, without blocking.
                confirmed_end = self.status(id).await?.is_none_or(|s| s.state.is_terminal());
                continue;
            }
            for e in entries {
                last = e.id.clone();
                let get = |f: &str| match e.map.get(f) {
                    Some(redis::Value::BulkString(b)) => b.clone(),
                    _ => Vec::new(),
                };
                let source = String::from_utf8_lossy(&get("s")).into_owned();
                let end = source == "end";
                if tx
                    .send(Ok(LogEntry {
                        source,
                        data: get("d"),
                        entry: e.id,
                    }))
                    .await
                    .is_err()
                    || end
                {
                    return Ok(());
                }
            }
        }
    }

    /// Cancels a job: a queued one never runs, a running one is stopped by its worker.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown id.
    pub async fn cancel(&self, id: &JobId) -> Result<CancelOutcome, Error> {
        let call = Cancel {
            id,
            default_ttl_s: self.queue.default_result_ttl_s,
            min_ttl_s: self.queue.min_result_ttl_s,
            log_cap: self.queue.log_max_entries,
        }
        .call(&self.keys);
        let mut outcome = self.run(&call).await?;
        if outcome.is_none() && self.adopt_raw_entries().await? > 0 {
            // A raw producer's queued job that had no record yet: it has one now.
            outcome = self.run(&call).await?;
        }
        outcome.ok_or_else(|| Error::NotFound(id.clone()))
    }

    /// Up to `count` dead letters, oldest first.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn dlq_list(&self, count: usize) -> Result<Vec<DeadLetterEntry>, Error> {
        let reply: redis::streams::StreamRangeReply = self
            .query(
                "XRANGE",
                redis::cmd("XRANGE")
                    .arg(self.keys.dlq())
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(count),
            )
            .await?;
        Ok(reply
            .ids
            .into_iter()
            .map(|e| {
                let get = |f: &str| match e.map.get(f) {
                    Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                    _ => String::new(),
                };
                DeadLetterEntry {
                    job_id: get("id"),
                    reason: get("reason"),
                    error: get("error"),
                    attempts: get("attempts"),
                    at_ms: get("at").parse().unwrap_or(0),
                    entry: e.id,
                }
            })
            .collect())
    }

    /// Queues a dead-lettered job again with a fresh attempt budget.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn dlq_replay(&self, entry: &str) -> Result<ReplayOutcome, Error> {
        self.run(&Replay { entry }.call(&self.keys)).await
    }

    /// Deletes every dead letter; returns how many there were. Job records are untouched.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn dlq_purge(&self) -> Result<u64, Error> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XLEN")
            .arg(self.keys.dlq())
            .cmd("DEL")
            .arg(self.keys.dlq())
            .ignore();
        let mut conn = self.conn().await?;
        let (n,): (u64,) = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| self.redis_error("DEL dlq", e))?;
        Ok(n)
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
        Ok(QueueStats::new(self.keys.queue(), sample))
    }
}

/// Runs `pump` on a task of its own and streams what it sends. Reading stays independent of
/// the consumer's pace up to `buffer` items; a dropped stream makes the pump's next send fail.
fn pumped<T, F>(
    buffer: usize,
    pump: impl FnOnce(tokio::sync::mpsc::Sender<T>) -> F,
) -> BoxStream<'static, T>
where
    T: Send + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(buffer);
    tokio::spawn(pump(tx));
    stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}
