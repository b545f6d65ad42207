//! Configuration: defaults < TOML file < `QUAYSIDE_*` environment (`__` separates levels, so
//! `QUAYSIDE_WORKER__SLOTS=8` sets `worker.slots`). Unknown keys are errors, not typos ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::job::SpecError;
use crate::keys::Keys;
use crate::limits::{Limits, LimitsSpec};

mod docker;
mod gateway;
mod kubernetes;
mod limits;
pub use docker::{DockerConfig, FileTransfer};
pub use gateway::GatewayConfig;
pub use kubernetes::KubernetesConfig;
pub use limits::LimitsConfig;

/// Why configuration could not be loaded. Messages name the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(Box<figment::Error>),
    #[error("invalid config: {key}: {problem}")]
    Invalid { key: &'static str, problem: String },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
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
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS; the password is never
    /// printed.
    pub url: String,
    /// ACL user (Redis 6+), as an alternative to putting it in `url`.
    pub username: Option<String>,
    /// Password (of `username`, or of the default user), as an alternative to putting it in
    /// `url`. Redacted wherever the config is printed or logged.
    pub password: Option<Secret>,
    /// PEM file with the CA certificate(s) to trust for `rediss://` instead of the system's.
    pub tls_ca_file: Option<PathBuf>,
    /// Pooled connections per process (each multiplexes many requests).
    pub pool_size: usize,
    /// Give up on a connection attempt after this long.
    pub connect_timeout_ms: u64,
    /// Give up on a command's reply after this long (blocking reads add their block time).
    pub command_timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            username: None,
            password: None,
            tls_ca_file: None,
            pool_size: 8,
            connect_timeout_ms: 5_000,
            command_timeout_ms: 10_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Queue name; every key of the queue is tagged `{name}`.
    pub name: String,
    /// Entries (queued + running) past which enqueueing is refused; 0 = unlimited.
    pub max_depth: u64,
    /// Dead letters kept; the oldest are trimmed past this (their job records stay until TTL).
    pub dlq_max_len: u64,
    /// Entries kept in each job's live log stream.
    pub log_max_entries: u64,
    /// Result TTL for jobs that set none.
    pub default_result_ttl_s: u64,
    /// Smallest result TTL a job may ask for. It must exceed the longest time a worker that
    /// lost a job's lease may still try to write it ([`Config::stale_window`]), so a record is
    /// never gone (and its id free again) while such a worker can still act on it, and waiters
    /// always find the result.
    pub min_result_ttl_s: u64,
    /// Largest result TTL a job may ask for.
    pub max_result_ttl_s: u64,
    /// Executions allowed per job when it sets no `max_attempts`.
    pub default_max_attempts: u32,
    /// Largest `max_attempts` a job may ask for.
    pub max_attempts_cap: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            name: "default".into(),
            max_depth: 0,
            dlq_max_len: 100_000,
            log_max_entries: 10_000,
            default_result_ttl_s: 86_400,
            min_result_ttl_s: 3_600,
            max_result_ttl_s: 7 * 86_400,
            default_max_attempts: 3,
            max_attempts_cap: 20,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Consumer name; generated (host-pid-random) when unset. Must be unique per process.
    pub id: Option<String>,
    /// Jobs run at once; the worker never claims more than it has free.
    pub slots: usize,
    /// A claimed job whose lease is not renewed for this long may be taken over.
    pub lease_ms: u64,
    /// How long one blocking wait for new entries lasts before re-checking.
    pub claim_block_ms: u64,
    /// How often to look for entries whose lease expired.
    pub reclaim_interval_ms: u64,
    /// How often to move due retries back to their streams.
    pub promote_interval_ms: u64,
    /// How often to heartbeat into the worker registry.
    pub heartbeat_interval_ms: u64,
    /// 0 = strict priority. N > 0: one claim in N starts from the lowest non-empty priority, so
    /// low priority still moves under sustained high-priority load.
    pub starvation_guard: u32,
    /// On SIGTERM, how long in-flight jobs may run before they are stopped and handed back.
    pub drain_timeout_ms: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            id: None,
            slots: 4,
            lease_ms: 30_000,
            claim_block_ms: 5_000,
            reclaim_interval_ms: 5_000,
            promote_interval_ms: 250,
            heartbeat_interval_ms: 5_000,
            starvation_guard: 20,
            drain_timeout_ms: 25_000,
        }
    }
}

