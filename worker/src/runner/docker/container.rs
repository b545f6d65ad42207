//! The container of one attempt: its removal guard (a removal that fails goes on the runner's
//! list to retry), and how it ended once its output did (exit code, OOM kill, and whether the
//! engine was asked to kill it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    InspectContainerOptions, RemoveContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt as _;

use super::api_error;
use super::events::{KillWatch, Witness};
use crate::runner::sandbox::{self, Ending, Sandboxes};
use crate::runner::RunnerError;

/// How long an exited container may take to show as stopped after its output ended.
const EXIT_GRACE: Duration = Duration::from_secs(5);
/// How long the state of a container whose output ended is asked for again while the engine
/// does not answer (a restart): its verdict is known to the engine, so it is worth waiting for.
const INSPECT_PATIENCE: Duration = Duration::from_secs(60);

/// The container of one attempt. Removed by [`Sandbox::remove`], or in the background if the
/// attempt is dropped half way (an outer timeout). A removal that fails goes on the runner's
/// list of [`Sandboxes`] to remove later.
#[derive(Debug)]
pub(super) struct Sandbox {
    pub(super) docker: Docker,
    /// The container's name (the Engine API takes names wherever it takes ids).
    pub(super) id: Option<String>,
    pub(super) sandboxes: Arc<Sandboxes>,
    pub(super) kills: Arc<KillWatch>,
}

impl Sandbox {
    pub(super) fn new(docker: Docker, sandboxes: Arc<Sandboxes>, kills: Arc<KillWatch>) -> Self {
        Self {
            docker,
            id: None,
            sandboxes,
            kills,
        }
    }

    /// Force-removes the container and its anonymous volume, if one was created.
    pub(super) async fn remove(&mut self) {
        if let Some(id) = self.id.take() {
            remove_tracked(&self.docker, &id, &self.sandboxes, &self.kills).await;
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let (docker, sandboxes, kills) = (
            self.docker.clone(),
            Arc::clone(&self.sandboxes),
            Arc::clone(&self.kills),
        );
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime
                    .spawn(async move { remove_tracked(&docker, &id, &sandboxes, &kills).await });
            }
            Err(_) => {
                sandboxes.removal_failed(&id);
                tracing::warn!(container = %id, "no runtime to remove sandbox; the sweep will")
            }
        }
    }
}

/// Removes an attempt's container and updates the runner's lists: gone, or left to retry.
async fn remove_tracked(docker: &Docker, id: &str, sandboxes: &Sandboxes, kills: &KillWatch) {
    kills.forget(id);
    match remove_container(docker, id).await {
        Ok(()) => sandboxes.removed(id),
        Err(error) => {
            sandboxes.removal_failed(id);
            tracing::warn!(container = %id, %error, "cannot remove sandbox; retrying from upkeep");
        }
    }
}

/// Force-removes a container (killing it if it runs) with its anonymous volumes. A container
/// that is already gone or already being removed counts as removed.
pub(super) async fn remove_container(docker: &Docker, id: &str) -> Result<(), DockerError> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match docker.remove_container(id, Some(options)).await {
        Err(DockerError::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        })
        | Ok(()) => Ok(()),
        Err(e) => Err(e),
    }
}

/// How the container ended, from its state once it has stopped: exit code and OOM kill. The
/// state is asked for again while the engine does not answer (the program's verdict is in it);
/// a container that is gone, or that died of a signal the engine was asked to send (or while
/// its events were not followed), was stopped from outside.
pub(super) async fn exited(
    docker: &Docker,
    id: &str,
    kills: &KillWatch,
    generation: u64,
) -> Result<Ending, RunnerError> {
    let mut state = inspect(docker, id).await?.state.unwrap_or_default();
    if state.running == Some(true) {
        // The output can end a moment before the engine records the exit.
        let until = WaitContainerOptions {
            condition: "not-running".into(),
        };
        let mut wait = docker.wait_container(id, Some(until));
        // A non-zero exit arrives as an error here; the inspect below reads it either way.
        if tokio::time::timeout(EXIT_GRACE, wait.next()).await.is_err() {
            return Err(RunnerError::Failed {
                context: "lost the output of a sandbox that is still running".into(),
                transient: true,
                source: None,
            });
        }
        state = inspect(docker, id).await?.state.unwrap_or_default();
    }
    let code = state.exit_code.unwrap_or(-1);
    let oom_killed = state.oom_killed.unwrap_or(false);
    if !oom_killed && sandbox::signal_of(code).is_some() {
        match kills.witness(id, generation, EXIT_GRACE).await {
            Witness::Clean => {}
            Witness::Killed { signal } => {
                return Err(RunnerError::Interrupted {
                    detail: format!("the engine killed container {id} (signal {signal})"),
                })
            }
            Witness::Unknown => {
                return Err(RunnerError::Interrupted {
                    detail: format!(
                    "container {id} died of a signal while the engine's events were not followed"
                ),
                })
            }
        }
    }
    Ok(Ending::Exited { code, oom_killed })
}

/// Inspects a container, asking again while the engine does not answer, for up to
/// [`INSPECT_PATIENCE`]. A container that is gone was removed from outside.
async fn inspect(
    docker: &Docker,
    id: &str,
) -> Result<bollard::models::ContainerInspectResponse, RunnerError> {
    let give_up = Instant::now() + INSPECT_PATIENCE;
    let mut delay = Duration::from_millis(100);
    loop {
        match docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(inspected) => return Ok(inspected),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                return Err(RunnerError::Interrupted {
                    detail: format!("container {id} was removed while it ran"),
                })
            }
            Err(e) => {
                let error = api_error("cannot inspect the sandbox", e);
                if !matches!(error, RunnerError::Unavailable { .. }) || Instant::now() >= give_up {
                    return Err(error);
                }
                tracing::debug!(container = %id, %error, "engine not answering; asking again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}
