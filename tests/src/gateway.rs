//! The HTTP gateway as tests use it: the real `quayside serve` process on a free port, and a
//! small HTTP/1.1 client (hyper) that reads whole bodies or streams them (for SSE).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use quayside_common::config::{Config, Secret};

use crate::{bin_path, free_port, within, TestQueue};

/// The token every test gateway accepts.
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A running `quayside serve`; killed on drop.
pub struct GatewayProcess {
    pub port: u16,
    pub cfg: Config,
    child: Child,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A whole response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} body is not JSON ({e}): {}", self.status, self.text()))
    }

    /// The body as text, for failure messages.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl TestQueue {
    /// Starts `quayside serve` for this queue on a free port with [`TOKEN`], its config changed
    /// by `tweak`, and waits for `/healthz`.
    pub async fn spawn_gateway(&self, tweak: impl FnOnce(&mut Config)) -> GatewayProcess {
        self.spawn_gateway_on(free_port(), tweak).await
    }

    /// [`Self::spawn_gateway`] on a given port: a gateway restarted where clients knew it.
    pub async fn spawn_gateway_on(
        &self,
        port: u16,
        tweak: impl FnOnce(&mut Config),
    ) -> GatewayProcess {
        let mut cfg = self.cfg.clone();
        cfg.gateway.listen_addr = format!("127.0.0.1:{port}");
        cfg.gateway.tokens = vec![Secret::new(TOKEN)];
        tweak(&mut cfg);
        let path = self.dir.join(format!("gateway-{port}.toml"));
        std::fs::write(&path, toml::to_string(&cfg).expect("config to toml")).expect("write");
        let log = std::fs::File::create(self.dir.join(format!("gateway-{port}.log"))).expect("log");
        let child = Command::new(bin_path("quayside"))
            .arg("--config")
            .arg(&path)
            .arg("serve")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn quayside serve");
        let gw = GatewayProcess { port, cfg, child };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = gw.try_request("GET", "/healthz", None, None).await {
                if r.status == 200 {
                    return gw;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gateway on {port} never answered /healthz"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl GatewayProcess {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit code once the process ended (`Some(None)`: killed by a signal).
    pub fn try_wait(&mut self) -> Option<Option<i32>> {
        self.child.try_wait().ok().flatten().map(|s| s.code())
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Response<Incoming>> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("127.0.0.1:{}", self.port));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let (ct, bytes) = body.unwrap_or(("", Vec::new()));
        if !ct.is_empty() {
            req = req.header("content-type", ct);
        }
        Ok(sender
            .send_request(req.body(Full::new(Bytes::from(bytes)))?)
            .await?)
    }

    async fn try_request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> anyhow::Result<Reply> {
        let r = self.send(method, path, token, body, &[]).await?;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.into_body().collect().await?.to_bytes().to_vec();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// A request with the test token (or `token`), bounded by 30 s.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Reply {
        within(
            30,
            &format!("{method} {path}"),
            self.try_request(method, path, token, body),
        )
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, Some(TOKEN), None).await
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> Reply {
        self.post_json_as(path, TOKEN, body).await
    }

    /// A JSON POST with `token` (a tenant's, say) instead of the test token.
    pub async fn post_json_as(&self, path: &str, token: &str, body: &serde_json::Value) -> Reply {
        let body = Some(("application/json", body.to_string().into_bytes()));
        self.request("POST", path, Some(token), body).await
    }

    /// A POST of any bytes under any content type (malformed JSON, the wrong type).
    pub async fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Reply {
        let body = Some((content_type, body.to_vec()));
        self.request("POST", path, Some(TOKEN), body).await
    }

    /// Opens a streaming GET (for Server-Sent Events); read it with [`SseReader`].
    pub async fn stream(&self, path: &str) -> SseReader {
        self.stream_with(path, &[]).await
    }

    /// [`Self::stream`] with extra request headers (e.g. `Last-Event-ID`).
    pub async fn stream_with(&self, path: &str, headers: &[(&str, &str)]) -> SseReader {
        let r = within(10, path, self.send("GET", path, Some(TOKEN), None, headers))
            .await
            .expect("stream request");
        assert_eq!(r.status().as_u16(), 200, "{path}");
        SseReader {
            body: r.into_body(),
            buf: String::new(),
            last_id: None,
        }
    }
}

/// Reads Server-Sent Events one at a time from a streaming response.
pub struct SseReader {
    body: Incoming,
    buf: String,
    /// The `id` of the last event that had one (what a client sends as `Last-Event-ID`).
    pub last_id: Option<String>,
}

impl SseReader {
    /// The next event as `(type, data)` (keep-alive comments skipped); `None` at the end.
    pub async fn next(&mut self) -> Option<(String, String)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut data) = (String::from("message"), Vec::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        self.last_id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Some((event, data.join("\n")));
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(bytes) = frame.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
}
