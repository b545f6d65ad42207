//! The Kubernetes world: the runner against the scripted API server, with the test playing
//! the Job controller and the kubelet (each step under a timeout).

use std::time::Duration;

use quayside_common::config::{KubernetesConfig, RunnerConfig};
use quayside_common::JobId;
use quayside_e2e::within;
use quayside_worker::runner::kubernetes::KubernetesRunner;
use quayside_worker::runner::{Fleet, Guarded, RunRequest, Runner};

use crate::fake_api::{self, running, terminated, waiting, FakeApi};
use crate::suite::{Program, World};

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
        log.push_str(&format!("{end_nonce}:{code}\n{stderr}"));
    }
    log.into_bytes()
}

#[async_trait::async_trait]
impl World for Kubernetes {
    fn runner(&self) -> &dyn Runner {
        &self.runner
    }

    fn request(&self, _: Program) -> RunRequest {
        let fleet = Fleet {
            queue: "qa".into(),
            id: "f1".into(),
        };
        fake_api::request(JobId::generate(), fleet)
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