/// Retries after infrastructure failures of a job's own (its sandbox could not be created, was
/// killed from outside, ...): backoff with equal jitter over `base * 2^(failures-1)`, capped,
/// for as long as `give_up_after_ms`. Failures while the runner as a whole is unavailable are
/// not the job's: it is handed back at no cost, and the worker stops claiming until the runner
/// is back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First backoff step.
    pub base_ms: u64,
    /// Largest backoff step.
    pub max_ms: u64,
    /// A job whose first infrastructure failure is this long ago is dead-lettered
    /// (`infra_timeout`) at its next one. Bounds retries by time, not count: quick failures in a
    /// burst cannot use up a job. `max_attempts` counts only executions whose worker died.
    pub give_up_after_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            base_ms: 1_000,
            max_ms: 60_000,
            give_up_after_ms: 600_000,
        }
    }
}

/// The seccomp profile job sandboxes run under. gVisor (`runsc`) ignores both: its own kernel
/// is the filter there (see `docs/security.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompProfile {
    /// Quayside's own profile, `deploy/seccomp/quayside.json`: the engine's default without
    /// what a compile or run job never needs (ptrace, io_uring, vsock and other non-inet
    /// socket families, ...). Docker gets it through the Engine API; Kubernetes nodes must
    /// have it installed as a `Localhost` profile (`deploy/k8s/README.md`).
    #[default]
    Quayside,
    /// The container runtime's default profile (Docker's, or the kubelet's `RuntimeDefault`):
    /// the fallback where Quayside's profile cannot be installed.
    RuntimeDefault,
}

/// Which sandbox backend runs jobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerBackend {
    Docker,
    Kubernetes,
    /// Kubernetes inside a cluster (`KUBERNETES_SERVICE_HOST` set), Docker otherwise.
    #[default]
    Auto,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunnerConfig {
    /// Which sandbox backend runs jobs.
    pub backend: RunnerBackend,
    /// Settings of the Docker backend.
    pub docker: DockerConfig,
    /// Settings of the Kubernetes backend.
    pub kubernetes: KubernetesConfig,
}

impl RunnerBackend {
    /// The backend to build: `Auto` becomes Kubernetes when `in_cluster` (the worker runs in
    /// a pod: `KUBERNETES_SERVICE_HOST` is set), Docker otherwise.
    pub fn resolve(self, in_cluster: bool) -> RunnerBackend {
        match self {
            RunnerBackend::Auto if in_cluster => RunnerBackend::Kubernetes,
            RunnerBackend::Auto => RunnerBackend::Docker,
            other => other,
        }
    }
}

/// The worker's operations endpoint and the metrics it serves there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the HTTP listener serving `/metrics`, `/healthz` and `/readyz`; empty = none.
    pub listen_addr: String,
    /// Record metrics. Off, `/metrics` answers 404 and nothing is sampled (for benchmarks).
    pub enabled: bool,
    /// How often the worker samples queue depths, lag, pending, delayed and dead-letter counts.
    pub sample_interval_ms: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen_addr: "0.0.0.0:9464".into(),
            enabled: true,
            sample_interval_ms: 5_000,
        }
    }
}

/// Logging. `RUST_LOG`, when set, wins over `level`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `quayside_worker=debug,info`, ...
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

/// A string that never appears in `Debug` output. It serializes as itself (configs written
/// for workers must carry it); print configs through [`Config::redacted`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

