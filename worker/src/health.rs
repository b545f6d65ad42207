//! The operations endpoint, one HTTP listener: `/metrics` (Prometheus text format),
//! `/healthz` (the process serves requests) and `/readyz` (not draining, Redis answers a PING
//! and the runner's check passes; 503 otherwise, saying why and whether the worker is claiming).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::gate::RunnerGate;
use crate::outage::Outage;
use crate::queue::JobQueue;
use crate::runner::SharedRunner;

/// How long each readiness check may take: probes time out after a few seconds.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the endpoint reports on.
#[derive(Debug)]
pub struct Health {
    pub queue: Arc<dyn JobQueue>,
    /// Whether Redis answers, as the worker's own calls find it.
    pub redis: Arc<Outage>,
    pub runner: SharedRunner,
    /// Whether the worker claims jobs (closed while the runner is unavailable).
    pub gate: Arc<RunnerGate>,
    /// Fires when the worker starts draining: from then on it is not ready.
    pub draining: CancellationToken,
    /// `None`: metrics are off and `/metrics` answers 404.
    pub metrics: Option<PrometheusHandle>,
}

/// The readiness verdict and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub draining: bool,
    /// `ok` or the error.
    pub redis: String,
    /// `ok` or the error.
    pub runner: String,
    /// Whether the worker claims jobs: not while draining, and not while the runner's check
    /// fails (it starts again by itself once the check passes).
    pub claiming: bool,
    /// Since when Redis is down, as the worker's own calls found it (`HH:MM:SS UTC`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_down_since: Option<String>,
    /// Why the worker is not claiming for the runner's sake, and since when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner_down: Option<String>,
}

impl Health {
    /// Runs both checks concurrently, each bounded by [`CHECK_TIMEOUT`].
    pub async fn readiness(&self) -> Readiness {
        let redis = async {
            match tokio::time::timeout(CHECK_TIMEOUT, self.queue.ping()).await {
                Ok(Ok(())) => "ok".to_owned(),
                Ok(Err(e)) => format!("{:#}", anyhow::Error::from(e)),
                Err(_) => format!("no answer within {} s", CHECK_TIMEOUT.as_secs()),
            }
        };
        let runner = async {
            match tokio::time::timeout(CHECK_TIMEOUT, self.runner.check()).await {
                Ok(Ok(())) => "ok".to_owned(),
                Ok(Err(e)) => format!("{:#}", anyhow::Error::from(e)),
                Err(_) => format!("no answer within {} s", CHECK_TIMEOUT.as_secs()),
            }
        };
        let (redis, runner) = tokio::join!(redis, runner);
        let draining = self.draining.is_cancelled();
        Readiness {
            ready: !draining && redis == "ok" && runner == "ok",
            draining,
            redis,
            runner,
            claiming: !draining && self.gate.is_open(),
            redis_down_since: self
                .redis
                .down()
                .map(|(since, _)| crate::outage::clock(since)),
            runner_down: self.gate.closed_because(),
        }
    }
}

/// Binds the listener; serving starts with [`serve`].
///
/// # Errors
/// The address is taken or not allowed.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves requests until `stop` fires; open connections are closed then too.
pub async fn serve(listener: TcpListener, health: Arc<Health>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(error = %error, "cannot accept an http connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let health = Arc::clone(&health);
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let health = Arc::clone(&health);
                async move { Ok::<_, Infallible>(respond(&health, &req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = stop.cancelled() => {}
                r = conn => if let Err(error) = r {
                    tracing::debug!(error = %error, "http connection ended with an error");
                },
            }
        });
    }
}

async fn respond<B>(health: &Health, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            let r = health.readiness().await;
            let status = if r.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = serde_json::to_string(&r).unwrap_or_default() + "\n";
            reply(status, "application/json", body)
        }
        "/metrics" => match &health.metrics {
            Some(handle) => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                handle.render(),
            ),
            None => text(StatusCode::NOT_FOUND, "metrics are off (metrics.enabled)\n"),
        },
        _ => text(StatusCode::NOT_FOUND, "try /metrics, /healthz or /readyz\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", body.to_owned())
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}
