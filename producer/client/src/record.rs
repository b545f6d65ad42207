//! Reading a job's record hash into a [`JobStatus`].

use std::collections::{BTreeMap, HashMap};

use quayside_common::wire::decode_result;
use quayside_common::{JobId, Priority, Status};

use crate::{Error, JobStatus, SpecSummary};

/// The record's fields as `HGETALL` returns them; `None` when there are none (no such job).
pub(crate) fn parse(
    id: &JobId,
    fields: &HashMap<String, Vec<u8>>,
) -> Result<Option<JobStatus>, Error> {
    if fields.is_empty() {
        return Ok(None);
    }
    let text = |k: &str| {
        fields
            .get(k)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .filter(|s| !s.is_empty())
    };
    let state = text("state")
        .and_then(|s| s.parse::<Status>().ok())
        .ok_or_else(|| Error::Reply {
            op: "status",
            detail: format!("record of {id} has no valid state"),
        })?;
    let result = match fields.get("result").filter(|r| !r.is_empty()) {
        Some(r) => Some(decode_result(r).map_err(|source| Error::Corrupt {
            id: id.clone(),
            source,
        })?),
        None => None,
    };
    let (labels, summary) = fields.get("spec").map(|s| spec(s)).unwrap_or_default();
    Ok(Some(JobStatus {
        id: id.clone(),
        state,
        attempts: text("attempts").and_then(|a| a.parse().ok()).unwrap_or(0),
        priority: text("priority")
            .and_then(|p| p.parse::<usize>().ok())
            .and_then(|i| Priority::from_index(i.wrapping_sub(1))),
        worker: text("worker"),
        batch: text("batch"),
        enqueued_at_ms: text("enqueued_at").and_then(|a| a.parse().ok()),
        last_error: text("last_error"),
        cancel_requested: text("cancel").as_deref() == Some("1"),
        labels,
        spec: summary,
        result,
    }))
}

/// What the record keeps of a stored spec: its labels and a summary (never the files' content);
/// nothing if it does not parse (the worker judges specs, not readers).
fn spec(spec: &[u8]) -> (BTreeMap<String, String>, Option<SpecSummary>) {
    #[derive(serde::Deserialize)]
    struct Stored {
        #[serde(default)]
        labels: BTreeMap<String, String>,
        kind: Option<String>,
        language: Option<String>,
        #[serde(default)]
        files: BTreeMap<String, serde::de::IgnoredAny>,
        tenant: Option<String>,
    }
    match serde_json::from_slice::<Stored>(spec) {
        Ok(s) => (
            s.labels,
            Some(SpecSummary {
                kind: s.kind,
                language: s.language,
                files: s.files.into_keys().collect(),
                tenant: s.tenant,
            }),
        ),
        Err(_) => (BTreeMap::new(), None),
    }
}
