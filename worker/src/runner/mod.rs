//! The runner seam: one trait, one implementation per sandbox backend.

pub mod docker;
pub mod kubernetes;
pub mod sandbox;

use std::collections::BTreeMap;
use std::sync::Arc;

use quayside_common::config::LanguageConfig;
use quayside_common::job::SpecError;
use quayside_common::limits::Limits;
use quayside_common::{Captured, JobId, JobKind, Status};
use tokio_util::sync::CancellationToken;

use crate::logs::LogSink;

pub use self::sandbox::Fleet;

/// Everything a runner needs to execute one attempt of a job, already validated and with
/// limits resolved against the worker's maxima.
#[derive(Clone, Debug)]
pub struct RunRequest {
    pub job_id: JobId,
    pub attempt: u32,
    pub kind: JobKind,
    pub language: String,
    pub language_config: LanguageConfig,
    pub files: BTreeMap<String, String>,
    pub compiler_options: Vec<String>,
    pub args: Vec<String>,
    pub stdin: String,
    pub limits: Limits,
    /// The fleet the worker belongs to, for the sandbox's labels.
    pub fleet: Fleet,
}

/// What the program did. Every user-caused ending (non-zero exit, timeout, OOM, output overflow,
/// compile error) is a `RunOutput`, never a [`RunnerError`], so it is never retried.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOutput {
    pub status: Status,
    pub exit_code: Option<i64>,
    pub signal: Option<i32>,
    pub stdout: Captured,
    pub stderr: Captured,
    pub compile_output: Captured,
    pub compile_ms: u64,
    pub run_ms: u64,
    /// How long creating and starting the sandbox (container, pod) took, if the runner knows:
    /// exported as `quayside_sandbox_start_seconds`. `None` records nothing.
    pub sandbox_start_ms: Option<u64>,
}

impl RunOutput {
    /// An output with only a status, for runners and tests to fill in.
    pub fn with_status(status: Status) -> Self {
        Self {
            status,
            exit_code: None,
            signal: None,
            stdout: Captured::default(),
            stderr: Captured::default(),
            compile_output: Captured::default(),
            compile_ms: 0,
            run_ms: 0,
            sandbox_start_ms: None,
        }
    }
}

/// How the queue treats a runner failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunnerErrorKind {
    /// Infrastructure that may recover (daemon down, image missing, API 5xx): retry with backoff.
    Transient,
    /// Will fail the same way every time: dead-letter now.
    Permanent,
    /// The execution was stopped through its cancellation token.
    Cancelled,
}

/// An infrastructure failure: the sandbox could not do its job. Never what the program did.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("runner backend unavailable: {detail}")]
    Unavailable { detail: String },
    #[error("image {image} is not present on the runner (build it with scripts/build-images.sh)")]
    ImageMissing { image: String },
    #[error("execution cancelled")]
    Cancelled,
    /// Something outside the worker stopped the sandbox (an engine restart, `docker kill`,
    /// `docker rm -f`, a pod deleted or evicted): never the program's verdict.
    #[error("the sandbox was stopped from outside: {detail}")]
    Interrupted { detail: String },
    #[error("{context}")]
    Failed {
        context: String,
        transient: bool,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl RunnerError {
    pub fn kind(&self) -> RunnerErrorKind {
        match self {
            Self::Unavailable { .. } | Self::ImageMissing { .. } | Self::Interrupted { .. } => {
                RunnerErrorKind::Transient
            }
            Self::Cancelled => RunnerErrorKind::Cancelled,
            Self::Failed {
                transient: true, ..
            } => RunnerErrorKind::Transient,
            Self::Failed { .. } => RunnerErrorKind::Permanent,
        }
    }

    /// Stable label for metrics (`reason`) and retry reasons.
    pub fn as_label(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "unavailable",
            Self::ImageMissing { .. } => "image_missing",
            Self::Cancelled => "cancelled",
            Self::Interrupted { .. } => "interrupted",
            Self::Failed { .. } => "failed",
        }
    }
}

/// Runs one job in an isolated sandbox. Implementations enforce every field of
/// `RunRequest::limits`, never pull images, and remove the sandbox on every path, cancellation
/// included.
#[async_trait::async_trait]
pub trait Runner: std::fmt::Debug + Send + Sync + 'static {
    /// Stable metric label: "docker" | "kubernetes".
    fn name(&self) -> &'static str;

    /// Backend reachable and runner images present; used at startup and by readiness checks.
    async fn check(&self) -> Result<(), RunnerError>;

    /// Refuses a job this backend could only fail as an infrastructure error (a wrapper longer
    /// than the kernel takes as one argument, files over a Kubernetes ConfigMap's size): such a
    /// job is `rejected`, naming the field, instead of retried until it is dead.
    ///
    /// # Errors
    /// What does not fit, naming the job's field.
    fn admit(&self, _req: &RunRequest) -> Result<(), SpecError> {
        Ok(())
    }

    /// Removes the sandboxes of `fleet` whose worker is not in `live_workers` (it crashed), this
    /// worker's own that it no longer uses, and anyone's long past the deadline its worker
    /// wrote on it; never another fleet's otherwise. Logs each removal. Returns how many.
    async fn sweep_orphans(
        &self,
        _fleet: &Fleet,
        _live_workers: &[String],
    ) -> Result<usize, RunnerError> {
        Ok(0)
    }

    /// Tries again to remove the sandboxes whose removal failed (the engine was down).
    /// Returns how many are still left.
    async fn retry_removals(&self) -> usize {
        0
    }

    /// What the program did. Streams output into `logs` as it arrives. Once `cancel` fires it
    /// returns promptly: `Ok` with status `cancelled` and the output so far when the sandbox
    /// had started, `Err(RunnerError::Cancelled)` before that.
    async fn run(
        &self,
        req: &RunRequest,
        logs: &LogSink,
        cancel: CancellationToken,
    ) -> Result<RunOutput, RunnerError>;
}

/// A shared runner.
pub type SharedRunner = Arc<dyn Runner>;

/// Builds the runner the config selects.
///
/// # Errors
/// The selected backend is not available in this build.
pub fn build(cfg: &quayside_common::config::Config) -> Result<SharedRunner, RunnerError> {
    use quayside_common::config::RunnerBackend;
    // Sandboxes are labelled with this id; `worker.id` keeps it stable across restarts.
    let worker_id = cfg
        .worker
        .id
        .clone()
        .unwrap_or_else(crate::generate_worker_id);
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    match cfg.runner.backend.resolve(in_cluster) {
        RunnerBackend::Kubernetes => Ok(Arc::new(kubernetes::KubernetesRunner::new(
            cfg.runner.clone(),
            &cfg.languages,
            worker_id,
        ))),
        _ => Ok(Arc::new(docker::DockerRunner::new(
            cfg.runner.clone(),
            &cfg.languages,
            worker_id,
        ))),
    }
}
