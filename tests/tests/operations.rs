//! Operating a worker: a real Prometheus scrapes it and sees the jobs a test ran, the
//! exposition and the alert rules pass promtool, and readiness follows Redis and the drain.

use std::collections::BTreeMap;
use std::process::Command;

use quayside_common::{JobId, Priority, Status};
use quayside_e2e::free_addr;
use quayside_e2e::ops::{http_get, repo_root, run_ok, wait_http, which, Prometheus};
use quayside_e2e::{private_dir, within, PrivateRedis, TestQueue};

fn promtool() -> std::path::PathBuf {
    which("promtool").expect("promtool not installed: apt-get install -y prometheus")
}

/// Sums of `expr` by its one grouping label, as label value -> value.
fn by(label: &str, r: &[(BTreeMap<String, String>, f64)]) -> BTreeMap<String, f64> {
    r.iter()
        .map(|(l, v)| (l.get(label).cloned().unwrap_or_default(), *v))
        .collect()
}

/// The per-priority values a gauge must show.
fn per_priority(high: f64, normal: f64, low: f64) -> BTreeMap<String, f64> {
    BTreeMap::from([
        ("high".into(), high),
        ("normal".into(), normal),
        ("low".into(), low),
    ])
}

#[tokio::test]
async fn prometheus_scrapes_job_counters_and_queue_gauges_that_match_what_ran() {
    let q = TestQueue::new("prom");
    let addr = free_addr();
    let queue = q.cfg.queue.name.clone();
    let sel = format!("queue=\"{queue}\"");
    let w = {
        let addr = addr.clone();
        q.spawn_worker(move |c| {
            c.worker.slots = 1;
            c.metrics.listen_addr = addr;
        })
    };
    let alerts = repo_root().join("deploy/prometheus/alerts.yml");
    let prom = Prometheus::start(
        std::path::Path::new(&q.path("prometheus")),
        std::slice::from_ref(&addr),
        &[alerts],
    )
    .await;
    wait_http(&addr, "/readyz", 20, "worker ready", |s, _| s == 200).await;

    // One slot, held by a long job: what is enqueued next waits, and the gauges must say so.
    let blocker = q.job("sleep 60000");
    q.producer.enqueue(&blocker).await.expect("enqueue");
    q.wait_state(&blocker.id, Status::Running, 10).await;
    let waiting: Vec<_> = (0..5)
        .map(|_| q.job_at("print waited", Priority::Low))
        .collect();
    q.producer.enqueue_many(&waiting).await.expect("enqueue");
    let depth = prom
        .wait_for(&format!("quayside_queue_depth{{{sel}}}"), 30, |r| {
            by("priority", r) == per_priority(0.0, 1.0, 5.0)
        })
        .await;
    assert_eq!(depth.len(), 3, "one depth series per priority");
    prom.wait_for(&format!("quayside_queue_lag{{{sel}}}"), 10, |r| {
        by("priority", r) == per_priority(0.0, 0.0, 5.0)
    })
    .await;
    prom.wait_for_value(
        &format!("quayside_queue_pending{{{sel},priority=\"normal\"}}"),
        10,
        1.0,
    )
    .await;
    prom.wait_for(
        &format!(
            "quayside_jobs_in_flight{{{sel}}} == 1 and quayside_worker_slots_free{{{sel}}} == 0"
        ),
        10,
        |r| r.len() == 1,
    )
    .await;

    // Release the slot; add failures and a dead letter to count by status.
    q.producer.cancel(&blocker.id).await.expect("cancel");
    let failing = q.jobs(2, "exit 3");
    let dead = q.job("permanent broken runner");
    q.producer.enqueue_many(&failing).await.expect("enqueue");
    q.producer.enqueue(&dead).await.expect("enqueue");
    let mut ids: Vec<JobId> = vec![blocker.id.clone(), dead.id.clone()];
    ids.extend(waiting.iter().chain(&failing).map(|s| s.id.clone()));
    let results = q.wait_all(&ids, 30).await;
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    for r in &results {
        *expected.entry(r.status.as_str().to_owned()).or_default() += 1.0;
    }
    assert_eq!(
        expected,
        BTreeMap::from([
            ("cancelled".into(), 1.0),
            ("dead".into(), 1.0),
            ("failed".into(), 2.0),
            ("succeeded".into(), 5.0)
        ])
    );

    prom.wait_for(
        &format!("sum by (status) (quayside_jobs_finished_total{{{sel}}})"),
        20,
        |r| by("status", r) == expected,
    )
    .await;
    prom.wait_for_value(
        &format!("sum(quayside_jobs_claimed_total{{{sel}}})"),
        10,
        ids.len() as f64,
    )
    .await;
    prom.wait_for(
        &format!("sum by (reason) (quayside_jobs_dead_lettered_total{{{sel}}})"),
        10,
        |r| by("reason", r) == BTreeMap::from([("permanent_error".into(), 1.0)]),
    )
    .await;
    prom.wait_for(&format!("quayside_runner_errors_total{{{sel}}}"), 10, |r| {
        r.len() == 1 && r[0].1 == 1.0 && r[0].0.get("kind").map(String::as_str) == Some("permanent")
    })
    .await;
    prom.wait_for(
        &format!("sum by (language) (quayside_job_duration_seconds_count{{{sel}}})"),
        10,
        |r| {
            // The cancelled and the dead job never returned an output.
            by("language", r) == BTreeMap::from([("script".into(), 7.0)])
        },
    )
    .await;
    prom.wait_for_value(
        &format!("sum(quayside_queue_depth{{{sel}}}) + sum(quayside_queue_delayed{{{sel}}})"),
        10,
        0.0,
    )
    .await;
    prom.wait_for_value(&format!("quayside_queue_dead_letters{{{sel}}}"), 10, 1.0)
        .await;
    prom.wait_for_value(&format!("quayside_queue_workers{{{sel}}}"), 10, 1.0)
        .await;
    let up = prom.query("up{job=\"quayside-worker\"}").await.expect("up");
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].1, 1.0, "scrapes succeed");
    let rules = http_get(&prom.addr, "/api/v1/rules")
        .await
        .expect("rules")
        .1;
    assert!(
        rules.contains("QuaysideNoWorkers"),
        "the alert rules loaded: {rules}"
    );
    drop(w);
}

