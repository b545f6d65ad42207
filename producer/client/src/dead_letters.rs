//! The dead-letter queue: listing, replaying with a fresh attempt budget, purging.

use quayside_common::protocol::replay::Replay;
use serde::Serialize;

use crate::{Error, Producer, ReplayOutcome};

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
}
