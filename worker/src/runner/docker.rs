//! The Docker backend: one fresh, hardened container per job attempt, through the Engine API
//! (bollard), never pulling images.
//!
//! - `spec`: the container's create body: limits, hardening, labels, the `/work` tmpfs.
//! - `attempt`: one attempt: create, attach, start, feed stdin, stream and cap output, time
//!   the build and the run apart, classify from the container's real state.
//!
//! The in-sandbox protocol (wrapper script, phase marker, archive) is in
//! [`sandbox`]. Every container carries [`LABEL_JOB`] and [`LABEL_WORKER`] and
//! is force-removed on every path by a guard, so a sweep by label only finds what a worker that
//! died left behind.

mod attempt;
mod spec;

pub use spec::{attempt_user, host_config};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::query_parameters::ListContainersOptions;
use bollard::{Docker, API_DEFAULT_VERSION};
use quayside_common::config::{DockerConfig, LanguageConfig};
use quayside_common::job::SpecError;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use self::attempt::Sandbox;
use super::sandbox::{self, protocol, LABEL_JOB, LABEL_WORKER};
use super::{RunOutput, RunRequest, Runner, RunnerError};
use crate::logs::LogSink;

/// Runs jobs in Docker containers on the local (or configured) engine.
#[derive(Debug)]
pub struct DockerRunner {
    cfg: DockerConfig,
    images: BTreeSet<String>,
    worker_id: String,
    /// Connected and version-negotiated on first use, since building a runner is not async.
    client: OnceCell<Docker>,
}

impl DockerRunner {
    /// A runner for `languages`, labelling its containers with `worker_id`. Connects lazily:
    /// the first call that reaches the engine also removes containers an earlier process with
    /// the same `worker_id` left behind.
    pub fn new(
        cfg: DockerConfig,
        languages: &BTreeMap<String, LanguageConfig>,
        worker_id: impl Into<String>,
    ) -> Self {
        Self {
            cfg,
            images: languages.values().map(|l| l.image.clone()).collect(),
            worker_id: worker_id.into(),
            client: OnceCell::new(),
        }
    }

    /// The id this runner labels its containers with.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Removes containers labelled with this runner's worker id: what a previous process with
    /// the same id left when it died. Only safe before this runner starts jobs.
    ///
    /// # Errors
    /// The engine cannot be reached or listed.
    pub async fn sweep_own(&self) -> Result<usize, RunnerError> {
        let docker = self.client().await?;
        sweep(docker, |labels, _| self.owns(labels)).await
    }

    /// Removes containers at least `min_age` old labelled by workers that are not in
    /// `live_workers` (this runner's own id always counts as live). Returns how many.
    ///
    /// # Errors
    /// The engine cannot be reached or listed.
    pub async fn sweep_orphans(
        &self,
        live_workers: &[String],
        min_age: Duration,
    ) -> Result<usize, RunnerError> {
        let docker = self.client().await?;
        let mut live = live_workers.to_vec();
        live.push(self.worker_id.clone());
        let cutoff = (quayside_common::now_ms() / 1000).saturating_sub(min_age.as_secs());
        sweep(docker, |labels, created| {
            created.is_some_and(|c| c <= cutoff as i64) && sandbox::is_orphan(labels, &live)
        })
        .await
    }

    fn owns(&self, labels: &HashMap<String, String>) -> bool {
        labels.get(LABEL_WORKER) == Some(&self.worker_id)
    }

    async fn client(&self) -> Result<&Docker, RunnerError> {
        self.client
            .get_or_try_init(|| async {
                let docker = self.connect().await?;
                match sweep(&docker, |labels, _| self.owns(labels)).await {
                    Ok(0) => {}
                    Ok(removed) => {
                        let worker = &self.worker_id;
                        tracing::info!(removed, %worker, "removed containers a previous run left");
                    }
                    Err(error) => tracing::warn!(%error, "cannot sweep leftover containers"),
                }
                Ok(docker)
            })
            .await
    }

    async fn connect(&self) -> Result<Docker, RunnerError> {
        let timeout = Duration::from_millis(self.cfg.api_timeout_ms);
        let docker = if self.cfg.socket.is_empty() {
            Docker::connect_with_local_defaults()
        } else {
            Docker::connect_with_socket(&self.cfg.socket, timeout.as_secs(), API_DEFAULT_VERSION)
        }
        .map_err(|e| unavailable("cannot reach the docker engine", &e))?
        .with_timeout(timeout);
        docker
            .negotiate_version()
            .await
            .map_err(|e| unavailable("cannot reach the docker engine", &e))
    }
}

