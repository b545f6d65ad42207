//! [`JobQueue`] on Redis streams.
//!
//! - `infra`: the calls behind time-bounded infrastructure retries, the fleet id, and the
//!   warnings about Redis settings.

mod infra;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::stream::BoxStream;
use futures_util::StreamExt as _;
use quayside_common::config::{QueueConfig, TenantConfig};
use quayside_common::connection::Redis;
use quayside_common::keys::GROUP;
use quayside_common::protocol::adopt::Adopt;
use quayside_common::protocol::claim::{Claim, ClaimMode, ClaimReply};
use quayside_common::protocol::finish::{Finish, FinishItem};
use quayside_common::protocol::heartbeat::Heartbeat;
use quayside_common::protocol::promote::Promote;
use quayside_common::protocol::renew::Renew;
use quayside_common::protocol::stats::Sample;
use quayside_common::protocol::{Call, CallError};
use quayside_common::{JobId, Keys, Priority};
use redis::Value;

use tokio::sync::{mpsc, oneshot};

use super::log_sink::LogSink;
use super::{
    ClaimBatch, Completion, FailureHistory, JobQueue, Lease, LeaseState, QueueError, QueueSample,
    Retry, Write,
};

/// Most results written by one script call.
const FINISH_BATCH: usize = 128;

/// One result waiting for the batcher, and where the answer goes.
struct PendingFinish {
    item: FinishItem,
    reply: oneshot::Sender<Result<Write, QueueError>>,
}

/// The Redis-backed queue of one worker process; `worker` is its consumer name.
#[derive(Debug)]
pub struct RedisQueue {
    redis: Arc<Redis>,
    keys: Keys,
    cfg: QueueConfig,
    /// The configured tenants: their fair-share weights and running caps go with each claim.
    tenants: BTreeMap<String, TenantConfig>,
    worker: String,
    finishes: mpsc::Sender<PendingFinish>,
    /// The connection blocking reads wait on, kept between waits.
    blocking: tokio::sync::Mutex<Option<quayside_common::connection::Connection>>,
    command_timeout: std::time::Duration,
    /// The fleet id once read, to put back if the key is lost.
    fleet: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for PendingFinish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingFinish")
    }
}

impl RedisQueue {
    /// Must be called inside a Tokio runtime: it starts the result batcher.
    pub fn new(redis: Arc<Redis>, keys: Keys, cfg: QueueConfig, worker: String) -> Self {
        let (finishes, rx) = mpsc::channel(4 * FINISH_BATCH);
        tokio::spawn(finish_batcher(
            Arc::clone(&redis),
            keys.clone(),
            cfg.clone(),
            worker.clone(),
            rx,
        ));
        Self {
            command_timeout: redis.command_timeout(),
            redis,
            keys,
            cfg,
            tenants: BTreeMap::new(),
            worker,
            finishes,
            blocking: tokio::sync::Mutex::new(None),
            fleet: std::sync::Mutex::new(None),
        }
    }

