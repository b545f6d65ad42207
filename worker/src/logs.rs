//! A job's live log stream: what runners write while the program runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use quayside_common::connection::Redis;

use crate::outage::Outage;

/// Which output a log entry came from (the `s` field of the log stream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogSource {
    Stdout,
    Stderr,
    Compile,
    /// Lines from Quayside itself, e.g. "retrying after ...".
    System,
}

impl LogSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Compile => "compile",
            Self::System => "system",
        }
    }
}

/// Appends to one job's capped log stream. Failures are logged, never fatal: the result, not
/// the live log, is the job's record.
#[derive(Clone, Debug)]
pub struct LogSink {
    redis: Arc<Redis>,
    key: String,
    max_entries: u64,
    wrote: Arc<AtomicBool>,
    /// Where an unreachable Redis is reported instead of a warning per chunk.
    outage: Option<Arc<Outage>>,
}

impl LogSink {
    pub fn new(redis: Arc<Redis>, key: String, max_entries: u64) -> Self {
        Self {
            redis,
            key,
            max_entries,
            wrote: Arc::default(),
            outage: None,
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

    /// Whether anything was appended (then the log gets an end marker and a TTL at the end).
    pub fn wrote(&self) -> bool {
        self.wrote.load(Ordering::Acquire)
    }

    /// Appends one chunk. Bytes are kept as they are (Redis strings are binary-safe).
    pub async fn write(&self, source: LogSource, data: &[u8]) {
        self.wrote.store(true, Ordering::Release);
        let result = async {
            let mut conn = self.redis.conn().await.map_err(|e| (true, e.to_string()))?;
            redis::cmd("XADD")
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
                .map_err(|e| {
                    self.redis.note_error(&e);
                    (crate::queue::unreachable(&e), e.to_string())
                })
        }
        .await;
        match (result, &self.outage) {
            (Ok(()), Some(outage)) => outage.recovered(),
            (Ok(()), None) => {}
            (Err((true, error)), Some(outage)) => outage.failed(&error),
            (Err((_, error)), _) => {
                tracing::warn!(key = %self.key, %error, "cannot append to job log")
            }
        }
    }
}
