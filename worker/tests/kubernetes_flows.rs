//! The Kubernetes runner's flows against a scripted API server ([`fake_api`]), with this test
//! playing the Job controller and the kubelet. Every wait is under a timeout.
//!
//! What this proves: the requests the runner makes and their order, how it reads pod status
//! (exit code, OOMKilled, deadline, unschedulable, image errors), how API failures map to
//! `RunnerError` kinds, that output is split and capped, and that the Job and ConfigMap are
//! gone after every flow, cancellation and worker restart included. What it cannot prove: that
//! a real API server, scheduler, kubelet and container runtime behave as scripted here (see
//! `deploy/k8s/README.md`).

mod fake_api;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use fake_api::{running, terminated, waiting, Access, FakeApi, Fault};
use quayside_common::config::{default_languages, KubernetesConfig, RunnerConfig};
use quayside_common::{JobId, Status};
use quayside_worker::runner::kubernetes::KubernetesRunner;
use quayside_worker::runner::{
    Fleet, Guarded, Output, RunOutput, RunRequest, Runner, RunnerError, RunnerErrorKind,
};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// One scripted step: generous for a loaded CI machine, short enough that a hang fails fast.
const STEP: Duration = Duration::from_secs(5);

async fn step<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

fn config() -> RunnerConfig {
    with(KubernetesConfig {
        pending_timeout_ms: 300,
        ..Default::default()
    })
}

/// The runner settings with `kubernetes` as the backend's own and the shared defaults.
fn with(kubernetes: KubernetesConfig) -> RunnerConfig {
    RunnerConfig {
        kubernetes,
        ..RunnerConfig::default()
    }
}

fn runner(fake: &FakeApi, worker: &str) -> Guarded<KubernetesRunner> {
    Guarded::new(KubernetesRunner::with_client(
        config(),
        fake.client(),
        worker,
    ))
}

fn request() -> RunRequest {
    fake_api::request(JobId::parse("job:1").expect("id"), fleet())
}

/// The fleet every flow here runs in.
fn fleet() -> Fleet {
    Fleet {
        queue: "qa".into(),
        id: "f1".into(),
    }
}

/// Waits for the attempt's Job, starts its pod and returns (job, pod).
async fn start_pod(fake: &FakeApi) -> (String, String) {
    step("job created and its pod started", fake.start_pod()).await
}

/// Plays a pod that prints and exits with `code` (`reason` e.g. OOMKilled).
async fn kubelet(fake: FakeApi, stdout: &str, stderr: &str, code: i64, reason: Option<&str>) {
    let (job, pod) = start_pod(&fake).await;
    let (nonce, end) = fake.nonces(&job);
    let log = format!("compiling\n{nonce}:0\n{stdout}{end}:{code}\n{stderr}");
    fake.set_log(&pod, log.into_bytes(), false);
    fake.set_pod_status(&pod, running());
    fake.set_pod_status(&pod, terminated(code, reason));
}

async fn run_with(
    fake: &FakeApi,
    req: &RunRequest,
    cancel: CancellationToken,
) -> Result<RunOutput, RunnerError> {
    let r = runner(fake, "w1");
    let out = step("runner returns", r.run(req, &Output::discard(), cancel)).await;
    step("job, configmap and pod removed", async {
        fake.gone("jobs").await;
        fake.gone("configmaps").await;
        fake.gone("pods").await;
    })
    .await;
    out
}

async fn play(
    fake: &FakeApi,
    script: impl Future<Output = ()> + Send + 'static,
) -> Result<RunOutput, RunnerError> {
    let kube = tokio::spawn(script);
    let out = run_with(fake, &request(), CancellationToken::new()).await;
    step("kubelet script ends", kube).await.expect("script");
    out
}

/// What the runner reports of a pod that printed `stdout` and `stderr` and ended with `code`
/// (and the kubelet's `reason`).
async fn ended(
    fake: &FakeApi,
    stdout: &'static str,
    stderr: &'static str,
    code: i64,
    reason: Option<&'static str>,
) -> RunOutput {
    let kubelet = kubelet(fake.clone(), stdout, stderr, code, reason);
    play(fake, kubelet).await.expect("ran")
}

pub async fn success(fake: &FakeApi) {
    let out = ended(fake, "hello\n", "careful\n", 0, None).await;
    assert_eq!((out.status, out.exit_code), (Status::Succeeded, Some(0)));
    assert_eq!(out.stdout.data, "hello\n");
    assert_eq!(out.stderr.data, "careful\n");
    assert_eq!(out.compile_output.data, "compiling\n");
}