    /// Claims with these tenants' weights and running caps (`tenants.<name>`); without, every
    /// tenant has weight 1 and no cap.
    #[must_use]
    pub fn with_tenants(mut self, tenants: BTreeMap<String, TenantConfig>) -> Self {
        self.tenants = tenants;
        self
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn run<R>(&self, call: Call<R>) -> Result<R, QueueError> {
        let mut conn = self.redis.conn().await?;
        call.run(&mut conn)
            .await
            .map_err(|e| call_error(&self.redis, e))
    }

    fn claim_call(&self, mode: ClaimMode<'_>, count: usize) -> Call<ClaimReply> {
        Claim {
            worker: &self.worker,
            mode,
            count,
            dlq_cap: self.cfg.dlq_max_len,
            log_cap: self.cfg.log_max_entries,
            default_ttl_s: self.cfg.default_result_ttl_s,
            tenants: &self.tenants,
        }
        .call(&self.keys)
    }

    /// Creates the consumer group on every stream that lacks it, from the stream's first entry
    /// (so entries added while it was missing are delivered).
    async fn create_groups(&self) -> Result<(), QueueError> {
        let mut conn = self.redis.conn().await?;
        for stream in self.keys.streams() {
            let create = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .clone();
            // The crate routes XGROUP by no key: on a cluster, send it to the stream's node.
            let created: Result<(), _> = conn.query_at(&stream, &create).await;
            match created {
                Ok(()) => tracing::info!(%stream, group = GROUP, "created consumer group"),
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(source) => {
                    self.redis.note_error(&source);
                    return Err(QueueError::Redis {
                        op: "XGROUP CREATE",
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Runs a claim script call; if it found streams without the consumer group (deleted, or
    /// destroyed by an operator), creates the groups again so the next claim finds them.
    async fn claim_with(&self, call: Call<ClaimReply>) -> Result<ClaimBatch, QueueError> {
        let reply = self.run(call).await?;
        if !reply.missing.is_empty() {
            let streams: Vec<_> = reply.missing.iter().map(|p| p.as_label()).collect();
            tracing::warn!(
                ?streams,
                "consumer group missing (stream deleted or group destroyed); creating it again"
            );
            self.create_groups().await?;
        }
        Ok(reply.batch)
    }
}

/// Writes results in batches: whatever is waiting when the previous call returns goes in the
/// next call, so a busy worker pays one script call for many jobs and an idle one adds no delay.
async fn finish_batcher(
    redis: Arc<Redis>,
    keys: Keys,
    cfg: QueueConfig,
    worker: String,
    mut rx: mpsc::Receiver<PendingFinish>,
) {
    let mut batch = Vec::with_capacity(FINISH_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < FINISH_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (items, replies): (Vec<_>, Vec<_>) = batch.drain(..).map(|p| (p.item, p.reply)).unzip();
        let call = Finish {
            worker: &worker,
            log_cap: cfg.log_max_entries,
            dlq_cap: cfg.dlq_max_len,
            items,
        }
        .call(&keys);
        let answer: Result<Vec<Write>, QueueError> = async {
            let mut conn = redis.conn().await?;
            call.run(&mut conn).await.map_err(|e| call_error(&redis, e))
        }
        .await;
        match answer {
            Ok(written) => {
                for (reply, w) in replies.into_iter().zip(written) {
                    let _ = reply.send(Ok(w));
                }
            }
            Err(e) => {
                let unreachable = e.is_unreachable();
                let detail = match std::error::Error::source(&e) {
                    Some(source) => format!("{e}: {source}"),
                    None => e.to_string(),
                };
                for reply in replies {
                    let _ = reply.send(Err(QueueError::Batch {
                        op: "finish",
                        detail: detail.clone(),
                        unreachable,
                    }));
                }
            }
        }
    }
}

/// A failed call as a [`QueueError`], dropping the shared connection if Redis's error says it is
/// broken.
fn call_error(redis: &Redis, e: CallError) -> QueueError {
    if let CallError::Redis { source, .. } = &e {
        redis.note_error(source);
    }
    e.into()
}

#[async_trait::async_trait]
impl JobQueue for RedisQueue {
    async fn prepare(&self) -> Result<(), QueueError> {
        self.create_groups().await?;
        self.warn_about_settings().await;
        Ok(())
    }

    async fn claim(&self, count: usize, order: &[Priority]) -> Result<ClaimBatch, QueueError> {
        self.claim_with(self.claim_call(ClaimMode::New { order }, count))
            .await
    }

    async fn reclaim(&self, count: usize, min_idle_ms: u64) -> Result<ClaimBatch, QueueError> {
        self.claim_with(self.claim_call(ClaimMode::Reclaim { min_idle_ms }, count))
            .await
    }

    async fn wait_for_entries(&self, after: &[String; 4], block_ms: u64) -> Result<(), QueueError> {
        // A connection of its own: a blocked multiplexed connection would stall every other
        // request queued behind it.
        let mut slot = self.blocking.lock().await;
        let mut conn = match slot.take() {
            Some(c) => c,
            None => self.redis.dedicated().await?,
        };
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS");
        cmd.arg(&self.keys.wake_streams()[..]).arg(&after[..]);
        let bound = std::time::Duration::from_millis(block_ms) + self.command_timeout;
        match tokio::time::timeout(bound, cmd.query_async::<Value>(&mut conn)).await {
            Ok(Ok(_)) => {
                *slot = Some(conn);
                Ok(())
            }
            Ok(Err(source)) => Err(QueueError::Redis {
                op: "XREAD BLOCK",
                source,
            }),
            Err(_) => Err(QueueError::Reply {
                op: "XREAD BLOCK",
                detail: format!("no reply within {} ms", bound.as_millis()),
            }),
        }
    }

    async fn finish(&self, done: Completion<'_>) -> Result<Write, QueueError> {
        let stopped = || QueueError::Batch {
            op: "finish",
            detail: "result batcher stopped".into(),
            unreachable: false,
        };
        let (reply, answer) = oneshot::channel();
        self.finishes
            .send(PendingFinish {
                item: done.into(),
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn retry(&self, lease: &Lease, retry: Retry<'_>) -> Result<Write, QueueError> {
        self.run(retry.call(&self.keys, &self.worker, lease)).await
    }

    async fn failure_history(&self, lease: &Lease) -> Result<FailureHistory, QueueError> {
        self.read_failure_history(lease).await
    }

    async fn fleet_id(&self) -> Result<String, QueueError> {
        self.keep_fleet_id().await
    }

    async fn renew(&self, leases: &[Lease]) -> Result<Vec<LeaseState>, QueueError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let renew = Renew {
            worker: &self.worker,
            leases,
        };
        self.run(renew.call(&self.keys)).await
    }

    async fn promote(&self, limit: usize) -> Result<u64, QueueError> {
        let promoted = self.run(Promote { limit }.call(&self.keys)).await?;
        let adopt = Adopt {
            limit: limit as u64,
        };
        let adopted = self.run(adopt.call(&self.keys)).await?.made;
        if adopted > 0 {
            tracing::debug!(adopted, "gave records to raw XADD entries");
        }
        Ok(promoted)
    }

    async fn heartbeat(&self, doc: &str, ttl_ms: u64, sweep: bool) -> Result<(), QueueError> {
        let beat = Heartbeat {
            worker: &self.worker,
            doc,
            ttl_ms,
            sweep,
        };
        let _expired = self.run(beat.call(&self.keys)).await?;
        Ok(())
    }

    async fn live_workers(&self) -> Result<Vec<String>, QueueError> {
        let mut conn = self.redis.conn().await?;
        redis::cmd("HKEYS")
            .arg(self.keys.workers())
            .query_async(&mut conn)
            .await
            .map_err(|source| {
                self.redis.note_error(&source);
                QueueError::Redis {
                    op: "HKEYS",
                    source,
                }
            })
    }

    async fn cancel_requests(&self) -> Result<BoxStream<'static, String>, QueueError> {
        let mut pubsub = self.redis.pubsub().await?;
        pubsub
            .subscribe(self.keys.cancel_channel())
            .await
            .map_err(|source| QueueError::Redis {
                op: "SUBSCRIBE",
                source,
            })?;
        Ok(pubsub
            .into_on_message()
            .map(|m| String::from_utf8_lossy(m.get_payload_bytes()).into_owned())
            .boxed())
    }

    async fn ping(&self) -> Result<(), QueueError> {
        let mut conn = self.redis.conn().await?;
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|source| {
                self.redis.note_error(&source);
                QueueError::Redis { op: "PING", source }
            })
    }

    async fn sample(&self) -> Result<QueueSample, QueueError> {
        let mut conn = self.redis.conn().await?;
        Sample::default()
            .read(&mut conn, &self.keys)
            .await
            .map_err(|e| call_error(&self.redis, e))
    }

    fn log_sink(&self, id: &JobId, lease: &Lease) -> LogSink {
        LogSink::fenced(
            Arc::clone(&self.redis),
            &self.keys,
            id,
            self.cfg.log_max_entries,
            &self.worker,
            lease,
            self.cfg.default_result_ttl_s,
        )
    }
}
