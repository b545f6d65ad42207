//! Workers as a fleet among others, and through outages: fleets that share one Docker engine
//! leave each other's sandboxes alone; a container killed or removed from outside is retried,
//! never judged; an engine that goes away (or is not there yet) costs no attempt and the worker
//! carries on by itself; a removal that failed is retried; outages are told once. Tests that
//! stop, freeze or restart an engine use a private `dockerd` each ([`PrivateDockerd`]), never
//! the shared one.

use std::time::{Duration, Instant};

use quayside_common::config::{default_image, Config};
use quayside_common::{JobId, JobKind, JobSpec, Status};
use quayside_e2e::free_addr;
use quayside_e2e::ops::wait_http;
use quayside_e2e::private_dockerd::PrivateDockerd;
use quayside_e2e::sandboxes::docker;
use quayside_e2e::{private_dir, within, PrivateRedis, TestQueue, WorkerHandle};

/// The python runner image, tagged as `deploy/images/VERSION` says.
fn python_image() -> String {
    default_image("python")
}

fn python(source: &str) -> JobSpec {
    let mut spec = JobSpec::new(
        JobKind::Run,
        "python",
        [("main.py".to_owned(), source.to_owned())].into(),
    );
    spec.limits.run_wall_time_ms = Some(30_000);
    spec
}

/// A real worker that runs only python, on the engine at `socket` (empty: the shared one).
fn docker_worker(c: &mut Config, socket: &str) {
    c.languages.retain(|l, _| l == "python");
    c.runner.docker.socket = socket.to_owned();
    c.runner.sandbox.api_timeout_ms = 2_000;
    c.worker.lease_ms = 10_000;
}

/// A [`docker_worker`] on a private `engine`, with its health endpoint on a free address
/// (returned with the worker).
fn worker_on(
    q: &TestQueue,
    engine: &PrivateDockerd,
    tweak: impl FnOnce(&mut Config),
) -> (WorkerHandle, String) {
    let addr = free_addr();
    let w = q.spawn_real_worker(|c| {
        docker_worker(c, &engine.url());
        c.metrics.listen_addr = addr.clone();
        tweak(c);
    });
    (w, addr)
}

/// Containers of the shared engine with `label`.
fn containers(label: &str) -> Vec<String> {
    quayside_e2e::sandboxes::docker_ps(label)
}