#[tokio::test]
async fn the_exposition_passes_promtool_check_metrics() {
    let q = TestQueue::new("promtool");
    let addr = free_addr();
    {
        let addr = addr.clone();
        q.spawn_worker(move |c| {
            c.metrics.listen_addr = addr;
            // A tenant with a running cap, so the cap gauge is exported too.
            let capped = quayside_common::config::TenantConfig {
                max_running: 2,
                ..Default::default()
            };
            c.tenants.insert("capped".into(), capped);
        });
    }
    // Every family of counters and histograms appears: success, failure, retry, dead letter,
    // rejection.
    let mut retried = q.job("infra flaky runner");
    retried.max_attempts = Some(2);
    let mut unknown = q.job("print x");
    unknown.language = "cobol".into();
    let specs = vec![
        q.job("print ok"),
        q.job("exit 1"),
        q.job("permanent no"),
        retried,
        unknown,
    ];
    let ids = q.enqueue_all(&specs).await;
    q.wait_all(&ids, 30).await;
    let body = wait_http(&addr, "/metrics", 10, "metrics with retries", |s, b| {
        s == 200
            && b.contains("quayside_jobs_retried_total")
            && b.contains("quayside_jobs_rejected_total")
    })
    .await;
    // The sandbox start and warm pool families belong to a container runner (this worker
    // runs scripts): warm_pool.rs reads the pool's from a Docker worker.
    use quayside_worker::metrics::{
        POOL_CONTAINERS, POOL_HITS_TOTAL, POOL_MISSES_TOTAL, POOL_REFILL_SECONDS,
        SANDBOX_START_SECONDS,
    };
    let container_only = [
        SANDBOX_START_SECONDS.name,
        POOL_CONTAINERS.name,
        POOL_HITS_TOTAL.name,
        POOL_MISSES_TOTAL.name,
        POOL_REFILL_SECONDS.name,
    ];
    for name in quayside_worker::metrics::ALL {
        if !container_only.contains(&name) {
            assert!(
                body.contains(&format!("# HELP {name} ")),
                "{name} exported and described"
            );
        }
    }
    assert!(!body.contains("quantile="), "histograms, not summaries");
    let file = q.path("metrics.txt");
    std::fs::write(&file, &body).expect("write");
    let out = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).expect("open"))
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alert_rules_pass_promtool_check_rules() {
    let rules = repo_root().join("deploy/prometheus/alerts.yml");
    let out = run_ok(
        Command::new(promtool())
            .arg("check")
            .arg("rules")
            .arg(&rules),
    )
    .expect("promtool check rules");
    assert!(out.contains("SUCCESS"), "{out}");
    let text = std::fs::read_to_string(&rules).expect("alerts.yml");
    let alerts = text.matches("- alert:").count();
    assert!(alerts >= 4, "{alerts} alerts");
    assert_eq!(
        text.matches("runbook:").count(),
        alerts,
        "every alert has a runbook line"
    );
}

