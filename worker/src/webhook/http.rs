//! One webhook POST, made by hand on a connection to an address the SSRF rules allowed: the
//! host is resolved here, every address is checked ([`callback::public_addrs`]), and the
//! connection goes to a checked address (no second lookup that DNS could answer differently).
//! No redirects are followed, no proxy or ambient credentials are used, the whole exchange is
//! under `webhooks.timeout_ms`, and at most [`MAX_RESPONSE_BYTES`] of the answer are read.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use quayside_common::callback::{self, Target};
use quayside_common::config::WebhooksConfig;
use tokio::net::TcpStream;

/// Most bytes of a receiver's answer read (for the error of a failed attempt).
pub const MAX_RESPONSE_BYTES: usize = 1024;

/// Why an attempt did not deliver.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// The target is not allowed (any more): permanent, not retried.
    #[error("refused: {0}")]
    Refused(String),
    /// Connect, TLS, request or timeout failure, or a non-2xx answer: retried.
    #[error("{0}")]
    Failed(String),
}

/// The headers a webhook carries beside `Content-Type` and `Host`.
pub struct Headers<'a> {
    pub signature: &'a str,
    pub job_id: &'a str,
    pub attempt: u32,
}

/// POSTs `body` to `url`; `Ok` on a 2xx answer.
///
/// # Errors
/// [`PostError::Refused`] when the target fails the rules at send time, else
/// [`PostError::Failed`] with a short reason (the HTTP status and the answer's first bytes,
/// escaped).
pub async fn post(
    cfg: &WebhooksConfig,
    url: &str,
    body: String,
    headers: &Headers<'_>,
) -> Result<(), PostError> {
    let target = callback::check(cfg, url).map_err(PostError::Refused)?;
    let timeout = Duration::from_millis(cfg.timeout_ms);
    match tokio::time::timeout(timeout, exchange(cfg, &target, body, headers)).await {
        Ok(result) => result,
        Err(_) => Err(PostError::Failed(format!(
            "no answer within {} ms",
            cfg.timeout_ms
        ))),
    }
}

async fn exchange(
    cfg: &WebhooksConfig,
    t: &Target,
    body: String,
    headers: &Headers<'_>,
) -> Result<(), PostError> {
    let resolved: Vec<SocketAddr> = match t.ip {
        Some(ip) => vec![SocketAddr::new(ip, t.port)],
        None => tokio::net::lookup_host((t.host.as_str(), t.port))
            .await
            .map_err(|e| PostError::Failed(format!("cannot resolve {}: {e}", t.host)))?
            .collect(),
    };
    let addrs = callback::public_addrs(cfg, t, &resolved).map_err(PostError::Refused)?;
    let tcp = TcpStream::connect(&addrs[..])
        .await
        .map_err(|e| PostError::Failed(format!("cannot connect to {}: {e}", t.host)))?;
    let request = request(t, body, headers)?;
    if t.tls {
        let name = rustls::pki_types::ServerName::try_from(t.host.clone())
            .map_err(|e| PostError::Refused(format!("{}: {e}", t.host)))?;
        let tls = tokio_rustls::TlsConnector::from(tls_config())
            .connect(name, tcp)
            .await
            .map_err(|e| PostError::Failed(format!("TLS with {}: {e}", t.host)))?;
        send(TokioIo::new(tls), request).await
    } else {
        send(TokioIo::new(tcp), request).await
    }
}

fn request(t: &Target, body: String, h: &Headers<'_>) -> Result<Request<Full<Bytes>>, PostError> {
    let path = &t.url[url::Position::BeforePath..url::Position::AfterQuery];
    let host = match t.url.port() {
        Some(p) => format!("{}:{p}", t.url.host_str().unwrap_or_default()),
        None => t.url.host_str().unwrap_or_default().to_owned(),
    };
    let bad = |e: hyper::http::Error| PostError::Refused(format!("cannot build the request: {e}"));
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(if path.is_empty() { "/" } else { path })
        .header(HOST, host)
        .header(CONTENT_TYPE, "application/json")
        .header(
            USER_AGENT,
            concat!("quayside-webhook/", env!("CARGO_PKG_VERSION")),
        )
        .header("Quayside-Job-Id", h.job_id)
        .header("Quayside-Delivery", h.attempt.to_string())
        .body(Full::new(Bytes::from(body)))
        .map_err(bad)?;
    let sig = HeaderValue::from_str(h.signature)
        .map_err(|e| PostError::Refused(format!("signature header: {e}")))?;
    req.headers_mut().insert("Quayside-Signature", sig);
    Ok(req)
}

async fn send<I>(io: I, req: Request<Full<Bytes>>) -> Result<(), PostError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| PostError::Failed(format!("HTTP handshake: {e}")))?;
    let driver = tokio::spawn(conn);
    let answer = sender.send_request(req).await;
    let result = match answer {
        Err(e) => Err(PostError::Failed(format!("request failed: {e}"))),
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => {
            let status = resp.status();
            let head = read_head(resp.into_body()).await;
            Err(PostError::Failed(format!(
                "HTTP {}: {}",
                status.as_u16(),
                head.escape_default()
            )))
        }
    };
    driver.abort();
    result
}

/// The first [`MAX_RESPONSE_BYTES`] of an answer's body, as text (lossy); the rest is not read.
async fn read_head(mut body: hyper::body::Incoming) -> String {
    let mut head = Vec::new();
    while head.len() < MAX_RESPONSE_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let room = MAX_RESPONSE_BYTES - head.len();
                    head.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// TLS with the system's root certificates (rustls, ring), built once.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = roots.add(cert);
        }
        Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }))
}
