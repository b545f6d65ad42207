//! The objects of one attempt: a ConfigMap with the job's files, stdin, marker nonces and
//! wrapper script, and a `batch/v1` Job whose single pod mounts it read-only. Every limit and
//! hardening option is here, so one unit test can read (and dump for schema validation) all
//! of it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource,
    LocalObjectReference, PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements,
    SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use quayside_common::config::{RunnerConfig, SandboxConfig, SeccompProfile as Seccomp};
use quayside_common::job::SpecError;
use quayside_common::JobKind;

use crate::runner::sandbox::protocol::{
    new_nonce, sandbox_command, shell_quote, WrapperShell, EXIT_NO_HEADER, EXIT_UNPACK,
};
use crate::runner::sandbox::{self, LABEL_JOB, WORK_DIR};
use crate::runner::RunRequest;

/// Label naming the attempt's Job (and ConfigMap); what the pod watch selects on.
pub const LABEL_SANDBOX: &str = "quayside.sandbox";
/// Label every object of this backend carries; what the sweeps select on.
pub const LABEL_MANAGED: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED`].
pub const MANAGER: &str = "quayside-worker";
/// The one container of a job pod.
pub const CONTAINER: &str = "job";
/// Where the ConfigMap is mounted, read-only.
const JOB_DIR: &str = "/quayside/job";
/// Where the program's stderr waits until it ends (the pod log has a single stream).
const STDERR_FILE: &str = "/tmp/.quayside-stderr";
/// Exit status of the wrapper when a resource limit cannot be set.
pub(super) const EXIT_LIMITS: i64 = 122;
/// Seconds the pod may run beyond the job's own wall times, for startup and teardown.
const POD_DEADLINE_SLACK_S: i64 = 10;
/// Most bytes a ConfigMap's data may hold (names and values), as the API server checks it.
pub const MAX_CONFIG_MAP_BYTES: usize = 1 << 20;

/// What one attempt creates, and the nonces its output parser needs.
#[derive(Clone, Debug)]
pub struct Objects {
    pub name: String,
    pub config_map: ConfigMap,
    pub job: Job,
    pub nonce: String,
    pub end_nonce: String,
}

/// A label value Kubernetes accepts: at most 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
/// Job ids may hold `:`; the exact id is kept in an annotation.
pub fn label_value(raw: &str) -> String {
    let mapped: String = sandbox::name_safe(raw).chars().take(63).collect();
    mapped
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// The labels of every object of one attempt: the fleet's (see [`sandbox::labels`]) as label
/// values, plus this backend's own.
/// `deadline_s`: the unix second by which the Job is over for sure.
pub fn labels(
    req: &RunRequest,
    worker_id: &str,
    name: &str,
    deadline_s: i64,
) -> BTreeMap<String, String> {
    let fleet = sandbox::labels(&req.fleet, &req.job_id, req.attempt, worker_id, deadline_s);
    let mut labels: BTreeMap<String, String> = fleet
        .into_iter()
        .map(|(k, v)| (k, label_value(&v)))
        .collect();
    labels.insert(LABEL_SANDBOX.to_owned(), name.to_owned());
    labels.insert(LABEL_MANAGED.to_owned(), MANAGER.to_owned());
    labels
}

/// A fresh object name, a DNS label short enough for the `job-name` pod label.
pub fn object_name(attempt: u32) -> String {
    format!("quayside-a{attempt}-{:016x}", rand::random::<u64>())
}

/// The uid of one attempt's processes: `user`'s uid plus a random offset below `uid_range`.
/// `RLIMIT_NPROC` counts every process of a uid on the node, so distinct uids keep one pod's
/// `ulimit -u` from counting another pod's processes.
pub fn attempt_uid(cfg: &SandboxConfig) -> (i64, i64) {
    let user = cfg.attempt_user(rand::random());
    (i64::from(user.uid), i64::from(user.gid))
}

/// The script the pod runs: limits, files into `/work`, stdin, then the shared build/run body,
/// then the program's stderr after a second marker. `None` when the language cannot do `kind`.
pub fn wrapper(cfg: &SandboxConfig, req: &RunRequest, body: &str, cap: u64) -> String {
    let pids = req.limits.pids;
    // POSIX `ulimit -f` counts 512-byte blocks (bash outside POSIX mode: 1024, so twice this).
    let blocks = cfg.max_file_bytes.div_ceil(512);
    let nofile = cfg.max_open_files;
    let mut s = format!(
        "read -r nonce end < {JOB_DIR}/nonce || exit {EXIT_NO_HEADER}\n\
         ulimit -n {nofile} && ulimit -f {blocks} || exit {EXIT_LIMITS}\n\
         {{ ulimit -u {pids} 2>/dev/null || ulimit -p {pids} 2>/dev/null; }} || exit {EXIT_LIMITS}\n"
    );
    // The job's files and, for a job with tests, their inputs.
    let files = req.sandbox_files();
    let dirs: BTreeSet<&str> = files
        .keys()
        .flat_map(|f| f.match_indices('/').map(move |(i, _)| &f[..i]))
        .collect();
    let mut unpack = vec!["true".to_owned()];
    for dir in dirs {
        unpack.push(format!(
            "mkdir -p {}",
            shell_quote(&format!("{WORK_DIR}/{dir}"))
        ));
    }
    for (i, name) in files.keys().enumerate() {
        let to = shell_quote(&format!("{WORK_DIR}/{name}"));
        unpack.push(format!("cp {JOB_DIR}/f{i} {to}"));
    }
    s.push_str(&format!(
        "{{ {}; }} 2>&1 || exit {EXIT_UNPACK}\n",
        unpack.join(" && ")
    ));
    // The body ends with the end marker (and the program's status in `$s`).
    s.push_str(&format!("exec <{JOB_DIR}/stdin 2>{STDERR_FILE}\n{body}"));
    s.push_str(&format!(
        "head -c {} {STDERR_FILE}\nexit \"$s\"\n",
        cap.saturating_add(1)
    ));
    s
}

/// What the attempt's ConfigMap holds: nonces, stdin, the wrapper and the files.
fn config_map_data(
    cfg: &SandboxConfig,
    req: &RunRequest,
    body: &str,
    nonce: &str,
    end_nonce: &str,
) -> BTreeMap<String, String> {
    let mut data = BTreeMap::from([
        ("nonce".to_owned(), format!("{nonce} {end_nonce}\n")),
        ("stdin".to_owned(), req.stdin.clone()),
        (
            "wrapper.sh".to_owned(),
            wrapper(cfg, req, body, req.limits.output_bytes),
        ),
    ]);
    for (i, text) in req.sandbox_files().values().enumerate() {
        data.insert(format!("f{i}"), text.clone());
    }
    data
}

/// Refuses a job whose files, stdin and wrapper would not fit in one ConfigMap: the API server
/// would refuse it for every attempt.
///
/// # Errors
/// `files` (or `stdin` or `tests`, when it is most of it), with the sizes.
pub fn check_size(cfg: &SandboxConfig, req: &RunRequest, body: &str) -> Result<(), SpecError> {
    let nonce = new_nonce();
    let data = config_map_data(cfg, req, body, &nonce, &nonce);
    let total: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total <= MAX_CONFIG_MAP_BYTES {
        return Ok(());
    }
    let files: usize = req.files.values().map(String::len).sum();
    let tests: usize = req
        .tests
        .iter()
        .flat_map(|plan| &plan.tests)
        .map(|t| t.stdin.len() + 40)
        .sum();
    let field = if tests > files.max(req.stdin.len()) {
        "tests"
    } else if req.stdin.len() > files {
        "stdin"
    } else {
        "files"
    };
    Err(SpecError::field(
        field,
        format!(
            "files, stdin and wrapper take {total} bytes; the Kubernetes runner carries them in \
             one ConfigMap, which holds at most {MAX_CONFIG_MAP_BYTES}"
        ),
    ))
}

fn quantity(s: String) -> Quantity {
    Quantity(s)
}

/// Builds both objects of one attempt.
pub fn objects(runner: &RunnerConfig, req: &RunRequest, worker_id: &str, body: &str) -> Objects {
    let (cfg, sandbox) = (&runner.kubernetes, &runner.sandbox);
    let name = object_name(req.attempt);
    let l = &req.limits;
    let wall_s = i64::try_from((l.compile_wall_time_ms + l.run_wall_time_ms).div_ceil(1000))
        .unwrap_or(i64::MAX / 4);
    let pending_s = i64::try_from(cfg.pending_timeout_ms.div_ceil(1000)).unwrap_or(3600);
    let pod_deadline = wall_s + pending_s + POD_DEADLINE_SLACK_S;
    let job_deadline = pod_deadline + POD_DEADLINE_SLACK_S;
    let now_s = sandbox::unix_now_s();
    let labels = labels(req, worker_id, &name, now_s.saturating_add(job_deadline));
    let annotations = BTreeMap::from([(LABEL_JOB.to_owned(), req.job_id.to_string())]);
    let meta = ObjectMeta {
        name: Some(name.clone()),
        labels: Some(labels.clone()),
        annotations: Some(annotations),
        ..Default::default()
    };
    let nonce = new_nonce();
    let end_nonce = new_nonce();
    let data = config_map_data(sandbox, req, body, &nonce, &end_nonce);
    let config_map = ConfigMap {
        metadata: meta.clone(),
        data: Some(data),
        immutable: Some(true),
        ..Default::default()
    };
    let (uid, gid) = attempt_uid(sandbox);
    let resources = BTreeMap::from([
        ("cpu".to_owned(), quantity(format!("{}m", l.cpu_millicores))),
        ("memory".to_owned(), quantity(l.memory_bytes.to_string())),
    ]);
    let empty_dir = |name: &str| Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(quantity(sandbox.work_dir_bytes.to_string())),
        }),
        ..Default::default()
    };
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(read_only),
        ..Default::default()
    };
    let args = match req.kind {
        JobKind::Run => req.args.clone(),
        JobKind::Compile => Vec::new(),
    };
    let seccomp = || match sandbox.seccomp {
        Seccomp::Quayside => SeccompProfile {
            type_: "Localhost".into(),
            localhost_profile: Some(cfg.seccomp_localhost_profile.clone()),
        },
        Seccomp::RuntimeDefault => SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        },
    };
    let container = Container {
        name: CONTAINER.into(),
        image: Some(format!(
            "{}{}",
            cfg.image_registry, req.language_config.image
        )),
        image_pull_policy: Some(cfg.image_pull_policy.clone()),
        // Sourced by the prelude, which makes the wrapper shell undumpable first where the
        // node's runtime allows (the RuntimeClass may be gVisor, which does that itself).
        command: Some(sandbox_command(
            format!(". {JOB_DIR}/wrapper.sh"),
            WrapperShell::UndumpableIfSupported,
        )),
        args: Some(args),
        working_dir: Some(WORK_DIR.into()),
        env: Some(vec![k8s_openapi::api::core::v1::EnvVar {
            name: "HOME".into(),
            value: Some("/tmp".into()),
            ..Default::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(resources.clone()),
            limits: Some(resources),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(uid),
            run_as_group: Some(gid),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            seccomp_profile: Some(seccomp()),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount("job", JOB_DIR, true),
            mount("work", WORK_DIR, false),
            mount("tmp", "/tmp", false),
        ]),
        termination_message_policy: Some("File".into()),
        ..Default::default()
    };
    let pod = PodSpec {
        restart_policy: Some("Never".into()),
        active_deadline_seconds: Some(pod_deadline),
        termination_grace_period_seconds: Some(1),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        host_network: Some(false),
        host_pid: Some(false),
        host_ipc: Some(false),
        service_account_name: Some(cfg.service_account.clone()),
        runtime_class_name: (!cfg.runtime_class.is_empty()).then(|| cfg.runtime_class.clone()),
        image_pull_secrets: (!cfg.image_pull_secrets.is_empty()).then(|| {
            cfg.image_pull_secrets
                .iter()
                .map(|s| LocalObjectReference { name: s.clone() })
                .collect()
        }),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(uid),
            run_as_group: Some(gid),
            seccomp_profile: Some(seccomp()),
            ..Default::default()
        }),
        containers: vec![container],
        volumes: Some(vec![
            Volume {
                name: "job".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: name.clone(),
                    default_mode: Some(0o444),
                    ..Default::default()
                }),
                ..Default::default()
            },
            empty_dir("work"),
            empty_dir("tmp"),
        ]),
        ..Default::default()
    };
    let job = Job {
        metadata: meta,
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(job_deadline),
            ttl_seconds_after_finished: Some(cfg.ttl_seconds_after_finished),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    Objects {
        name,
        config_map,
        job,
        nonce,
        end_nonce,
    }
}

#[cfg(test)]
mod tests;
