use std::collections::BTreeMap;

use quayside_common::config::{
    default_image, default_languages, KubernetesConfig, RunnerConfig, SandboxConfig,
};
use quayside_common::limits::Limits;
use quayside_common::{JobId, JobKind};

use super::*;
use crate::runner::sandbox::protocol::wrapper_body;
use crate::runner::sandbox::{Fleet, LABEL_DEADLINE, LABEL_FLEET, LABEL_QUEUE, LABEL_WORKER};

pub(crate) fn request(kind: JobKind) -> RunRequest {
    let language_config = default_languages()["c"].clone();
    RunRequest {
        job_id: JobId::parse("batch:7").expect("id"),
        attempt: 2,
        kind,
        language: "c".into(),
        language_config,
        files: BTreeMap::from([
            ("main.c".to_owned(), "int main(){}".to_owned()),
            ("lib/it's.h".to_owned(), "#pragma once".to_owned()),
        ]),
        compiler_options: vec![],
        args: vec!["a b".into()],
        stdin: "in\n".into(),
        limits: Limits::DEFAULT,
        fleet: Fleet {
            queue: "builds:eu".into(),
            id: "0f1e2d3c4b5a6978".into(),
        },
        tests: None,
    }
}

fn pod_spec(o: &Objects) -> &k8s_openapi::api::core::v1::PodSpec {
    o.job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod")
}

/// The runner settings with `kubernetes` as the backend's own and the shared defaults.
fn with(kubernetes: KubernetesConfig) -> RunnerConfig {
    RunnerConfig {
        kubernetes,
        ..RunnerConfig::default()
    }
}

fn build(cfg: &RunnerConfig, kind: JobKind) -> Objects {
    let req = request(kind);
    let body = wrapper_body(&req.language_config, kind, &[], &req.files, None).expect("body");
    objects(cfg, &req, "host-1:w", &body)
}

