//! One job's record: reading it, giving raw `XADD` entries one, and cancelling the job.

use std::collections::{BTreeMap, HashMap};

use quayside_common::scripts::Scripts;
use quayside_common::{JobId, JobResult, Priority, Status};
use serde::Serialize;

use crate::{Error, Producer};

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

/// What a cancel request did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CancelOutcome {
    /// It was queued or waiting for a retry; it is now `cancelled`.
    Cancelled,
    /// It is running; its worker stops it and records `cancelled`.
    Requested,
    /// It had already ended.
    AlreadyTerminal { status: Status },
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
        for _ in 0..300 {
            let mut inv = Scripts::get().adopt.prepare_invoke();
            inv.key(self.keys.adopted())
                .arg(self.keys.prefix())
                .arg(PER_CALL);
            let (n, read): (u64, u64) = self.invoke("adopt", &inv).await?;
            made += n;
            if read < PER_CALL {
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
        let mut inv = Scripts::get().cancel.prepare_invoke();
        inv.key(self.keys.job(id))
            .arg(self.keys.prefix())
            .arg(id.as_str())
            .arg(self.queue.default_result_ttl_s)
            .arg(self.queue.min_result_ttl_s)
            .arg(self.queue.log_max_entries);
        let mut answer: String = self.invoke("cancel", &inv).await?;
        if answer == "unknown" && self.adopt_raw_entries().await? > 0 {
            // A raw producer's queued job that had no record yet: it has one now.
            answer = self.invoke("cancel", &inv).await?;
        }
        match answer.as_str() {
            "cancelled" => Ok(CancelOutcome::Cancelled),
            "requested" => Ok(CancelOutcome::Requested),
            "unknown" => Err(Error::NotFound(id.clone())),
            other => match other.strip_prefix("terminal:").and_then(|s| s.parse().ok()) {
                Some(status) => Ok(CancelOutcome::AlreadyTerminal { status }),
                None => Err(Error::Reply {
                    op: "cancel",
                    detail: other.to_owned(),
                }),
            },
        }
    }
}
