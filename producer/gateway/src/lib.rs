//! The HTTP gateway, `quayside serve`: the producer library over HTTP for services that would
//! rather not speak Redis. Same queue, same ids: a job enqueued here, by the CLI or by a raw
//! `XADD` is one job.
//!
//! - [`router`] / [`serve`]: the routes ([`routes`] lists them; `docs/openapi.json` documents
//!   them, served at `/openapi.json`) and graceful shutdown on the gateway's token.
//! - `auth`: bearer tokens, compared in constant time, each acting as a tenant, with `rate`'s
//!   per-token limit; `/healthz`, `/readyz`, `/metrics` and `/openapi.json` need none.
//! - `body`: JSON bodies and query parameters, errors naming the field (`422`).
//! - `jobs`, `batches`, `sse`, `pause`: the handlers; logs stream as Server-Sent Events.
//! - `error`: the one JSON error shape, `{"error", "message", "field"}`.
//! - [`metrics`]: requests by route template and status.
//! - `ui`: the dashboard at `/`, static files embedded in the binary, under a strict CSP.

mod auth;
mod batches;
mod body;
mod error;
mod jobs;
pub mod metrics;
pub mod openapi;
mod owner;
mod pause;
mod rate;
mod sse;
mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::{middleware, Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use quayside_common::config::Config;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::{ApiError, ErrorBody};

use quayside_producer::Producer;

/// How long `/readyz` waits for Redis.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// What every handler shares.
#[derive(Debug)]
pub struct Gateway {
    producer: Producer,
    cfg: Config,
    tokens: auth::Tokens,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
}

impl Gateway {
    /// A gateway for the queue of `cfg`, accepting `cfg.gateway.tokens` (none: open). `metrics`
    /// is what `/metrics` renders (`None`: 404). When `shutdown` fires, waits answer and log
    /// streams end, so [`serve`] can drain.
    pub fn new(
        producer: Producer,
        cfg: Config,
        metrics: Option<PrometheusHandle>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let tokens = auth::Tokens::from_config(&cfg);
        Arc::new(Self {
            producer,
            cfg,
            tokens,
            metrics,
            shutdown,
        })
    }
}

type Routes = Vec<(&'static str, &'static str, MethodRouter<Arc<Gateway>>)>;

/// Routes behind bearer auth.
fn api_routes() -> Routes {
    vec![
        ("POST", "/v1/jobs", post(jobs::create)),
        ("GET", "/v1/jobs/{id}", get(jobs::show)),
        ("DELETE", "/v1/jobs/{id}", delete(jobs::cancel)),
        ("GET", "/v1/jobs/{id}/wait", get(jobs::wait)),
        ("GET", "/v1/jobs/{id}/logs", get(sse::logs)),
        ("POST", "/v1/batches", post(batches::create)),
        ("GET", "/v1/batches", get(batches::list)),
        ("GET", "/v1/batches/{id}", get(batches::show)),
        ("DELETE", "/v1/batches/{id}", delete(batches::cancel)),
        ("GET", "/v1/stats", get(stats)),
        ("POST", "/v1/pause", post(pause::pause)),
        ("POST", "/v1/resume", post(pause::resume)),
        (
            "POST",
            "/v1/tenants/{tenant}/pause",
            post(pause::pause_tenant),
        ),
        (
            "POST",
            "/v1/tenants/{tenant}/resume",
            post(pause::resume_tenant),
        ),
    ]
}

/// Routes anyone may call: probes, metrics, the API description and the dashboard's files
/// (which hold no data: the page asks for a token and reads `/v1/`).
fn public_routes() -> Routes {
    vec![
        ("GET", "/", get(ui::index)),
        ("GET", "/ui/{file}", get(ui::asset)),
        ("GET", "/healthz", get(healthz)),
        ("GET", "/readyz", get(readyz)),
        ("GET", "/metrics", get(prometheus)),
        ("GET", "/openapi.json", get(openapi::serve)),
    ]
}

/// Every `(method, path template)` the router serves (`HEAD` of each `GET` aside).
pub fn routes() -> Vec<(&'static str, &'static str)> {
    api_routes()
        .into_iter()
        .chain(public_routes())
        .map(|(m, p, _)| (m, p))
        .collect()
}

/// The whole application: routes, auth, body limit, JSON errors and request metrics.
pub fn router(gw: Arc<Gateway>) -> Router {
    let mut api = Router::new();
    for (_, path, handler) in api_routes() {
        api = api.route(path, handler);
    }
    let api = api.route_layer(middleware::from_fn_with_state(
        Arc::clone(&gw),
        auth::require,
    ));
    let mut public = Router::new();
    for (_, path, handler) in public_routes() {
        public = public.route(path, handler);
    }
    let limit = usize::try_from(gw.cfg.gateway.max_body_bytes).unwrap_or(usize::MAX);
    api.merge(public)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(error::json_errors))
        .layer(middleware::from_fn(metrics::track))
        .with_state(gw)
}

/// Serves until the gateway's shutdown token fires, then finishes the requests in flight
/// (waits answer at once and log streams end when it fires). At most
/// `gateway.max_connections` connections are served at once, and a client that does not send
/// its headers within `gateway.header_read_timeout_ms` is dropped.
///
/// # Errors
/// None so far: a failed accept is logged and retried.
pub async fn serve(listener: TcpListener, gw: Arc<Gateway>) -> std::io::Result<()> {
    let stop = gw.shutdown.clone();
    let slots = Arc::new(Semaphore::new(gw.cfg.gateway.max_connections));
    let header_timeout = Duration::from_millis(gw.cfg.gateway.header_read_timeout_ms);
    let app = router(gw);
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            permit = Arc::clone(&slots).acquire_owned() => permit,
        };
        let Ok(permit) = permit else { break };
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone());
        let stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /openapi.json")
}

async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// `200` when Redis answers within 2 s, `503` otherwise.
async fn readyz(State(gw): State<Arc<Gateway>>) -> Result<Response, ApiError> {
    match tokio::time::timeout(READY_TIMEOUT, gw.producer.stats()).await {
        Ok(Ok(_)) => Ok(healthz().await),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "redis did not answer within 2 s",
        )),
    }
}

async fn prometheus(State(gw): State<Arc<Gateway>>) -> Response {
    match &gw.metrics {
        Some(h) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            h.render(),
        )
            .into_response(),
        None => ApiError::not_found("metrics are off (metrics.enabled)").into_response(),
    }
}

/// The queue's stats; a tenant's token sees only its own tenant's line (operators see all),
/// so one service never learns another's name or volume from it.
async fn stats(
    State(gw): State<Arc<Gateway>>,
    axum::Extension(caller): axum::Extension<auth::Caller>,
) -> Result<Response, ApiError> {
    let mut stats = gw.producer.stats().await?;
    if let Some(own) = &caller.tenant {
        stats.tenants.retain(|t| &t.tenant == own);
    }
    Ok(Json(stats).into_response())
}
