//! Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
//! NUL-terminated JSON on fds 3 and 4), so a test can load a page, wait for the DOM to show
//! something, read it, take screenshots and see every request the page made. `--dump-dom` cannot
//! do this for a page that streams: it freezes timers and dumps before a live response arrives.
//!
//! Host names resolve nowhere (`--host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"`): a page can reach the
//! gateway on 127.0.0.1 and nothing else.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long one protocol call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One headless Chromium with one tab; killed on drop.
pub struct Browser {
    _child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
    next_id: u64,
    session: String,
    /// Every URL the tab requested, in order.
    pub requests: Vec<String>,
    /// Every JavaScript dialog (`alert`, ...) the tab tried to open.
    pub dialogs: Vec<String>,
}

impl Browser {
    /// Starts Chromium with a fresh profile under `dir` and opens a blank tab that records its
    /// requests. A Chromium that does not answer its first call is started once more: on a
    /// loaded machine its first start has hung before creating its profile (seen once in CI
    /// runs), which says nothing about the page under test.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        match Self::launch(dir, 1).await {
            Ok(b) => Ok(b),
            Err(first) => {
                eprintln!("chromium did not start ({first:#}); starting it once more");
                Self::launch(dir, 2).await
            }
        }
    }

    /// One start of Chromium, with profile and log of its own (`try_no`).
    async fn launch(dir: &Path, try_no: u32) -> anyhow::Result<Self> {
        let profile = dir.join(format!("chromium-profile-{try_no}"));
        std::fs::create_dir_all(&profile)?;
        let log = std::fs::File::create(dir.join(format!("chromium-{try_no}.log")))?;
        // The protocol pipe is fds 3 (Chromium reads) and 4 (Chromium writes): this shell maps
        // them onto the stdin and stdout pipes.
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null"#)
            .arg(chromium()?)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--remote-debugging-pipe",
                "--window-size=1280,900",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting chromium")?;
        let to = child.stdin.take().context("chromium stdin")?;
        let from = BufReader::new(child.stdout.take().context("chromium stdout")?);
        let mut b = Self {
            _child: child,
            to,
            from,
            next_id: 0,
            session: String::new(),
            requests: Vec::new(),
            dialogs: Vec::new(),
        };
        let target = b
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await?;
        let target = target["targetId"].as_str().context("targetId")?.to_owned();
        let attached = b
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target, "flatten": true }),
            )
            .await?;
        b.session = attached["sessionId"]
            .as_str()
            .context("sessionId")?
            .to_owned();
        b.call("Network.enable", json!({})).await?;
        b.call("Page.enable", json!({})).await?;
        Ok(b)
    }

    /// Loads `url` in the tab (returns once navigation started; use [`Self::wait_for`]).
    pub async fn open(&mut self, url: &str) -> anyhow::Result<()> {
        let r = self.call("Page.navigate", json!({ "url": url })).await?;
        if let Some(e) = r["errorText"].as_str() {
            bail!("navigating to {url}: {e}");
        }
        Ok(())
    }

    /// Loads the tab's page again, from the gateway.
    pub async fn reload(&mut self) -> anyhow::Result<()> {
        self.call("Page.reload", json!({ "ignoreCache": true }))
            .await
            .map(drop)
    }

    /// The value of a JavaScript expression in the page (awaited if it is a promise).
    pub async fn eval(&mut self, expr: &str) -> anyhow::Result<Value> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("{expr}: {e}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Evaluates `expr` every 100 ms until it is `true`; fails after `secs` with `what` and the
    /// page's text.
    pub async fn wait_for(&mut self, expr: &str, secs: u64, what: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if self.eval(expr).await.ok() == Some(Value::Bool(true)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let text = self.text("body").await.unwrap_or_default();
                bail!("page never showed {what} within {secs} s ({expr}); it shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of the first element matching a CSS selector ("" when there is none).
    pub async fn text(&mut self, selector: &str) -> anyhow::Result<String> {
        let expr = format!(
            "(document.querySelector({}) || {{}}).textContent || ''",
            Value::from(selector)
        );
        Ok(self
            .eval(&expr)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// Saves a PNG of the tab to `path`.
    pub async fn screenshot(&mut self, path: &Path) -> anyhow::Result<()> {
        let r = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().context("screenshot data")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// Sends one command to the tab's session (or the browser before there is one) and reads
    /// messages until its answer, recording the events that arrive meanwhile.
    async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = Value::from(self.session.clone());
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        self.to.write_all(&bytes).await?;
        self.to.flush().await?;
        tokio::time::timeout(CALL_TIMEOUT, async {
            loop {
                let mut buf = Vec::new();
                if self.from.read_until(0, &mut buf).await? == 0 {
                    bail!("chromium closed the protocol pipe");
                }
                buf.pop();
                let m: Value = serde_json::from_slice(&buf)?;
                if m["id"].as_u64() == Some(id) {
                    if let Some(e) = m.get("error") {
                        bail!("{method}: {e}");
                    }
                    return Ok(m["result"].clone());
                }
                match m["method"].as_str() {
                    Some("Network.requestWillBeSent") => self.requests.push(
                        m["params"]["request"]["url"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    ),
                    Some("Page.javascriptDialogOpening") => {
                        self.dialogs.push(m["params"]["message"].to_string())
                    }
                    _ => {}
                }
            }
        })
        .await
        .with_context(|| format!("{method}: no answer within {CALL_TIMEOUT:?}"))?
    }
}

/// Debian's `chromium` (scripts/test.sh installs it).
fn chromium() -> anyhow::Result<PathBuf> {
    crate::ops::which("chromium")
        .or_else(|| crate::ops::which("chromium-browser"))
        .context("chromium is not installed (scripts/test.sh installs Debian's chromium)")
}
