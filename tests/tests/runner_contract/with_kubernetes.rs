//! The Kubernetes world: the runner against the scripted API server, with the test playing
//! the Job controller and the kubelet (each step under a timeout).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;

use quayside_common::config::{default_languages, KubernetesConfig, RunnerConfig};
use quayside_common::JobId;
use quayside_e2e::within;
use quayside_worker::runner::kubernetes::KubernetesRunner;
use quayside_worker::runner::{Fleet, Guarded, RunRequest, Runner};

use crate::fake_api::{self, running, terminated, waiting, FakeApi};
use crate::suite::{Program, World};

/// The kubelet's `quayside-run` report for a program that ended with `code` (128 + n: signal n).
fn report(code: i64) -> String {
    let (exit, signal) = match code {
        129.. => ("-".to_owned(), (code - 128).to_string()),
        _ => (code.to_string(), "-".to_owned()),
    };
    format!(
        "exit={exit} signal={signal} timed_out=0 wall_us=31000 cpu_us=24000 maxrss_kb=9216 \
         oom_kills=0 stdout_bytes=- stderr_bytes=- orphans=0 subreaper=1"
    )
}

pub struct Kubernetes {
    runner: Guarded<KubernetesRunner>,
    fake: FakeApi,
}

impl Kubernetes {
    pub fn new() -> Self {
        let fake = FakeApi::new();
        let cfg = RunnerConfig {
            kubernetes: KubernetesConfig {
                pending_timeout_ms: 2_000,
                ..Default::default()
            },
            ..RunnerConfig::default()
        };
        let runner = KubernetesRunner::with_client(cfg, fake.client(), "w1");
        Self {
            runner: Guarded::new(runner),
            fake,
        }
    }
}

/// What the pod's log holds: the build's output, its marker, stdout, the end marker, stderr.
fn log(
    nonces: &(String, String),
    build: &str,
    status: i64,
    stdout: &str,
    end: Option<(i64, &str)>,
) -> Vec<u8> {
    let (nonce, end_nonce) = nonces;
    let mut log = format!("{build}{nonce}:{status}\n{stdout}");
    if let Some((code, stderr)) = end {
        log.push_str(&format!("{end_nonce}:{code} {}\n{stderr}", report(code)));
    }
    log.into_bytes()
}

#[async_trait::async_trait]
impl World for Kubernetes {
    fn runner(&self) -> &dyn Runner {
        &self.runner
    }

    fn request(&self, program: Program) -> RunRequest {
        let fleet = Fleet {
            queue: "qa".into(),
            id: "f1".into(),
        };
        let mut req = fake_api::request(JobId::generate(), fleet);
        let source = match program {
            Program::Measured(work) => work.source(),
            Program::Tests => crate::suite::TESTS_PROGRAM,
            _ => return req,
        };
        req.language = "c".into();
        req.language_config = default_languages()["c"].clone();
        req.files = BTreeMap::from([("main.c".to_owned(), source.to_owned())]);
        // Room for the compiler on a busy machine.
        req.limits.compile_wall_time_ms = 60_000;
        if program == Program::Tests {
            let plan = crate::suite::tests_plan(&req.limits);
            req.limits = plan.sandbox_limits(&req.limits);
            req.tests = Some(std::sync::Arc::new(plan));
        }
        req
    }

    async fn play(&self, program: Program) {
        let fake = &self.fake;
        let (job, pod) = within(10, "job created and its pod started", fake.start_pod()).await;
        let nonces = fake.nonces(&job);
        // The log first, then the statuses, as a kubelet shows them.
        let (log, open, ended) = match program {
            Program::Exits(code) => (
                log(&nonces, "", 0, "out\n", Some((code, "err\n"))),
                false,
                Some(terminated(code, Some("Error"))),
            ),
            Program::KillsItself => (
                log(&nonces, "", 0, "", Some((137, ""))),
                false,
                Some(terminated(137, Some("Error"))),
            ),
            Program::BuildFails => (
                log(&nonces, "main.c: 'oops' undeclared\n", 1, "", None),
                false,
                Some(terminated(1, Some("Error"))),
            ),
            Program::RunsForever => (log(&nonces, "", 0, "working\n", None), true, None),
            Program::Prompts => (log(&nonces, "", 0, "Name? ", None), true, None),
            Program::EatsMemory => (
                log(&nonces, "", 0, "", None),
                false,
                Some(terminated(137, Some("OOMKilled"))),
            ),
            Program::Floods => (
                log(&nonces, "", 0, &"0123456789".repeat(1000), None),
                true,
                None,
            ),
            Program::ImageMissing => {
                fake.set_pod_status(&pod, waiting("ImagePullBackOff"));
                return;
            }
            Program::Measured(_) | Program::Tests => {
                let log = fake.live_log(&pod);
                fake.set_pod_status(&pod, running());
                let code = kubelet_in_docker(fake, &job, log).await;
                fake.set_pod_status(&pod, terminated(code, (code != 0).then_some("Error")));
                return;
            }
        };
        fake.set_log(&pod, log, open);
        fake.set_pod_status(&pod, running());
        if let Some(status) = ended {
            fake.set_pod_status(&pod, status);
        }
    }

