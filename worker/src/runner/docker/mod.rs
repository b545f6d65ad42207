//! The Docker backend: one fresh, hardened container per job attempt, through the Engine API
//! (bollard), never pulling images.
//!
//! - `spec`: the container's create body: limits, hardening, labels, the `/work` tmpfs.
//! - `attempt`: one attempt: create, attach, start, feed stdin, read its output through the
//!   shared [`PhasedOutput`](super::sandbox::PhasedOutput), tell how the container ended from
//!   its real state.
//! - `cleanup`: the attempt's removal guard; the label sweep.
//! - `events`: the engine's `kill`/`die` events for this worker's containers, which tell a
//!   container killed from outside from a program that killed itself.
//! - `pool`: the warm pool: containers started before their job is known, one job each.
//!
//! The in-sandbox protocol (wrapper script, phase marker, archive) is in [`sandbox`]. Every
//! container carries the fleet's labels ([`sandbox::labels`]) and is force-removed on every
//! path by a guard; a removal that fails is retried from the worker's upkeep, and the periodic
//! sweep finds what a worker that died left behind.

mod attempt;
mod cleanup;
mod events;
mod pool;
mod spec;

pub use cleanup::labelled;
pub use pool::{profiles, Profile};
pub use spec::{attempt_user, host_config};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::{Docker, API_DEFAULT_VERSION};
use quayside_common::config::{LanguageConfig, RunnerConfig};
use quayside_common::job::SpecError;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use self::cleanup::{remove_container, Sandbox};
use self::events::KillWatch;
use self::pool::Pool;
use super::sandbox::{self, protocol, Fleet, Sandboxes, Sweep};
use super::{Output, RunOutput, RunRequest, Runner, RunnerError};

/// Runs jobs in Docker containers on the local (or configured) engine.
#[derive(Debug)]
pub struct DockerRunner {
    /// The shared sandbox settings and the Docker backend's own (`runner.sandbox`, `runner.docker`).
    cfg: RunnerConfig,
    images: BTreeSet<String>,
    worker_id: String,
    /// Connected and version-negotiated on first use, since building a runner is not async;
    /// the engine's event stream is followed from then on.
    client: OnceCell<(Docker, Arc<KillWatch>)>,
    sandboxes: Arc<Sandboxes>,
    /// What the warm pool keeps per language (empty: no pool).
    profiles: BTreeMap<String, Profile>,
    /// The pool once the fleet is known and the engine answered.
    pool: Mutex<Option<Arc<Pool>>>,
    /// Set by [`Runner::cool_down`]: no pool from then on.
    cooled: AtomicBool,
    /// Taken warm containers being removed in the background after their job.
    removing: Arc<AtomicUsize>,
}

impl Drop for DockerRunner {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.lock().expect("lock poisoned").take() {
            pool.abandon();
        }
    }
}

impl DockerRunner {
    /// A runner for `languages`, labelling its containers with `worker_id`. Connects lazily.
    pub fn new(
        cfg: RunnerConfig,
        languages: &BTreeMap<String, LanguageConfig>,
        worker_id: impl Into<String>,
    ) -> Self {
        Self {
            cfg,
            images: languages.values().map(|l| l.image.clone()).collect(),
            worker_id: worker_id.into(),
            client: OnceCell::new(),
            sandboxes: Arc::default(),
            profiles: BTreeMap::new(),
            pool: Mutex::default(),
            cooled: AtomicBool::new(false),
            removing: Arc::default(),
        }
    }

    /// The same runner with a warm pool of `profiles` (see [`profiles`]), started by
    /// [`Runner::warm_up`].
    #[must_use]
    pub fn with_warm(mut self, profiles: BTreeMap<String, Profile>) -> Self {
        self.profiles = profiles;
        self
    }

    /// The warm pool, started for `fleet` if it is not yet (and the engine answers).
    async fn pool(&self, fleet: &Fleet) -> Option<Arc<Pool>> {
        if self.profiles.is_empty() || self.cooled.load(Ordering::Acquire) {
            return None;
        }
        if let Some(pool) = self.pool.lock().expect("lock poisoned").as_ref() {
            return Some(Arc::clone(pool));
        }
        let (docker, _) = self.client().await.ok()?;
        let mut slot = self.pool.lock().expect("lock poisoned");
        if self.cooled.load(Ordering::Acquire) {
            return None;
        }
        let pool = slot.get_or_insert_with(|| {
            tracing::info!(languages = ?self.profiles.keys().collect::<Vec<_>>(), "starting the warm pool");
            Pool::start(
                self.profiles.clone(),
                self.cfg.clone(),
                self.worker_id.clone(),
                fleet.clone(),
                docker.clone(),
                Arc::clone(&self.sandboxes),
            )
        });
        Some(Arc::clone(pool))
    }

    /// The id this runner labels its containers with.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Removes the containers [`Sweep::verdict`] calls garbage: `fleet`'s whose worker is not in
    /// `live_workers` and at least `min_age` old, this runner's own that it does not use, and
    /// anyone's long past its deadline. Logs each one. Returns how many.
    ///
    /// # Errors
    /// The engine cannot be reached or listed.
    pub async fn sweep_fleet(
        &self,
        fleet: &Fleet,
        live_workers: &[String],
        min_age: Duration,
    ) -> Result<usize, RunnerError> {
        let (docker, _) = self.client().await?;
        let rule = Sweep {
            fleet,
            me: &self.worker_id,
            live: live_workers,
            now_s: sandbox::unix_now_s(),
            min_age_s: i64::try_from(min_age.as_secs()).unwrap_or(i64::MAX),
        };
        cleanup::sweep(docker, &self.sandboxes, &rule).await
    }

