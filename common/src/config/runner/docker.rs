//! Settings of the Docker backend (`runner.docker.*`): where the engine is, which OCI runtime
//! runs job containers, and how job files reach them. What every sandbox gets (user, limits,
//! seccomp) is `runner.sandbox`.

use serde::{Deserialize, Serialize};

/// How job files reach `/work` in a Docker sandbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileTransfer {
    /// A tar archive streamed over the container's attached stdin and unpacked by the image's
    /// `tar` into a plain tmpfs: no extra Engine API round trip.
    #[default]
    Stdin,
    /// The Engine API archive upload (`PUT /containers/{id}/archive`). Docker cannot upload
    /// into a `--tmpfs` mount of a read-only container, so `/work` becomes an anonymous
    /// tmpfs-backed volume instead; costs about 40 ms per job.
    Archive,
}

/// The Docker sandbox: where the engine is and how job containers are run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// Engine socket, e.g. `unix:///var/run/docker.sock`; empty = `DOCKER_HOST` or the default.
    pub socket: String,
    /// OCI runtime for job containers, e.g. `runsc`; empty = the daemon's default.
    pub runtime: String,
    /// How job files reach `/work`.
    pub file_transfer: FileTransfer,
}