#[async_trait::async_trait]
impl Runner for DockerRunner {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn check(&self) -> Result<(), RunnerError> {
        let docker = self.client().await?;
        docker
            .ping()
            .await
            .map_err(|e| unavailable("docker engine does not answer", &e))?;
        for image in &self.images {
            match docker.inspect_image(image).await {
                Ok(_) => {}
                Err(DockerError::DockerResponseServerError {
                    status_code: 404, ..
                }) => {
                    return Err(RunnerError::ImageMissing {
                        image: image.clone(),
                    })
                }
                Err(e) => return Err(unavailable(&format!("cannot inspect image {image}"), &e)),
            }
        }
        Ok(())
    }

    async fn sweep_orphans(&self, live_workers: &[String]) -> Result<usize, RunnerError> {
        DockerRunner::sweep_orphans(self, live_workers, ORPHAN_MIN_AGE).await
    }

    fn admit(&self, req: &RunRequest) -> Result<(), SpecError> {
        match protocol::wrapper_script(
            &req.language_config,
            req.kind,
            &req.compiler_options,
            &req.files,
        ) {
            Some(script) => spec::check_command(&self.cfg, req, &script),
            // No command for the job's kind: `run` reports that as the config gap it is.
            None => Ok(()),
        }
    }

    async fn run(
        &self,
        req: &RunRequest,
        logs: &LogSink,
        cancel: CancellationToken,
    ) -> Result<RunOutput, RunnerError> {
        let script = protocol::wrapper_script(
            &req.language_config,
            req.kind,
            &req.compiler_options,
            &req.files,
        )
        .ok_or_else(|| sandbox::missing_command(req))?;
        let docker = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(RunnerError::Cancelled),
            docker = self.client() => docker?.clone(),
        };
        let mut sandbox = Sandbox::new(docker);
        let outcome = tokio::select! {
            biased;
            () = cancel.cancelled() => Err(RunnerError::Cancelled),
            outcome = attempt::run(&mut sandbox, &self.cfg, req, logs, script, &self.worker_id) => outcome,
        };
        // Also on timeouts and output overflow: removing with force kills what still runs.
        sandbox.remove().await;
        outcome
    }
}

/// Force-removes every Quayside container whose labels `remove` picks.
/// A worker that just started may not have heartbeated yet: the periodic sweep spares
/// containers younger than this.
const ORPHAN_MIN_AGE: Duration = Duration::from_secs(120);

/// Removes the labelled containers `remove(labels, created unix seconds)` picks.
async fn sweep(
    docker: &Docker,
    remove: impl Fn(&HashMap<String, String>, Option<i64>) -> bool,
) -> Result<usize, RunnerError> {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![LABEL_WORKER.to_owned(), LABEL_JOB.to_owned()],
    )]);
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| api_error("cannot list sandbox containers", e))?;
    let mut removed = 0;
    for c in containers {
        let (Some(id), Some(labels)) = (c.id, c.labels) else {
            continue;
        };
        if !remove(&labels, c.created) {
            continue;
        }
        match attempt::remove_container(docker, &id).await {
            Ok(()) => removed += 1,
            Err(error) => {
                tracing::warn!(container = %id, %error, "cannot remove leftover container")
            }
        }
    }
    Ok(removed)
}

/// The engine is not there (socket missing, connection refused, timeout).
fn unavailable(what: &str, e: &DockerError) -> RunnerError {
    RunnerError::Unavailable {
        detail: format!("{what}: {e}"),
    }
}

/// An Engine API call failed: `Unavailable` when the engine cannot be reached, a transient
/// `Failed` when it answered with an error.
fn api_error(what: impl Into<String>, e: DockerError) -> RunnerError {
    match e {
        DockerError::SocketNotFoundError(_)
        | DockerError::HyperLegacyError { .. }
        | DockerError::IOError { .. }
        | DockerError::RequestTimeoutError => unavailable(&what.into(), &e),
        other => RunnerError::Failed {
            context: what.into(),
            transient: true,
            source: Some(Box::new(other)),
        },
    }
}
