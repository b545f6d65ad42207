//! `cancel.lua`: cancel a job, queued (it ends now) or running (its worker is told).

use redis::Value;
use serde::Serialize;

use super::reply::Reader;
use super::{Args, Call, ReplyError};
use crate::job::JobId;
use crate::keys::Keys;
use crate::outcome::Status;
use crate::scripts::ScriptName;

/// The cancel script's arguments.
#[derive(Clone, Copy, Debug)]
pub struct Cancel<'a> {
    pub id: &'a JobId,
    /// Result TTL of a job that carries none, and the floor (`queue.min_result_ttl_s`).
    pub default_ttl_s: u64,
    pub min_ttl_s: u64,
    /// `queue.log_max_entries`.
    pub log_cap: u64,
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

impl Cancel<'_> {
    /// `None`: no such job (never enqueued, expired, or a raw entry not adopted yet).
    pub fn call(&self, keys: &Keys) -> Call<Option<CancelOutcome>> {
        let args = Args::new(keys)
            .arg(self.id.as_str())
            .arg(self.default_ttl_s)
            .arg(self.min_ttl_s)
            .arg(self.log_cap);
        Call::new(ScriptName::Cancel, vec![keys.job(self.id)], args, parse)
    }
}

const R: Reader = Reader("cancel");

fn parse(reply: Value) -> Result<Option<CancelOutcome>, ReplyError> {
    let answer = R.text(&reply)?;
    match answer.as_str() {
        "cancelled" => Ok(Some(CancelOutcome::Cancelled)),
        "requested" => Ok(Some(CancelOutcome::Requested)),
        "unknown" => Ok(None),
        other => match other.strip_prefix("terminal:").map(str::parse) {
            Some(Ok(status)) => Ok(Some(CancelOutcome::AlreadyTerminal { status })),
            _ => Err(R.error(format!("unknown answer {other:?}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::testing::{bulk, keys, text};

    #[test]
    fn every_answer_is_read() {
        let id = JobId::parse("a").expect("id");
        let call = Cancel {
            id: &id,
            default_ttl_s: 86400,
            min_ttl_s: 3600,
            log_cap: 1000,
        }
        .call(&keys());
        assert_eq!(call.keys(), [keys().job(&id)]);
        assert_eq!(text(&call), ["qs:{q}:", "a", "86400", "3600", "1000"]);
        let read = |s: &str| call.parse(bulk(s));
        assert_eq!(read("cancelled"), Ok(Some(CancelOutcome::Cancelled)));
        assert_eq!(read("requested"), Ok(Some(CancelOutcome::Requested)));
        assert_eq!(read("unknown"), Ok(None));
        assert_eq!(
            read("terminal:succeeded"),
            Ok(Some(CancelOutcome::AlreadyTerminal {
                status: Status::Succeeded
            }))
        );
        for bad in ["terminal:bogus", "terminal", "gone", ""] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn outcomes_serialize_as_the_http_api_documents() {
        let json = serde_json::to_value(CancelOutcome::AlreadyTerminal {
            status: Status::Failed,
        })
        .expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"outcome": "already_terminal", "status": "failed"})
        );
    }
}
