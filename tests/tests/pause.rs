//! Pausing a queue (issue 15, item 3): running jobs finish, queued ones stay queued across a
//! worker restart and a Redis restart, enqueues are still accepted, and a resume lets them run.
//! A tenant's pause holds the same way and outlives the queue's resume.

use std::time::Duration;

use quayside_common::{JobId, Status};
use quayside_e2e::ops::wait_http;
use quayside_e2e::{free_addr, private_dir, recorded, stdout_ok, within, PrivateRedis, TestQueue};

/// Job ids that `record` logged as started.
fn started(rec: &str) -> Vec<String> {
    recorded(rec)
        .into_iter()
        .filter(|e| e.2 == "start")
        .map(|e| e.0)
        .collect()
}

/// Waits until the worker's log shows a claim that found the queue paused: from then on, the
/// worker is provably polling a paused queue (not merely idle or not started yet).
async fn saw_pause(q: &TestQueue, worker: &str) {
    within(15, &format!("{worker} to find the queue paused"), async {
        while !q.worker_log(worker).contains("queue paused") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// The later jobs are still queued and none of them ever started.
async fn assert_still_queued(q: &TestQueue, ids: &[JobId], rec: &str, when: &str) {
    for id in ids {
        assert_eq!(q.status(id).await.state, Status::Queued, "{id} {when}");
    }
    let started = started(rec);
    assert!(
        ids.iter().all(|id| !started.contains(&id.to_string())),
        "no job of a paused queue started {when}: {started:?}"
    );
}

#[tokio::test]
async fn a_paused_queue_starts_nothing_across_restarts_until_resumed() {
    let mut redis = PrivateRedis::start(&private_dir("pause-redis")).expect("private redis");
    let q = TestQueue::on("pause", &redis.url());
    let rec = q.path("exec.log");
    let metrics = free_addr();

    let running = q.jobs(2, &format!("record {rec}\nsleep 1500\nprint first"));
    let running_ids = q.enqueue_all(&running).await;
    let w0 = {
        let metrics = metrics.clone();
        q.spawn_worker(move |c| {
            c.worker.slots = 2;
            c.metrics.listen_addr = metrics;
        })
    };
    for id in &running_ids {
        q.wait_state(id, Status::Running, 20).await;
    }

    let out = q.cli().arg("pause").output().expect("run quayside pause");
    assert_eq!(
        stdout_ok(&out).trim(),
        format!("queue {} paused", q.cfg.queue.name)
    );

    // Enqueues are accepted while paused.
    let later = q.jobs(3, &format!("record {rec}\nprint later"));
    let later_ids = q.enqueue_all(&later).await;
    // One tenant is paused on top of the queue: it must still wait once the queue resumes.
    let out = q
        .cli()
        .args(["pause", "--tenant", "held"])
        .output()
        .expect("run quayside pause --tenant");
    assert_eq!(
        stdout_ok(&out).trim(),
        format!("tenant held of queue {} paused", q.cfg.queue.name)
    );
    let mut held = q.job(&format!("record {rec}\nprint held"));
    held.tenant = Some("held".into());
    let held_ids = q.enqueue_all(&[held]).await;

    // Running jobs finish normally.
    for r in q.wait_all(&running_ids, 30).await {
        assert_eq!(r.status, Status::Succeeded, "a running job finishes");
    }
    // The worker has free slots and has claimed since the pause: still nothing starts.
    saw_pause(&q, &w0.id).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_still_queued(&q, &later_ids, &rec, "while paused").await;

    let out = q
        .cli()
        .args(["--json", "stats"])
        .output()
        .expect("run quayside stats");
    let stats: serde_json::Value = serde_json::from_str(&stdout_ok(&out)).expect("stats json");
    assert_eq!(stats["paused"], true, "{stats}");
    assert!(stats["paused_since_ms"].as_u64().is_some(), "{stats}");
    let gauge = format!("quayside_queue_paused{{queue=\"{}\"}} 1", q.cfg.queue.name);
    wait_http(&metrics, "/metrics", 30, "the paused gauge at 1", |s, b| {
        s == 200 && b.contains(&gauge)
    })
    .await;

    // The pause outlives the worker (SIGKILL) and Redis (killed, restarted from its AOF).
    w0.signal(9);
    assert_eq!(w0.wait_exit(10).await, None, "killed by the signal");
    redis.kill();
    redis.restart().expect("restart redis");
    within(15, "the producer to reconnect", async {
        // The first call after the restart finds the old connection broken and drops it.
        while q.producer.stats().await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let w1 = q.spawn_worker(|c| c.worker.slots = 2);
    saw_pause(&q, &w1.id).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_still_queued(&q, &later_ids, &rec, "after a worker and a Redis restart").await;

    // The gateway: pausing again changes nothing; resuming lets the jobs run.
    let gw = q.spawn_gateway(|_| {}).await;
    let r = gw.post("/v1/pause", "application/json", b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.json()["paused"].as_bool(), r.json()["changed"].as_bool()),
        (Some(true), Some(false)),
        "already paused by the CLI"
    );
    let r = gw.post("/v1/resume", "application/json", b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.json()["paused"].as_bool(), r.json()["changed"].as_bool()),
        (Some(false), Some(true))
    );
    for r in q.wait_all(&later_ids, 30).await {
        assert_eq!(r.status, Status::Succeeded, "runs after the resume");
    }
    let stats = gw.get("/v1/stats").await.json();
    assert_eq!(stats["paused"], false, "{stats}");
    assert!(stats.get("paused_since_ms").is_none(), "{stats}");
    let tenant = |stats: &serde_json::Value| {
        stats["tenants"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["tenant"] == "held").cloned())
            .unwrap_or_default()
    };
    assert_eq!(tenant(&stats)["paused"], true, "{stats}");
    assert_still_queued(&q, &held_ids, &rec, "while its tenant is paused").await;

    let r = gw
        .post("/v1/tenants/held/resume", "application/json", b"")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["changed"], true);
    for r in q.wait_all(&held_ids, 30).await {
        assert_eq!(
            r.status,
            Status::Succeeded,
            "runs after its tenant's resume"
        );
    }

    let all: Vec<JobId> = running_ids
        .into_iter()
        .chain(later_ids)
        .chain(held_ids)
        .collect();
    q.assert_settled(&all).await;
}