#[tokio::test]
async fn success_with_logs_then_cleanup() {
    success(&FakeApi::new()).await;
}

#[tokio::test]
async fn non_zero_exit_is_the_programs_result() {
    let fake = FakeApi::new();
    let out = ended(&fake, "", "boom\n", 3, Some("Error")).await;
    assert_eq!((out.status, out.exit_code), (Status::Failed, Some(3)));
}

#[tokio::test]
async fn oom_killed_is_memory_exceeded() {
    let fake = FakeApi::new();
    let out = ended(&fake, "", "", 137, Some("OOMKilled")).await;
    assert_eq!(out.status, Status::MemoryExceeded);
}

#[tokio::test]
async fn pod_deadline_exceeded_is_timed_out() {
    let fake = FakeApi::new();
    let f = fake.clone();
    let out = play(&fake, async move {
        let (_, pod) = start_pod(&f).await;
        f.set_pod_status(
            &pod,
            json!({"phase": "Failed", "reason": "DeadlineExceeded"}),
        );
    })
    .await
    .expect("ran");
    assert_eq!(out.status, Status::TimedOut);
}

pub async fn wall_time(fake: &FakeApi) {
    let f = fake.clone();
    let mut req = request();
    req.limits.run_wall_time_ms = 200;
    let kube = tokio::spawn(async move {
        let (job, pod) = start_pod(&f).await;
        let (nonce, _) = f.nonces(&job);
        // Built, then the program runs forever: the log stays open.
        f.set_log(&pod, format!("{nonce}:0\nstill going\n").into_bytes(), true);
        f.set_pod_status(&pod, running());
    });
    let out = run_with(fake, &req, CancellationToken::new())
        .await
        .expect("ran");
    step("script", kube).await.expect("script");
    assert_eq!(out.status, Status::TimedOut);
    assert_eq!(out.stdout.data, "still going\n");
}

#[tokio::test]
async fn run_wall_time_is_enforced_by_the_worker() {
    wall_time(&FakeApi::new()).await;
}

#[tokio::test]
async fn output_over_the_cap_stops_the_pod() {
    let fake = FakeApi::new();
    let f = fake.clone();
    let mut req = request();
    req.limits.output_bytes = 8;
    let kube = tokio::spawn(async move {
        let (job, pod) = start_pod(&f).await;
        let (nonce, _) = f.nonces(&job);
        f.set_log(
            &pod,
            format!("{nonce}:0\n{}", "0123456789".repeat(10)).into_bytes(),
            true,
        );
        f.set_pod_status(&pod, running());
    });
    let out = run_with(&fake, &req, CancellationToken::new())
        .await
        .expect("ran");
    step("script", kube).await.expect("script");
    assert_eq!(out.status, Status::OutputExceeded);
    assert_eq!(
        (out.stdout.data.as_str(), out.stdout.truncated),
        ("01234567", true)
    );
}

#[tokio::test]
async fn unschedulable_pod_is_a_transient_infrastructure_error() {
    let fake = FakeApi::new();
    let f = fake.clone();
    let err = play(&fake, async move {
        let (_, pod) = start_pod(&f).await;
        f.set_pod_status(
            &pod,
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
            "status": "False", "reason": "Unschedulable"}]}),
        );
    })
    .await
    .expect_err("not run");
    assert_eq!(err.kind(), RunnerErrorKind::Transient);
    assert!(err.to_string().contains("unschedulable"), "{err}");
}

#[tokio::test]
async fn image_pull_errors_are_image_missing() {
    for reason in ["ImagePullBackOff", "InvalidImageName"] {
        let fake = FakeApi::new();
        let f = fake.clone();
        let err = play(&fake, async move {
            let (_, pod) = start_pod(&f).await;
            f.set_pod_status(&pod, waiting(reason));
        })
        .await
        .expect_err("not run");
        assert!(
            matches!(err, RunnerError::ImageMissing { .. }),
            "{reason}: {err}"
        );
        assert_eq!(err.kind(), RunnerErrorKind::Transient);
    }
}

