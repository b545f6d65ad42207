//! [`JobQueue`] on Redis streams.
//!
//! - `infra`: the calls behind time-bounded infrastructure retries and the fleet id.

mod infra;

use std::sync::Arc;

use futures_util::stream::BoxStream;
use futures_util::StreamExt as _;
use quayside_common::config::QueueConfig;
use quayside_common::connection::Redis;
use quayside_common::keys::GROUP;
use quayside_common::scripts::Scripts;
use quayside_common::wire::encode_result;
use quayside_common::{JobId, Keys, Priority};
use redis::Value;

use tokio::sync::{mpsc, oneshot};

use super::{
    ClaimBatch, Claimed, Completion, Dropped, FailureHistory, JobQueue, Lease, LeaseState,
    QueueError, QueueSample,
};
use crate::logs::LogSink;

/// Most results written by one script call.
const FINISH_BATCH: usize = 128;

/// One result waiting for the batcher: its script arguments and where the answer goes.
struct PendingFinish {
    args: [Vec<u8>; 9],
    reply: oneshot::Sender<Result<bool, QueueError>>,
}

/// The Redis-backed queue of one worker process; `worker` is its consumer name.
#[derive(Debug)]
pub struct RedisQueue {
    redis: Arc<Redis>,
    keys: Keys,
    cfg: QueueConfig,
    worker: String,
    finishes: mpsc::Sender<PendingFinish>,
    /// The connection blocking reads wait on, kept between waits.
    blocking: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
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
            worker,
            finishes,
            blocking: tokio::sync::Mutex::new(None),
            fleet: std::sync::Mutex::new(None),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn eval<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, QueueError> {
        let mut conn = self.redis.conn().await?;
        inv.invoke_async(&mut conn).await.map_err(|source| {
            self.redis.note_error(&source);
            QueueError::Redis { op, source }
        })
    }

