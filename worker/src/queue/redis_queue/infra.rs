//! The Redis calls behind time-bounded infrastructure retries (the record's failure history),
//! the fleet id, and the warnings about Redis settings a deployment must not run with.

use quayside_common::JobId;

use super::RedisQueue;
use crate::queue::{FailureHistory, Lease, QueueError};

impl RedisQueue {
    /// Logs what a production deployment must not run with: eviction of queue keys, or no
    /// persistence at all.
    pub(super) async fn warn_about_settings(&self) {
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

    /// Maps a Redis error of `op`, dropping the shared connection if it is broken.
    fn redis_error(&self, op: &'static str) -> impl Fn(redis::RedisError) -> QueueError + '_ {
        move |source| {
            self.redis.note_error(&source);
            QueueError::Redis { op, source }
        }
    }

    /// The record's `failing_since` and `infra_failures` (see `retry.lua`).
    pub(super) async fn read_failure_history(
        &self,
        lease: &Lease,
    ) -> Result<FailureHistory, QueueError> {
        let Ok(id) = JobId::parse(&lease.job_id) else {
            return Ok(FailureHistory::default());
        };
        let mut conn = self.redis.conn().await?;
        let (failing_since_ms, failures): (Option<u64>, Option<u32>) = redis::cmd("HMGET")
            .arg(self.keys.job(&id))
            .arg("failing_since")
            .arg("infra_failures")
            .query_async(&mut conn)
            .await
            .map_err(self.redis_error("HMGET"))?;
        Ok(FailureHistory {
            failing_since_ms,
            failures: failures.unwrap_or(0),
        })
    }

    /// Sets the fleet id if the key is missing (a fresh random one, or the one this worker
    /// already knows, so a key Redis lost comes back unchanged), then reads it.
    pub(super) async fn keep_fleet_id(&self) -> Result<String, QueueError> {
        let candidate = self
            .fleet
            .lock()
            .expect("lock poisoned")
            .clone()
            .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
        let mut conn = self.redis.conn().await?;
        let (id,): (String,) = redis::pipe()
            .cmd("SET")
            .arg(self.keys.fleet())
            .arg(&candidate)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(self.keys.fleet())
            .query_async(&mut conn)
            .await
            .map_err(self.redis_error("SET NX"))?;
        let mut known = self.fleet.lock().expect("lock poisoned");
        if known.as_ref().is_some_and(|k| *k != id) {
            tracing::warn!(stored = %id, ours = ?known, "the queue's fleet id changed (redis lost its data?); sandboxes labelled with the old one are swept by their deadline");
        }
        *known = Some(id.clone());
        Ok(id)
    }
}