    async fn kill_from_outside(&self, _: &JobId) {
        // `kubectl delete pod`: a deletion timestamp, then the kubelet's kill.
        let pod = self.fake.names("pods").pop().expect("the job's pod");
        self.fake.mark_deleting(&pod);
        self.fake
            .set_pod_status(&pod, terminated(137, Some("Error")));
    }

    async fn assert_gone(&self, _: &JobId) {
        let gone = async {
            for resource in ["jobs", "configmaps", "pods"] {
                self.fake.gone(resource).await;
            }
        };
        within(10, "job, configmap and pod removed", gone).await;
        // Nothing comes back once the runner is done with it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(self.fake.names("jobs").is_empty());
    }
}

/// Plays the kubelet for real: runs the Job's pod command in its image on the Docker engine,
/// as the pod would run (its uid, read-only root, no network, no capabilities, memory limit,
/// `/work` and `/tmp` empty and writable), with the ConfigMap's keys as files at its mount
/// path. Streams the container's stdout into `log` as it comes (the pod log: the wrapper sends
/// the program's stderr there after the end marker) and returns its exit code.
async fn kubelet_in_docker(
    fake: &FakeApi,
    job: &str,
    log: tokio::sync::mpsc::UnboundedSender<bytes::Bytes>,
) -> i64 {
    let spec = fake.get("jobs", job).expect("the job")["spec"]["template"]["spec"].clone();
    let container = &spec["containers"][0];
    let words = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|w| w.as_str().expect("a word").to_owned())
            .collect()
    };
    let command = [words(&container["command"]), words(&container["args"])].concat();
    let image = container["image"].as_str().expect("image");
    let uid = container["securityContext"]["runAsUser"]
        .as_i64()
        .or(spec["securityContext"]["runAsUser"].as_i64())
        .expect("runAsUser");
    let memory = container["resources"]["limits"]["memory"]
        .as_str()
        .expect("memory limit");
    let mount = container["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["readOnly"].as_bool() == Some(true))
        .and_then(|m| m["mountPath"].as_str())
        .expect("the ConfigMap's read-only mount");
    let dir = quayside_e2e::private_dir(&format!("kubelet-{job}"));
    let data = fake.get("configmaps", job).expect("configmap")["data"].clone();
    for (key, value) in data.as_object().expect("data") {
        std::fs::write(dir.join(key), value.as_str().expect("text")).expect("write key");
    }
    let mut pod = tokio::process::Command::new("docker")
        .args(["run", "--rm", "--network", "none", "--read-only"])
        .args([
            "--tmpfs",
            &format!("/work:rw,exec,uid={uid},gid={uid},mode=0700"),
        ])
        .args(["--tmpfs", "/tmp:rw,exec,mode=1777"])
        .args(["--user", &format!("{uid}:{uid}"), "--cap-drop", "ALL"])
        .args(["--security-opt", "no-new-privileges", "--memory", memory])
        .args(["--label", "quayside.e2e=kubelet"])
        .args(["-v", &format!("{}:{mount}:ro", dir.display())])
        .args(["--workdir", "/work", image])
        .args(&command)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("docker run");
    let mut stdout = pod.stdout.take().expect("stdout");
    let streamed = async {
        let mut buf = vec![0; 8192];
        loop {
            let n = stdout.read(&mut buf).await.expect("read the pod's output");
            if n == 0 {
                break;
            }
            let _ = log.send(bytes::Bytes::copy_from_slice(&buf[..n]));
        }
        drop(log);
        pod.wait().await.expect("docker run ends")
    };
    let status = within(180, "the pod's command in docker", streamed).await;
    let _ = std::fs::remove_dir_all(&dir);
    i64::from(status.code().expect("exited"))
}
