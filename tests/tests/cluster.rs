//! Redis Cluster: a real three-primary cluster on 127.0.0.1 (`RedisCluster`), two queues whose
//! hash-tag slots live on different primaries, a worker process per queue (the test runner),
//! the producer library, the CLI and `quayside serve`, every one given only the seed nodes
//! (`redis.cluster.nodes`). The queue suite's core flows pass on both shards, every job ends
//! with exactly one terminal announcement, and the keys of each queue sit on its own shard.

use std::collections::HashMap;
use std::time::Duration;

use quayside_common::config::{ClusterConfig, Secret};
use quayside_common::{JobId, Priority, Status};
use quayside_e2e::gateway::TOKEN;
use quayside_e2e::ops::TestCerts;
use quayside_e2e::{
    free_port, private_dir, recorded, run_bounded, stdout_ok, wait_started, within, Completions,
    RedisCluster, TestQueue,
};
use quayside_producer::{CancelOutcome, ReplayOutcome};
use serde_json::json;

/// A queue on `cluster` that knows only its seed nodes; the URL's host is a port nothing
/// listens on, so nothing can reach Redis except through the cluster client.
fn queue_on(cluster: &RedisCluster, test: &str) -> TestQueue {
    TestQueue::with_redis(test, |r| {
        r.url = format!("redis://127.0.0.1:{}", free_port());
        r.cluster = Some(ClusterConfig {
            nodes: cluster.nodes(),
        });
    })
}

/// The port of the primary holding queue `q`'s keys (the slot of its `{name}` hash tag),
/// checked against a key Quayside itself builds.
fn shard_of(cluster: &RedisCluster, q: &TestQueue) -> u16 {
    let slot = cluster.keyslot(&format!("{{{}}}", q.cfg.queue.name));
    assert_eq!(
        cluster.keyslot(&q.keys.stream(Priority::Normal)),
        slot,
        "every key of the queue hashes to the tag's slot"
    );
    cluster.primary_of(slot)
}

/// Two queues on different primaries: names are unique per call, so drawing a few finds one.
fn two_shards(cluster: &RedisCluster) -> ((TestQueue, u16), (TestQueue, u16)) {
    let a = queue_on(cluster, "cl-a");
    let shard_a = shard_of(cluster, &a);
    for i in 0..50 {
        let b = queue_on(cluster, &format!("cl-b{i}"));
        let shard_b = shard_of(cluster, &b);
        if shard_b != shard_a {
            return ((a, shard_a), (b, shard_b));
        }
    }
    panic!("no queue name found on another shard than {shard_a}")
}

/// How many terminal announcements each job got.
fn announcements(done: &Completions) -> HashMap<String, Vec<String>> {
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    for (id, status) in done.order() {
        seen.entry(id).or_default().push(status);
    }
    seen
}

