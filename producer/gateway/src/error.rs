//! Error responses: one JSON shape everywhere, `{"error": kind, "message": ..., "field": ...}`,
//! so a caller branches on `error` and shows `message`; `field` names the offending part of the
//! request when there is one.

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use quayside_common::job::SpecError;
use serde::Serialize;

use quayside_producer::Error;

/// `Retry-After` of a `429 tenant_queue_full`: jobs drain at the fleet's pace, not at a rate
/// the gateway could compute, so a fixed few seconds.
pub const TENANT_QUEUE_RETRY_AFTER_S: u32 = 5;

/// Largest error body of axum's own rejections that is read to be rewrapped as JSON.
const MAX_REWRAPPED: usize = 16 << 10;

/// An error answer: status, kind (stable, for callers to branch on), message and field.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

/// The JSON body of every error response.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorBody {
    pub error: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error,
                message: message.into(),
                field: None,
            },
        }
    }

    /// An error naming the field of the request it is about.
    fn about(
        status: StatusCode,
        error: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let mut e = Self::new(status, error, message);
        e.body.field = Some(field.into());
        e
    }

    /// `422` naming the offending field.
    pub fn invalid(
        error: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::about(StatusCode::UNPROCESSABLE_ENTITY, error, field, message)
    }

    /// A [`SpecError`] found at `prefix` (`""` for a job body, `jobs[3].` inside a batch).
    pub fn spec(prefix: &str, e: &SpecError) -> Self {
        match e {
            SpecError::Version(_) => {
                Self::invalid("bad_version", format!("{prefix}v"), e.to_string())
            }
            SpecError::Field { field, problem } => {
                let field = format!("{prefix}{field}");
                Self::invalid("invalid_spec", &field, format!("{field}: {problem}"))
            }
        }
    }

    /// `409` naming the field whose value clashes with what exists.
    pub fn conflict(
        error: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::about(StatusCode::CONFLICT, error, field, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match &e {
            Error::Invalid(spec) => Self::spec("", spec),
            Error::NotFound(_) | Error::BatchNotFound(_) => Self::not_found(e.to_string()),
            Error::QueueFull { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "queue_full", e.to_string())
            }
            Error::TenantQueueFull { .. } => {
                let mut r = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "tenant_queue_full",
                    e.to_string(),
                );
                r.body.field = Some("tenant".into());
                r
            }
            Error::Timeout { .. } => Self::new(StatusCode::ACCEPTED, "timeout", e.to_string()),
            Error::Connect(_) | Error::Redis { .. } => {
                tracing::warn!(error = %quayside_common::error_chain(&e), "redis unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the queue's Redis is unavailable; try again",
                )
            }
            Error::Corrupt { .. } | Error::Reply { .. } => {
                tracing::error!(error = %quayside_common::error_chain(&e), "unexpected reply");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "unexpected reply from the queue",
                )
            }
        }
    }
}

/// The `error` kind of an error response, for the middleware that counts refusals
/// ([`crate::metrics::rejected`]) without reading the body.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ErrorKind(pub &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(&self.body)).into_response();
        r.extensions_mut().insert(ErrorKind(self.body.error));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            // Callers that set their own (the rate limiter) overwrite it.
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(TENANT_QUEUE_RETRY_AFTER_S),
            );
        }
        r
    }
}

/// Stable kind for a status that axum answered by itself (no route, wrong method, bad path or
/// query encoding).
fn kind_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        404 => "not_found",
        405 => "method_not_allowed",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "invalid_request",
        503 => "unavailable",
        500..=599 => "internal",
        _ => "error",
    }
}

/// Rewraps error responses that are not JSON yet (axum's own rejections and fallbacks) in the
/// error shape, keeping their status and headers (`Allow` of a 405, for one).
pub(super) async fn json_errors(req: Request<Body>, next: Next) -> Response {
    let r = next.run(req).await;
    let status = r.status();
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return r;
    }
    let (mut parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, MAX_REWRAPPED)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let body = ErrorBody {
        error: kind_of(status),
        message,
        field: None,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut fresh = Json(body).into_response();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    *fresh.status_mut() = status;
    for (name, value) in parts.headers.iter() {
        fresh.headers_mut().insert(name, value.clone());
    }
    fresh
}