const REDACTED: &str = "***";

/// Variables read verbatim rather than parsed by figment, which would turn `123` into a number
/// and `[x]` into an array: secrets can be any string.
const RAW_ENV: [(&str, &str); 2] = [
    ("QUAYSIDE_REDIS__PASSWORD", "redis.password"),
    ("QUAYSIDE_REDIS__USERNAME", "redis.username"),
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

/// How one language is built and run. Commands are `sh -c` strings run in `/work`, where
/// `{options}` becomes the job's compiler options, `{sources}` the job's files ending in
/// `.{source_extension}` and `{entry}` the entry file (the job's only source file when it has
/// exactly one), each shell-quoted. The job's args are the positional parameters of the run
/// command, so it passes them on as `"$@"`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LanguageConfig {
    /// Runner image, e.g. `quayside/runner-c:2`; never pulled.
    pub image: String,
    /// Extension of this language's source files, without the dot; what `{sources}` lists.
    pub source_extension: String,
    /// The file the program starts from in a multi-file job, e.g. `main.py`.
    pub entry_file: String,
    /// Builds the program before a `run` job runs it; empty = nothing to build.
    pub build_command: String,
    /// Runs the built program with the job's stdin; must pass `"$@"` on for the job's args.
    pub run_command: String,
    /// What a `compile` job runs: diagnostics only, no program (object files, metadata).
    pub compile_only_command: String,
    /// Defaults for this language where a job sets no limit, over `limits.default` (e.g. more
    /// memory for the Go toolchain). Still bounded by `limits.min` and `limits.max`.
    #[serde(skip_serializing_if = "is_default_limits")]
    pub limits: LimitsSpec,
}

fn is_default_limits(l: &LimitsSpec) -> bool {
    *l == LimitsSpec::default()
}

impl LanguageConfig {
    /// This language's default limits: its own where set, the worker's otherwise.
    ///
    /// # Errors
    /// A language default over `max` (refused by config validation first).
    pub fn default_limits(&self, limits: &LimitsConfig) -> Result<Limits, SpecError> {
        self.limits
            .resolve(&limits.default, &limits.min, &limits.max)
    }

    /// The job's source files: those ending in `.{source_extension}`, in name order.
    pub fn source_files<'a>(&self, files: &'a BTreeMap<String, String>) -> Vec<&'a str> {
        let suffix = format!(".{}", self.source_extension);
        files
            .keys()
            .filter(|f| !self.source_extension.is_empty() && f.ends_with(&suffix))
            .map(String::as_str)
            .collect()
    }

    /// The file a job's program starts from (`{entry}`): its only source file when it has
    /// exactly one, whatever its name (`quayside submit hello.py`), else `entry_file`.
    pub fn entry_file_for<'a>(&'a self, files: &'a BTreeMap<String, String>) -> &'a str {
        match self.source_files(files).as_slice() {
            [only] => only,
            _ => self.entry_file.as_str(),
        }
    }
}

/// Tag of the runner images the built-in language table names: the content of
/// `deploy/images/VERSION` (a test keeps them equal), bumped whenever an image changes so an
/// old image is never taken for the new one.
pub const RUNNER_IMAGE_VERSION: &str = "2";

/// The runner image of a built-in language: `quayside/runner-<language>:<RUNNER_IMAGE_VERSION>`.
pub fn default_image(language: &str) -> String {
    format!("quayside/runner-{language}:{RUNNER_IMAGE_VERSION}")
}