/// The queue flows of one shard; returns every id it enqueued and the one replayed from the
/// dead-letter queue (announced twice: dead, then succeeded).
async fn core_flows(q: &TestQueue) -> (Vec<JobId>, JobId) {
    let mut ids = Vec::new();

    // Enqueue -> result, at every priority and for a tenant's lane.
    let mut specs = vec![
        q.job_at("print high", Priority::High),
        q.job("print normal\nexit 3"),
        q.job_at("print low", Priority::Low),
    ];
    let mut tenant = q.job("print for acme");
    tenant.tenant = Some("acme".into());
    specs.push(tenant);
    ids.extend(q.enqueue_all(&specs).await);
    let results = q.wait_all(&ids, 20).await;
    let got: Vec<(Status, &str)> = results
        .iter()
        .map(|r| (r.status, r.stdout.data.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (Status::Succeeded, "high\n"),
            (Status::Failed, "normal\n"),
            (Status::Succeeded, "low\n"),
            (Status::Succeeded, "for acme\n"),
        ]
    );
    assert_eq!(results[1].exit_code, Some(3));

    // A batch, its progress counted to the end.
    let batch: Vec<_> = (0..6)
        .map(|i| {
            let mut s = q.job(&format!("sleep 50\nprint {i}"));
            s.batch = Some("b".into());
            s
        })
        .collect();
    let batch_ids = q.enqueue_all(&batch).await;
    q.wait_all(&batch_ids, 20).await;
    let status = q
        .producer
        .batch_status("b")
        .await
        .expect("batch status")
        .expect("batch exists");
    assert_eq!(
        (
            status.total,
            status.succeeded,
            status.remaining,
            status.done
        ),
        (6, 6, 0, true)
    );
    ids.extend(batch_ids);

    // An infrastructure failure: retried with backoff through the delayed set until
    // retry.give_up_after_ms, dead-lettered, then replayed once the runner is fixed.
    let flag = q.path("runner-fixed");
    let runs = q.path("runs");
    let mut flaky = q.job(&format!(
        "record {runs}\ninfra_unless_file {flag}\nprint recovered"
    ));
    flaky.max_attempts = Some(1);
    q.producer.enqueue(&flaky).await.expect("enqueue");
    let dead = q.wait_one(&flaky.id, 20).await;
    assert_eq!(dead.status, Status::Dead, "{:?}", dead.error);
    let tries = recorded(&runs).iter().filter(|e| e.2 == "start").count();
    assert!(tries >= 2, "retried through the delayed set: {tries} runs");
    let letters = q.producer.dlq_list(10).await.expect("dlq");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].job_id, flaky.id.as_str());
    std::fs::write(&flag, "").expect("fix the runner");
    assert_eq!(
        q.producer
            .dlq_replay(&letters[0].entry)
            .await
            .expect("replay"),
        ReplayOutcome::Queued
    );
    q.wait_state(&flaky.id, Status::Succeeded, 20).await;
    ids.push(flaky.id.clone());

    // Cancel: a running job stops (the request reaches the worker by pub/sub).
    let long = q.job("sleep 60000");
    q.producer.enqueue(&long).await.expect("enqueue");
    q.wait_state(&long.id, Status::Running, 15).await;
    assert_eq!(
        q.producer.cancel(&long.id).await.expect("cancel"),
        CancelOutcome::Requested
    );
    let r = within(15, "cancelled job", q.producer.wait(&long.id, None))
        .await
        .expect("result");
    assert_eq!(r.status, Status::Cancelled);
    ids.push(long.id);
    (ids, flaky.id)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_queues_on_two_shards_run_the_core_flows() {
    let dir = private_dir("cluster-queues");
    let cluster = RedisCluster::start(&dir).expect("a three-primary cluster");
    let ((a, shard_a), (b, shard_b)) = two_shards(&cluster);
    assert_ne!(shard_a, shard_b);

    let (done_a, done_b) = (a.count_completions().await, b.count_completions().await);
    let wa = a.spawn_worker(|c| c.worker.lease_ms = 1_000);
    b.spawn_worker(|c| c.worker.lease_ms = 1_000);
    let ((ids_a, replayed_a), (ids_b, replayed_b)) = tokio::join!(core_flows(&a), core_flows(&b));

    // A lease expiry: the worker dies mid-job, a second one reclaims and finishes it.
    let rec = a.path("exec.log");
    let crashed = a.job(&format!("record {rec}\nsleep 1500\nprint finished"));
    a.producer.enqueue(&crashed).await.expect("enqueue");
    a.wait_state(&crashed.id, Status::Running, 10).await;
    wait_started(&rec, 1, 10).await;
    wa.signal(9);
    assert_eq!(wa.wait_exit(5).await, None, "killed by the signal");
    let second = a.spawn_worker(|c| c.worker.lease_ms = 1_000);
    let r = a.wait_one(&crashed.id, 20).await;
    assert_eq!(
        (r.status, r.attempts, r.worker.as_deref()),
        (Status::Succeeded, 2, Some(second.id.as_str()))
    );
    assert_eq!(recorded(&rec).iter().filter(|e| e.2 == "start").count(), 2);
    let mut ids_a = ids_a;
    ids_a.push(crashed.id);

    // Each queue's keys are on its own shard: the node there holds the job record, and the
    // consistency check's SCAN (a command with no key to route by) finds every record.
    for (q, shard, ids) in [(&a, shard_a, &ids_a), (&b, shard_b, &ids_b)] {
        let key = q.keys.job(&ids[0]);
        assert_eq!(cluster.cli(shard, &["EXISTS", &key]).trim(), "1", "{key}");
        for _ in 0..3 {
            let report = q.producer.check(false).await.expect("check");
            assert_eq!(report.records, ids.len() as u64, "{report:?}");
            assert!(report.counts.is_empty(), "{report:?}");
        }
        within(15, "settled", q.assert_settled(ids)).await;
    }

    // Every job announced its end exactly once (the replayed one: dead, then succeeded).
    for (done, ids, replayed) in [
        (&done_a, &ids_a, &replayed_a),
        (&done_b, &ids_b, &replayed_b),
    ] {
        done.wait_for(ids.len() + 1, 10).await;
        let mut seen = announcements(done);
        assert_eq!(
            seen.remove(replayed.as_str()),
            Some(vec!["dead".to_owned(), "succeeded".to_owned()])
        );
        for id in ids.iter().filter(|id| *id != replayed) {
            assert_eq!(
                seen.remove(id.as_str()).map(|s| s.len()),
                Some(1),
                "{id} must end exactly once"
            );
        }
        assert!(seen.is_empty(), "unexpected completions: {seen:?}");
    }

    // `quayside stats` shows each queue, configured from the environment like an operator's.
    for (q, ids) in [(&a, &ids_a), (&b, &ids_b)] {
        let mut cli = q.cli();
        cli.env("QUAYSIDE_REDIS__CLUSTER__NODES", cluster.nodes().join(","))
            .args(["--json", "stats"]);
        let out = stdout_ok(&run_bounded(cli, 20).await);
        let stats: serde_json::Value = serde_json::from_str(&out).expect("stats json");
        assert_eq!(stats["queue"], q.cfg.queue.name.as_str());
        assert_eq!(stats["workers"].as_array().map(Vec::len), Some(1), "{out}");
        assert_eq!(stats["dead_letters"], 0, "{out}");
        let mut status = q.cli();
        status
            .env("QUAYSIDE_REDIS__CLUSTER__NODES", cluster.nodes().join(","))
            .args(["status", ids[0].as_str()]);
        stdout_ok(&run_bounded(status, 20).await);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_serves_a_queue_on_a_cluster() {
    let dir = private_dir("cluster-gateway");
    let cluster = RedisCluster::start(&dir).expect("a three-primary cluster");
    // A queue away from the first seed node, where pub/sub listens: waits and log streams
    // depend on a PUBLISH crossing the cluster bus.
    let q = (0..50)
        .map(|i| queue_on(&cluster, &format!("cl-gw{i}")))
        .find(|q| shard_of(&cluster, q) != cluster.ports[0])
        .expect("a queue on another shard");
    q.spawn_worker(|_| {});
    let gw = q.spawn_gateway(|c| c.gateway.max_wait_s = 30).await;

    let job = json!({ "kind": "run", "language": "script",
        "files": { "job.txt": "print one\nsleep 1000\nprint two" } });
    let r = gw.post_json("/v1/jobs", &job).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().expect("generated id").to_owned();

    let mut events = gw.stream(&format!("/v1/jobs/{id}/logs")).await;
    let mut lines = Vec::new();
    loop {
        let (kind, data) = within(15, "log events", events.next())
            .await
            .expect("an event");
        if kind == "end" {
            assert_eq!(data, r#"{"status":"succeeded"}"#);
            break;
        }
        let v: serde_json::Value = serde_json::from_str(&data).expect("json");
        lines.push(v["data"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(lines, ["one\n", "two\n"]);

    let r = gw.get(&format!("/v1/jobs/{id}/wait?timeout=10")).await;
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("succeeded"))
    );
    assert_eq!(r.json()["stdout"]["data"], "one\ntwo\n");
    let st = gw.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(
        (st.status, st.json()["state"].as_str()),
        (200, Some("succeeded"))
    );

    // A wait that starts before the job ends is woken by the done announcement.
    let r = gw
        .post_json(
            "/v1/jobs",
            &json!({ "id": "cl-wait", "kind": "run", "language": "script",
            "files": { "job.txt": "sleep 500\nprint waited" } }),
        )
        .await;
    assert_eq!(r.status, 201);
    let r = gw.get("/v1/jobs/cl-wait/wait?timeout=15").await;
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("succeeded"))
    );

    // A batch: enqueued in one request, its progress read to the end.
    let jobs: Vec<_> = (0..4)
        .map(|i| json!({ "kind": "run", "language": "script", "files": { "a": format!("print {i}") } }))
        .collect();
    let r = gw
        .post_json("/v1/batches", &json!({ "id": "cl-b", "jobs": jobs }))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let batch = within(20, "batch done", async {
        loop {
            let b = gw.get("/v1/batches/cl-b").await.json();
            if b["done"].as_bool() == Some(true) {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(
        (batch["total"].as_u64(), batch["succeeded"].as_u64()),
        (Some(4), Some(4))
    );
    let listed = gw.get("/v1/batches").await.json();
    assert_eq!(
        listed["batches"][0]["id"].as_str(),
        Some("cl-b"),
        "the recent batches list: {listed}"
    );

    // DELETE stops a running job.
    let r = gw
        .post_json(
            "/v1/jobs",
            &json!({ "id": "cl-long", "kind": "run", "language": "script",
            "files": { "a": "sleep 60000" } }),
        )
        .await;
    assert_eq!(r.status, 201);
    q.wait_state(&JobId::parse("cl-long").expect("id"), Status::Running, 15)
        .await;
    let r = gw
        .request("DELETE", "/v1/jobs/cl-long", Some(TOKEN), None)
        .await;
    assert_eq!(
        (r.status, r.json()["outcome"].as_str()),
        (200, Some("requested"))
    );
    let r = gw.get("/v1/jobs/cl-long/wait?timeout=15").await;
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("cancelled"))
    );

    let stats = within(10, "stats", async {
        loop {
            let s = gw.get("/v1/stats").await;
            assert_eq!(s.status, 200, "{}", s.text());
            if s.json()["workers"].as_array().is_some_and(|w| w.len() == 1) {
                return s.json();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(stats["queue"], q.cfg.queue.name.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_whose_slot_moves_to_another_primary_keeps_serving() {
    let dir = private_dir("cluster-reshard");
    let cluster = RedisCluster::start(&dir).expect("a three-primary cluster");
    let q = queue_on(&cluster, "cl-move");
    let from = shard_of(&cluster, &q);
    let done = q.count_completions().await;
    q.spawn_worker(|_| {});
    let gw = q.spawn_gateway(|_| {}).await;
    let before = q.enqueue_all(&q.jobs(3, "print before")).await;
    q.wait_all(&before, 20).await;

    // Resharding while the queue is idle (its worker blocked on the streams, the gateway and
    // the producer holding connections to the old owner): the slot and every key move.
    let to = *cluster
        .ports
        .iter()
        .find(|&&p| p != from)
        .expect("another primary");
    let slot = cluster.keyslot(&format!("{{{}}}", q.cfg.queue.name));
    cluster.move_slot(slot, to).expect("move the queue's slot");
    assert_eq!(shard_of(&cluster, &q), to);
    assert_eq!(
        cluster.cli(to, &["EXISTS", &q.keys.job(&before[0])]).trim(),
        "1",
        "the record moved with the slot"
    );

    // Every component follows the MOVED redirection: the library enqueues and waits, the
    // worker claims and reports, the gateway answers, the check's SCAN finds every record.
    let after = q.enqueue_all(&q.jobs(5, "sleep 100\nprint after")).await;
    for r in q.wait_all(&after, 30).await {
        assert_eq!(
            (r.status, r.stdout.data.as_str()),
            (Status::Succeeded, "after\n")
        );
    }
    let r = gw.get(&format!("/v1/jobs/{}", after[0])).await;
    assert_eq!(
        (r.status, r.json()["state"].as_str()),
        (200, Some("succeeded"))
    );
    let all: Vec<JobId> = before.iter().chain(&after).cloned().collect();
    let report = q.producer.check(false).await.expect("check");
    assert_eq!(report.records, all.len() as u64, "{report:?}");
    within(15, "settled", q.assert_settled(&all)).await;
    done.wait_for(all.len(), 10).await;
    done.assert_exactly_once(&all);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_with_a_password_and_tls_serves_a_queue() {
    const PASSWORD: &str = "s3cret-Cluster-pw";
    let dir = private_dir("cluster-tls");
    let certs = TestCerts::generate(&dir.join("certs")).expect("certificates");
    let mut server = certs.redis_server_args();
    server.extend(["--requirepass", PASSWORD, "--tls-cluster", "yes"].map(str::to_owned));
    let server: Vec<&str> = server.iter().map(String::as_str).collect();
    let ca = certs.ca.display().to_string();
    let cli = [
        "-a",
        PASSWORD,
        "--no-auth-warning",
        "--tls",
        "--cacert",
        &ca,
    ];
    let cluster = RedisCluster::start_with(&dir, &server, &cli).expect("a TLS cluster");
    // Credentials and TLS as for one server: the URL's scheme, the password and the CA beside it.
    let q = TestQueue::with_redis("cl-tls", |r| {
        r.url = format!("rediss://127.0.0.1:{}", free_port());
        r.password = Some(Secret::new(PASSWORD));
        r.tls_ca_file = Some(certs.ca.clone());
        r.cluster = Some(ClusterConfig {
            nodes: cluster.nodes(),
        });
    });
    q.spawn_worker(|_| {});
    let ok = q.job("print over tls");
    let running = q.job("sleep 60000");
    let ids = q.enqueue_all(&[ok, running.clone()]).await;
    q.wait_state(&running.id, Status::Running, 15).await;
    assert_eq!(
        q.producer.cancel(&running.id).await.expect("cancel"),
        CancelOutcome::Requested
    );
    let got: Vec<Status> = q
        .wait_all(&ids, 20)
        .await
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(got, [Status::Succeeded, Status::Cancelled]);
    within(15, "settled", q.assert_settled(&ids)).await;

    let mut stats = q.cli();
    stats
        .env("QUAYSIDE_REDIS__URL", &q.cfg.redis.url)
        .env("QUAYSIDE_REDIS__CLUSTER__NODES", cluster.nodes().join(","))
        .env("QUAYSIDE_REDIS__PASSWORD", PASSWORD)
        .env("QUAYSIDE_REDIS__TLS_CA_FILE", &ca)
        .args(["--json", "stats"]);
    let out = stdout_ok(&run_bounded(stats, 20).await);
    assert!(out.contains(&q.cfg.queue.name), "{out}");
    // Without the CA the nodes' certificates are not trusted: a clear error, not a hang.
    let mut untrusted = q.cli();
    untrusted
        .env("QUAYSIDE_REDIS__URL", &q.cfg.redis.url)
        .env("QUAYSIDE_REDIS__CLUSTER__NODES", cluster.nodes().join(","))
        .env("QUAYSIDE_REDIS__PASSWORD", PASSWORD)
        .args(["stats"]);
    let out = run_bounded(untrusted, 30).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot connect to redis at cluster of"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
