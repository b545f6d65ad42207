//! Admission through each of the three doors, for every way a job could otherwise fail as an
//! infrastructure error (retried, dead-lettered as `attempts_exhausted`, blamed on the
//! runner): limits under what an engine or runtime can run, NUL bytes in argument lists,
//! oversized lists, a file that is also a folder, deep folder chains, long paths, labels, and
//! the same for test cases (`tests[i].<field>`, `compare`, `stdin` beside `tests`).
//!
//! - the producer library (and the CLI on top of it) refuses before sending, naming the field;
//! - the HTTP gateway answers `422` naming the field;
//! - a real Docker worker, given the same specs by a raw `XADD`, ends each `rejected` with the
//!   field named, after one attempt, dead-lettered as `invalid_spec`, without creating a
//!   container (watched live on the engine's event stream), and keeps serving.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::query_parameters::EventsOptions;
use bollard::Docker;
use futures_util::StreamExt as _;
use quayside_common::cases::{Compare, TestCase};
use quayside_common::config::default_languages;
use quayside_common::{JobId, JobKind, JobSpec, Status};
use quayside_e2e::{within, TestQueue};
use quayside_producer::Error;
use tokio_util::task::AbortOnDropHandle;

/// A job that would run fine, changed by `f`.
fn job(f: impl FnOnce(&mut JobSpec)) -> JobSpec {
    let mut spec = JobSpec::new(
        JobKind::Run,
        "c",
        BTreeMap::from([(
            "main.c".to_owned(),
            "#include <stdio.h>\nint main(void) { puts(\"ran\"); return 0; }\n".to_owned(),
        )]),
    );
    f(&mut spec);
    spec
}

/// A job with one test case that would be judged fine, changed by `f`.
fn with_test(f: impl FnOnce(&mut JobSpec)) -> JobSpec {
    job(|s| {
        s.tests = Some(vec![TestCase {
            name: "01".into(),
            stdin: String::new(),
            args: None,
            expected_stdout: Some("ran\n".into()),
            limits: Default::default(),
        }]);
        f(s);
    })
}

fn first_test(s: &mut JobSpec) -> &mut TestCase {
    &mut s.tests.as_mut().expect("tests")[0]
}

/// Every case: the spec, and the field its refusal must name.
fn cases() -> Vec<(JobSpec, String)> {
    let deep = format!("{}main.c", "d/".repeat(17));
    let long = format!("{}/{}.c", "x".repeat(200), "y".repeat(60));
    vec![
        (
            job(|s| s.limits.memory_bytes = Some(1)),
            "limits.memory_bytes".into(),
        ),
        (
            job(|s| s.limits.cpu_millicores = Some(1)),
            "limits.cpu_millicores".into(),
        ),
        (job(|s| s.limits.pids = Some(1)), "limits.pids".into()),
        (
            job(|s| s.limits.compile_wall_time_ms = Some(1)),
            "limits.compile_wall_time_ms".into(),
        ),
        (
            job(|s| s.limits.output_bytes = Some(1)),
            "limits.output_bytes".into(),
        ),
        (
            job(|s| s.args = vec!["ok".into(), "a\0b".into()]),
            "args[1]".into(),
        ),
        (
            job(|s| s.compiler_options = vec!["-O2\0".into()]),
            "compiler_options[0]".into(),
        ),
        (job(|s| s.args = vec!["a".into(); 257]), "args".into()),
        (job(|s| s.args = vec!["x".repeat(70_000)]), "args".into()),
        (
            job(|s| s.compiler_options = vec!["-Wall".into(); 65]),
            "compiler_options".into(),
        ),
        (
            job(|s| {
                s.files.insert("main.c/b.h".into(), String::new());
            }),
            "files[\"main.c/b.h\"]".into(),
        ),
        (
            job(|s| s.files = BTreeMap::from([(deep.clone(), "int main(){}".into())])),
            format!("files[{deep:?}]"),
        ),
        (
            job(|s| s.files = BTreeMap::from([(long.clone(), "int main(){}".into())])),
            format!("files[{long:?}]"),
        ),
        (
            job(|s| s.labels = (0..65).map(|i| (i.to_string(), String::new())).collect()),
            "labels".into(),
        ),
        (
            job(|s| s.labels = BTreeMap::from([("k".into(), "v".repeat(1024))])),
            "labels[\"k\"]".into(),
        ),
        (
            with_test(|s| first_test(s).limits.memory_bytes = Some(1)),
            "tests[0].limits.memory_bytes".into(),
        ),
        (
            with_test(|s| first_test(s).args = Some(vec!["a\0b".into()])),
            "tests[0].args[0]".into(),
        ),
        (
            with_test(|s| {
                let again = first_test(s).clone();
                s.tests.as_mut().expect("tests").push(again);
            }),
            "tests[1].name".into(),
        ),
        (
            with_test(|s| {
                let one = first_test(s).clone();
                s.tests = Some(
                    (0..1001)
                        .map(|i| TestCase {
                            name: format!("t{i}"),
                            ..one.clone()
                        })
                        .collect(),
                );
            }),
            "tests".into(),
        ),
        (with_test(|s| s.stdin = "1\n".into()), "stdin".into()),
        (job(|s| s.compare = Some(Compare::Tokens)), "compare".into()),
    ]
}

