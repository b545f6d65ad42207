//! One warm container while it waits: its attach, its watch, and its removal when it is
//! dropped without being handed over.

use std::sync::Arc;
use std::time::Instant;

use bollard::Docker;
use futures_util::StreamExt as _;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

use super::super::attempt::{Input, Stream};
use super::super::cleanup::remove_container;
use crate::runner::sandbox::Sandboxes;

/// One container waiting for a job. Dropped without being handed over, it is removed in the
/// background.
pub(super) struct Waiting {
    pub(super) name: String,
    pub(super) user: (u32, u32),
    pub(super) input: Option<Input>,
    pub(super) born: Instant,
    pub(super) hand_over: Option<oneshot::Sender<()>>,
    /// Ends with the output stream when handed over, with `None` when the container died.
    pub(super) watch: Option<JoinHandle<Option<Stream>>>,
    pub(super) docker: Docker,
    pub(super) sandboxes: Arc<Sandboxes>,
}

impl Waiting {
    pub(super) fn dead(&self) -> bool {
        self.watch.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Removes the container, waiting for the engine.
    pub(super) async fn discard(mut self, why: &str) {
        tracing::debug!(container = %self.name, why, "removing warm container");
        let name = std::mem::take(&mut self.name);
        remove(&self.docker, &name, &self.sandboxes).await;
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return;
        }
        let (docker, sandboxes, name) = (
            self.docker.clone(),
            Arc::clone(&self.sandboxes),
            std::mem::take(&mut self.name),
        );
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { remove(&docker, &name, &sandboxes).await });
            }
            Err(_) => sandboxes.removal_failed(&name),
        }
    }
}

/// Removes a warm container; a failure goes on the runner's list to retry.
async fn remove(docker: &Docker, name: &str, sandboxes: &Sandboxes) {
    match remove_container(docker, name).await {
        Ok(()) => sandboxes.removed(name),
        Err(error) => {
            sandboxes.removal_failed(name);
            tracing::warn!(container = %name, %error, "cannot remove warm container; retrying from upkeep");
        }
    }
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting").field("name", &self.name).finish()
    }
}

/// Holds a waiting container's output until it is handed over (`Some`), or until it prints
/// or its stream ends (`None`): the stub prints nothing while it waits, so either means the
/// container is dead.
pub(super) async fn watch(
    mut output: Stream,
    handed: oneshot::Receiver<()>,
    wake: Arc<Notify>,
) -> Option<Stream> {
    let handed = tokio::select! {
        biased;
        _ = handed => true,
        _ = output.next() => false,
    };
    if handed {
        Some(output)
    } else {
        wake.notify_one();
        None
    }
}
