//! Waiting for a job's result without polling, and reading or following its live log.

use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt as _;
use quayside_common::{JobId, JobResult};
use serde::Serialize;
use std::time::{Duration, Instant};

use crate::{Error, JobStatus, Producer};

/// One entry of a job's live log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    /// `stdout`, `stderr`, `compile`, `system`, `test` (a test starts: its name), `verdict` (a
    /// test was judged: `<name> <status> <wall_ms>ms`), or `end` (the last entry; `data` is
    /// the status).
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

impl Producer {
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
}

/// Runs `pump` on a task of its own and streams what it sends. Reading stays independent of
/// the consumer's pace up to `buffer` items; a dropped stream makes the pump's next send fail.
pub(crate) fn pumped<T, F>(
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
