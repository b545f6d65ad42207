//! Completion webhooks (issue 15, item 4) against real worker processes and a real Redis, with a
//! receiver of the test's own on 127.0.0.1 (allowed explicitly by the test's config, as an
//! operator would have to): a signed delivery that the Python and Node verifiers of
//! `examples/clients/` accept, retries with backoff, a dead-lettered webhook in stats and
//! metrics, refusals at admission, and a worker SIGKILLed after the result and before the POST.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use quayside_common::config::{Secret, TenantConfig};
use quayside_common::{JobSpec, Status};
use quayside_e2e::ops::{http_get, repo_root, wait_http};
use quayside_e2e::{free_addr, within, TestQueue};
use quayside_producer::{Error, Producer};

const SECRET: &str = "whsec-test-0123456789abcdef";

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Hit {
    at: Instant,
    headers: hyper::HeaderMap,
    body: Vec<u8>,
}

impl Hit {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A webhook receiver on 127.0.0.1 that answers its n-th request (0-based) with `status(n)`.
struct Receiver {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Receiver {
    async fn start(status: fn(usize) -> u16) -> Self {
        Self::start_holding(status, usize::MAX).await
    }

    /// A receiver that never answers its `hold`-th request (0-based): the sender stays
    /// mid-POST.
    async fn start_holding(status: fn(usize) -> u16, hold: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let seen = Arc::clone(&hits);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let seen = Arc::clone(&seen);
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        let headers = req.headers().clone();
                        let body = req.into_body().collect().await?.to_bytes().to_vec();
                        let n = {
                            let mut hits = seen.lock().expect("lock");
                            hits.push(Hit {
                                at: Instant::now(),
                                headers,
                                body,
                            });
                            hits.len() - 1
                        };
                        if n == hold {
                            std::future::pending::<()>().await;
                        }
                        let mut resp = Response::new(Full::new(Bytes::from("thanks")));
                        *resp.status_mut() =
                            hyper::StatusCode::from_u16(status(n)).expect("a status");
                        Ok::<_, hyper::Error>(resp)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
        Self { addr, hits }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/done?src=quayside", self.addr)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("lock").clone()
    }