    fn claim_invocation(
        &self,
        mode: &str,
        count: usize,
        order: &str,
        min_idle_ms: u64,
    ) -> redis::ScriptInvocation<'static> {
        let mut inv = Scripts::get().claim.prepare_invoke();
        for s in self.keys.streams() {
            inv.key(s);
        }
        inv.arg(self.keys.prefix())
            .arg(&self.worker)
            .arg(mode)
            .arg(count)
            .arg(order)
            .arg(min_idle_ms)
            .arg(self.cfg.dlq_max_len)
            .arg(self.cfg.log_max_entries)
            .arg(self.cfg.default_result_ttl_s);
        inv
    }

    /// Creates the consumer group on every stream that lacks it, from the stream's first entry
    /// (so entries added while it was missing are delivered).
    async fn create_groups(&self) -> Result<(), QueueError> {
        let mut conn = self.redis.conn().await?;
        for stream in self.keys.streams() {
            let created: Result<(), _> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
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
    async fn claim_with(
        &self,
        op: &'static str,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<ClaimBatch, QueueError> {
        let reply: Value = self.eval(op, inv).await?;
        let (batch, missing) = parse_claim(reply)?;
        if !missing.is_empty() {
            tracing::warn!(streams = ?missing, "consumer group missing (stream deleted or group destroyed); creating it again");
            self.create_groups().await?;
        }
        Ok(batch)
    }

    /// Logs what a production deployment must not run with: eviction of queue keys, or no
    /// persistence at all.
    async fn warn_about_settings(&self) {
        let Ok(mut conn) = self.redis.conn().await else {
            return;
        };
        let get = |name: &'static str| redis::cmd("CONFIG").arg("GET").arg(name).clone();
        let policy: Result<Vec<String>, _> = get("maxmemory-policy").query_async(&mut conn).await;
        match policy.as_deref() {
            Ok([_, p]) if p != "noeviction" => tracing::warn!(
                policy = %p,
                "redis maxmemory-policy is not noeviction: queue keys may be evicted and jobs lost"
            ),
            Err(e) => {
                tracing::info!(error = %e, "cannot read redis maxmemory-policy (CONFIG disabled?)")
            }
            _ => {}
        }
        let aof: Result<Vec<String>, _> = get("appendonly").query_async(&mut conn).await;
        let save: Result<Vec<String>, _> = get("save").query_async(&mut conn).await;
        if let (Ok([_, aof]), Ok([_, save])) = (aof.as_deref(), save.as_deref()) {
            if aof != "yes" {
                tracing::warn!(
                    snapshots = %save,
                    "redis appendonly is off: a redis crash loses every job since the last snapshot"
                );
            }
        }
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
        let mut inv = Scripts::get().finish.prepare_invoke();
        inv.key(keys.stream(Priority::Normal))
            .arg(keys.prefix())
            .arg(&worker)
            .arg(cfg.log_max_entries)
            .arg(cfg.dlq_max_len)
            .arg(batch.len());
        for p in &batch {
            for a in &p.args {
                inv.arg(a.as_slice());
            }
        }
        let answer: Result<Vec<i64>, QueueError> = async {
            let mut conn = redis.conn().await?;
            inv.invoke_async(&mut conn).await.map_err(|source| {
                redis.note_error(&source);
                QueueError::Redis {
                    op: "finish",
                    source,
                }
            })
        }
        .await;
        match answer {
            Ok(written) if written.len() == batch.len() => {
                for (p, w) in batch.drain(..).zip(written) {
                    let _ = p.reply.send(Ok(w == 1));
                }
            }
            other => {
                let unreachable = matches!(&other, Err(e) if e.is_unreachable());
                let detail = match other {
                    Err(e) => format!(
                        "{e}: {}",
                        std::error::Error::source(&e)
                            .map(|s| s.to_string())
                            .unwrap_or_default()
                    ),
                    Ok(w) => format!("{} answers for {} results", w.len(), batch.len()),
                };
                for p in batch.drain(..) {
                    let _ = p.reply.send(Err(QueueError::Batch {
                        op: "finish",
                        detail: detail.clone(),
                        unreachable,
                    }));
                }
            }
        }
    }
}

fn bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b.clone(),
        Value::SimpleString(s) => s.clone().into_bytes(),
        Value::Int(i) => i.to_string().into_bytes(),
        _ => Vec::new(),
    }
}

fn text(v: &Value) -> String {
    String::from_utf8_lossy(&bytes(v)).into_owned()
}

fn number<T: std::str::FromStr>(op: &'static str, v: &Value) -> Result<T, QueueError> {
    text(v).parse().map_err(|_| QueueError::Reply {
        op,
        detail: format!("expected a number, got {v:?}"),
    })
}

fn priority(op: &'static str, v: &Value) -> Result<Priority, QueueError> {
    let i: usize = number(op, v)?;
    i.checked_sub(1)
        .and_then(Priority::from_index)
        .ok_or_else(|| QueueError::Reply {
            op,
            detail: format!("stream index {i} out of range"),
        })
}

fn array<'a>(op: &'static str, v: &'a Value) -> Result<&'a [Value], QueueError> {
    match v {
        Value::Array(a) => Ok(a),
        Value::Nil => Ok(&[]),
        other => Err(QueueError::Reply {
            op,
            detail: format!("expected an array, got {other:?}"),
        }),
    }
}