/// Waits until the job's container exists (on the shared engine unless `engine`).
/// Waits (a bounded time) until no container of job `id` is left: removal runs after the
/// verdict, off the job's path.
async fn gone(id: &JobId) {
    let label = format!("quayside.job={id}");
    within(30, &format!("the containers of job {id} removed"), async {
        while !containers(&label).is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

async fn container_of(id: &JobId, engine: Option<&PrivateDockerd>) -> String {
    let label = format!("quayside.job={id}");
    within(60, &format!("container of {id}"), async {
        loop {
            let found = match engine {
                Some(e) => e.containers(&label),
                None => containers(&label),
            };
            if let Some(c) = found.into_iter().next() {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

fn lines_with(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn fleets_sharing_an_engine_and_a_worker_id_spare_each_others_long_jobs() {
    let qa = TestQueue::new("fleet-a");
    let mut other = PrivateRedis::start(&private_dir("twin-redis")).expect("redis");
    // The same queue name on another Redis, and another queue on the same Redis.
    let twin = qa.twin_on(&other.url());
    let qb = TestQueue::new("fleet-b");
    let id = format!("fleet-w0-{}", std::process::id());
    let same_id = |c: &mut Config| {
        docker_worker(c, "");
        c.worker.id = Some(id.clone());
    };
    qa.spawn_real_worker(same_id);
    let long = python("import time\nprint('start', flush=True)\ntime.sleep(6)\nprint('end')\n");
    qa.producer.enqueue(&long).await.expect("enqueue");
    let theirs = container_of(&long.id, None).await;

    // A leftover the twin's worker must remove at start: proof its sweep ran meanwhile.
    let mut conn = twin.conn().await;
    let _: () = redis::cmd("SET")
        .arg(twin.keys.fleet())
        .arg("twin-fleet")
        .query_async(&mut conn)
        .await
        .expect("SET fleet");
    let leftover = format!("fleet-leftover-{}", std::process::id());
    let made = std::process::Command::new("docker")
        .args(["create", "--name", &leftover])
        .args(["--label", &format!("quayside.job={leftover}")])
        .args(["--label", &format!("quayside.worker={id}")])
        .args([
            "--label",
            &format!("quayside.queue={}", twin.cfg.queue.name),
        ])
        .args(["--label", "quayside.fleet=twin-fleet"])
        .args([python_image().as_str(), "true"])
        .output()
        .expect("docker create");
    assert!(made.status.success(), "{made:?}");
    twin.spawn_real_worker(same_id);
    qb.spawn_real_worker(same_id);
    within(60, "the twin's startup sweep", async {
        while !containers(&format!("quayside.job={leftover}")).is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(
        containers(&format!("quayside.job={}", long.id)),
        [theirs],
        "the long job's container outlived both other fleets' sweeps"
    );
    for q in [&twin, &qb] {
        let quick = python("print('hi')\n");
        q.producer.enqueue(&quick).await.expect("enqueue");
        let r = q.wait_one(&quick.id, 120).await;
        assert_eq!(r.status, Status::Succeeded, "{:?}", r.error);
    }
    let r = qa.wait_one(&long.id, 120).await;
    assert_eq!(
        (r.status, r.stdout.data.as_str(), r.attempts),
        (Status::Succeeded, "start\nend\n", 1),
        "{:?}",
        r.error
    );
    other.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_killed_or_removed_from_outside_is_retried_then_succeeds() {
    let q = TestQueue::new("outside-kill");
    q.spawn_real_worker(|c| docker_worker(c, ""));
    for what in [&["kill"][..], &["rm", "-f"][..]] {
        let spec =
            python("import time\nprint('started', flush=True)\ntime.sleep(3)\nprint('done')\n");
        q.producer.enqueue(&spec).await.expect("enqueue");
        let first = container_of(&spec.id, None).await;
        within(60, "the program started", async {
            while q.logged(&spec.id, "stdout").await.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        docker(&[what, &[first.as_str()]].concat());
        let r = q.wait_one(&spec.id, 120).await;
        assert_eq!(
            (r.status, r.stdout.data.as_str()),
            (Status::Succeeded, "started\ndone\n"),
            "docker {what:?}: {:?}",
            r.error
        );
        assert_eq!(r.attempts, 1, "an outside kill spends no attempt");
        let runs = q
            .logged(&spec.id, "stdout")
            .await
            .concat()
            .matches("started")
            .count();
        assert_eq!(runs, 2, "docker {what:?}: ran again after the kill");
        q.assert_settled(std::slice::from_ref(&spec.id)).await;
        gone(&spec.id).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_cancelled_while_running_keeps_what_it_printed() {
    let q = TestQueue::new("cancel-output");
    q.spawn_real_worker(|c| docker_worker(c, ""));
    let spec = python(
        "import sys, time\nprint('step 1', flush=True)\nprint('careful', file=sys.stderr, flush=True)\ntime.sleep(60)\n",
    );
    q.producer.enqueue(&spec).await.expect("enqueue");
    within(60, "the program printed", async {
        while q.logged(&spec.id, "stdout").await.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    q.producer.cancel(&spec.id).await.expect("cancel");
    let r = q.wait_one(&spec.id, 60).await;
    assert_eq!(
        (r.status, r.stdout.data.as_str(), r.stderr.data.as_str()),
        (Status::Cancelled, "step 1\n", "careful\n")
    );
    q.assert_settled(std::slice::from_ref(&spec.id)).await;
    gone(&spec.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_engine_outage_spends_no_attempt_and_the_worker_resumes_by_itself() {
    let mut engine = PrivateDockerd::start(&private_dir("outage-engine")).expect("dockerd");
    engine.load_image(&python_image()).expect("image");
    let q = TestQueue::new("engine-outage");
    let (w, addr) = worker_on(&q, &engine, |c| c.worker.slots = 2);
    wait_http(&addr, "/readyz", 60, "ready", |s, _| s == 200).await;
    let running = python("import time\nprint('up', flush=True)\ntime.sleep(4)\nprint('done')\n");
    q.producer.enqueue(&running).await.expect("enqueue");
    container_of(&running.id, Some(&engine)).await;
    q.wait_state(&running.id, Status::Running, 30).await;

    engine.stop();
    let down_at = Instant::now();
    let queued: Vec<JobSpec> = (0..6).map(|i| python(&format!("print({i})\n"))).collect();
    q.producer.enqueue_many(&queued).await.expect("enqueue");
    let body = wait_http(&addr, "/readyz", 30, "not ready, not claiming", |s, b| {
        s == 503 && b.contains("\"claiming\":false")
    })
    .await;
    assert!(body.contains("runner_down"), "{body}");
    // Down for at least 5 s: nothing may be spent meanwhile.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(down_at.elapsed())).await;
    let mut ids = vec![running.id.clone()];
    ids.extend(queued.iter().map(|s| s.id.clone()));
    for id in &ids {
        let st = q.status(id).await;
        assert!(
            !st.state.is_terminal() && st.attempts <= 1,
            "{id} is {} after {} attempts during the outage",
            st.state,
            st.attempts
        );
    }

    engine.restart().expect("engine back");
    let results = q.wait_all(&ids, 180).await;
    for r in &results {
        assert_eq!(
            (r.status, r.attempts),
            (Status::Succeeded, 1),
            "{:?}",
            r.error
        );
    }
    assert_eq!(
        results[0].stdout.data, "up\ndone\n",
        "the interrupted job ran again"
    );
    wait_http(&addr, "/readyz", 30, "ready again", |s, _| s == 200).await;
    q.assert_settled(&ids).await;
    // The container of the attempt the outage interrupted outlives the engine's restart; the
    // worker's removal retries (every 5 s) take it away.
    within(30, "nothing left", async {
        while !engine.containers("quayside.job").is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;

    let log = q.worker_log(&w.id);
    assert_eq!(lines_with(&log, "the docker runner is down"), 1, "{log}");
    assert_eq!(
        lines_with(&log, "the docker runner is back after"),
        1,
        "{log}"
    );
    assert_eq!(lines_with(&log, "cannot claim"), 0, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_started_while_the_engine_is_down_waits_then_serves() {
    let mut engine = PrivateDockerd::not_started(&private_dir("late-engine")).expect("dir");
    let q = TestQueue::new("late-engine");
    let (w, addr) = worker_on(&q, &engine, |_| {});
    let body = wait_http(&addr, "/readyz", 30, "up, not ready", |s, _| s == 503).await;
    assert!(body.contains("\"claiming\":false"), "{body}");
    let spec = python("print('served')\n");
    q.producer.enqueue(&spec).await.expect("enqueue");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = q.status(&spec.id).await;
    assert_eq!(
        (st.state, st.attempts),
        (Status::Queued, 0),
        "not claimed yet"
    );
    assert!(
        std::path::Path::new(&format!("/proc/{}", w.pid)).exists(),
        "the worker waits instead of exiting"
    );

    engine.restart().expect("engine starts");
    engine.load_image(&python_image()).expect("image");
    let r = q.wait_one(&spec.id, 120).await;
    assert_eq!(
        (r.status, r.stdout.data.as_str(), r.attempts),
        (Status::Succeeded, "served\n", 1)
    );
    wait_http(&addr, "/readyz", 30, "ready", |s, _| s == 200).await;
    let log = q.worker_log(&w.id);
    assert_eq!(lines_with(&log, "the docker runner is down"), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removal_that_failed_is_retried_until_it_succeeds() {
    use quayside_common::config::{default_languages, RunnerConfig};
    use quayside_worker::runner::docker::DockerRunner;
    use quayside_worker::runner::{Fleet, Output, RunRequest, Runner};
    use tokio_util::sync::CancellationToken;

    let engine = PrivateDockerd::start(&private_dir("frozen-engine")).expect("dockerd");
    engine.load_image(&python_image()).expect("image");
    let mut cfg = RunnerConfig::default();
    cfg.docker.socket = engine.url();
    // Short, so calls to the frozen engine fail fast; not so short that a create on a loaded
    // machine times out before the freeze (seen once at 1 s).
    cfg.sandbox.api_timeout_ms = 3_000;
    let languages = default_languages();
    let runner = DockerRunner::new(cfg, &languages, "frozen-w1");
    let req = RunRequest {
        job_id: JobId::generate(),
        attempt: 1,
        kind: JobKind::Run,
        language: "python".into(),
        language_config: languages["python"].clone(),
        files: [(
            "main.py".to_owned(),
            "import time\nprint('up', flush=True)\ntime.sleep(30)\n".to_owned(),
        )]
        .into(),
        compiler_options: vec![],
        args: vec![],
        stdin: String::new(),
        limits: quayside_common::Limits::DEFAULT,
        fleet: Fleet {
            queue: "frozen".into(),
            id: "frozen-fleet".into(),
        },
        tests: None,
    };
    let cancel = CancellationToken::new();
    let output = Output::discard();
    let run = runner.run(&req, &output, cancel.clone());
    let label = format!("quayside.job={}", req.job_id);
    let freeze_then_cancel = async {
        within(60, "container up", async {
            while engine.containers(&label).is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        engine.freeze(true);
        cancel.cancel();
    };
    let (out, ()) = within(60, "cancelled run", async {
        tokio::join!(run, freeze_then_cancel)
    })
    .await;
    let out = out.expect("cancelled with its output");
    assert_eq!(
        (out.status, out.stdout.data.as_str()),
        (Status::Cancelled, "up\n")
    );
    assert_eq!(
        within(30, "retry while frozen", runner.retry_removals()).await,
        1,
        "the engine does not answer: still to remove"
    );
    engine.freeze(false);
    assert_eq!(within(30, "retry", runner.retry_removals()).await, 0);
    within(30, "removed at last", async {
        // The engine may still be working through the removal it was asked for while frozen.
        while !engine.containers(&label).is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_redis_outage_is_told_once_with_its_length() {
    let mut redis = PrivateRedis::start(&private_dir("outage-redis")).expect("redis");
    let q = TestQueue::on("redis-outage", &redis.url());
    let w = q.spawn_worker(|c| c.worker.slots = 4);
    let before = q.job("print before");
    q.producer.enqueue(&before).await.expect("enqueue");
    q.wait_one(&before.id, 30).await;

    redis.kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    redis.restart().expect("redis back");
    let after = q.job("print after");
    within(30, "enqueue after the outage", async {
        while q.producer.enqueue(&after).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    q.wait_one(&after.id, 30).await;

    let log = q.worker_log(&w.id);
    assert_eq!(lines_with(&log, "redis is down"), 1, "{log}");
    assert_eq!(lines_with(&log, "redis is back after"), 1, "{log}");
    let warnings = lines_with(&log, "WARN");
    assert!(warnings <= 2, "{warnings} warnings for one outage:\n{log}");
}

#[tokio::test]
async fn renewals_racing_finishes_raise_no_alarm_and_stats_never_show_finished_jobs() {
    let q = TestQueue::new("no-false-alarm");
    // Renewals every 150 ms against jobs that finish every few ms.
    let w = q.spawn_worker(|c| {
        c.worker.lease_ms = 450;
        c.worker.claim_block_ms = 100;
        c.worker.slots = 8;
    });
    let specs: Vec<JobSpec> = (0..300)
        .map(|i| q.job(&format!("sleep {}", i % 4 * 20)))
        .collect();
    let ids = q.enqueue_all(&specs).await;
    q.wait_all(&ids, 60).await;
    let log = q.worker_log(&w.id);
    assert_eq!(lines_with(&log, "lease lost"), 0, "{log}");
    // Right after the last result: the registry must not count any job in flight.
    let mut conn = q.conn().await;
    let doc: String = redis::cmd("HGET")
        .arg(q.keys.workers())
        .arg(&w.id)
        .query_async(&mut conn)
        .await
        .expect("heartbeat");
    let doc: serde_json::Value = serde_json::from_str(&doc).expect("json");
    assert_eq!(doc["in_flight"], 0, "{doc}");
}
