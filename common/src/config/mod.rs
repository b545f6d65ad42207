//! Configuration: defaults < TOML file < `QUAYSIDE_*` environment (`__` separates levels, so
//! `QUAYSIDE_WORKER__SLOTS=8` sets `worker.slots`). Unknown keys are errors, not typos ignored.
//!
//! One file per section, each with its defaults and its own `validate`, built from the shared
//! checks in `check` (every refusal names its key):
//!
//! - `redis`: `redis.*`, where Redis is, auth and TLS.
//! - `queue`: `queue.*`, `worker.*` and `retry.*`, the queue and the workers serving it.
//! - `limits`: `limits.*`, what a job may ask for.
//! - `languages`: `languages.<name>.*`, how each language is built and run.
//! - `runner`: `runner.*`, the sandbox backend, what every sandbox gets (`runner.sandbox`),
//!   and each backend's own settings.
//! - `gateway`: `gateway.*`, the HTTP gateway (`quayside serve`).
//! - `telemetry`: `metrics.*` and `log.*`.
//! - `tenants`: `tenants.<name>.*`, fair-share weight, quotas, tokens and webhook secret of each
//!   caller of the fleet.
//! - `webhooks`: `webhooks.*`, which callback hosts are allowed and how delivery is retried.
//! - `secret`: [`Secret`] and URL redaction, for what is printed or logged.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

mod check;
mod gateway;
mod languages;
mod limits;
mod queue;
mod redis;
mod runner;
mod secret;
mod telemetry;
mod tenants;
mod webhooks;

pub use gateway::GatewayConfig;
pub use languages::{default_image, default_languages, LanguageConfig, RUNNER_IMAGE_VERSION};
pub use limits::LimitsConfig;
pub use queue::{QueueConfig, RetryConfig, WorkerConfig};
pub(crate) use redis::host_port;
pub use redis::{ClusterConfig, RedisConfig, SentinelConfig};
pub use runner::{
    DockerConfig, FileTransfer, JobUser, KubernetesConfig, RunnerBackend, RunnerConfig,
    SandboxConfig, SeccompProfile, WarmConfig,
};
pub use secret::{redact_url, Secret};
pub use telemetry::{LogConfig, MetricsConfig};
pub use tenants::{
    tenant_label, TenantConfig, DEFAULT_LABEL, MAX_TENANTS, MAX_WEIGHT, OTHER_LABEL,
};
pub use webhooks::WebhooksConfig;

/// Why configuration could not be loaded. Messages name the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(Box<figment::Error>),
    #[error("invalid config: {key}: {problem}")]
    Invalid { key: &'static str, problem: String },
}

/// The whole configuration tree; the CLI reads `redis` and `queue`, the worker all of it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub redis: RedisConfig,
    pub queue: QueueConfig,
    pub worker: WorkerConfig,
    pub retry: RetryConfig,
    pub limits: LimitsConfig,
    pub runner: RunnerConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    /// The HTTP gateway (`quayside serve`).
    pub gateway: GatewayConfig,
    /// Language table: name (the job's `language`) to how it is built and run.
    pub languages: BTreeMap<String, LanguageConfig>,
    /// Tenants by name: fair-share weight, quotas, gateway tokens, webhook secret.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Completion webhooks: allowed hosts, default secret, delivery.
    pub webhooks: WebhooksConfig,
}

/// Variables read verbatim rather than parsed by figment, which would turn `123` into a number
/// and `[x]` into an array: secrets can be any string.
const RAW_ENV: [(&str, &str); 8] = [
    ("QUAYSIDE_REDIS__PASSWORD", "redis.password"),
    ("QUAYSIDE_REDIS__USERNAME", "redis.username"),
    ("QUAYSIDE_REDIS__SENTINEL__MASTER", "redis.sentinel.master"),
    (
        "QUAYSIDE_REDIS__SENTINEL__ADDRESSES",
        "redis.sentinel.addresses",
    ),
    (
        "QUAYSIDE_REDIS__SENTINEL__USERNAME",
        "redis.sentinel.username",
    ),
    (
        "QUAYSIDE_REDIS__SENTINEL__PASSWORD",
        "redis.sentinel.password",
    ),
    ("QUAYSIDE_REDIS__CLUSTER__NODES", "redis.cluster.nodes"),
    ("QUAYSIDE_WEBHOOKS__SECRET", "webhooks.secret"),
];

