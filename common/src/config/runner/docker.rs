//! Settings of the Docker backend (`runner.docker.*`): where the engine is and how every job
//! container is hardened.

use serde::{Deserialize, Serialize};

use super::SeccompProfile;
use crate::config::check::invalid;
use crate::config::ConfigError;

/// Highest uid an attempt may get: clear of `(uid_t)-1`, which system calls read as "no
/// change", and of the overflow uid some interfaces report for unmapped ids.
const MAX_UID: u32 = u32::MAX - 2;

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

/// The Docker sandbox: where the engine is and how every job container is hardened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// Engine socket, e.g. `unix:///var/run/docker.sock`; empty = `DOCKER_HOST` or the default.
    pub socket: String,
    /// OCI runtime for job containers, e.g. `runsc`; empty = the daemon's default.
    pub runtime: String,
    /// Base `uid:gid` (numeric) of job processes; never root.
    pub user: String,
    /// Each attempt runs as `user`'s uid plus a random offset below this (1 = exactly `user`),
    /// so per-user kernel limits (inotify instances, pipe buffers, queued signals,
    /// `RLIMIT_NPROC`) are not shared with the jobs running beside it.
    pub uid_range: u32,
    /// The seccomp profile of job containers: `quayside` (ours, `deploy/seccomp/quayside.json`)
    /// or `runtime_default` (the engine's default profile).
    pub seccomp: SeccompProfile,
    /// Size of each writable tmpfs, `/work` and `/tmp`; nothing else is writable.
    pub tmpfs_bytes: u64,
    /// Largest file a job process may write (`RLIMIT_FSIZE`).
    pub max_file_bytes: u64,
    /// Files a job process may hold open at once (`RLIMIT_NOFILE`).
    pub max_open_files: u64,
    /// Longest one Engine API request may take (the job's own time is bounded by its limits).
    pub api_timeout_ms: u64,
    /// How job files reach `/work`.
    pub file_transfer: FileTransfer,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            socket: String::new(),
            runtime: String::new(),
            user: "10001:10001".into(),
            uid_range: 1 << 20,
            seccomp: SeccompProfile::Quayside,
            tmpfs_bytes: 64 << 20,
            max_file_bytes: 64 << 20,
            max_open_files: 1024,
            api_timeout_ms: 30_000,
            file_transfer: FileTransfer::Stdin,
        }
    }
}

impl DockerConfig {
    /// The numeric uid and gid of [`DockerConfig::user`], if it has that form.
    pub fn uid_gid(&self) -> Option<(u32, u32)> {
        let (uid, gid) = self.user.split_once(':')?;
        Some((uid.parse().ok()?, gid.parse().ok()?))
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        match self.uid_gid() {
            None => {
                return Err(invalid(
                    "runner.docker.user",
                    "must be numeric uid:gid, e.g. 10001:10001",
                ))
            }
            Some((0, _)) | Some((_, 0)) => {
                return Err(invalid(
                    "runner.docker.user",
                    "job processes must not run as root",
                ))
            }
            Some((uid, _)) => {
                if self.uid_range == 0
                    || uid
                        .checked_add(self.uid_range)
                        .is_none_or(|top| top > MAX_UID)
                {
                    return Err(invalid(
                        "runner.docker.uid_range",
                        format!("must be at least 1, and user's uid plus it at most {MAX_UID}"),
                    ));
                }
            }
        }
        if self.tmpfs_bytes < 1 << 20 {
            return Err(invalid(
                "runner.docker.tmpfs_bytes",
                "must be at least 1 MiB",
            ));
        }
        if self.max_file_bytes == 0 {
            return Err(invalid(
                "runner.docker.max_file_bytes",
                "must be greater than 0",
            ));
        }
        if self.max_open_files < 16 {
            return Err(invalid(
                "runner.docker.max_open_files",
                "must be at least 16",
            ));
        }
        if self.api_timeout_ms < 1_000 {
            return Err(invalid(
                "runner.docker.api_timeout_ms",
                "must be at least 1000",
            ));
        }
        Ok(())
    }
}
