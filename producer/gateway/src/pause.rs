//! `POST /v1/pause` and `POST /v1/resume`: stop and restart claiming, as `quayside pause` and
//! `quayside resume` do. Either is safe to repeat: the answer says whether anything changed.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use quayside_producer::PauseChange;
use serde::Serialize;

use crate::{ApiError, Gateway};

/// The answer of either endpoint.
#[derive(Debug, Serialize)]
struct PauseState<'a> {
    queue: &'a str,
    paused: bool,
    /// False when the queue already was in the state asked for.
    changed: bool,
}

pub(crate) async fn pause(State(gw): State<Arc<Gateway>>) -> Result<Response, ApiError> {
    set(&gw, true).await
}

pub(crate) async fn resume(State(gw): State<Arc<Gateway>>) -> Result<Response, ApiError> {
    set(&gw, false).await
}

async fn set(gw: &Gateway, paused: bool) -> Result<Response, ApiError> {
    let change = gw.producer.set_paused(paused).await?;
    Ok(Json(PauseState {
        queue: gw.producer.keys().queue(),
        paused,
        changed: change == PauseChange::Changed,
    })
    .into_response())
}