/// The built-in language table, matching the images of `deploy/images`.
pub fn default_languages() -> BTreeMap<String, LanguageConfig> {
    // Go needs a module for `.` and `./...` to name the sources (sub-packages import as main/x).
    const GO_MOD: &str = "[ -f go.mod ] || go mod init main >/dev/null 2>&1";
    let lang = |name: &str, ext: &str, entry: &str, build: &str, run: &str, check: &str| {
        let config = LanguageConfig {
            image: default_image(name),
            source_extension: ext.to_owned(),
            entry_file: entry.to_owned(),
            build_command: build.to_owned(),
            run_command: run.to_owned(),
            compile_only_command: check.to_owned(),
            limits: LimitsSpec::default(),
        };
        (name.to_owned(), config)
    };
    let mut table = BTreeMap::from([
        lang(
            "c",
            "c",
            "main.c",
            "gcc -O2 -pipe -std=gnu17 {options} -o main {sources} -lm",
            r#"./main "$@""#,
            "gcc -std=gnu17 {options} -c {sources}",
        ),
        lang(
            "cpp",
            "cpp",
            "main.cpp",
            "g++ -O2 -pipe -std=gnu++17 {options} -o main {sources}",
            r#"./main "$@""#,
            "g++ -std=gnu++17 {options} -c {sources}",
        ),
        lang(
            "python",
            "py",
            "main.py",
            "",
            r#"python3 {entry} "$@""#,
            "python3 -m py_compile {sources}",
        ),
        lang(
            "rust",
            "rs",
            "main.rs",
            "rustc --edition 2021 -O {options} -o main {entry}",
            r#"./main "$@""#,
            "rustc --edition 2021 --emit=metadata {options} -o /tmp/check.rmeta {entry}",
        ),
        lang(
            "go",
            "go",
            "main.go",
            &format!("{GO_MOD}; go build {{options}} -o main ."),
            r#"./main "$@""#,
            &format!("{GO_MOD}; go build {{options}} -o /dev/null ./..."),
        ),
        lang(
            "javascript",
            "js",
            "main.js",
            "",
            r#"node {entry} "$@""#,
            // `node --check` takes one file per call.
            r#"for f in {sources}; do node --check "$f" || exit 1; done"#,
        ),
    ]);
    // The Go toolchain runs many threads and needs more memory than a C compiler.
    if let Some(go) = table.get_mut("go") {
        go.limits.memory_bytes = Some(512 << 20);
        go.limits.pids = Some(128);
    }
    table
}

/// How long past a job's own wall times the executor waits for a runner that does not return.
pub const RUNNER_BACKSTOP: Duration = Duration::from_secs(60);

