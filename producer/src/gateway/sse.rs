//! `GET /v1/jobs/{id}/logs`: the job's log as Server-Sent Events, live while it runs. One event
//! per log entry, its type the source (`stdout`, `stderr`, `compile`, `system`) and its data
//! `{"data": text, "encoding": "utf8"|"base64"}` (bytes kept exactly, as in results); the last
//! event is `end` with `{"status": ...}`. A failure mid-stream is an `error` event carrying the
//! error body.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use quayside_common::Captured;
use serde::Deserialize;

use super::error::ApiError;
use super::{body, Gateway};
use crate::{Error, LogEntry};

#[derive(Debug, Deserialize)]
pub(super) struct LogsQuery {
    follow: Option<String>,
}

/// Streams the log; `follow=false` sends what exists now and ends (no `end` event unless the
/// job has ended).
pub(super) async fn logs(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let id = body::id(&id)?;
    let follow = body::flag(q.follow.as_deref(), "follow", true)?;
    // Answer 404 before the stream starts; afterwards only an event can say anything.
    if gw.producer.status(&id).await?.is_none() {
        return Err(Error::NotFound(id).into());
    }
    let events = gw
        .producer
        .logs(&id, follow)
        .map(|item| Ok::<_, Infallible>(event(item)))
        // Shutting down ends every stream, so the drain is not held up by followers.
        .take_until(gw.shutdown.clone().cancelled_owned());
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Event types are a closed set: whatever else a raw writer put in the log is `system`.
fn source(s: &str) -> &'static str {
    match s {
        "stdout" => "stdout",
        "stderr" => "stderr",
        "compile" => "compile",
        "end" => "end",
        _ => "system",
    }
}

fn event(item: Result<LogEntry, Error>) -> Event {
    let (kind, data) = match item {
        Ok(e) if e.source == "end" => (
            "end",
            serde_json::json!({ "status": String::from_utf8_lossy(&e.data) }),
        ),
        Ok(e) => {
            let c = Captured::from_bytes(e.data, false);
            (
                source(&e.source),
                serde_json::json!({ "data": c.data, "encoding": c.encoding }),
            )
        }
        Err(e) => (
            "error",
            serde_json::to_value(ApiError::from(e).body).unwrap_or_default(),
        ),
    };
    Event::default().event(kind).data(data.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_become_typed_events_with_exact_data() {
        let e = event(Ok(LogEntry {
            source: "stdout".into(),
            data: b"hi\r\n".to_vec(),
        }));
        let text = format!("{e:?}");
        assert!(text.contains("stdout"), "{text}");
        let raw = event(Ok(LogEntry {
            source: "weird\nname".into(),
            data: vec![0xff],
        }));
        assert!(format!("{raw:?}").contains("system"));
    }
}
