//! Batches: jobs enqueued under one batch id. Redis keeps the batch's counters (updated by the
//! same scripts that move its jobs) and its member list, so any process can read its progress,
//! follow it live from the batch channel, summarize it or cancel what is left, without polling
//! each job.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt as _;
use quayside_common::job::MAX_ID_LEN;
use quayside_common::keys::{DEFAULT_MEMBER, RECENT_BATCHES};
use quayside_common::{JobId, JobSpec, Priority, Status};
use serde::Serialize;

use crate::logs::pumped;
use crate::{CancelOutcome, Error, JobStatus, Producer};

/// Member ids read, and records fetched, per round trip.
const CHUNK: usize = 512;
/// Batches read per round trip when listing the newest.
const RECENT_CHUNK: usize = 100;
/// Cancel script calls in flight at once (pipelined on one connection).
const CANCEL_IN_FLIGHT: usize = 64;
/// How often a follower re-reads the counters even without events (covers a lost message).
const REFRESH: Duration = Duration::from_millis(1000);
/// How long a follower gathers endings before re-reading the counters.
const BURST: Duration = Duration::from_millis(100);

/// The label holding a batch job's name (its path for `quayside batch`, or the caller's own).
pub const NAME_LABEL: &str = "name";

/// The id of the job named `name` in `batch` with this content: `<batch>:<16 hex digits>` over
/// the batch id, the name and the content of `spec` (`content_key`). Submitting the same jobs under the same
/// batch id again (CLI or HTTP) adds nothing, and a job whose content changed (an edited file,
/// other flags, tests, compare mode, checker or limits) gets a new id, so it runs again instead
/// of returning its old result.
pub fn batch_member_id(batch: &str, name: &str, spec: &JobSpec) -> JobId {
    let mut key = format!("{batch}\n{name}\n").into_bytes();
    key.extend_from_slice(&content_key(spec));
    let uuid = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, &key);
    let short = format!("{batch}:{}", &uuid.simple().to_string()[..16]);
    let id = if short.len() <= MAX_ID_LEN {
        short
    } else {
        uuid.to_string()
    };
    JobId::parse(&id).expect("batch ids and hex digits are valid id characters")
}

/// The canonical bytes of what decides a job's result: the spec as JSON (struct fields in
/// declaration order, maps sorted, defaults left out) without its id and batch, and without
/// what only says how it is queued or kept (priority, attempts, result TTL, labels). A field
/// the spec gains later counts by default, so new content is never mistaken for old.
fn content_key(spec: &JobSpec) -> Vec<u8> {
    let mut s = spec.clone();
    s.id = JobId::parse("x").expect("a valid id");
    s.batch = None;
    s.priority = Priority::default();
    s.max_attempts = None;
    s.result_ttl_s = None;
    s.labels.clear();
    serde_json::to_vec(&s).expect("a job spec serializes to JSON")
}

/// A batch's counters as Redis holds them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BatchStatus {
    pub id: String,
    /// The tenant whose job made the batch; absent for the default tenant (and for batches
    /// made before batches recorded it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Jobs enqueued under the batch.
    pub total: u64,
    /// Jobs not yet ended (queued, delayed or running).
    pub remaining: u64,
    pub running: u64,
    /// Waiting to run: queued, or delayed for a retry.
    pub queued: u64,
    /// Ended jobs by terminal status (`succeeded`, `failed`, `compile_error`, ...).
    pub by_status: BTreeMap<String, u64>,
    pub succeeded: u64,
    /// Ended with any status but `succeeded`.
    pub unsuccessful: u64,
    pub created_at_ms: Option<u64>,
    /// When the last job ended; absent while any is left.
    pub finished_at_ms: Option<u64>,
    /// Every job has ended.
    pub done: bool,
}

