//! The Kubernetes backend: per attempt, a ConfigMap with the job's files and a `batch/v1` Job
//! whose one pod runs the shared wrapper, through the API server (kube), never pulling images
//! itself (the kubelet does, per `runner.kubernetes.image_pull_policy`).
//!
//! - `spec`: the ConfigMap and the Job: limits, the restricted Pod Security Standard, labels.
//! - `attempt`: follow the pod with a watch, read its single log through the shared
//!   [`PhasedOutput`](super::sandbox::PhasedOutput), stop it at a limit.
//! - `pod`: what a pod's status says about the job's container.
//! - `cleanup`: delete an attempt's objects on every path; the label sweep.
//!
//! The ConfigMap is owned by the Job, and the Job is deleted with background propagation on
//! every path (guarded, so a dropped future still deletes it); a deletion that fails is retried
//! from the worker's upkeep. What a dead worker of the fleet left is found by label by the
//! periodic sweep. A pod deleted, evicted or killed from outside is an infrastructure failure.

mod attempt;
mod cleanup;
pub mod pod;
pub mod spec;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use quayside_common::config::{LanguageConfig, RunnerConfig};
use quayside_common::job::SpecError;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use self::cleanup::{delete, sweep, Cleanup};
use self::spec::{label_value, LABEL_MANAGED, MANAGER};
use super::sandbox::{self, Fleet, Sandboxes, Sweep};
use super::{Output, RunOutput, RunRequest, Runner, RunnerError};

/// A worker that just started may not have heartbeated yet: the periodic sweep spares Jobs
/// younger than this.
const ORPHAN_MIN_AGE: Duration = Duration::from_secs(120);

/// Runs jobs as Kubernetes Jobs in one namespace.
pub struct KubernetesRunner {
    /// The shared sandbox settings and the Kubernetes backend's own (`runner.sandbox`,
    /// `runner.kubernetes`).
    cfg: RunnerConfig,
    worker_id: String,
    /// A client given by the caller (tests); otherwise inferred on first use.
    preset: Option<Client>,
    /// Connected on first use, since building a runner is not async.
    client: OnceCell<(Client, String)>,
    /// Names of the Jobs in use, and of those whose deletion failed.
    sandboxes: Arc<Sandboxes>,
}

impl std::fmt::Debug for KubernetesRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `kube::Client` has no Debug; the namespace is what tells runners apart.
        f.debug_struct("KubernetesRunner")
            .field("cfg", &self.cfg)
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

impl KubernetesRunner {
    /// A runner that finds the cluster on first use: in-cluster service account when
    /// `KUBERNETES_SERVICE_HOST` is set, the kubeconfig (`KUBECONFIG`, `~/.kube/config`) otherwise.
    pub fn new(
        cfg: RunnerConfig,
        _languages: &BTreeMap<String, LanguageConfig>,
        worker_id: impl Into<String>,
    ) -> Self {
        Self {
            cfg,
            worker_id: worker_id.into(),
            preset: None,
            client: OnceCell::new(),
            sandboxes: Arc::default(),
        }
    }

    /// A runner using `client` (whose default namespace applies when the config names none).
    pub fn with_client(cfg: RunnerConfig, client: Client, worker_id: impl Into<String>) -> Self {
        Self {
            cfg,
            worker_id: worker_id.into(),
            preset: Some(client),
            client: OnceCell::new(),
            sandboxes: Arc::default(),
        }
    }

    /// The client and the namespace jobs run in.
    async fn client(&self) -> Result<&(Client, String), RunnerError> {
        self.client
            .get_or_try_init(|| async {
                let client = match &self.preset {
                    Some(c) => c.clone(),
                    None => self.connect().await?,
                };
                let ns = if self.cfg.kubernetes.namespace.is_empty() {
                    client.default_namespace().to_owned()
                } else {
                    self.cfg.kubernetes.namespace.clone()
                };
                Ok((client, ns))
            })
            .await
    }

    async fn connect(&self) -> Result<Client, RunnerError> {
        let unavailable = |e: &dyn std::fmt::Display| RunnerError::Unavailable {
            detail: format!("cannot configure the kubernetes client: {e}"),
        };
        let mut config = kube::Config::infer().await.map_err(|e| unavailable(&e))?;
        let timeout = Duration::from_millis(self.cfg.sandbox.api_timeout_ms);
        config.connect_timeout = Some(timeout);
        // Reads stay open while a watch or a log follows the pod; the server ends those.
        config.read_timeout = None;
        config.write_timeout = Some(timeout);
        Client::try_from(config).map_err(|e| unavailable(&e))
    }

    fn apis(client: &Client, ns: &str) -> (Api<Job>, Api<ConfigMap>, Api<Pod>) {
        (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        )
    }

    /// Creates the attempt's objects; the caller follows the pod.
    async fn create(
        &self,
        req: &RunRequest,
        body: &str,
        cleanup: &mut Cleanup,
    ) -> Result<(spec::Objects, Api<Pod>), RunnerError> {
        let (client, ns) = self.client().await?;
        let (jobs, cms, pods) = Self::apis(client, ns);
        let objects = spec::objects(&self.cfg, req, &self.worker_id, body);
        self.sandboxes.started(&objects.name);
        cleanup.arm(jobs.clone(), cms.clone(), objects.name.clone());
        cms.create(&PostParams::default(), &objects.config_map)
            .await
            .map_err(|e| api_error("cannot create the job's ConfigMap", e))?;
        let job = jobs
            .create(&PostParams::default(), &objects.job)
            .await
            .map_err(|e| api_error("cannot create the Job", e))?;
        // Owned by the Job: if this worker dies, deleting the Job (its TTL or a sweep)
        // takes the ConfigMap with it.
        let owner = OwnerReference {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            name: objects.name.clone(),
            uid: job.metadata.uid.clone().unwrap_or_default(),
            ..Default::default()
        };
        let patch = serde_json::json!({ "metadata": { "ownerReferences": [owner] } });
        cms.patch(
            &objects.name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| api_error("cannot make the Job own its ConfigMap", e))?;
        Ok((objects, pods))
    }