#[tokio::test]
async fn pods_run_under_quaysides_seccomp_profile_and_a_node_without_it_says_how_to_fix_it() {
    let fake = FakeApi::new();
    let f = fake.clone();
    let err = play(&fake, async move {
        let (job, pod) = start_pod(&f).await;
        let created = f.get("jobs", &job).expect("job");
        let pod_spec = &created["spec"]["template"]["spec"];
        let uid = pod_spec["securityContext"]["runAsUser"]
            .as_i64()
            .expect("uid");
        assert!(
            (10001..10001 + (1 << 20)).contains(&uid),
            "a uid of the attempt's own: {uid}"
        );
        for profile in [
            &pod_spec["securityContext"]["seccompProfile"],
            &pod_spec["containers"][0]["securityContext"]["seccompProfile"],
        ] {
            assert_eq!(
                profile,
                &json!({"type": "Localhost", "localhostProfile": "quayside.json"})
            );
        }
        // What containerd reports when the profile file is missing on the node.
        f.set_pod_status(
            &pod,
            json!({"phase": "Pending", "containerStatuses": [{"name": "job", "image": "i",
                "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {
                "reason": "CreateContainerError", "message": "failed to create containerd \
                container: cannot load seccomp profile \"/var/lib/kubelet/seccomp/quayside.json\": \
                open /var/lib/kubelet/seccomp/quayside.json: no such file or directory"}}}]}),
        );
    })
    .await
    .expect_err("cannot start");
    assert_eq!(
        err.kind(),
        RunnerErrorKind::Transient,
        "the node can be fixed"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("seccomp profile is not on the node")
            && msg.contains("deploy/k8s/README.md")
            && msg.contains("runner.sandbox.seccomp = \"runtime_default\""),
        "{msg}"
    );
}

#[tokio::test]
async fn jobs_no_config_map_can_carry_are_refused_before_any_request() {
    let fake = FakeApi::new();
    let r = runner(&fake, "w1");
    r.admit(&request()).expect("a small job fits");
    let mut req = request();
    req.files.insert("data.py".into(), "x".repeat(1 << 20));
    let err = r.admit(&req).expect_err("over the 1 MiB a ConfigMap holds");
    assert!(err.to_string().starts_with("files: "), "{err}");
    let mut req = request();
    req.args = vec!["ok".into(), "x".repeat(200 << 10)];
    let err = r
        .admit(&req)
        .expect_err("over the kernel's 128 KiB per argument");
    assert!(err.to_string().starts_with("args[1]: "), "{err}");

    // Tests ride in the ConfigMap: their inputs count, and name `tests` when they are most of it.
    use quayside_common::cases::{Checker, Compare, TestCase};
    use quayside_worker::runner::sandbox::tests_mode::{PlannedChecker, TestPlan};
    let cases: Vec<TestCase> = (0..3)
        .map(|i| TestCase {
            name: format!("t{i}"),
            stdin: "x".repeat(400 << 10),
            args: None,
            expected_stdout: None,
            limits: Default::default(),
        })
        .collect();
    let plan = |cases: &[TestCase]| {
        TestPlan::new(
            cases,
            &req.limits,
            &[],
            Compare::Lines,
            false,
            4096,
            1 << 20,
        )
    };
    let mut req = request();
    req.tests = Some(std::sync::Arc::new(plan(&cases[..1])));
    r.admit(&req).expect("one 400 KiB input fits");
    req.tests = Some(std::sync::Arc::new(plan(&cases)));
    let err = r.admit(&req).expect_err("three do not");
    assert!(err.to_string().starts_with("tests: "), "{err}");
    // A checker would need each answer sent after its test: refused, naming it.
    let checker = Checker {
        language: "python".into(),
        files: [("check.py".into(), "exit(0)".into())].into(),
        compiler_options: Vec::new(),
    };
    let planned = PlannedChecker {
        files: checker.files.clone(),
        build: String::new(),
        run: "python3 check.py \"$@\"".into(),
    };
    req.tests = Some(std::sync::Arc::new(
        plan(&cases[..1]).with_checker(Some(planned)),
    ));
    let err = r.admit(&req).expect_err("no checker on Kubernetes yet");
    assert!(err.to_string().starts_with("checker: "), "{err}");
    assert!(fake.accesses().is_empty(), "refused before any API request");
}

#[tokio::test]
async fn api_errors_map_to_runner_error_kinds_and_leave_nothing() {
    use RunnerErrorKind::*;
    let cases = [
        ("create", "jobs", Fault::Status(403), Transient),
        ("create", "jobs", Fault::Status(409), Transient),
        ("create", "configmaps", Fault::Status(500), Transient),
        ("create", "configmaps", Fault::Status(503), Transient),
        ("create", "configmaps", Fault::Status(422), Permanent),
        ("patch", "configmaps", Fault::Status(500), Transient),
        ("create", "configmaps", Fault::Refused, Transient),
    ];
    for (verb, resource, fault, kind) in cases {
        let fake = FakeApi::new();
        fake.fail_next(verb, resource, fault.clone());
        let f = fake.clone();
        let kube = tokio::spawn(async move {
            // Only some faults get this far; a started pod must be cleaned up too.
            if let Ok(job) =
                tokio::time::timeout(Duration::from_millis(200), f.created("jobs")).await
            {
                if f.get("jobs", &job).is_some() {
                    f.create_pod(&job);
                }
            }
        });
        let err = run_with(&fake, &request(), CancellationToken::new())
            .await
            .expect_err("failed");
        step("script", kube).await.expect("script");
        assert_eq!(err.kind(), kind, "{verb} {resource} {fault:?}: {err:#}");
        if matches!(fault, Fault::Refused) {
            assert!(matches!(err, RunnerError::Unavailable { .. }), "{err}");
        }
    }
}