impl BatchStatus {
    fn from_fields(id: &str, fields: &HashMap<String, String>) -> Self {
        let num = |k: &str| {
            fields
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
                .max(0) as u64
        };
        let by_status: BTreeMap<String, u64> = fields
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("s:")?.to_owned(), v.parse().ok()?)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let succeeded = by_status
            .get(Status::Succeeded.as_str())
            .copied()
            .unwrap_or(0);
        let ended: u64 = by_status.values().sum();
        let (total, remaining, running) = (num("total"), num("remaining"), num("running"));
        Self {
            id: id.to_owned(),
            tenant: fields
                .get("tenant")
                .filter(|t| t.as_str() != DEFAULT_MEMBER)
                .cloned(),
            total,
            remaining,
            running,
            queued: remaining.saturating_sub(running),
            succeeded,
            unsuccessful: ended - succeeded,
            by_status,
            created_at_ms: fields.get("created_at").and_then(|v| v.parse().ok()),
            finished_at_ms: fields.get("finished_at").and_then(|v| v.parse().ok()),
            done: total > 0 && remaining == 0,
        }
    }
}

/// What cancelling a batch did, job by job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BatchCancelled {
    /// Queued or delayed jobs that ended as `cancelled` now.
    pub cancelled: u64,
    /// Running jobs whose workers were told to stop them.
    pub requested: u64,
    /// Jobs that had already ended.
    pub already_ended: u64,
    /// Members whose records had expired.
    pub missing: u64,
}

/// One step of a followed batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum BatchEvent {
    /// Fresh counters: first, after every burst of endings, and at least once a second.
    Progress(BatchStatus),
    /// One job of the batch ended.
    JobEnded { id: JobId, status: Status },
}

impl Producer {
    /// The batch's counters, or `None` if no job was ever enqueued under it (or it expired).
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn batch_status(&self, batch: &str) -> Result<Option<BatchStatus>, Error> {
        let fields: HashMap<String, String> = self
            .query("HGETALL", redis::cmd("HGETALL").arg(self.keys.batch(batch)))
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        Ok(Some(BatchStatus::from_fields(batch, &fields)))
    }