    async fn attempt(
        &self,
        req: &RunRequest,
        output: &Output,
        body: &str,
        cleanup: &mut Cleanup,
        cancel: &CancellationToken,
    ) -> Result<RunOutput, RunnerError> {
        let (objects, pods) = self.create(req, body, cleanup).await?;
        output.sandbox_started();
        let pending = Duration::from_millis(self.cfg.kubernetes.pending_timeout_ms);
        let (phases, ending) =
            attempt::follow(pods, &objects, req, pending, output, cancel).await?;
        // The pod's start is not measured: the watch would need to note its Running time.
        phases.conclude(&req.job_id, req.kind, ending, None)
    }
}

#[async_trait::async_trait]
impl Runner for KubernetesRunner {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    /// Lists this backend's Jobs (one item): proves the API answers and the Role allows it.
    /// Images live on the nodes, so a missing one shows per attempt, as `ImageMissing`.
    async fn check(&self) -> Result<(), RunnerError> {
        let (client, ns) = self.client().await?;
        let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
        jobs.list_metadata(
            &ListParams::default()
                .labels(&format!("{LABEL_MANAGED}={MANAGER}"))
                .limit(1),
        )
        .await
        .map_err(|e| api_error("cannot list jobs", e))?;
        Ok(())
    }

    fn admit(&self, req: &RunRequest) -> Result<(), SpecError> {
        // No command for the job's kind: `run` reports that as the config gap it is.
        let Ok(body) = req.wrapper_body() else {
            return Ok(());
        };
        if req
            .tests
            .as_ref()
            .is_some_and(|plan| plan.checker.is_some())
        {
            // A pod has no stdin to send each answer after its test (docs/design/tests-per-job.md
            // §6); the ConfigMap would show the answers to the program: refused, never judged
            // another way.
            return Err(SpecError::field(
                "checker",
                "the Kubernetes runner does not run checkers yet (the Docker runner does)",
            ));
        }
        sandbox::check_args(&req.args)?;
        spec::check_size(&self.cfg.sandbox, req, &body)
    }

    async fn sweep_orphans(
        &self,
        fleet: &Fleet,
        live_workers: &[String],
    ) -> Result<usize, RunnerError> {
        let (client, ns) = self.client().await?;
        // Labels hold label values: compare like with like.
        let fleet = Fleet {
            queue: label_value(&fleet.queue),
            id: label_value(&fleet.id),
        };
        let live: Vec<String> = live_workers.iter().map(|w| label_value(w)).collect();
        let me = label_value(&self.worker_id);
        let rule = Sweep {
            fleet: &fleet,
            me: &me,
            live: &live,
            now_s: sandbox::unix_now_s(),
            min_age_s: ORPHAN_MIN_AGE.as_secs() as i64,
        };
        sweep(client, ns, &self.sandboxes, |name, labels, created| {
            let labels = labels.clone().into_iter().collect();
            rule.verdict(&labels, created, self.sandboxes.is_active(name))
        })
        .await
    }

    async fn retry_removals(&self) -> usize {
        if self.sandboxes.failed().is_empty() {
            return 0;
        }
        let Ok((client, ns)) = self.client().await else {
            return self.sandboxes.failed().len();
        };
        let (jobs, cms, _) = Self::apis(client, ns);
        let (jobs, cms) = (&jobs, &cms);
        self.sandboxes
            .retry_failed(|name| async move { delete(jobs, cms, &name).await.is_ok() })
            .await
    }

    async fn run(
        &self,
        req: &RunRequest,
        output: &Output,
        cancel: CancellationToken,
    ) -> Result<RunOutput, RunnerError> {
        let body = req.wrapper_body()?;
        let mut cleanup = Cleanup::new(Arc::clone(&self.sandboxes));
        let outcome = self
            .attempt(req, output, &body, &mut cleanup, &cancel)
            .await;
        // Also on timeouts, output overflow and errors: deleting the Job kills its pod.
        cleanup.remove().await;
        outcome
    }
}

/// An API call failed. The API server answering 403, 404, 409, 429 or 5xx is transient (RBAC
/// being fixed, a name clash, overload); a request it refuses as invalid (400, 413, 422: e.g.
/// files and stdin over the 1 MiB ConfigMap limit) is permanent; no answer at all is
/// `Unavailable`.
fn api_error(call: &str, e: kube::Error) -> RunnerError {
    match &e {
        kube::Error::Api(s) if matches!(s.code, 400 | 413 | 422) => RunnerError::ApiRejected {
            call: call.to_owned(),
            source: Some(Box::new(e)),
        },
        kube::Error::HyperError(_) | kube::Error::Service(_) => RunnerError::Unavailable {
            detail: format!("{call}: {e}"),
        },
        _ => RunnerError::Api {
            call: call.to_owned(),
            source: Some(Box::new(e)),
        },
    }
}
