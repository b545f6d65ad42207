//! `POST /v1/pause` and `POST /v1/resume`: stop and restart claiming, as `quayside pause` and
//! `quayside resume` do. Either is safe to repeat: the answer says whether anything changed.
//! Operators only: a tenant's token (`tenants.<name>.tokens`) gets `403`, since a pause stops
//! every tenant's work.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use quayside_producer::PauseChange;
use serde::Serialize;

use crate::auth::Caller;
use crate::{ApiError, Gateway};

/// The answer of either endpoint.
#[derive(Debug, Serialize)]
struct PauseState<'a> {
    queue: &'a str,
    paused: bool,
    /// False when the queue already was in the state asked for.
    changed: bool,
}

pub(crate) async fn pause(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    set(&gw, &caller, true).await
}

pub(crate) async fn resume(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    set(&gw, &caller, false).await
}

async fn set(gw: &Gateway, caller: &Caller, paused: bool) -> Result<Response, ApiError> {
    if let Some(tenant) = &caller.tenant {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "operator_only",
            format!(
                "a token of tenant {tenant:?} cannot pause or resume the queue: use one of \
                 gateway.tokens"
            ),
        ));
    }
    let change = gw.producer.set_paused(paused).await?;
    Ok(Json(PauseState {
        queue: gw.producer.keys().queue(),
        paused,
        changed: change == PauseChange::Changed,
    })
    .into_response())
}
