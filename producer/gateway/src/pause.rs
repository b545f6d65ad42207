//! `POST /v1/pause` and `POST /v1/resume`: stop and restart claiming, as `quayside pause` and
//! `quayside resume` do. Either is safe to repeat: the answer says whether anything changed.
//! Operators only: a tenant's token (`tenants.<name>.tokens`) gets `403`, since a pause stops
//! every tenant's work. `POST /v1/tenants/{tenant}/pause|resume` hold one tenant (`default`:
//! jobs without a tenant): operators for any tenant, a tenant's token for its own.

use std::sync::Arc;

use axum::extract::{Path, State};
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
    /// The tenant paused or resumed; absent for the whole queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
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
        tenant: None,
        paused,
        changed: change == PauseChange::Changed,
    })
    .into_response())
}

pub(crate) async fn pause_tenant(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    set_tenant(&gw, &caller, &tenant, true).await
}

pub(crate) async fn resume_tenant(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    set_tenant(&gw, &caller, &tenant, false).await
}

async fn set_tenant(
    gw: &Gateway,
    caller: &Caller,
    tenant: &str,
    paused: bool,
) -> Result<Response, ApiError> {
    if let Some(own) = &caller.tenant {
        if own != tenant {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "operator_only",
                format!(
                    "a token of tenant {own:?} can pause and resume only its own tenant: use one \
                     of gateway.tokens"
                ),
            ));
        }
    }
    let change = gw.producer.set_tenant_paused(tenant, paused).await?;
    Ok(Json(PauseState {
        queue: gw.producer.keys().queue(),
        tenant: Some(tenant),
        paused,
        changed: change == PauseChange::Changed,
    })
    .into_response())
}