#[tokio::test]
async fn one_broken_watch_is_resumed_but_a_forbidden_one_fails() {
    let fake = FakeApi::new();
    fake.fail_next("watch", "pods", Fault::Status(500));
    success(&fake).await;

    let fake = FakeApi::new();
    for _ in 0..3 {
        fake.fail_next("list", "pods", Fault::Status(403));
    }
    let cfg = with(KubernetesConfig {
        pending_timeout_ms: 60_000,
        ..Default::default()
    });
    let runner = Guarded::new(KubernetesRunner::with_client(cfg, fake.client(), "w1"));
    let err = step(
        "gives up after errors in a row",
        runner.run(&request(), &Output::discard(), CancellationToken::new()),
    )
    .await
    .expect_err("cannot follow the pod");
    step("cleaned up", fake.gone("jobs")).await;
    assert_eq!(err.kind(), RunnerErrorKind::Transient);
    assert!(err.to_string().contains("cannot watch"), "{err}");
}

pub async fn cancel_mid_run(fake: &FakeApi) {
    let f = fake.clone();
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let kube = tokio::spawn(async move {
        let (job, pod) = start_pod(&f).await;
        let (nonce, _) = f.nonces(&job);
        f.set_log(
            &pod,
            format!("building\n{nonce}:0\nstep 1\n").into_bytes(),
            true,
        );
        f.set_pod_status(&pod, running());
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.cancel();
    });
    let out = run_with(fake, &request(), cancel)
        .await
        .expect("cancelled with the output so far");
    step("script", kube).await.expect("script");
    assert_eq!(out.status, Status::Cancelled);
    assert_eq!(
        out.stdout.data, "step 1\n",
        "what it printed before the cancel"
    );
    assert_eq!(out.compile_output.data, "building\n");
}

#[tokio::test]
async fn cancel_mid_run_deletes_the_job() {
    cancel_mid_run(&FakeApi::new()).await;
}

/// Objects a worker left, labelled as the runner labels them (`deadline`: unix seconds).
fn leftover(fake: &FakeApi, name: &str, worker: &str, fleet_id: &str, deadline: i64) {
    let meta = json!({"name": name, "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {
        "app.kubernetes.io/managed-by": "quayside-worker", "quayside.worker": worker,
        "quayside.sandbox": name, "quayside.queue": "qa", "quayside.fleet": fleet_id,
        "quayside.job": "j", "quayside.deadline": deadline.to_string()}});
    fake.insert(
        "jobs",
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta}),
    );
    fake.insert(
        "configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}),
    );
}

pub async fn restart_sweeps(fake: &FakeApi) {
    let far = 4_000_000_000;
    leftover(fake, "quayside-a1-old", "w1", "f1", far);
    leftover(fake, "quayside-a1-dead", "w9", "f1", far);
    leftover(fake, "quayside-a1-live", "w2", "f1", far);
    leftover(fake, "quayside-a1-other-fleet", "w9", "f2", far);
    leftover(fake, "quayside-a1-expired", "w8", "f2", 1_000);
    let restarted = runner(fake, "w1");
    step("check", restarted.check()).await.expect("check");
    let removed = step(
        "orphan sweep",
        restarted.sweep_orphans(&fleet(), &["w2".to_owned()]),
    )
    .await
    .expect("sweep");
    assert_eq!(removed, 3);
    assert_eq!(
        fake.names("jobs"),
        ["quayside-a1-live", "quayside-a1-other-fleet"],
        "a live worker's job is kept, and so is another fleet's"
    );
    assert_eq!(
        fake.names("configmaps"),
        ["quayside-a1-live", "quayside-a1-other-fleet"]
    );
}

#[tokio::test]
async fn the_sweep_removes_only_the_fleets_orphans_and_what_is_long_expired() {
    restart_sweeps(&FakeApi::new()).await;
}