#[test]
fn every_pod_is_limited_and_meets_the_restricted_standard() {
    let cfg = with(KubernetesConfig {
        image_registry: "reg.example/".into(),
        image_pull_secrets: vec!["regcred".into()],
        ..Default::default()
    });
    let o = build(&cfg, JobKind::Run);
    let spec = o.job.spec.as_ref().expect("spec");
    assert_eq!(spec.backoff_limit, Some(0));
    assert_eq!(spec.ttl_seconds_after_finished, Some(300));
    let pod = spec.template.spec.as_ref().expect("pod");
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.enable_service_links, Some(false));
    assert_eq!(
        (pod.host_network, pod.host_pid, pod.host_ipc),
        (Some(false), Some(false), Some(false))
    );
    // Wall times (40 s) + pending timeout (60 s) + slack; the Job's deadline is later still.
    assert_eq!(pod.active_deadline_seconds, Some(110));
    assert_eq!(spec.active_deadline_seconds, Some(120));
    let psc = pod.security_context.as_ref().expect("pod security");
    assert_eq!(psc.run_as_non_root, Some(true));
    let uid = psc.run_as_user.expect("uid");
    assert!((10001..10001 + (1 << 20)).contains(&uid), "{uid}");
    let c = &pod.containers[0];
    let image = format!("reg.example/{}", default_image("c"));
    assert_eq!(c.image.as_deref(), Some(image.as_str()));
    let sc = c.security_context.as_ref().expect("container security");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_user, Some(uid));
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_owned()])
    );
    let profile = sc.seccomp_profile.as_ref().expect("seccomp profile");
    assert_eq!(
        (profile.type_.as_str(), profile.localhost_profile.as_deref()),
        ("Localhost", Some("quayside.json")),
        "Quayside's profile, installed on the nodes"
    );
    assert_eq!(psc.seccomp_profile.as_ref(), Some(profile));
    let command = c.command.as_ref().expect("command");
    assert_eq!(
        command.last().map(String::as_str),
        Some(". /quayside/job/wrapper.sh"),
        "the wrapper runs under the prelude that makes it undumpable"
    );
    let res = c.resources.as_ref().expect("resources");
    assert_eq!(res.limits, res.requests, "Guaranteed QoS");
    let limits = res.limits.as_ref().expect("limits");
    assert_eq!(limits["cpu"].0, "1000m");
    assert_eq!(limits["memory"].0, (256u64 << 20).to_string());
    let mounts = c.volume_mounts.as_ref().expect("mounts");
    assert_eq!(mounts[0].read_only, Some(true), "files are read-only");
    let vols = pod.volumes.as_ref().expect("volumes");
    for v in &vols[1..] {
        let ed = v.empty_dir.as_ref().expect("emptyDir");
        assert_eq!(ed.medium.as_deref(), Some("Memory"));
        assert_eq!(
            ed.size_limit.as_ref().map(|q| q.0.as_str()),
            Some("67108864")
        );
    }
    assert_eq!(c.args.as_deref(), Some(&["a b".to_owned()][..]));
    assert_eq!(pod.image_pull_secrets.as_ref().map(Vec::len), Some(1));
    let labels = o.job.metadata.labels.as_ref().expect("labels");
    assert_eq!(labels[LABEL_JOB], "batch_7", "label values cannot hold ':'");
    assert_eq!(labels[LABEL_WORKER], "host-1_w");
    assert_eq!(labels[LABEL_QUEUE], "builds_eu");
    assert_eq!(labels[LABEL_FLEET], "0f1e2d3c4b5a6978");
    let deadline: i64 = labels[LABEL_DEADLINE].parse().expect("a number");
    let job_deadline = o.job.spec.as_ref().and_then(|s| s.active_deadline_seconds);
    let now = (quayside_common::now_ms() / 1000) as i64;
    assert!(
        (now..=now + 5).contains(&(deadline - job_deadline.expect("job deadline"))),
        "the label is the Job's own deadline"
    );
    assert_eq!(labels[LABEL_SANDBOX], o.name);
    assert_eq!(o.config_map.metadata.labels.as_ref(), Some(labels));
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref());
    assert_eq!(
        pod_labels.map(|l| l[LABEL_MANAGED].as_str()),
        Some(MANAGER),
        "the shipped NetworkPolicy selects job pods by this label"
    );
    let data = o.config_map.data.as_ref().expect("data");
    assert_eq!(data["f0"], "#pragma once", "files in name order");
    assert_eq!(data["stdin"], "in\n");
    assert!(o.name.len() <= 63);
}

#[test]
fn the_runtime_default_profile_is_the_fallback_switch() {
    let mut cfg = RunnerConfig::default();
    cfg.sandbox.seccomp = quayside_common::config::SeccompProfile::RuntimeDefault;
    let o = build(&cfg, JobKind::Run);
    let pod = pod_spec(&o);
    for profile in [
        pod.security_context
            .as_ref()
            .and_then(|s| s.seccomp_profile.as_ref()),
        pod.containers[0]
            .security_context
            .as_ref()
            .and_then(|s| s.seccomp_profile.as_ref()),
    ] {
        let profile = profile.expect("a profile is always set");
        assert_eq!(
            (profile.type_.as_str(), profile.localhost_profile.as_deref()),
            ("RuntimeDefault", None)
        );
    }
}

#[test]
fn files_over_a_config_map_are_refused_naming_the_field() {
    let cfg = SandboxConfig::default();
    let mut req = request(JobKind::Run);
    let body =
        wrapper_body(&req.language_config, JobKind::Run, &[], &req.files, None).expect("body");
    check_size(&cfg, &req, &body).expect("small job fits");
    req.files
        .insert("big.c".into(), "x".repeat(MAX_CONFIG_MAP_BYTES));
    let err = check_size(&cfg, &req, &body).expect_err("over 1 MiB");
    assert!(err.to_string().starts_with("files: "), "{err}");
    req.files.remove("big.c");
    req.stdin = "y".repeat(MAX_CONFIG_MAP_BYTES);
    let err = check_size(&cfg, &req, &body).expect_err("over 1 MiB");
    assert!(err.to_string().starts_with("stdin: "), "{err}");
}