/// `QUAYSIDE_*` variables that are not config keys, so that setting them never stops a worker or
/// the CLI started from the same shell: `QUAYSIDE_CONFIG` (the `--config` file of the CLI and
/// the worker), and the scripts' `QUAYSIDE_VERBOSE` and `QUAYSIDE_IMAGE_CACHE`,
/// `QUAYSIDE_BASE_IMAGE`, `QUAYSIDE_IMAGE_PREFIX` (scripts/build-images.sh). The test
/// `tests/tests/scripts.rs` finds any other the scripts read.
const NOT_CONFIG_ENV: [&str; 5] = [
    "config",
    "verbose",
    "image_cache",
    "base_image",
    "image_prefix",
];

/// How long past a job's own wall times the executor waits for a runner that does not return.
pub const RUNNER_BACKSTOP: Duration = Duration::from_secs(60);

impl Config {
    /// How long a worker keeps retrying a fenced write (result, retry, hand-back) while Redis
    /// does not answer, before leaving the job to be reclaimed: four leases, at least a minute.
    pub fn persist_give_up(&self) -> Duration {
        Duration::from_millis(self.worker.lease_ms.saturating_mul(4)).max(Duration::from_secs(60))
    }

    /// The longest a worker that lost a job's lease (stalled, partitioned, or taken over) may
    /// still try to act on the job: it learns of the loss within a lease, may be draining, runs
    /// the job to its wall times plus the backstop, then keeps trying its write until it gives
    /// up. Results must outlive it (`queue.min_result_ttl_s`).
    pub fn stale_window(&self) -> Duration {
        let max = &self.limits.max;
        Duration::from_millis(
            self.worker.lease_ms
                + self.worker.drain_timeout_ms
                + max.compile_wall_time_ms
                + max.run_wall_time_ms,
        ) + RUNNER_BACKSTOP
            + self.persist_give_up()
    }

    /// Loads defaults, then `path` (TOML) if given, then `QUAYSIDE_*` variables, and validates.
    ///
    /// # Errors
    /// A missing or unreadable file, an unknown key, a wrong type or an invalid value, each
    /// naming the key.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::figment(path)
            .extract::<Config>()
            .map_err(|e| ConfigError::Load(Box::new(e)))
            .and_then(Config::finish)
    }

    /// The provider chain [`Config::load`] extracts from.
    pub fn figment(path: Option<&Path>) -> Figment {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(p) = path {
            // `file_exact`: a missing --config is an error, not silently nothing.
            fig = fig.merge(runner::FormerKeys(Toml::file_exact(p)));
        }
        let ignored: Vec<&str> = RAW_ENV
            .iter()
            .map(|(_, key)| *key)
            .chain(NOT_CONFIG_ENV)
            .collect();
        fig = fig.merge(runner::FormerKeys(
            Env::prefixed("QUAYSIDE_").split("__").ignore(&ignored),
        ));
        for (var, key) in RAW_ENV {
            if let Ok(value) = std::env::var(var) {
                fig = fig.merge(Serialized::default(key, value));
            }
        }
        fig
    }

    fn finish(mut self) -> Result<Config, ConfigError> {
        if self.languages.is_empty() {
            self.languages = default_languages();
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks every section, then what spans sections (the result TTL floor against the
    /// stale window, language limits against `limits`, the gateway's body size against the
    /// largest job).
    ///
    /// # Errors
    /// The first invalid value, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.redis.validate()?;
        self.worker.validate()?;
        self.retry.validate()?;
        self.queue.validate(self.stale_window())?;
        self.limits.validate()?;
        languages::validate(&self.languages, &self.limits)?;
        self.runner.validate()?;
        self.runner.docker.warm.validate(&self.languages)?;
        self.gateway.validate(&self.limits)?;
        tenants::validate(&self.tenants, &self.gateway)?;
        self.webhooks.validate()?;
        self.metrics.validate()
    }

    /// A copy safe to print or log: the Redis password, in the URL or on its own, the
    /// gateway's tokens, the tenants' tokens and webhook secrets and `webhooks.secret` are replaced.
    pub fn redacted(&self) -> Config {
        Config {
            redis: self.redis.redacted(),
            gateway: self.gateway.redacted(),
            tenants: tenants::redacted(&self.tenants),
            webhooks: self.webhooks.redacted(),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests;
