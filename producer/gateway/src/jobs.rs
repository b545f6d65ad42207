//! `/v1/jobs`: enqueue (idempotent by id), status, wait, cancel.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use super::auth::Caller;
use super::error::ApiError;
use super::{body, owner, Gateway};
use quayside_producer::Error;

/// `POST /v1/jobs`: `201` and the job for a new id, `200` with `created: false` and the
/// existing job's state for an id already enqueued (nothing is added: the first spec wins).
pub(super) async fn create(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant.as_deref();
    let value = body::json(&headers, raw)?;
    let id_given = value.get("id").is_some();
    let spec = body::job(value, "", &gw.cfg, tenant)?;
    if id_given {
        owner::ids_free(&gw, &caller, &[(spec.id.clone(), "id".to_owned())]).await?;
    }
    if let Some(batch) = &spec.batch {
        owner::joinable(&gw, batch, tenant, "batch").await?;
    }
    let enqueued = gw.producer.enqueue(&spec).await?;
    let status = if enqueued.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/v1/jobs/{}", enqueued.id);
    Ok((status, [(header::LOCATION, location)], Json(enqueued)).into_response())
}

/// `GET /v1/jobs/{id}`: the record, with the result once the job ended.
pub(super) async fn show(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = body::id(&id)?;
    Ok(Json(owner::job(&gw, &caller, &id).await?).into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct WaitQuery {
    timeout: Option<String>,
}

/// `GET /v1/jobs/{id}/wait?timeout=S`: `200` and the result once the job ends within
/// `timeout` seconds (default and cap `gateway.max_wait_s`), else `202` and the record as it
/// stands (ask again). No polling: the producer waits on the job's completion channel.
pub(super) async fn wait(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Result<Response, ApiError> {
    let id = body::id(&id)?;
    let cap = gw.cfg.gateway.max_wait_s as f64;
    let timeout = match q.timeout.as_deref() {
        None => cap,
        Some(raw) => match raw.parse::<f64>() {
            Ok(t) if t.is_finite() && t >= 0.0 => t.min(cap),
            _ => {
                return Err(ApiError::invalid(
                    "invalid_parameter",
                    "timeout",
                    format!("timeout: expected seconds (a number, 0 or more), got {raw:?}"),
                ))
            }
        },
    };
    owner::job(&gw, &caller, &id).await?;
    let waited = tokio::select! {
        r = gw.producer.wait(&id, Some(Duration::from_secs_f64(timeout))) => r,
        // Shutting down: answer now, as if the time were up, so the drain is not held up.
        () = gw.shutdown.cancelled() => Err(Error::Timeout { id: id.clone(), waited_ms: 0 }),
    };
    match waited {
        Ok(result) => Ok(Json(result).into_response()),
        Err(Error::Timeout { .. }) => match gw.producer.status(&id).await? {
            Some(st) => Ok((StatusCode::ACCEPTED, Json(st)).into_response()),
            None => Err(Error::NotFound(id).into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// `DELETE /v1/jobs/{id}`: cancels; the body says whether it ended now (`cancelled`), its
/// worker was told to stop it (`requested`), or it had already ended (`already_terminal`).
pub(super) async fn cancel(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = body::id(&id)?;
    owner::job(&gw, &caller, &id).await?;
    Ok(Json(gw.producer.cancel(&id).await?).into_response())
}
