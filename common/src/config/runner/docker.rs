//! Settings of the Docker backend (`runner.docker.*`): where the engine is, which OCI runtime
//! runs job containers, how job files reach them, and the warm pool. What every sandbox gets
//! (user, limits, seccomp) is `runner.sandbox`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

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
    /// Containers created and started before their job is known (`runner.docker.warm.*`).
    pub warm: WarmConfig,
}

/// The warm pool: per language, containers already created, attached and started with the
/// language's default limits, each waiting for one job (see `docs/design/warm-pool.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WarmConfig {
    /// Whether the worker keeps warm containers at all.
    pub enabled: bool,
    /// Waiting containers per language (a key of `languages`); a language not listed gets
    /// [`WarmConfig::DEFAULT_SIZE`], `0` turns the pool off for it.
    pub size: BTreeMap<String, usize>,
    /// Seconds a container may wait for a job before the pool replaces it; also what its
    /// `quayside.deadline` label counts from, so sweeps judge a crashed worker's pool.
    pub max_idle_s: u64,
}

impl WarmConfig {
    /// Waiting containers per language unless `size` says otherwise.
    pub const DEFAULT_SIZE: usize = 1;

    /// How many containers wait for `language`'s jobs (0 when the pool is off).
    pub fn size_of(&self, language: &str) -> usize {
        if !self.enabled {
            return 0;
        }
        self.size
            .get(language)
            .copied()
            .unwrap_or(Self::DEFAULT_SIZE)
    }
}

impl WarmConfig {
    /// `max_idle_s` is positive and every `size` key names a configured language.
    ///
    /// # Errors
    /// The key that is wrong.
    pub(in crate::config) fn validate<V>(
        &self,
        languages: &BTreeMap<String, V>,
    ) -> Result<(), ConfigError> {
        if self.max_idle_s == 0 {
            return Err(ConfigError::Invalid {
                key: "runner.docker.warm.max_idle_s",
                problem: "must be at least 1 second".into(),
            });
        }
        if let Some(unknown) = self.size.keys().find(|l| !languages.contains_key(*l)) {
            return Err(ConfigError::Invalid {
                key: "runner.docker.warm.size",
                problem: format!("{unknown:?} is not a configured language"),
            });
        }
        Ok(())
    }
}

impl Default for WarmConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            size: BTreeMap::new(),
            max_idle_s: 600,
        }
    }
}