    /// The newest batches, newest first, at most `limit`: every tenant's (`tenant` `None`), or
    /// only those made by one tenant's jobs (`Some(None)`: the default tenant's). Batches whose
    /// counters expired are skipped.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn recent_batches(
        &self,
        limit: usize,
        tenant: Option<Option<&str>>,
    ) -> Result<Vec<BatchStatus>, Error> {
        let ids: Vec<String> = self
            .query(
                "ZREVRANGE",
                redis::cmd("ZREVRANGE")
                    .arg(self.keys.batches())
                    .arg(0)
                    .arg(RECENT_BATCHES - 1),
            )
            .await?;
        let mut out = Vec::new();
        let mut conn = self.conn().await?;
        for chunk in ids.chunks(RECENT_CHUNK) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("HGETALL").arg(self.keys.batch(id));
            }
            let hashes: Vec<HashMap<String, String>> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| self.redis_error("HGETALL", e))?;
            for (id, fields) in chunk.iter().zip(hashes) {
                if fields.is_empty() {
                    continue;
                }
                let status = BatchStatus::from_fields(id, &fields);
                if tenant.is_some_and(|t| t != status.tenant.as_deref()) {
                    continue;
                }
                out.push(status);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// Ids of the batch's jobs, in enqueue order.
    ///
    /// # Errors
    /// [`Error::BatchNotFound`] for an unknown batch.
    pub async fn batch_jobs(&self, batch: &str) -> Result<Vec<JobId>, Error> {
        let key = self.keys.batch_jobs(batch);
        let mut ids = Vec::new();
        loop {
            let start = ids.len();
            let range = |cmd: &str| {
                redis::cmd(cmd)
                    .arg(&key)
                    .arg(start)
                    .arg(start + CHUNK - 1)
                    .clone()
            };
            let page: Vec<String> = match self.query("ZRANGE", &range("ZRANGE")).await {
                // A batch made before member lists were sorted sets keeps a list.
                Err(Error::Redis { source, .. }) if source.code() == Some("WRONGTYPE") => {
                    self.query("LRANGE", &range("LRANGE")).await?
                }
                other => other?,
            };
            let n = page.len();
            for raw in page {
                ids.push(JobId::parse(&raw).map_err(|_| Error::Reply {
                    op: "ZRANGE",
                    detail: format!("batch {batch} lists an invalid job id {raw:?}"),
                })?);
            }
            if n < CHUNK {
                break;
            }
        }
        if ids.is_empty() {
            return Err(Error::BatchNotFound(batch.to_owned()));
        }
        Ok(ids)
    }

    /// Records of many jobs, in order, fetched pipelined; `None` where a record is gone.
    ///
    /// # Errors
    /// Redis unreachable, or a stored result that does not decode.
    pub async fn statuses(&self, ids: &[JobId]) -> Result<Vec<Option<JobStatus>>, Error> {
        let mut out = Vec::with_capacity(ids.len());
        let mut conn = self.conn().await?;
        for chunk in ids.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("HGETALL").arg(self.keys.job(id));
            }
            let records: Vec<HashMap<String, Vec<u8>>> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| self.redis_error("HGETALL", e))?;
            for (id, fields) in chunk.iter().zip(records) {
                out.push(crate::record::parse(id, &fields)?);
            }
        }
        Ok(out)
    }

    /// Cancels every job of the batch that has not ended: queued ones end now, running ones are
    /// stopped by their workers.
    ///
    /// # Errors
    /// [`Error::BatchNotFound`] for an unknown batch; Redis unreachable.
    pub async fn cancel_batch(&self, batch: &str) -> Result<BatchCancelled, Error> {
        let ids = self.batch_jobs(batch).await?;
        // Newest first: jobs run roughly in enqueue order, so the queued ones are cancelled
        // before any running one is stopped, and a slot freed by a stop finds nothing of the
        // batch left to claim. Collected first: see `enqueue_many` (`Send` for axum handlers).
        let calls: Vec<_> = ids.iter().rev().map(|id| self.cancel(id)).collect();
        let outcomes: Vec<_> = stream::iter(calls)
            .buffered(CANCEL_IN_FLIGHT)
            .collect()
            .await;
        let mut tally = BatchCancelled::default();
        for outcome in outcomes {
            match outcome {
                Ok(CancelOutcome::Cancelled) => tally.cancelled += 1,
                Ok(CancelOutcome::Requested) => tally.requested += 1,
                Ok(CancelOutcome::AlreadyTerminal { .. }) => tally.already_ended += 1,
                Err(Error::NotFound(_)) => tally.missing += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(tally)
    }

    /// Follows a batch live until every job has ended: a [`BatchEvent::Progress`] first, a
    /// [`BatchEvent::JobEnded`] per ending job (from the batch channel, no per-job polling),
    /// and fresh counters after each burst and at least once a second. The last item is the
    /// final `Progress` with `done`. Redis restarts are waited out.
    pub fn follow_batch(&self, batch: &str) -> BoxStream<'static, Result<BatchEvent, Error>> {
        let this = self.clone();
        let batch = batch.to_owned();
        pumped(1024, move |tx| async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match this.pump_batch(&batch, &tx).await {
                    Err(Error::Connect(_) | Error::Redis { .. }) if !tx.is_closed() => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                    Ok(()) => return,
                }
            }
        })
    }

    async fn pump_batch(
        &self,
        batch: &str,
        tx: &tokio::sync::mpsc::Sender<Result<BatchEvent, Error>>,
    ) -> Result<(), Error> {
        // Subscribe before reading the counters, so no ending falls between the two.
        let mut pubsub = self.redis.pubsub().await?;
        pubsub
            .subscribe(self.keys.batch_channel(batch))
            .await
            .map_err(Error::redis("SUBSCRIBE"))?;
        let mut messages = pubsub.on_message();
        let mut last = None;
        loop {
            let status = self
                .batch_status(batch)
                .await?
                .ok_or_else(|| Error::BatchNotFound(batch.to_owned()))?;
            let done = status.done;
            if last.as_ref() != Some(&status) {
                last = Some(status.clone());
                if tx.send(Ok(BatchEvent::Progress(status))).await.is_err() {
                    return Ok(());
                }
            }
            if done {
                return Ok(());
            }
            // Forward endings; refresh the counters 100 ms after the first of a burst, or at
            // the latest after REFRESH without any.
            let mut deadline = tokio::time::Instant::now() + REFRESH;
            let mut in_burst = false;
            while let Ok(msg) = tokio::time::timeout_at(deadline, messages.next()).await {
                let Some(msg) = msg else {
                    return Err(Error::Redis {
                        op: "batch follow",
                        source: redis::RedisError::from(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "subscription closed",
                        )),
                    });
                };
                let payload: String = msg.get_payload().unwrap_or_default();
                if let Some(event) = parse_ending(&payload) {
                    if tx.send(Ok(event)).await.is_err() {
                        return Ok(());
                    }
                }
                if !in_burst {
                    in_burst = true;
                    deadline = deadline.min(tokio::time::Instant::now() + BURST);
                }
            }
        }
    }
}