#[tokio::test]
async fn readyz_follows_redis_going_away_and_coming_back() {
    let mut redis = PrivateRedis::start(&private_dir("readyz")).expect("private redis");
    let q = TestQueue::on("readyz", &redis.url());
    let addr = free_addr();
    {
        let addr = addr.clone();
        q.spawn_worker(move |c| c.metrics.listen_addr = addr);
    }
    wait_http(&addr, "/readyz", 20, "ready with redis up", |s, _| s == 200).await;

    redis.kill();
    let body = wait_http(&addr, "/readyz", 15, "not ready with redis down", |s, _| {
        s == 503
    })
    .await;
    let r: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (r["ready"].as_bool(), r["draining"].as_bool()),
        (Some(false), Some(false))
    );
    assert_ne!(r["redis"], "ok", "{body}");
    assert_eq!(r["runner"], "ok");
    let (status, _) = http_get(&addr, "/healthz").await.expect("healthz");
    assert_eq!(status, 200, "alive while redis is down");

    redis.restart().expect("restart redis");
    wait_http(&addr, "/readyz", 20, "ready again", |s, _| s == 200).await;
    let spec = q.job("print back");
    q.producer.enqueue(&spec).await.expect("enqueue");
    assert_eq!(q.wait_one(&spec.id, 20).await.status, Status::Succeeded);
}

#[tokio::test]
async fn readiness_turns_false_while_draining() {
    let q = TestQueue::new("drain-ready");
    let addr = free_addr();
    let w = {
        let addr = addr.clone();
        q.spawn_worker(move |c| c.metrics.listen_addr = addr)
    };
    wait_http(&addr, "/readyz", 20, "ready", |s, _| s == 200).await;
    let spec = q.job("sleep 2500\nprint drained");
    q.producer.enqueue(&spec).await.expect("enqueue");
    q.wait_state(&spec.id, Status::Running, 10).await;

    w.signal(15);
    let body = wait_http(&addr, "/readyz", 5, "not ready while draining", |s, _| {
        s == 503
    })
    .await;
    assert!(body.contains("\"draining\":true"), "{body}");
    let st = q.status(&spec.id).await;
    assert_eq!(st.state, Status::Running, "the drain is still going on");
    let (status, metrics) = http_get(&addr, "/metrics").await.expect("metrics");
    assert_eq!(status, 200, "still scraped while draining");
    assert!(metrics.contains("quayside_worker_draining{"), "{metrics}");
    assert!(metrics
        .lines()
        .any(|l| l.starts_with("quayside_worker_draining{") && l.ends_with(" 1")));
    assert_eq!(http_get(&addr, "/healthz").await.expect("healthz").0, 200);

    assert_eq!(w.wait_exit(10).await, Some(0), "drained worker exits 0");
    within(5, "listener closed after the drain", async {
        while http_get(&addr, "/healthz").await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(q.wait_one(&spec.id, 5).await.status, Status::Succeeded);
}
