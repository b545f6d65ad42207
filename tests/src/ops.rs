//! Helpers for the operations tests: plain HTTP GETs, a real Prometheus server,
//! a throwaway CA with a server certificate, and the repository's own files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{free_addr, within};

/// The repository root (the workspace folder).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// `GET path` over HTTP/1.0 (no chunked replies to decode); returns status and body. Errors
/// (nothing listening yet) are `Err`.
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("no status line")?;
        anyhow::Ok((status, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .context("http request timed out")?
}

/// Polls `GET path` until `ok(status, body)` holds, for at most `secs`; returns the last body.
pub async fn wait_http(
    addr: &str,
    path: &str,
    secs: u64,
    what: &str,
    ok: impl Fn(u16, &str) -> bool,
) -> String {
    within(secs, what, async {
        loop {
            if let Ok((status, body)) = http_get(addr, path).await {
                if ok(status, &body) {
                    return body;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A real Prometheus server scraping the given targets every second.
pub struct Prometheus {
    pub addr: String,
    child: Child,
}

impl Prometheus {
    /// Starts `prometheus` (Debian package `prometheus`) with its data in `dir`, loading
    /// `rule_files` too, and waits until it is ready.
    pub async fn start(dir: &Path, targets: &[String], rule_files: &[PathBuf]) -> Self {
        let bin = which("prometheus").unwrap_or_else(|| {
            panic!("prometheus not installed: apt-get install -y prometheus (scripts/test.sh does)")
        });
        let addr = free_addr();
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let rules: Vec<String> = rule_files
            .iter()
            .map(|r| format!("\"{}\"", r.display()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [{}]\n\
             scrape_configs:\n  - job_name: quayside-worker\n    static_configs:\n      - targets: [{}]\n",
            rules.join(", "),
            targets.join(", ")
        );
        std::fs::create_dir_all(dir).expect("prometheus dir");
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let p = Self { addr, child };
        wait_http(&p.addr, "/-/ready", 30, "prometheus ready", |s, _| s == 200).await;
        p
    }

    /// An instant query: each series' labels and value.
    pub async fn query(&self, expr: &str) -> anyhow::Result<Vec<(BTreeMap<String, String>, f64)>> {
        let path = format!("/api/v1/query?query={}", percent_encode(expr));
        let (status, body) = http_get(&self.addr, &path).await?;
        if status != 200 {
            bail!("query {expr}: HTTP {status}: {body}");
        }
        let v: serde_json::Value = serde_json::from_str(&body)?;
        let mut out = Vec::new();
        for r in v["data"]["result"].as_array().context("no result")? {
            let labels = serde_json::from_value(r["metric"].clone())?;
            let value: f64 = r["value"][1].as_str().context("no value")?.parse()?;
            out.push((labels, value));
        }
        Ok(out)
    }

    /// Polls `expr` until `ok` holds for its result, for at most `secs`; returns that result.
    pub async fn wait_for(
        &self,
        expr: &str,
        secs: u64,
        ok: impl Fn(&[(BTreeMap<String, String>, f64)]) -> bool,
    ) -> Vec<(BTreeMap<String, String>, f64)> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.query(expr).await;
            if let Ok(r) = &got {
                if ok(r) {
                    return r.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "prometheus never saw the expected result of {expr} within {secs}s; last: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Polls `expr` until it is one series whose value is `value`, for at most `secs`.
    pub async fn wait_for_value(&self, expr: &str, secs: u64, value: f64) {
        self.wait_for(expr, secs, |r| r.len() == 1 && r[0].1 == value)
            .await;
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The full path of a command on PATH.
pub fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(cmd))
            .find(|p| p.is_file())
    })
}

/// Runs a command, failing with its output if it does not succeed.
pub fn run_ok(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A CA and a server certificate it signed, for `localhost` and `127.0.0.1`, made with
/// openssl in `dir`.
pub struct TestCerts {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestCerts {
    pub fn generate(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let p = |f: &str| dir.join(f);
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        // `openssl req` with a new EC key written to `key`, and `out` (a certificate or a CSR).
        let new_key = |how: &[&str], key: &str, out: &str| {
            run_ok(
                Command::new("openssl")
                    .arg("req")
                    .args(how)
                    .args(ec)
                    .arg("-keyout")
                    .arg(p(key))
                    .arg("-out")
                    .arg(p(out)),
            )
        };
        let ca = ["-x509", "-days", "2", "-subj", "/CN=quayside test CA"];
        new_key(&ca, "ca.key", "ca.pem")?;
        new_key(&["-subj", "/CN=localhost"], "server.key", "server.csr")?;
        std::fs::write(
            p("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
        )?;
        run_ok(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
                .arg("-in")
                .arg(p("server.csr"))
                .arg("-CA")
                .arg(p("ca.pem"))
                .arg("-CAkey")
                .arg(p("ca.key"))
                .arg("-extfile")
                .arg(p("ext.cnf"))
                .arg("-out")
                .arg(p("server.pem")),
        )?;
        Ok(Self {
            ca: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
        })
    }

    /// `redis-server` arguments for TLS only on `{port}` (the `PrivateRedis`/`RedisCluster`
    /// placeholder) with these files, clients not asked for certificates.
    pub fn redis_server_args(&self) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        [
            "--port",
            "0",
            "--tls-port",
            "{port}",
            "--tls-cert-file",
            &path(&self.server_cert),
            "--tls-key-file",
            &path(&self.server_key),
            "--tls-ca-cert-file",
            &path(&self.ca),
            "--tls-auth-clients",
            "no",
        ]
        .map(str::to_owned)
        .to_vec()
    }
}