    /// Waits until the receiver got `n` requests.
    async fn wait_for(&self, n: usize, secs: u64) -> Vec<Hit> {
        within(secs, &format!("{n} webhook deliveries"), async {
            loop {
                let hits = self.hits();
                if hits.len() >= n {
                    return hits;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }
}

/// A queue whose workers and producer allow callbacks to 127.0.0.1 (private, explicitly), sign
/// the default tenant's with [`SECRET`] and the tenant `acme`'s with its own, and retry fast.
fn queue(test: &str) -> TestQueue {
    let mut q = TestQueue::new(test);
    let w = &mut q.cfg.webhooks;
    w.allowed_hosts = vec!["127.0.0.1".into(), "hooks.example.com".into()];
    w.allow_private_hosts = vec!["127.0.0.1".into()];
    w.secret = Some(Secret::new(SECRET));
    w.backoff_base_ms = 400;
    w.poll_ms = 50;
    w.timeout_ms = 2_000;
    let acme = TenantConfig {
        webhook_secret: Some(Secret::new("acme-webhook-secret-0123")),
        ..TenantConfig::default()
    };
    q.cfg.tenants.insert("acme".into(), acme);
    q.cfg.validate().expect("valid test config");
    q.producer = Producer::new(&q.cfg).expect("producer");
    q
}

fn job_calling(q: &TestQueue, url: &str) -> JobSpec {
    let mut j = q.job("print hello webhook");
    j.callback = Some(url.to_owned());
    j
}

/// Runs a verifier of `examples/clients/` on a delivery: true when it calls it authentic.
fn verifies(interpreter: &str, script: &str, secret: &str, hit: &Hit, body: &[u8]) -> bool {
    use std::io::Write as _;
    let mut child = std::process::Command::new(interpreter)
        .arg(repo_root().join("examples/clients").join(script))
        .env("SECRET", secret)
        .env("SIGNATURE", hit.header("quayside-signature"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {interpreter}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body)
        .expect("write body");
    let out = child.wait_with_output().expect("verifier ran");
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(said == "valid" || said == "invalid", "{script}: {said:?}");
    out.status.success()
}

#[tokio::test]
async fn a_signed_result_reaches_the_receiver_and_the_python_and_node_verifiers_accept_it() {
    let q = queue("signed");
    let rx = Receiver::start(|_| 200).await;
    q.spawn_worker(|_| {});
    let mut spec = job_calling(&q, &rx.url());
    spec.tenant = Some("acme".into());
    q.producer.enqueue(&spec).await.expect("enqueue");
    let result = q.wait_one(&spec.id, 20).await;
    let hit = rx.wait_for(1, 20).await.remove(0);

    assert_eq!(hit.header("content-type"), "application/json");
    assert_eq!(hit.header("quayside-job-id"), spec.id.as_str());
    assert_eq!(hit.header("quayside-delivery"), "1");
    let body = hit.json();
    assert_eq!(body["id"], spec.id.as_str());
    assert_eq!(body["queue"], q.cfg.queue.name.as_str());
    assert_eq!(body["tenant"], "acme");
    assert_eq!(body["status"], "succeeded");
    assert_eq!(
        body["result"],
        serde_json::to_value(&result).expect("result JSON"),
        "the result as GET /v1/jobs/{{id}} shows it"
    );
    // The signature: recomputed here, and checked by both documented verifiers.
    let sig = hit.header("quayside-signature");
    let t: u64 = sig
        .strip_prefix("t=")
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.parse().ok())
        .expect("t=<unix>");
    let body_text = String::from_utf8(hit.body.clone()).expect("utf-8");
    let mine = quayside_worker::webhook::signature(b"acme-webhook-secret-0123", t, &body_text);
    assert_eq!(sig, mine, "HMAC-SHA256 of t.body with the tenant's secret");
    for (exe, script) in [
        ("python3", "python/verify_webhook.py"),
        ("node", "node/verify-webhook.js"),
    ] {
        assert!(
            verifies(exe, script, "acme-webhook-secret-0123", &hit, &hit.body),
            "{script} accepts the worker's signature"
        );
        let mut forged = hit.body.clone();
        forged.extend_from_slice(b" ");
        assert!(
            !verifies(exe, script, "acme-webhook-secret-0123", &hit, &forged),
            "{script} refuses a changed body"
        );
        assert!(
            !verifies(exe, script, SECRET, &hit, &hit.body),
            "{script} refuses another tenant's secret"
        );
    }
    let stats = q.producer.stats().await.expect("stats");
    assert_eq!((stats.webhooks.pending, stats.webhooks.dead), (0, 0));
}

#[tokio::test]
async fn a_receiver_that_fails_twice_then_accepts_gets_three_deliveries_with_backoff() {
    let q = queue("flaky");
    let rx = Receiver::start(|n| if n < 2 { 503 } else { 200 }).await;
    q.spawn_worker(|_| {});
    let spec = job_calling(&q, &rx.url());
    q.producer.enqueue(&spec).await.expect("enqueue");
    let hits = rx.wait_for(3, 30).await;
    // Nothing more comes once one was accepted.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let hits_after = rx.hits();
    assert_eq!(hits_after.len(), 3, "delivered once accepted, then no more");
    for (i, h) in hits.iter().enumerate() {
        assert_eq!(h.header("quayside-job-id"), spec.id.as_str());
        assert_eq!(h.header("quayside-delivery"), (i + 1).to_string());
    }
    // Backoff: 400 ms then 800 ms, each ±20 % jitter.
    let gap = |a: &Hit, b: &Hit| b.at.duration_since(a.at);
    assert!(
        gap(&hits[0], &hits[1]) >= Duration::from_millis(320),
        "{:?}",
        gap(&hits[0], &hits[1])
    );
    assert!(
        gap(&hits[1], &hits[2]) >= Duration::from_millis(640),
        "{:?}",
        gap(&hits[1], &hits[2])
    );
    let stats = q.producer.stats().await.expect("stats");
    assert_eq!((stats.webhooks.pending, stats.webhooks.dead), (0, 0));
}

#[tokio::test]
async fn a_receiver_that_never_accepts_gets_its_webhook_dead_lettered_in_stats_and_metrics() {
    let mut q = queue("deadhook");
    q.cfg.webhooks.retry_for_s = 2;
    q.cfg.webhooks.backoff_base_ms = 200;
    let rx = Receiver::start(|_| 500).await;
    let addr = free_addr();
    {
        let addr = addr.clone();
        q.spawn_worker(move |c| c.metrics.listen_addr = addr);
    }
    let spec = job_calling(&q, &rx.url());
    q.producer.enqueue(&spec).await.expect("enqueue");
    q.wait_one(&spec.id, 20).await;
    let stats = within(20, "the webhook dead-lettered", async {
        loop {
            let s = q.producer.stats().await.expect("stats");
            if s.webhooks.dead == 1 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(stats.webhooks.pending, 0);
    let tries = rx.hits().len();
    assert!(tries >= 2, "retried before giving up: {tries}");
    // The dead letter says which job, where and why, and never the secret.
    let mut conn = q.conn().await;
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(q.keys.webhooks_dead())
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .expect("xrange");
    let entry = &dead.ids[0].map;
    let field = |k: &str| match entry.get(k) {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(field("id"), spec.id.as_str());
    assert_eq!(field("url"), rx.url());
    assert_eq!(field("reason"), "retry_expired");
    assert!(field("error").contains("HTTP 500"), "{}", field("error"));
    // And the CLI shows it.
    let out = q.cli().arg("stats").output().expect("quayside stats");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("webhooks: pending 0   dead-lettered 1"),
        "{text}"
    );
    assert!(!text.contains(SECRET));
    // The metric, tenant `default` (the job has none).
    wait_http(&addr, "/readyz", 10, "worker ready", |s, _| s == 200).await;
    let (_, metrics) = http_get(&addr, "/metrics").await.expect("scrape");
    let sel = format!(
        "quayside_webhooks_total{{queue=\"{}\",tenant=\"default\",outcome=",
        q.cfg.queue.name
    );
    assert!(metrics.contains(&format!("{sel}\"dead\"}} 1")), "{metrics}");
    assert!(
        metrics.contains(&format!("{sel}\"retried\"}}")),
        "{metrics}"
    );
}

#[tokio::test]
async fn callbacks_the_operator_does_not_allow_are_refused_at_admission_naming_the_field() {
    let q = queue("refused");
    let refused = [
        ("https://evil.example.net/hook", "allowed_hosts"),
        ("http://10.0.0.7/hook", "allowed_hosts"),
        ("ftp://hooks.example.com/x", "scheme"),
        ("https://hooks.example.com@127.0.0.1/x", "user info"),
    ];
    // The library.
    for (url, why) in refused {
        let err = q
            .producer
            .enqueue(&job_calling(&q, url))
            .await
            .expect_err(url);
        let msg = err.to_string();
        assert!(matches!(err, Error::Invalid(_)), "{url}: {msg}");
        assert!(
            msg.contains("callback") && msg.contains(why),
            "{url}: {msg}"
        );
    }
    // A private address of an allowed host is refused unless allowed as private too.
    let mut strict = q.cfg.clone();
    strict.webhooks.allowed_hosts.push("10.0.0.7".into());
    let p = Producer::new(&strict).expect("producer");
    let msg = p
        .enqueue(&job_calling(&q, "http://10.0.0.7/hook"))
        .await
        .expect_err("private")
        .to_string();
    assert!(msg.contains("callback") && msg.contains("private"), "{msg}");
    strict.webhooks.allow_private_hosts.clear();
    let p = Producer::new(&strict).expect("producer");
    let msg = p
        .enqueue(&job_calling(&q, "http://127.0.0.1:9/hook"))
        .await
        .expect_err("loopback")
        .to_string();
    assert!(msg.contains("callback") && msg.contains("private"), "{msg}");
    // No webhook config at all: every callback is refused.
    let mut off = q.cfg.clone();
    off.webhooks = Default::default();
    let msg = Producer::new(&off)
        .expect("producer")
        .enqueue(&job_calling(&q, "https://hooks.example.com/x"))
        .await
        .expect_err("off")
        .to_string();
    assert!(
        msg.contains("callback") && msg.contains("not enabled"),
        "{msg}"
    );
    // The gateway: 422 naming the field.
    let gw = q.spawn_gateway(|_| {}).await;
    for (url, _) in refused {
        let body = serde_json::json!({
            "kind": "run", "language": "script",
            "files": {"job.txt": "print x"}, "callback": url,
        });
        let r = gw.post_json("/v1/jobs", &body).await;
        assert_eq!(r.status, 422, "{url}: {}", r.text());
        assert_eq!(r.json()["field"], "callback", "{}", r.text());
    }
    // The CLI (its config has no webhooks section, so any callback is refused).
    let file = q.path("job.txt");
    std::fs::write(&file, "print x").expect("write job");
    let out = q
        .cli()
        .args(["submit", "--language", "script", "--callback"])
        .arg("https://hooks.example.com/x")
        .arg(&file)
        .output()
        .expect("quayside");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("callback"), "{err}");
    // Nothing was enqueued by any of them.
    assert_eq!(q.queued().await, 0);
}

#[tokio::test]
async fn a_worker_killed_between_the_result_and_the_post_leaves_the_webhook_to_another() {
    let q = queue("sigkill");
    let rx = Receiver::start(|_| 200).await;
    // The first worker writes results but sends no webhooks (`webhooks.send = false`): the
    // crash window between the result and the POST, held open.
    let first = q.spawn_worker(|c| c.webhooks.send = false);
    let spec = job_calling(&q, &rx.url());
    q.producer.enqueue(&spec).await.expect("enqueue");
    q.wait_one(&spec.id, 20).await;
    let stats = q.producer.stats().await.expect("stats");
    assert_eq!(stats.webhooks.pending, 1, "in the outbox with the result");
    first.signal(9);
    first.wait_exit(10).await;
    assert!(rx.hits().is_empty(), "nothing sent before the crash");
    q.spawn_worker(|_| {});
    let hit = rx.wait_for(1, 20).await.remove(0);
    assert_eq!(hit.header("quayside-job-id"), spec.id.as_str());
    assert_eq!(hit.json()["status"], "succeeded");
    within(10, "outbox empty", async {
        while q.producer.stats().await.expect("stats").webhooks.pending != 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_raw_xadd_job_with_a_callback_gets_its_webhook_and_a_disallowed_one_is_rejected() {
    let q = queue("raw");
    let rx = Receiver::start(|_| 200).await;
    q.spawn_worker(|_| {});
    // Raw producers (plain XADD, the Python and Node examples) skip the admission doors: the
    // worker checks the callback when it claims the job, and the sender again at send time.
    let good = job_calling(&q, &rx.url());
    q.raw_enqueue(&good).await;
    let bad = job_calling(&q, "https://evil.example.net/hook");
    q.raw_enqueue(&bad).await;
    let hit = rx.wait_for(1, 20).await.remove(0);
    assert_eq!(hit.header("quayside-job-id"), good.id.as_str());
    let rejected = q.wait_one(&bad.id, 20).await;
    assert_eq!(rejected.status, Status::Rejected);
    assert!(
        rejected
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("callback: host evil.example.net"),
        "{:?}",
        rejected.error
    );
    // Its webhook is refused at send time too: dead-lettered, never sent.
    within(10, "the refused webhook dead-lettered", async {
        while q.producer.stats().await.expect("stats").webhooks.dead != 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(rx.hits().len(), 1, "nothing sent to a host not allowed");
}

#[tokio::test]
async fn a_worker_killed_mid_post_leaves_the_delivery_to_another_once_its_lease_ends() {
    let mut q = queue("midpost");
    // The lease a sender holds a delivery for: 2 × timeout + 5 s = 7 s here.
    q.cfg.webhooks.timeout_ms = 1_000;
    let rx = Receiver::start_holding(|_| 200, 0).await;
    let first = q.spawn_worker(|_| {});
    let spec = job_calling(&q, &rx.url());
    q.producer.enqueue(&spec).await.expect("enqueue");
    // The first POST arrives and is held unanswered: the sender is mid-delivery. Kill it.
    let held = rx.wait_for(1, 20).await.remove(0);
    first.signal(9);
    first.wait_exit(10).await;
    assert_eq!(held.header("quayside-delivery"), "1");
    let killed_at = Instant::now();
    q.spawn_worker(|_| {});
    let hits = rx.wait_for(2, 30).await;
    let again = &hits[1];
    assert_eq!(again.header("quayside-job-id"), spec.id.as_str());
    assert_eq!(
        again.header("quayside-delivery"),
        "2",
        "a possible duplicate, told apart by the attempt"
    );
    assert_eq!(again.body, held.body, "the same result");
    assert!(
        again.at.duration_since(killed_at) >= Duration::from_secs(4),
        "not before the dead sender's lease ended: {:?}",
        again.at.duration_since(killed_at)
    );
    within(10, "outbox empty", async {
        while q.producer.stats().await.expect("stats").webhooks.pending != 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}
