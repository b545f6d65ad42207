//! A job's live log stream in Redis: where the report side's live log writes what runners print.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use quayside_common::connection::Redis;
use quayside_common::protocol::log::Log;
use quayside_common::protocol::CallError;
use quayside_common::{JobId, Keys};

use super::Lease;
use crate::outage::Outage;

pub use quayside_common::protocol::log::LogSource;

/// Where the live log's entries go: the job's log stream ([`LogSink`]), or a test's collector.
#[async_trait::async_trait]
pub trait LogWriter: Send + Sync + 'static {
    /// Appends one entry. Failures are the writer's to report: the result, not the live log,
    /// is the job's record.
    async fn write(&self, source: LogSource, data: &[u8]);
}

/// The lease a fenced sink writes under (see `common/lua/log.lua`).
#[derive(Clone, Debug)]
struct Fence {
    keys: Keys,
    id: JobId,
    worker: String,
    lease: Lease,
    default_ttl_s: u64,
}

/// Appends to one job's capped log stream. Failures are logged, never fatal: the result, not
/// the live log, is the job's record.
///
/// A sink made by the queue for a claimed job is fenced: each chunk is appended by `log.lua`
/// only while this execution holds the job's lease (so nothing lands after the log's `end`
/// entry, and the stream always has a TTL); once a chunk is refused, the sink writes no more.
#[derive(Clone, Debug)]
pub struct LogSink {
    redis: Arc<Redis>,
    key: String,
    max_entries: u64,
    fence: Option<Arc<Fence>>,
    wrote: Arc<AtomicBool>,
    refused: Arc<AtomicBool>,
    /// Where an unreachable Redis is reported instead of a warning per chunk.
    outage: Option<Arc<Outage>>,
}

impl LogSink {
    /// An unfenced sink appending to `key` (runner tests and tools that own the key).
    pub fn new(redis: Arc<Redis>, key: String, max_entries: u64) -> Self {
        Self {
            redis,
            key,
            max_entries,
            fence: None,
            wrote: Arc::default(),
            refused: Arc::default(),
            outage: None,
        }
    }

    /// The sink of claimed job `id` of the queue `keys` name: appends only while `worker`
    /// holds `lease`. `default_ttl_s` is the TTL of a log whose job carries none.
    pub fn fenced(
        redis: Arc<Redis>,
        keys: &Keys,
        id: &JobId,
        max_entries: u64,
        worker: &str,
        lease: &Lease,
        default_ttl_s: u64,
    ) -> Self {
        Self {
            fence: Some(Arc::new(Fence {
                keys: keys.clone(),
                id: id.clone(),
                worker: worker.to_owned(),
                lease: lease.clone(),
                default_ttl_s,
            })),
            ..Self::new(redis, keys.logs(id), max_entries)
        }
    }

    /// Reports an unreachable Redis to `outage` (one story per outage) instead of warning
    /// for every chunk.
    pub fn reporting_to(self, outage: Arc<Outage>) -> Self {
        Self {
            outage: Some(outage),
            ..self
        }
    }

    /// Whether anything was appended.
    pub fn wrote(&self) -> bool {
        self.wrote.load(Ordering::Acquire)
    }

    /// Appends one chunk. Bytes are kept as they are (Redis strings are binary-safe).
    pub async fn write(&self, source: LogSource, data: &[u8]) {
        if self.refused.load(Ordering::Acquire) {
            return;
        }
        let result = async {
            let mut conn = self.redis.conn().await.map_err(|e| (true, e.to_string()))?;
            let appended = match &self.fence {
                Some(f) => {
                    let call = Log {
                        worker: &f.worker,
                        id: &f.id,
                        lease: &f.lease,
                        log_cap: self.max_entries,
                        default_ttl_s: f.default_ttl_s,
                        source,
                        data,
                    }
                    .call(&f.keys);
                    match call.run(&mut conn).await {
                        Ok(written) => Ok(written.is_taken()),
                        Err(CallError::Redis { source: e, .. }) => Err(e),
                        Err(e @ CallError::Reply(_)) => return Err((false, e.to_string())),
                    }
                }
                None => redis::cmd("XADD")
                    .arg(&self.key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(self.max_entries)
                    .arg("*")
                    .arg("s")
                    .arg(source.as_str())
                    .arg("d")
                    .arg(data)
                    .query_async::<()>(&mut conn)
                    .await
                    .map(|()| true),
            };
            appended.map_err(|e| {
                self.redis.note_error(&e);
                (crate::queue::unreachable(&e), e.to_string())
            })
        }
        .await;
        if let (Ok(_), Some(outage)) = (&result, &self.outage) {
            outage.recovered();
        }
        match (result, &self.outage) {
            (Ok(true), _) => self.wrote.store(true, Ordering::Release),
            (Ok(false), _) => {
                self.refused.store(true, Ordering::Release);
                tracing::debug!(key = %self.key, "log append refused: this execution no longer holds the job");
            }
            (Err((true, error)), Some(outage)) => outage.failed(&error),
            (Err((_, error)), _) => {
                tracing::warn!(key = %self.key, %error, "cannot append to job log")
            }
        }
    }
}

#[async_trait::async_trait]
impl LogWriter for LogSink {
    async fn write(&self, source: LogSource, data: &[u8]) {
        LogSink::write(self, source, data).await;
    }
}