/// The claim script's reply, and the streams it found without a consumer group.
fn parse_claim(mut reply: Value) -> Result<(ClaimBatch, Vec<String>), QueueError> {
    const OP: &str = "claim";
    // Take the specs out of the reply instead of copying them.
    let mut specs = Vec::new();
    if let Value::Array(parts) = &mut reply {
        if let Some(Value::Array(claimed)) = parts.first_mut() {
            for c in claimed.chunks_exact_mut(8) {
                specs.push(match std::mem::replace(&mut c[5], Value::Nil) {
                    Value::BulkString(b) => b,
                    other => bytes(&other),
                });
            }
        }
    }
    let mut specs = specs.into_iter();
    let parts = array(OP, &reply)?;
    let [claimed, dropped, last, missing] = parts else {
        return Err(QueueError::Reply {
            op: OP,
            detail: format!("expected 4 parts, got {}", parts.len()),
        });
    };
    let mut batch = ClaimBatch::default();
    for c in array(OP, claimed)?.chunks_exact(8) {
        batch.claimed.push(Claimed {
            lease: Lease {
                priority: priority(OP, &c[0])?,
                entry: text(&c[1]),
                job_id: text(&c[2]),
                token: number(OP, &c[3])?,
            },
            attempts: number(OP, &c[4])?,
            spec_json: specs.next().unwrap_or_default(),
            enqueued_at_ms: number(OP, &c[6]).unwrap_or(0),
            cancel_requested: text(&c[7]) == "1",
        });
    }
    for d in array(OP, dropped)?.chunks_exact(3) {
        batch.dropped.push(Dropped {
            priority: priority(OP, &d[0])?,
            entry: text(&d[1]),
            reason: text(&d[2]),
        });
    }
    if let [a, b, c] = array(OP, last)? {
        batch.last_ids = Some([text(a), text(b), text(c)]);
    }
    let missing = array(OP, missing)?.iter().map(text).collect();
    Ok((batch, missing))
}

#[async_trait::async_trait]
impl JobQueue for RedisQueue {
    async fn prepare(&self) -> Result<(), QueueError> {
        self.create_groups().await?;
        self.warn_about_settings().await;
        Ok(())
    }

    async fn claim(&self, count: usize, order: &[Priority]) -> Result<ClaimBatch, QueueError> {
        let order: String = order
            .iter()
            .map(|p| char::from(b'1' + p.index() as u8))
            .collect();
        self.claim_with("claim", self.claim_invocation("new", count, &order, 0))
            .await
    }

    async fn reclaim(&self, count: usize, min_idle_ms: u64) -> Result<ClaimBatch, QueueError> {
        self.claim_with(
            "reclaim",
            self.claim_invocation("reclaim", count, "123", min_idle_ms),
        )
        .await
    }