fn parse_ending(payload: &str) -> Option<BatchEvent> {
    let (id, status) = payload.split_once(' ')?;
    Some(BatchEvent::JobEnded {
        id: JobId::parse(id).ok()?,
        status: status.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(source: &str) -> JobSpec {
        JobSpec::new(
            quayside_common::JobKind::Run,
            "c",
            BTreeMap::from([("main.c".to_owned(), source.to_owned())]),
        )
    }

    #[test]
    fn member_ids_are_stable_distinct_and_valid() {
        let s = spec("int main(void) { return 0; }");
        let a = batch_member_id("nightly", "tests/a.c", &s);
        let mut other_id = s.clone();
        other_id.id = JobId::generate();
        assert_eq!(
            a,
            batch_member_id("nightly", "tests/a.c", &other_id),
            "same inputs, same id"
        );
        assert!(a.as_str().starts_with("nightly:"), "{a}");
        assert_ne!(a, batch_member_id("nightly", "tests/b.c", &s));
        assert_ne!(a, batch_member_id("other", "tests/a.c", &s));
        let long = "b".repeat(MAX_ID_LEN);
        assert!(batch_member_id(&long, "x", &s).as_str().len() <= MAX_ID_LEN);
    }

    #[test]
    fn member_ids_change_with_what_decides_the_result_and_nothing_else() {
        use quayside_common::cases::{Checker, Compare, TestCase};
        let base = spec("int main(void) { return 0; }");
        let id = |s: &JobSpec| batch_member_id("b", "a.c", s);
        let changed: Vec<(&str, JobSpec)> = vec![
            ("file content", spec("int main(void) { return 1; }")),
            ("compiler options", {
                let mut s = base.clone();
                s.compiler_options = vec!["-O0".into()];
                s
            }),
            ("args", {
                let mut s = base.clone();
                s.args = vec!["x".into()];
                s
            }),
            ("stdin", {
                let mut s = base.clone();
                s.stdin = "1\n".into();
                s
            }),
            ("limits", {
                let mut s = base.clone();
                s.limits.run_wall_time_ms = Some(1_000);
                s
            }),
            ("language", {
                let mut s = base.clone();
                s.language = "cpp".into();
                s
            }),
            ("tests", {
                let mut s = base.clone();
                s.tests = Some(vec![TestCase {
                    name: "1".into(),
                    stdin: String::new(),
                    args: None,
                    expected_stdout: Some("1\n".into()),
                    limits: Default::default(),
                }]);
                s
            }),
            ("compare", {
                let mut s = base.clone();
                s.compare = Some(Compare::Tokens);
                s
            }),
            ("checker", {
                let mut s = base.clone();
                s.checker = Some(Checker {
                    language: "c".into(),
                    files: BTreeMap::from([("check.c".into(), "int main(){}".into())]),
                    compiler_options: Vec::new(),
                });
                s
            }),
            ("stop_on_failure", {
                let mut s = base.clone();
                s.stop_on_failure = true;
                s
            }),
        ];
        let mut seen = std::collections::HashSet::from([id(&base)]);
        for (what, s) in &changed {
            assert!(seen.insert(id(s)), "{what} changed but the id did not");
        }
        let mut queued_differently = base.clone();
        queued_differently.priority = Priority::High;
        queued_differently.max_attempts = Some(1);
        queued_differently.result_ttl_s = Some(60);
        queued_differently.batch = Some("b".into());
        queued_differently
            .labels
            .insert("name".into(), "a.c".into());
        assert_eq!(id(&queued_differently), id(&base));
    }
}
