//! `GET /v1/jobs/{id}/logs`: the job's log as Server-Sent Events, live while it runs. One event
//! per log entry, its type the source (`stdout`, `stderr`, `compile`, `system`) and its data
//! `{"data": text, "encoding": "utf8"|"base64"}` (bytes kept exactly, as in results); the last
//! event is `end` with `{"status": ...}`. A failure mid-stream is an `error` event carrying the
//! error body. Every event stored in the log carries its entry id as the SSE `id`, so a client
//! that reconnects with `Last-Event-ID` (as `EventSource` does) resumes with no repeats.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::StreamExt as _;
use quayside_common::Captured;
use serde::Deserialize;

use super::auth::Caller;
use super::error::ApiError;
use super::{body, owner, Gateway};
use quayside_producer::{Error, LogEntry};

#[derive(Debug, Deserialize)]
pub(super) struct LogsQuery {
    follow: Option<String>,
}

/// Streams the log; `follow=false` sends what exists now and ends (no `end` event unless the
/// job has ended).
pub(super) async fn logs(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = body::id(&id)?;
    let follow = body::flag(q.follow.as_deref(), "follow", true)?;
    let after = last_event_id(&headers)?;
    // Answer 404 before the stream starts; afterwards only an event can say anything.
    owner::job(&gw, &caller, &id).await?;
    let events = gw
        .producer
        .logs_after(&id, follow, after)
        .map(|item| Ok::<_, Infallible>(event(item)))
        // Shutting down ends every stream, so the drain is not held up by followers.
        .take_until(gw.shutdown.clone().cancelled_owned());
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The `Last-Event-ID` a reconnecting client sends: a log stream entry id (`<ms>-<seq>`).
fn last_event_id(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(raw) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let valid = raw.to_str().ok().filter(|v| {
        v.split_once('-').is_some_and(|(ms, seq)| {
            [ms, seq]
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit()))
        })
    });
    match valid {
        Some(v) => Ok(Some(v.to_owned())),
        None => Err(ApiError::invalid(
            "invalid_parameter",
            "Last-Event-ID",
            "Last-Event-ID: expected the id of an event this stream sent (<ms>-<seq>)",
        )),
    }
}

/// Event types are a closed set: whatever else a raw writer put in the log is `system`.
fn source(s: &str) -> &'static str {
    match s {
        "stdout" => "stdout",
        "stderr" => "stderr",
        "compile" => "compile",
        "test" => "test",
        "verdict" => "verdict",
        "end" => "end",
        _ => "system",
    }
}

fn event(item: Result<LogEntry, Error>) -> Event {
    let entry = item.as_ref().map(|e| e.entry.clone()).unwrap_or_default();
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
    let event = Event::default().event(kind).data(data.to_string());
    if entry.is_empty() {
        event
    } else {
        event.id(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_become_typed_events_with_exact_data() {
        let e = event(Ok(LogEntry {
            source: "stdout".into(),
            data: b"hi\r\n".to_vec(),
            entry: "1700000000000-3".into(),
        }));
        let text = format!("{e:?}");
        assert!(text.contains("stdout"), "{text}");
        assert!(
            text.contains("1700000000000-3"),
            "the entry id is the event id: {text}"
        );
        let raw = event(Ok(LogEntry {
            source: "weird\nname".into(),
            data: vec![0xff],
            entry: String::new(),
        }));
        assert!(format!("{raw:?}").contains("system"));
    }

    #[test]
    fn last_event_id_must_be_a_stream_entry_id() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("last-event-id", v.parse().expect("header value"));
            last_event_id(&h)
        };
        assert_eq!(last_event_id(&HeaderMap::new()).ok(), Some(None));
        assert_eq!(
            with("1700000000000-0").ok(),
            Some(Some("1700000000000-0".into()))
        );
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "abc",
            "1-2-3",
            "1 -2",
            "1-99999999999999999999999",
        ] {
            let e = with(bad).expect_err(bad);
            assert_eq!(e.body.field.as_deref(), Some("Last-Event-ID"), "{bad}");
        }
    }
}