    async fn wait_for_entries(&self, after: &[String; 3], block_ms: u64) -> Result<(), QueueError> {
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
        cmd.arg(&self.keys.streams()[..]).arg(&after[..]);
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

    async fn finish(&self, done: Completion<'_>) -> Result<bool, QueueError> {
        let l = done.lease;
        let (reason, error) = done.dead_letter.map_or(("", ""), |d| (d.reason, d.error));
        let args = [
            l.job_id.clone().into_bytes(),
            (l.priority.index() + 1).to_string().into_bytes(),
            l.entry.clone().into_bytes(),
            l.token.to_string().into_bytes(),
            done.result.status.as_str().as_bytes().to_vec(),
            encode_result(done.result).into_bytes(),
            done.ttl_s.to_string().into_bytes(),
            reason.as_bytes().to_vec(),
            error.as_bytes().to_vec(),
        ];
        let (reply, answer) = oneshot::channel();
        self.finishes
            .send(PendingFinish { args, reply })
            .await
            .map_err(|_| QueueError::Batch {
                op: "finish",
                detail: "result batcher stopped".into(),
                unreachable: false,
            })?;
        answer.await.map_err(|_| QueueError::Batch {
            op: "finish",
            detail: "result batcher stopped".into(),
            unreachable: false,
        })?
    }

    async fn retry(
        &self,
        lease: &Lease,
        delay_ms: u64,
        error: &str,
        refund: bool,
    ) -> Result<bool, QueueError> {
        self.retry_script(lease, delay_ms, error, refund, false)
            .await
    }

    async fn retry_infra(
        &self,
        lease: &Lease,
        delay_ms: u64,
        error: &str,
    ) -> Result<bool, QueueError> {
        self.retry_script(lease, delay_ms, error, true, true).await
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
        let mut inv = Scripts::get().renew.prepare_invoke();
        inv.key(self.keys.stream(Priority::Normal));
        inv.arg(self.keys.prefix()).arg(&self.worker);
        for l in leases {
            inv.arg(&l.job_id)
                .arg(l.priority.index() + 1)
                .arg(&l.entry)
                .arg(l.token);
        }
        let answers: Vec<String> = self.eval("renew", inv).await?;
        Ok(answers
            .iter()
            .map(|a| match a.as_str() {
                "ok" => LeaseState::Held,
                "cancel" => LeaseState::CancelRequested,
                "requeued" => LeaseState::Requeued,
                _ => LeaseState::Lost,
            })
            .collect())
    }

    async fn promote(&self, limit: usize) -> Result<u64, QueueError> {
        let mut inv = Scripts::get().promote.prepare_invoke();
        inv.key(self.keys.delayed())
            .arg(self.keys.prefix())
            .arg(limit);
        let promoted = self.eval("promote", inv).await?;
        let mut inv = Scripts::get().adopt.prepare_invoke();
        inv.key(self.keys.adopted())
            .arg(self.keys.prefix())
            .arg(limit);
        let (adopted, _read): (u64, u64) = self.eval("adopt", inv).await?;
        if adopted > 0 {
            tracing::debug!(adopted, "gave records to raw XADD entries");
        }
        Ok(promoted)
    }

    async fn heartbeat(&self, doc: &str, ttl_ms: u64) -> Result<(), QueueError> {
        let mut inv = Scripts::get().heartbeat.prepare_invoke();
        inv.key(self.keys.workers())
            .arg(self.keys.prefix())
            .arg(&self.worker)
            .arg(doc)
            .arg(ttl_ms);
        let _expired: i64 = self.eval("heartbeat", inv).await?;
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
        let mut pipe = redis::pipe();
        for stream in self.keys.streams() {
            pipe.cmd("XLEN").arg(&stream);
            pipe.cmd("XPENDING").arg(&stream).arg(GROUP);
        }
        pipe.cmd("ZCARD").arg(self.keys.delayed());
        pipe.cmd("XLEN").arg(self.keys.dlq());
        // Live workers: expiry scores in the future (the hash may hold a few not yet pruned).
        pipe.cmd("ZCOUNT")
            .arg(self.keys.workers_expiry())
            .arg(quayside_common::now_ms())
            .arg("+inf");
        let mut conn = self.redis.conn().await?;
        let replies: Vec<Value> = pipe.query_async(&mut conn).await.map_err(|source| {
            self.redis.note_error(&source);
            QueueError::Redis {
                op: "sample",
                source,
            }
        })?;
        let int = |v: Option<&Value>| match v {
            Some(Value::Int(i)) => (*i).max(0) as u64,
            // XPENDING's summary starts with the count; NOGROUP before `prepare` reads as 0.
            Some(Value::Array(a)) => match a.first() {
                Some(Value::Int(i)) => (*i).max(0) as u64,
                _ => 0,
            },
            _ => 0,
        };
        let mut s = QueueSample::default();
        for i in 0..3 {
            s.depth[i] = int(replies.get(2 * i));
            s.pending[i] = int(replies.get(2 * i + 1));
        }
        s.delayed = int(replies.get(6));
        s.dead_letters = int(replies.get(7));
        s.workers = int(replies.get(8));
        Ok(s)
    }

    fn log_sink(&self, id: &JobId, lease: &Lease) -> LogSink {
        LogSink::fenced(
            Arc::clone(&self.redis),
            self.keys.logs(id),
            self.cfg.log_max_entries,
            self.keys.prefix(),
            &self.worker,
            lease,
            self.cfg.default_result_ttl_s,
        )
    }
}