    async fn client(&self) -> Result<&(Docker, Arc<KillWatch>), RunnerError> {
        self.client
            .get_or_try_init(|| async {
                let docker = self.connect().await?;
                let kills = KillWatch::start(docker.clone(), &self.worker_id);
                Ok((docker, kills))
            })
            .await
    }

    async fn connect(&self) -> Result<Docker, RunnerError> {
        let timeout = Duration::from_millis(self.cfg.sandbox.api_timeout_ms);
        let docker = if self.cfg.docker.socket.is_empty() {
            Docker::connect_with_local_defaults()
        } else {
            Docker::connect_with_socket(
                &self.cfg.docker.socket,
                timeout.as_secs(),
                API_DEFAULT_VERSION,
            )
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
        let (docker, _) = self.client().await?;
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

    async fn sweep_orphans(
        &self,
        fleet: &Fleet,
        live_workers: &[String],
    ) -> Result<usize, RunnerError> {
        self.sweep_fleet(fleet, live_workers, ORPHAN_MIN_AGE).await
    }

    async fn warm_up(&self, fleet: &Fleet) {
        if self.pool(fleet).await.is_none() && !self.profiles.is_empty() {
            tracing::info!(
                "warm pool not started yet (engine not answering); the first job starts it"
            );
        }
    }

    async fn cool_down(&self) {
        self.cooled.store(true, Ordering::Release);
        let pool = self.pool.lock().expect("lock poisoned").take();
        if let Some(pool) = pool {
            pool.stop().await;
        }
    }

    async fn retry_removals(&self) -> usize {
        // Removals running in the background (taken warm containers) count as left, so a
        // draining worker waits for them before it exits.
        let removing = self.removing.load(Ordering::Acquire);
        if self.sandboxes.failed().is_empty() {
            return removing;
        }
        let Ok((docker, _)) = self.client().await else {
            return self.sandboxes.failed().len() + removing;
        };
        removing
            + self
                .sandboxes
                .retry_failed(|name| async move {
                    remove_container(docker, &name)
                    .await
                    .inspect_err(|error| {
                        tracing::debug!(container = %name, %error, "still cannot remove sandbox")
                    })
                    .is_ok()
                })
                .await
    }

    fn admit(&self, req: &RunRequest) -> Result<(), SpecError> {
        // No command for the job's kind: `run` reports that as the config gap it is.
        let Ok(body) = req.wrapper_body() else {
            return Ok(());
        };
        spec::check_command(&self.cfg.docker, req, &protocol::stdin_wrapper(&body))
    }

    async fn run(
        &self,
        req: &RunRequest,
        output: &Output,
        cancel: CancellationToken,
    ) -> Result<RunOutput, RunnerError> {
        let script = protocol::stdin_wrapper(&req.wrapper_body()?);
        let (docker, kills) = self.client().await?.clone();
        let mut sandbox = Sandbox::new(docker, Arc::clone(&self.sandboxes), kills);
        let warm = match self.pool(&req.fleet).await {
            Some(pool) => pool.take(&mut sandbox, req).await,
            None => None,
        };
        let was_warm = warm.is_some();
        let outcome = attempt::run(
            &mut sandbox,
            &self.cfg,
            req,
            output,
            script,
            &self.worker_id,
            warm,
            &cancel,
        )
        .await;
        // Also on errors: removing with force kills what still runs. Once the verdict is read
        // the container is removed in the background, off the job's path (its wrapper may
        // still be exiting: the verdict can come before the exit), unless so many removals
        // are already under way that the engine is falling behind.
        // (Nothing is left to remove when it was stopped at a limit or cancelled.)
        let in_flight = self.removing.load(Ordering::Acquire);
        let background = (outcome.is_ok() || was_warm) && in_flight < MAX_BACKGROUND_REMOVALS;
        if sandbox.id.is_some() && background {
            let removing = Arc::clone(&self.removing);
            removing.fetch_add(1, Ordering::AcqRel);
            tokio::spawn(async move {
                sandbox.remove().await;
                removing.fetch_sub(1, Ordering::AcqRel);
            });
        } else {
            sandbox.remove().await;
        }
        outcome
    }
}

/// Most container removals running in the background at once; beyond, a job removes its own
/// before it returns, so a slow engine slows the jobs down instead of piling up containers.
const MAX_BACKGROUND_REMOVALS: usize = 8;

/// A worker that just started may not have heartbeated yet: the periodic sweep spares other
/// workers' containers younger than this.
const ORPHAN_MIN_AGE: Duration = Duration::from_secs(120);

/// The engine is not there (socket missing, connection refused, timeout).
fn unavailable(what: &str, e: &DockerError) -> RunnerError {
    RunnerError::Unavailable {
        detail: format!("{what}: {e}"),
    }
}

/// An Engine API call failed: `Unavailable` when the engine cannot be reached, `Api` when it
/// answered with an error.
fn api_error(call: impl Into<String>, e: DockerError) -> RunnerError {
    match e {
        DockerError::SocketNotFoundError(_)
        | DockerError::HyperLegacyError { .. }
        | DockerError::IOError { .. }
        | DockerError::RequestTimeoutError => unavailable(&call.into(), &e),
        other => RunnerError::Api {
            call: call.into(),
            source: Some(Box::new(other)),
        },
    }
}