#[test]
fn label_values_are_what_kubernetes_accepts() {
    assert_eq!(label_value("batch:7"), "batch_7");
    assert_eq!(label_value(":x:"), "x");
    assert_eq!(label_value(&"a".repeat(80)).len(), 63);
}

/// The objects the runner creates, as JSON under `target/k8s-objects/`, for
/// `scripts/validate-k8s.sh` to check against the Kubernetes OpenAPI schemas.
#[test]
fn dump_objects_for_schema_validation() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/k8s-objects");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let cfg = with(KubernetesConfig {
        image_pull_secrets: vec!["regcred".into()],
        runtime_class: "gvisor".into(),
        ..Default::default()
    });
    for kind in [JobKind::Run, JobKind::Compile] {
        let o = build(&cfg, kind);
        let mut job = serde_json::to_value(&o.job).expect("job json");
        job["apiVersion"] = "batch/v1".into();
        job["kind"] = "Job".into();
        let mut cm = serde_json::to_value(&o.config_map).expect("cm json");
        cm["apiVersion"] = "v1".into();
        cm["kind"] = "ConfigMap".into();
        for (what, v) in [("job", job), ("configmap", cm)] {
            let path = dir.join(format!("{what}-{}.json", kind.as_label()));
            std::fs::write(&path, serde_json::to_vec_pretty(&v).expect("json")).expect("write");
        }
    }
}

/// Runs the pod's real command (prelude and wrapper) under `/bin/sh` with its paths moved into a
/// temporary folder: the files land in `/work`, stdin and args reach the program, markers and
/// stderr come out in order, and the pids bound is set.
#[test]
fn wrapper_runs_under_posix_sh() {
    let root = std::env::temp_dir().join(format!("qs-wrapper-{:x}", rand::random::<u64>()));
    let (job, work) = (root.join("job"), root.join("work"));
    std::fs::create_dir_all(&job).expect("mkdir");
    std::fs::create_dir_all(&work).expect("mkdir");
    let mut req = request(JobKind::Run);
    req.language_config.build_command = "cat lib/*.h; echo built".into();
    req.language_config.run_command =
        r#"read -r x; echo "got $x $1"; echo oops >&2; ulimit -u 2>/dev/null || ulimit -p; exit 3"#
            .into();
    let body =
        wrapper_body(&req.language_config, JobKind::Run, &[], &req.files, None).expect("body");
    let o = objects(&RunnerConfig::default(), &req, "w", &body);
    for (k, v) in o.config_map.data.as_ref().expect("data") {
        std::fs::write(job.join(k), v).expect("write");
    }
    let script = std::fs::read_to_string(job.join("wrapper.sh"))
        .expect("read")
        .replace(JOB_DIR, &job.display().to_string())
        .replace(WORK_DIR, &work.display().to_string())
        .replace(STDERR_FILE, &root.join("stderr").display().to_string());
    std::fs::write(job.join("wrapper.sh"), script).expect("write");
    // The pod's own command: the prelude (which re-executes an execute-only copy of the shell
    // in the work folder) sourcing the wrapper.
    let pod = pod_spec(&o);
    let command: Vec<String> = pod.containers[0]
        .command
        .iter()
        .flatten()
        .map(|a| {
            a.replace(JOB_DIR, &job.display().to_string())
                .replace(WORK_DIR, &work.display().to_string())
        })
        .collect();
    let out = std::process::Command::new(&command[0])
        .args(&command[1..])
        .arg("a b")
        .current_dir(&work)
        .output()
        .expect("sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let copy_left = work.join(".quayside-sh").exists();
    let _ = std::fs::remove_dir_all(&root);
    assert!(!copy_left, "the prelude removes its shell copy");
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    // This host has no quayside-run in /usr/local/bin: the program runs directly, and the end
    // marker carries an empty report.
    let expected = format!(
        "#pragma oncebuilt\n{}:0\ngot in a b\n64\n{}:3 \noops\n",
        o.nonce, o.end_nonce
    );
    assert_eq!(stdout, expected);
}
