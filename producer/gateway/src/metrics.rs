//! The gateway's metrics: names (`pub const`), descriptions, buckets, the recorder, and the
//! middleware that records every request by route template, method and status code. Labels
//! come from a closed set: `route` (a template such as `/v1/jobs/{id}`, or `unmatched`),
//! `method` (`GET`, `POST`, `DELETE`, `HEAD`, or `other`) and `status` (the code). Never a job
//! id. `docs/metrics.md` explains them to operators.
#![allow(
    clippy::disallowed_macros,
    reason = "the gateway's one metrics module (the producer crate cannot use the worker's)"
)]

use std::time::Instant;

use axum::body::Body;
use axum::extract::MatchedPath;
use axum::http::{Method, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::Unit;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests answered, by `route`, `method` and `status`.
pub const REQUESTS_TOTAL: &str = "quayside_gateway_requests_total";
/// Time to answer a request (to the response head: a log stream's lifetime is not counted), by
/// `route`, `method` and `status`.
pub const REQUEST_DURATION_SECONDS: &str = "quayside_gateway_request_duration_seconds";

/// Requests refused for a tenant's limits or rights, by `tenant` (the token's tenant name,
/// `default` for `gateway.tokens`, `unknown` without a valid token) and `reason`
/// ([`REJECTION_REASONS`]).
pub const REJECTED_TOTAL: &str = "quayside_gateway_rejected_total";

/// Every name above, for tests and docs checks.
pub const ALL: [&str; 3] = [REQUESTS_TOTAL, REQUEST_DURATION_SECONDS, REJECTED_TOTAL];

/// The error kinds [`REJECTED_TOTAL`] counts: a caller held back by its quota, rate or rights.
pub const REJECTION_REASONS: [&str; 8] = [
    "rate_limited",
    "tenant_queue_full",
    "queue_full",
    "tenant_mismatch",
    "operator_only",
    "unauthorized",
    "id_conflict",
    "batch_conflict",
];

/// The `tenant` label of a request without a valid token.
pub const UNKNOWN_TENANT: &str = "unknown";

/// Counts a refused request in [`REJECTED_TOTAL`] when `reason` is one of
/// [`REJECTION_REASONS`]. `tenant` is already a bounded label (a configured tenant, `default` or
/// [`UNKNOWN_TENANT`]).
pub(super) fn rejected(tenant: &str, reason: &str) {
    if let Some(reason) = REJECTION_REASONS.iter().find(|r| **r == reason) {
        let labels = [
            ("tenant", tenant.to_owned()),
            ("reason", (*reason).to_owned()),
        ];
        metrics::counter!(REJECTED_TOTAL, &labels).increment(1);
    }
}

/// From 1 ms (a status read) to 5 min (a long `wait`).
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0,
];

/// Installs the process-wide Prometheus recorder and describes every metric.
///
/// # Errors
/// A recorder is already installed.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION_SECONDS.into()), &BUCKETS)?
        .install_recorder()?;
    metrics::describe_counter!(
        REQUESTS_TOTAL,
        Unit::Count,
        "Requests the gateway answered."
    );
    metrics::describe_counter!(
        REJECTED_TOTAL,
        Unit::Count,
        "Requests refused for a tenant's quota, rate or rights, by tenant and reason."
    );
    metrics::describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time to answer a gateway request, to the response head."
    );
    Ok(handle)
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}

/// Records [`REQUESTS_TOTAL`] and [`REQUEST_DURATION_SECONDS`] for every request.
pub(super) async fn track(req: Request<Body>, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(req.method());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed();
    tracing::debug!(route = %route, method, status = %status, elapsed_ms = elapsed.as_millis() as u64, "request");
    let labels = [
        ("route", route),
        ("method", method.to_owned()),
        ("status", status),
    ];
    metrics::counter!(REQUESTS_TOTAL, &labels).increment(1);
    metrics::histogram!(REQUEST_DURATION_SECONDS, &labels).record(elapsed.as_secs_f64());
    response
}
