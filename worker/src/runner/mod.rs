//! The runner seam: one trait, one implementation per sandbox backend, and the wrapper that
//! keeps the seam's promises for any of them.
//!
//! - [`output`]: the channel a runner streams output into (chunks with their source).
//! - [`guard`]: [`Guarded`], the missing-command check, the cancel race and the outer deadline.
//! - [`sandbox`]: what both backends share: the in-sandbox protocol, the phased-output parser,
//!   labels and the sweep rule, the seccomp profile.
//! - [`docker`], [`kubernetes`]: the backends, each as `mod.rs` (the runner), `spec.rs` (what
//!   it creates), `attempt.rs` (one attempt) and `cleanup.rs` (removal guard and sweep).
//!
//! Nothing here knows the queue: a runner gets a [`RunRequest`], an [`Output`] and a
//! cancellation token, and answers with a [`RunOutput`] or a [`RunnerError`].

pub mod docker;
pub mod guard;
pub mod kubernetes;
pub mod output;
pub mod sandbox;

use std::collections::BTreeMap;
use std::sync::Arc;

use quayside_common::config::LanguageConfig;
use quayside_common::job::SpecError;
use quayside_common::limits::Limits;
use quayside_common::{Captured, JobId, JobKind, Status};
use tokio_util::sync::CancellationToken;

pub use self::guard::Guarded;
pub use self::output::{Chunk, LogSource, Output};
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
    /// A job with tests: each is run after the one build, in the same sandbox. `limits` are
    /// then the sandbox's ([`sandbox::tests_mode::TestPlan::sandbox_limits`]).
    pub tests: Option<Arc<sandbox::tests_mode::TestPlan>>,
}

impl RunRequest {
    /// The part of the wrapper script every backend runs for this job (see
    /// [`sandbox::protocol::wrapper_body`]).
    ///
    /// # Errors
    /// [`RunnerError::NoCommand`]: the job's language has no command for its kind.
    pub fn wrapper_body(&self) -> Result<String, RunnerError> {
        sandbox::protocol::wrapper_body(
            &self.language_config,
            self.kind,
            &self.compiler_options,
            &self.files,
            self.tests.as_deref(),
        )
        .ok_or_else(|| RunnerError::NoCommand {
            language: self.language.clone(),
            kind: self.kind.as_label(),
        })
    }
}

impl RunRequest {
    /// The program's args: the job's for a run, none for a compile-only job.
    pub fn args_of_kind(&self) -> Vec<String> {
        match self.kind {
            JobKind::Run => self.args.clone(),
            JobKind::Compile => Vec::new(),
        }
    }

    /// The files the sandbox gets: the job's, and the inputs of its tests.
    pub fn sandbox_files(&self) -> std::borrow::Cow<'_, BTreeMap<String, String>> {
        match &self.tests {
            None => std::borrow::Cow::Borrowed(&self.files),
            Some(plan) => {
                let mut files = self.files.clone();
                files.extend(plan.input_files());
                std::borrow::Cow::Owned(files)
            }
        }
    }
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
    /// User + system CPU time of the program and its descendants, as `quayside-run` measured
    /// it; `None` when the program did not run to its end marker or the image has no helper.
    pub cpu_ms: Option<u64>,
    /// Peak resident memory of the program's largest process, from the same report.
    pub peak_memory_bytes: Option<u64>,
    /// A job with tests: one result per test, in order (empty when the build failed).
    pub tests: Vec<quayside_common::verdicts::TestResult>,
    /// Why the job ended as it did when its output does not say (a checker that did not
    /// build: its build output).
    pub error: Option<String>,
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
            cpu_ms: None,
            peak_memory_bytes: None,
            tests: Vec::new(),
            error: None,
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