/// 20 MB of args (the issue's: a 40 MB container config on the engine's disk, a 54 MB record in
/// Redis).
fn twenty_megabytes_of_args() -> JobSpec {
    job(|s| s.args = vec!["x".repeat(1 << 10); 20 << 10])
}

#[tokio::test(flavor = "multi_thread")]
async fn the_producer_and_the_cli_refuse_before_sending_naming_the_field() {
    let q = TestQueue::new("admit-producer");
    let mut all = cases();
    all.push((twenty_megabytes_of_args(), "args".into()));
    for (spec, field) in &all {
        let err = within(10, "enqueue", q.producer.enqueue(spec))
            .await
            .expect_err(field);
        assert!(
            matches!(&err, Error::Invalid(e) if e.to_string().starts_with(&format!("{field}: "))),
            "{field}: {err}"
        );
    }
    assert_eq!(q.queued().await, 0, "nothing reached the queue");

    let path = q.path("floor.json");
    std::fs::write(&path, serde_json::to_vec(&all[0].0).expect("json")).expect("write");
    let out = q
        .cli()
        .args(["submit", "--spec", &path])
        .output()
        .expect("run quayside");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with(
            "quayside: invalid job: limits.memory_bytes: 1 is below the configured minimum"
        ),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_answers_422_naming_the_field() {
    let q = TestQueue::new("admit-gateway");
    // A body limit above 20 MB, so the 20 MB of args reach admission (below it the gateway
    // answers 413 before reading the body, naming gateway.max_body_bytes).
    let gw = q
        .spawn_gateway(|c| {
            c.languages = default_languages();
            c.gateway.max_body_bytes = 32 << 20;
        })
        .await;
    let mut all = cases();
    all.push((twenty_megabytes_of_args(), "args".into()));
    for (spec, field) in all {
        let body = serde_json::to_value(&spec).expect("json");
        let reply = gw.post_json("/v1/jobs", &body).await;
        assert_eq!(reply.status, 422, "{field}: {}", reply.text());
        let json = reply.json();
        assert_eq!(json["field"], field.as_str(), "{json}");
        assert_eq!(json["error"], "invalid_spec", "{json}");
    }
    assert_eq!(q.queued().await, 0, "nothing reached the queue");
}

/// Every container the engine creates from now on, by its `quayside.job` label, until dropped.
/// A live subscription: the engine keeps only its last few hundred events for later queries,
/// which a busy engine (the rest of the suite) overwrites in seconds.
struct Creations {
    seen: Arc<Mutex<Vec<String>>>,
    _task: AbortOnDropHandle<()>,
}

impl Creations {
    async fn watch() -> Self {
        let docker = within(10, "docker", async {
            Docker::connect_with_local_defaults()
                .expect("docker client")
                .negotiate_version()
                .await
                .expect("docker engine")
        })
        .await;
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("event".to_owned(), vec!["create".to_owned()]),
            ("label".to_owned(), vec!["quayside.job".to_owned()]),
        ]);
        // From a second ago: what happens while the subscription is set up is replayed.
        let since = (quayside_common::now_ms() / 1000).saturating_sub(1);
        let mut events = docker.events(Some(EventsOptions {
            since: Some(since.to_string()),
            filters: Some(filters),
            ..Default::default()
        }));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Some(Ok(event)) = events.next().await {
                let attributes = event.actor.and_then(|a| a.attributes).unwrap_or_default();
                if let Some(job) = attributes.get("quayside.job") {
                    sink.lock().expect("lock").push(job.clone());
                }
            }
        });
        Self {
            seen,
            _task: AbortOnDropHandle::new(task),
        }
    }

    fn of(&self, jobs: &[JobId]) -> Vec<String> {
        let seen = self.seen.lock().expect("lock");
        seen.iter()
            .filter(|j| jobs.iter().any(|id| id.as_str() == *j))
            .cloned()
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_rejects_what_a_raw_producer_sends_without_a_retry_or_a_container() {
    let q = TestQueue::new("admit-worker");
    let created = Creations::watch().await;
    q.spawn_real_worker(|_| {});
    let mut all = cases();
    all.push((twenty_megabytes_of_args(), "args".into()));
    // Only a Docker worker knows this one: the names, quoted into its wrapper script, make an
    // argument longer than the kernel's 128 KiB. Producer and gateway cannot tell.
    all.push((
        job(|s| {
            s.files = (0..200)
                .map(|i| (format!("{i:03}{}.c", "'".repeat(240)), "int x;".to_owned()))
                .collect();
        }),
        "files".into(),
    ));
    for (spec, _) in &all {
        q.raw_enqueue(spec).await;
    }
    let ids: Vec<_> = all.iter().map(|(s, _)| s.id.clone()).collect();
    // A raw entry has no record until a worker claims it: wait for the state first.
    for id in &ids {
        q.wait_state(id, Status::Rejected, 120).await;
    }
    let results = q.wait_all(&ids, 10).await;
    for ((_, field), r) in all.iter().zip(&results) {
        let error = r.error.as_deref().unwrap_or_default();
        assert_eq!(r.status, Status::Rejected, "{field}: {error}");
        assert!(error.contains(&format!("{field}: ")), "{field}: {error}");
        assert_eq!(r.attempts, 1, "{field}: never retried");
    }
    let letters = q.producer.dlq_list(100).await.expect("dlq");
    for id in &ids {
        let letter = letters.iter().find(|l| l.job_id == id.as_str());
        assert_eq!(
            letter.map(|l| l.reason.as_str()),
            Some("invalid_spec"),
            "{id}: dead-lettered as the job's own fault, not attempts_exhausted"
        );
    }

    // Still serving; no container was ever created for a refused job. The job that runs
    // takes the cold path (limits other than the language's defaults, so no warm container),
    // whose create event proves the watch sees creations at all.
    let hello = job(|s| s.limits.run_wall_time_ms = Some(4_321));
    q.producer.enqueue(&hello).await.expect("enqueue");
    let r = q.wait_one(&hello.id, 120).await;
    assert_eq!(
        (r.status, r.stdout.data.as_str()),
        (Status::Succeeded, "ran\n"),
        "{:?}",
        r.error
    );
    assert_eq!(
        created.of(&ids),
        Vec::<String>::new(),
        "no container for a refused job"
    );
    let ran = std::slice::from_ref(&hello.id);
    within(10, "the create event of the job that ran", async {
        while created.of(ran).is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let mut settled = ids.clone();
    settled.push(hello.id.clone());
    q.assert_settled(&settled).await;
}