impl Config {
    /// How long a worker keeps retrying a fenced write (result, retry, hand-back) while Redis
    /// does not answer, before leaving the job to be reclaimed.
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
            fig = fig.merge(Toml::file_exact(p));
        }
        let ignored: Vec<&str> = RAW_ENV
            .iter()
            .map(|(_, key)| *key)
            .chain(NOT_CONFIG_ENV)
            .collect();
        fig = fig.merge(Env::prefixed("QUAYSIDE_").split("__").ignore(&ignored));
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

    /// # Errors
    /// The first invalid value, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Keys::new(&self.queue.name).map_err(|e| invalid("queue.name", e.to_string()))?;
        self.validate_redis()?;
        if self.metrics.enabled && self.metrics.sample_interval_ms == 0 {
            return Err(invalid(
                "metrics.sample_interval_ms",
                "must be greater than 0",
            ));
        }
        let addr = &self.metrics.listen_addr;
        if !addr.is_empty() && addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "metrics.listen_addr",
                format!("{addr:?} is not an ip:port address (or empty for none)"),
            ));
        }
        if self.redis.pool_size == 0 {
            return Err(invalid("redis.pool_size", "must be at least 1"));
        }
        let w = &self.worker;
        if w.slots == 0 || w.slots > 1024 {
            return Err(invalid("worker.slots", "must be 1 to 1024"));
        }
        if let Some(id) = &w.id {
            crate::JobId::parse(id).map_err(|e| invalid("worker.id", e.to_string()))?;
        }
        if w.lease_ms < 300 {
            return Err(invalid("worker.lease_ms", "must be at least 300"));
        }
        if w.claim_block_ms == 0 || w.claim_block_ms >= w.lease_ms {
            return Err(invalid(
                "worker.claim_block_ms",
                "must be above 0 and below worker.lease_ms",
            ));
        }
        for (key, v) in [
            ("redis.connect_timeout_ms", self.redis.connect_timeout_ms),
            ("redis.command_timeout_ms", self.redis.command_timeout_ms),
            ("worker.reclaim_interval_ms", w.reclaim_interval_ms),
            ("worker.promote_interval_ms", w.promote_interval_ms),
            ("worker.heartbeat_interval_ms", w.heartbeat_interval_ms),
            (
                "queue.default_result_ttl_s",
                self.queue.default_result_ttl_s,
            ),
            ("queue.log_max_entries", self.queue.log_max_entries),
            ("queue.dlq_max_len", self.queue.dlq_max_len),
            ("retry.base_ms", self.retry.base_ms),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.retry.max_ms < self.retry.base_ms {
            return Err(invalid("retry.max_ms", "must be at least retry.base_ms"));
        }
        if self.queue.default_result_ttl_s > self.queue.max_result_ttl_s {
            return Err(invalid(
                "queue.default_result_ttl_s",
                "exceeds queue.max_result_ttl_s",
            ));
        }
        let window = self.stale_window().as_secs();
        if self.queue.min_result_ttl_s <= window {
            return Err(invalid(
                "queue.min_result_ttl_s",
                format!(
                    "must exceed {window} s: the longest a worker that lost a job's lease may \
                     still write it (worker.lease_ms + worker.drain_timeout_ms + the largest \
                     compile and run wall times + {} s runner backstop + the persist give-up)",
                    RUNNER_BACKSTOP.as_secs()
                ),
            ));
        }
        if self.queue.default_result_ttl_s < self.queue.min_result_ttl_s {
            return Err(invalid(
                "queue.default_result_ttl_s",
                "is below queue.min_result_ttl_s",
            ));
        }
        let q = &self.queue;
        if q.default_max_attempts == 0 || q.default_max_attempts > q.max_attempts_cap {
            return Err(invalid(
                "queue.default_max_attempts",
                "must be 1 to queue.max_attempts_cap",
            ));
        }
        self.limits.validate()?;
        for (name, lang) in &self.languages {
            if lang.image.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "languages.<name>.image",
                    problem: format!("language {name:?} has no image"),
                });
            }
            lang.default_limits(&self.limits)
                .map_err(|e| ConfigError::Invalid {
                    key: "languages.<name>.limits",
                    problem: format!("language {name:?}: {e}"),
                })?;
        }
        self.runner.docker.validate()?;
        self.runner.kubernetes.validate()?;
        self.gateway.validate(&self.limits)?;
        Ok(())
    }

    fn validate_redis(&self) -> Result<(), ConfigError> {
        let r = &self.redis;
        let url = redis::parse_redis_url(&r.url)
            .ok_or_else(|| invalid("redis.url", "not a redis:// or rediss:// URL"))?;
        if r.password.is_some() && url.password().is_some() {
            return Err(invalid(
                "redis.password",
                "the password is also in redis.url; set it in one place",
            ));
        }
        if r.username.is_some() && !url.username().is_empty() {
            return Err(invalid(
                "redis.username",
                "a user is also in redis.url; set it in one place",
            ));
        }
        if r.username.is_some() && r.password.is_none() && url.password().is_none() {
            return Err(invalid("redis.username", "needs redis.password"));
        }
        if r.tls_ca_file.is_some() && url.scheme() != "rediss" {
            return Err(invalid(
                "redis.tls_ca_file",
                "needs a rediss:// redis.url (TLS)",
            ));
        }
        Ok(())
    }

    /// A copy safe to print or log: the Redis password, in the URL or on its own, is replaced.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        c.redis.url = redact_url(&c.redis.url);
        if c.redis.password.is_some() {
            c.redis.password = Some(Secret::new(REDACTED));
        }
        c.gateway = c.gateway.redacted();
        c
    }
}