/// The error a backend library gives, kept as the source of a [`RunnerError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An infrastructure failure: the sandbox could not do its job. Never what the program did.
/// Each variant names what failed; [`RunnerError::kind`] follows from it.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The backend cannot be reached (socket missing, connection refused, no answer).
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
    /// The backend's API answered a call with an error that may not come again (a 5xx, a
    /// 403 while RBAC is being fixed, a name clash).
    #[error("{call}")]
    Api {
        call: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The backend's API refused the request itself (invalid, too large): it would refuse
    /// every attempt.
    #[error("{call}")]
    ApiRejected {
        call: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The wrapper ended before its end-of-build marker without hitting a limit: the sandbox
    /// broke the in-sandbox protocol (see [`sandbox::protocol`]).
    #[error("{detail}")]
    Wrapper { detail: String },
    /// The job's files cannot be put into the sandbox (an archive the tar format refuses,
    /// files that do not fit in `/work`): every attempt would fail the same way.
    #[error("{detail}")]
    Files {
        detail: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The job's pod could not start or be followed (unschedulable, never started, its
    /// seccomp profile missing on the node, its watch broken).
    #[error("{detail}")]
    Pod {
        detail: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The sandbox's output stream broke off while it still ran.
    #[error("{detail}")]
    OutputLost {
        detail: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The runner did not return within its outer deadline (both wall times plus a backstop).
    #[error("runner did not return within {after_s}s")]
    Deadline { after_s: u64 },
    /// The job's language has no command for its kind: a config gap, never worth a retry.
    #[error("language {language:?} has no command for {kind} jobs")]
    NoCommand {
        language: String,
        kind: &'static str,
    },
}

impl RunnerError {
    pub fn kind(&self) -> RunnerErrorKind {
        match self {
            Self::Unavailable { .. }
            | Self::ImageMissing { .. }
            | Self::Interrupted { .. }
            | Self::Api { .. }
            | Self::Wrapper { .. }
            | Self::Pod { .. }
            | Self::OutputLost { .. }
            | Self::Deadline { .. } => RunnerErrorKind::Transient,
            Self::ApiRejected { .. } | Self::Files { .. } | Self::NoCommand { .. } => {
                RunnerErrorKind::Permanent
            }
            Self::Cancelled => RunnerErrorKind::Cancelled,
        }
    }

    /// Stable label for metrics (`reason`) and retry reasons. Failures of a call, the
    /// wrapper, a pod, the output, the deadline or the config share `failed`, as before the
    /// variants were split (dashboards and alerts know these five values).
    pub fn as_label(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "unavailable",
            Self::ImageMissing { .. } => "image_missing",
            Self::Cancelled => "cancelled",
            Self::Interrupted { .. } => "interrupted",
            // What failed is in the error; the label stays one of the five.
            _ => "failed",
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

    /// Starts keeping sandboxes warm for `fleet`'s jobs (the Docker runner's pool), in the
    /// background; returns at once. Called once the worker knows its fleet.
    async fn warm_up(&self, _fleet: &Fleet) {}

    /// Stops keeping sandboxes warm and removes those waiting for a job: a draining worker
    /// starts no job, so it needs none.
    async fn cool_down(&self) {}

    /// Tries again to remove the sandboxes whose removal failed (the engine was down).
    /// Returns how many are still left.
    async fn retry_removals(&self) -> usize {
        0
    }

    /// What the program did. Streams output into `output` as it arrives, and tells it once the
    /// sandbox runs ([`Output::sandbox_started`]). Once `cancel` fires it returns promptly: `Ok`
    /// with status `cancelled` and the output so far when the sandbox had started. Before
    /// that, [`Guarded`] drops the attempt and answers `Err(RunnerError::Cancelled)`, so a
    /// backend removes what it created from its guards' `Drop` too.
    async fn run(
        &self,
        req: &RunRequest,
        output: &Output,
        cancel: CancellationToken,
    ) -> Result<RunOutput, RunnerError>;
}

/// A shared runner.
pub type SharedRunner = Arc<dyn Runner>;

/// Builds the runner the config selects, [`Guarded`].
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
        RunnerBackend::Kubernetes => Ok(Arc::new(Guarded::new(kubernetes::KubernetesRunner::new(
            cfg.runner.clone(),
            &cfg.languages,
            worker_id,
        )))),
        _ => Ok(Arc::new(Guarded::new(
            docker::DockerRunner::new(cfg.runner.clone(), &cfg.languages, worker_id)
                .with_warm(docker::profiles(cfg)),
        ))),
    }
}