#[tokio::test]
async fn a_pod_deleted_from_outside_is_an_infrastructure_failure_not_a_verdict() {
    let fake = FakeApi::new();
    let f = fake.clone();
    let err = play(&fake, async move {
        let (job, pod) = start_pod(&f).await;
        let (nonce, _) = f.nonces(&job);
        f.set_log(&pod, format!("{nonce}:0\nworking\n").into_bytes(), false);
        f.set_pod_status(&pod, running());
        // `kubectl delete pod`: a deletion timestamp, then the kubelet's kill.
        f.mark_deleting(&pod);
        f.set_pod_status(&pod, terminated(137, Some("Error")));
    })
    .await
    .expect_err("not the program's verdict");
    assert!(matches!(err, RunnerError::Interrupted { .. }), "{err}");
    assert_eq!(err.kind(), RunnerErrorKind::Transient);

    // The same exit status without a deletion is the program's own SIGKILL.
    let fake = FakeApi::new();
    let out = ended(&fake, "", "", 137, Some("Error")).await;
    assert_eq!(
        (out.status, out.exit_code, out.signal),
        (Status::Failed, Some(137), Some(9))
    );
}

#[tokio::test]
async fn a_failed_deletion_is_retried_until_it_succeeds() {
    let fake = FakeApi::new();
    fake.fail_next("delete", "jobs", Fault::Status(503));
    let r = runner(&fake, "w1");
    let kube = tokio::spawn(kubelet(fake.clone(), "hi\n", "", 0, None));
    let out = step(
        "runner returns",
        r.run(&request(), &Output::discard(), CancellationToken::new()),
    )
    .await
    .expect("ran");
    step("kubelet script ends", kube).await.expect("script");
    assert_eq!(out.status, Status::Succeeded);
    assert_eq!(fake.names("jobs").len(), 1, "the deletion failed");
    assert_eq!(step("retry", r.retry_removals()).await, 0, "nothing left");
    step("job removed", fake.gone("jobs")).await;
    step("configmap removed", fake.gone("configmaps")).await;
    assert_eq!(step("retry again", r.retry_removals()).await, 0);
}

/// What the Role in `deploy/k8s/base/role.yaml` grants, as (verb, group, resource) triples.
fn role_grants() -> BTreeSet<Access> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/k8s/base/role.yaml");
    let text = std::fs::read_to_string(path).expect("role.yaml");
    let role: Value = serde_yaml_ng::from_str(&text).expect("role yaml");
    assert_eq!(role["kind"], "Role", "namespaced, not a ClusterRole");
    let mut grants = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        for group in rule["apiGroups"].as_array().expect("apiGroups") {
            for res in rule["resources"].as_array().expect("resources") {
                for verb in rule["verbs"].as_array().expect("verbs") {
                    let s = |v: &Value| v.as_str().expect("string").to_owned();
                    grants.insert((s(verb), s(group), s(res)));
                }
            }
        }
    }
    grants
}

#[tokio::test]
async fn the_role_grants_exactly_what_the_runner_uses() {
    let fake = FakeApi::new();
    success(&fake).await;
    wall_time(&fake).await;
    cancel_mid_run(&fake).await;
    restart_sweeps(&fake).await;
    let used = fake.accesses();
    let granted = role_grants();
    let unused: Vec<_> = granted.difference(&used).collect();
    let missing: Vec<_> = used.difference(&granted).collect();
    assert!(
        missing.is_empty(),
        "the runner needs more than the Role grants: {missing:?}"
    );
    assert!(
        unused.is_empty(),
        "the Role grants what the runner never uses: {unused:?}"
    );
}

/// The same runner against a real cluster (the kubeconfig's, namespace `E2E_K8S_NAMESPACE`
/// or its default), with `quayside/runner-python:<deploy/images/VERSION>` loaded on its nodes.
#[tokio::test]
#[ignore = "needs cluster (kubeconfig, runner images on the nodes, NetworkPolicy-enforcing CNI)"]
async fn real_cluster_runs_python_and_cleans_up() {
    let cfg = with(KubernetesConfig {
        namespace: std::env::var("E2E_K8S_NAMESPACE").unwrap_or_default(),
        image_pull_policy: "Never".into(),
        ..Default::default()
    });
    let runner = quayside_worker::runner::kubernetes::KubernetesRunner::new(
        cfg,
        &default_languages(),
        "e2e-cluster",
    );
    runner
        .check()
        .await
        .expect("cluster reachable and the Role allows listing jobs");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        runner.run(&request(), &Output::discard(), CancellationToken::new()),
    )
    .await
    .expect("finished in time")
    .expect("ran");
    assert_eq!(
        (out.status, out.stdout.data.as_str()),
        (Status::Succeeded, "hi\n")
    );
}