/// Replaces the password (or lone user-info token) of a URL with `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{scheme}://{user}@{host}")
}

#[cfg(test)]
#[allow(
    clippy::result_large_err,
    reason = "figment::Jail fixes the closure's error type"
)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_are_valid() {
        Jail::expect_with(|_| {
            let c = Config::load(None).expect("defaults load");
            assert_eq!(c.worker.slots, 4);
            assert!(c.languages.contains_key("c"));
            Ok(())
        });
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "q.toml",
                "[worker]\nslots = 7\nlease_ms = 9000\n[queue]\nname = \"builds\"\n",
            )?;
            jail.set_env("QUAYSIDE_WORKER__SLOTS", "9");
            let c = Config::load(Some(Path::new("q.toml"))).expect("loads");
            assert_eq!(c.worker.slots, 9, "env wins over file");
            assert_eq!(c.worker.lease_ms, 9000, "file wins over default");
            assert_eq!(c.queue.name, "builds");
            assert_eq!(c.worker.claim_block_ms, 5000, "default kept");
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_key() {
        Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[worker]\nslotz = 3\n")?;
            let e = Config::load(Some(Path::new("bad.toml"))).expect_err("unknown key");
            assert!(e.to_string().contains("slotz"), "{e}");

            jail.create_file("zero.toml", "[worker]\nslots = 0\n")?;
            let e = Config::load(Some(Path::new("zero.toml"))).expect_err("zero slots");
            assert!(e.to_string().contains("worker.slots"), "{e}");

            jail.set_env("QUAYSIDE_WORKER__SLOTS", "many");
            let e = Config::load(None).expect_err("wrong type");
            let msg = e.to_string().to_lowercase();
            assert!(
                msg.contains("worker.slots") && msg.contains("quayside_"),
                "{e}"
            );
            Ok(())
        });
    }

    #[test]
    fn the_result_ttl_floor_must_outlast_every_stale_worker() {
        let mut cfg = Config::default();
        // 30 s lease + 25 s drain + 120 s + 60 s wall times + 60 s backstop + 120 s give-up.
        assert_eq!(cfg.stale_window(), Duration::from_secs(415));
        cfg.queue.min_result_ttl_s = 415;
        let e = cfg.validate().expect_err("a floor inside the window");
        assert!(
            e.to_string().contains("queue.min_result_ttl_s") && e.to_string().contains("415"),
            "{e}"
        );
        cfg.queue.min_result_ttl_s = 416;
        cfg.validate().expect("just past the window");
        // Longer leases or wall times move the window: the default floor must follow.
        cfg.worker.lease_ms = 600_000;
        assert!(cfg.validate().is_err(), "a 10 min lease with a 416 s floor");
        let mut cfg = Config::default();
        cfg.queue.default_result_ttl_s = cfg.queue.min_result_ttl_s - 1;
        let e = cfg.validate().expect_err("default below the floor");
        assert!(e.to_string().contains("queue.default_result_ttl_s"), "{e}");
    }

    #[test]
    fn quayside_variables_that_are_not_config_are_not_read_as_keys() {
        Jail::expect_with(|jail| {
            jail.create_file("q.toml", "[queue]\nname = \"builds\"\n")?;
            jail.set_env("QUAYSIDE_CONFIG", "q.toml");
            jail.set_env("QUAYSIDE_VERBOSE", "1");
            let c = Config::load(Some(Path::new("q.toml"))).expect("loads");
            assert_eq!(c.queue.name, "builds");
            // A near miss of a real key is still refused.
            jail.set_env("QUAYSIDE_REDIS_URL", "redis://elsewhere:6379");
            let e = Config::load(None).expect_err("single underscore");
            assert!(e.to_string().contains("redis_url"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn missing_config_file_is_an_error() {
        Jail::expect_with(|_| {
            assert!(Config::load(Some(Path::new("nope.toml"))).is_err());
            Ok(())
        });
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact_url("rediss://secret@h"), "rediss://***@h");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        let mut c = Config::default();
        c.redis.url = "redis://:pw@x".into();
        assert!(!format!("{:?}", c.redacted()).contains("pw@"));
    }

    #[test]
    fn auto_picks_kubernetes_only_in_a_cluster_and_kubernetes_settings_load() {
        use RunnerBackend::*;
        assert_eq!(Auto.resolve(true), Kubernetes);
        assert_eq!(Auto.resolve(false), Docker);
        assert_eq!(
            Kubernetes.resolve(false),
            Kubernetes,
            "kubeconfig from outside"
        );
        assert_eq!(Docker.resolve(true), Docker);
        Jail::expect_with(|jail| {
            jail.create_file(
                "q.toml",
                "[runner]\nbackend = \"kubernetes\"\n[runner.kubernetes]\nnamespace = \"jobs\"\nimage_pull_secrets = [\"regcred\"]\n",
            )?;
            jail.set_env(
                "QUAYSIDE_RUNNER__KUBERNETES__IMAGE_REGISTRY",
                "reg.example/",
            );
            let c = Config::load(Some(Path::new("q.toml"))).expect("loads");
            assert_eq!(c.runner.backend, Kubernetes);
            let k = &c.runner.kubernetes;
            assert_eq!(
                (k.namespace.as_str(), k.image_registry.as_str()),
                ("jobs", "reg.example/")
            );
            assert_eq!(k.image_pull_secrets, ["regcred"]);
            jail.set_env("QUAYSIDE_RUNNER__KUBERNETES__USER", "0:0");
            let err = Config::load(Some(Path::new("q.toml"))).expect_err("root refused");
            assert!(err.to_string().contains("runner.kubernetes.user"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn docker_settings_are_checked_and_name_their_key() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "d.toml",
                "[runner.docker]\nruntime = \"runsc\"\ntmpfs_bytes = 8388608\n",
            )?;
            let c = Config::load(Some(Path::new("d.toml"))).expect("loads");
            assert_eq!(c.runner.docker.runtime, "runsc");
            assert_eq!(c.runner.docker.tmpfs_bytes, 8 << 20);
            assert_eq!(
                c.runner.docker.uid_gid(),
                Some((10001, 10001)),
                "default user kept"
            );

            for (toml, key) in [
                ("user = \"0:0\"", "runner.docker.user"),
                ("user = \"runner\"", "runner.docker.user"),
                ("tmpfs_bytes = 1", "runner.docker.tmpfs_bytes"),
                ("max_open_files = 3", "runner.docker.max_open_files"),
                ("api_timeout_ms = 10", "runner.docker.api_timeout_ms"),
                ("uid_range = 0", "runner.docker.uid_range"),
                ("uid_range = 4294967295", "runner.docker.uid_range"),
            ] {
                jail.create_file("bad.toml", &format!("[runner.docker]\n{toml}\n"))?;
                let e = Config::load(Some(Path::new("bad.toml"))).expect_err(toml);
                assert!(e.to_string().contains(key), "{toml}: {e}");
            }
            jail.set_env("QUAYSIDE_RUNNER__DOCKER__FILE_TRANSFER", "archive");
            jail.set_env("QUAYSIDE_RUNNER__DOCKER__SECCOMP", "runtime_default");
            let c = Config::load(None).expect("env sets the transfer");
            assert_eq!(c.runner.docker.file_transfer, FileTransfer::Archive);
            assert_eq!(c.runner.docker.seccomp, SeccompProfile::RuntimeDefault);
            assert_eq!(
                (c.runner.docker.uid_range, c.runner.kubernetes.seccomp),
                (1 << 20, SeccompProfile::Quayside),
                "per-attempt uids and Quayside's profile by default"
            );
            Ok(())
        });
    }

    #[test]
    fn default_images_carry_the_tag_scripts_build_images_gives_them() {
        let version = include_str!("../../deploy/images/VERSION").trim();
        assert_eq!(RUNNER_IMAGE_VERSION, version, "bump both together");
    }

    #[test]
    fn every_default_language_can_build_run_and_check() {
        let langs = default_languages();
        assert_eq!(langs.len(), 6);
        for (name, l) in &langs {
            assert_eq!(
                l.image,
                format!("quayside/runner-{name}:{RUNNER_IMAGE_VERSION}")
            );
            assert!(
                !l.source_extension.is_empty()
                    && l.entry_file.ends_with(&format!(".{}", l.source_extension)),
                "{name}"
            );
            assert!(
                l.run_command.contains(r#""$@""#),
                "{name}: args must reach the program"
            );
            assert!(!l.compile_only_command.is_empty(), "{name}");
        }
        for compiled in ["c", "cpp", "rust", "go"] {
            let l = &langs[compiled];
            assert!(
                l.build_command.contains("{options}"),
                "{compiled}: options reach the compiler"
            );
            assert!(l.compile_only_command.contains("{options}"), "{compiled}");
        }
    }

    #[test]
    fn a_separate_password_is_redacted_everywhere() {
        let mut c = Config::default();
        c.redis.username = Some("quayside".into());
        c.redis.password = Some(Secret::new("hunter2-secret"));
        c.validate().expect("valid");
        assert!(!format!("{c:?}").contains("hunter2"), "Debug hides it");
        let printed = toml::to_string(&c.redacted()).expect("toml");
        assert!(
            !printed.contains("hunter2") && printed.contains("password = \"***\""),
            "{printed}"
        );
        let written = toml::to_string(&c).expect("toml");
        assert!(
            written.contains("hunter2"),
            "configs written for workers keep it"
        );
    }

    #[test]
    fn secrets_from_the_environment_are_taken_verbatim() {
        Jail::expect_with(|jail| {
            for raw in ["123456", "[not-an-array]", "\"quoted\"", "true", "a=b,{c}"] {
                jail.set_env("QUAYSIDE_REDIS__PASSWORD", raw);
                jail.set_env("QUAYSIDE_REDIS__USERNAME", "42");
                let c = Config::load(None).expect("loads");
                assert_eq!(c.redis.password.as_ref().map(Secret::expose), Some(raw));
                assert_eq!(c.redis.username.as_deref(), Some("42"));
            }
            Ok(())
        });
    }

    #[test]
    fn redis_auth_and_tls_settings_are_checked() {
        let with = |f: &dyn Fn(&mut RedisConfig)| {
            let mut c = Config::default();
            f(&mut c.redis);
            c.validate().map_err(|e| e.to_string())
        };
        let e = with(&|r| {
            r.url = "redis://:a@h".into();
            r.password = Some(Secret::new("b"));
        });
        assert!(e.expect_err("twice").contains("redis.password"));
        let e = with(&|r| r.username = Some("u".into()));
        assert!(e.expect_err("no password").contains("needs redis.password"));
        let e = with(&|r| r.tls_ca_file = Some("ca.pem".into()));
        assert!(e.expect_err("plain url").contains("rediss://"));
        with(&|r| {
            r.url = "rediss://localhost:6380".into();
            r.tls_ca_file = Some("ca.pem".into());
            r.username = Some("u".into());
            r.password = Some(Secret::new("p"));
        })
        .expect("tls with a CA and an ACL user");
        let mut c = Config::default();
        c.metrics.listen_addr = "nowhere".into();
        assert!(c
            .validate()
            .expect_err("bad addr")
            .to_string()
            .contains("metrics.listen_addr"));
        c.metrics.listen_addr = String::new();
        c.validate().expect("empty disables the listener");
    }
}
