//! Removing what an attempt created, on every path: the container's removal guard (a removal
//! that fails goes on the runner's list to retry), and the label sweep of what a fleet's dead
//! workers left.

use std::collections::HashMap;
use std::sync::Arc;

use bollard::errors::Error as DockerError;
use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use bollard::Docker;

use super::api_error;
use super::events::KillWatch;
use super::pool::POOL_PREFIX;
use crate::runner::sandbox::{Sandboxes, Sweep, LABEL_JOB, LABEL_POOL, LABEL_WORKER};
use crate::runner::RunnerError;

/// The containers, running or not, that carry `label` (`key`, or `key=value`).
///
/// # Errors
/// The engine cannot be reached or listed.
pub async fn labelled(docker: &Docker, label: &str) -> Result<Vec<ContainerSummary>, DockerError> {
    let filters = HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    docker.list_containers(Some(options)).await
}

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

/// Removes the containers labelled as sandboxes (job containers and warm ones) for which
/// `rule` gives a reason, and any fleet's warm container that stopped (its stub exits when its
/// worker's attach goes: a worker that died), logging each; but not one of a live worker of
/// this fleet, which may have given it a job that just ended and not read its state yet.
/// Returns how many.
///
/// # Errors
/// The engine cannot be reached or listed.
pub(super) async fn sweep(
    docker: &Docker,
    sandboxes: &Sandboxes,
    rule: &Sweep<'_>,
) -> Result<usize, RunnerError> {
    let mut containers = labelled(docker, LABEL_JOB)
        .await
        .map_err(|e| api_error("cannot list sandbox containers", e))?;
    containers.extend(
        labelled(docker, LABEL_POOL)
            .await
            .map_err(|e| api_error("cannot list warm containers", e))?,
    );
    let mut removed = 0;
    for c in containers {
        let Some(labels) = c.labels else { continue };
        // Names come with a leading slash; the runner tracks them without.
        let Some(name) = c
            .names
            .and_then(|n| n.first().map(|n| n.trim_start_matches('/').to_owned()))
            .or(c.id)
        else {
            continue;
        };
        let active = sandboxes.is_active(&name);
        let stopped_warm = name.starts_with(POOL_PREFIX)
            && labels.contains_key(LABEL_POOL)
            && matches!(
                c.state,
                Some(ContainerSummaryStateEnum::EXITED | ContainerSummaryStateEnum::DEAD)
            );
        let why = if stopped_warm && !active && !rule.owner_is_live_peer(&labels) {
            Some("a warm container that stopped with no worker to remove it")
        } else {
            rule.verdict(&labels, c.created, active)
        };
        let Some(why) = why else {
            continue;
        };
        let (job, owner) = (labels.get(LABEL_JOB), labels.get(LABEL_WORKER));
        match remove_container(docker, &name).await {
            Ok(()) => {
                sandboxes.removed(&name);
                removed += 1;
                tracing::info!(container = %name, job = ?job, owner = ?owner, why, "removed sandbox");
            }
            Err(error) => {
                tracing::warn!(container = %name, job = ?job, owner = ?owner, why, %error, "cannot remove sandbox")
            }
        }
    }
    Ok(removed)
}
