//! One job's record: reading it, giving raw `XADD` entries one, and cancelling the job.

use quayside_common::protocol::adopt::Adopt;
use quayside_common::protocol::cancel::Cancel;
use quayside_common::{JobId, JobResult, Priority, Status};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

use crate::{CancelOutcome, Error, Producer};

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
    /// What the job is (the dashboard's summary); absent when the stored spec does not parse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<SpecSummary>,
    pub result: Option<JobResult>,
}

/// A job's spec in brief: what it is, never the files' content.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SpecSummary {
    pub kind: Option<String>,
    pub language: Option<String>,
    /// The files' names.
    pub files: Vec<String>,
    /// The tenant the job runs as; absent for the default tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl Producer {
    /// The job's record, or `None` if unknown (never enqueued, or expired).
    ///
    /// # Errors
    /// Redis unreachable, or a stored result that does not decode.
    pub async fn status(&self, id: &JobId) -> Result<Option<JobStatus>, Error> {
        let read = redis::cmd("HGETALL").arg(self.keys.job(id)).clone();
        let fields: HashMap<String, Vec<u8>> = self.query("HGETALL", &read).await?;
        if !fields.is_empty() || self.adopt_raw_entries().await? == 0 {
            return crate::record::parse(id, &fields);
        }
        // A raw producer's job may have been waiting without a record: it has one now.
        let fields: HashMap<String, Vec<u8>> = self.query("HGETALL", &read).await?;
        crate::record::parse(id, &fields)
    }

    /// For each id, whose job it is: `None` if no record exists, `Some(None)` for the default
    /// tenant's, `Some(Some(t))` for tenant `t`'s. One pipelined round trip, reading two fields.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn owners(&self, ids: &[JobId]) -> Result<Vec<Option<Option<String>>>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET")
                .arg(self.keys.job(id))
                .arg("state")
                .arg("tenant");
        }
        let mut conn = self.conn().await?;
        let rows: Vec<(Option<String>, Option<String>)> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| self.redis_error("HMGET", e))?;
        Ok(rows
            .into_iter()
            .map(|(state, tenant)| state.map(|_| tenant.filter(|t| !t.is_empty())))
            .collect())
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
}
