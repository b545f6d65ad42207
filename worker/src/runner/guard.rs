//! The seam's promises, kept once around any backend (quickwit's decorators): a job whose
//! language has no command for its kind never reaches the backend; a cancel before the sandbox
//! runs stops the attempt at once (the backend's guards remove what it created); a started
//! sandbox gets [`CANCEL_GRACE`] to hand back the output so far; and no run outlives both wall
//! times plus [`RUNNER_BACKSTOP`].

use std::time::Duration;

use quayside_common::config::RUNNER_BACKSTOP;
use quayside_common::job::SpecError;
use tokio_util::sync::CancellationToken;

use super::{Fleet, Output, RunOutput, RunRequest, Runner, RunnerError};

/// How long a started sandbox may take, once cancelled, to stop and hand back its output
/// before the attempt is dropped (and its sandbox removed from the backend's guards).
pub const CANCEL_GRACE: Duration = Duration::from_secs(10);

/// A runner with the seam's promises kept around it. [`build`](super::build) wraps every
/// backend in one.
#[derive(Debug)]
pub struct Guarded<R> {
    inner: R,
}

impl<R: Runner> Guarded<R> {
    pub fn new(inner: R) -> Self {
        Self { inner }
    }

    /// The backend, for what is its own (a sweep with a chosen age, its worker id).
    pub fn inner(&self) -> &R {
        &self.inner
    }
}

/// The backstop for a backend that hangs: it enforces the wall times itself, this only bounds
/// a bug.
pub fn deadline(req: &RunRequest) -> Duration {
    Duration::from_millis(req.limits.compile_wall_time_ms + req.limits.run_wall_time_ms)
        + RUNNER_BACKSTOP
}

#[async_trait::async_trait]
impl<R: Runner> Runner for Guarded<R> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn check(&self) -> Result<(), RunnerError> {
        self.inner.check().await
    }

    fn admit(&self, req: &RunRequest) -> Result<(), SpecError> {
        // No command for the job's kind: `run` reports that as the config gap it is.
        match req.wrapper_body() {
            Ok(_) => self.inner.admit(req),
            Err(_) => Ok(()),
        }
    }

    async fn sweep_orphans(
        &self,
        fleet: &Fleet,
        live_workers: &[String],
    ) -> Result<usize, RunnerError> {
        self.inner.sweep_orphans(fleet, live_workers).await
    }

    async fn retry_removals(&self) -> usize {
        self.inner.retry_removals().await
    }

    async fn warm_up(&self, fleet: &Fleet) {
        self.inner.warm_up(fleet).await;
    }

    async fn cool_down(&self) {
        self.inner.cool_down().await;
    }

    async fn run(
        &self,
        req: &RunRequest,
        output: &Output,
        cancel: CancellationToken,
    ) -> Result<RunOutput, RunnerError> {
        req.wrapper_body()?;
        if cancel.is_cancelled() {
            return Err(RunnerError::Cancelled);
        }
        let limit = deadline(req);
        let run = self.inner.run(req, output, cancel.clone());
        tokio::pin!(run);
        let raced = async {
            tokio::select! {
                biased;
                ran = &mut run => ran,
                () = cancel.cancelled() => {
                    if !output.has_started() {
                        // Nothing ran: dropping the attempt removes what it created.
                        return Err(RunnerError::Cancelled);
                    }
                    match tokio::time::timeout(CANCEL_GRACE, &mut run).await {
                        Ok(ran) => ran,
                        Err(_) => {
                            tracing::warn!(job_id = %req.job_id, "sandbox did not stop in time after a cancel; dropping it");
                            Err(RunnerError::Cancelled)
                        }
                    }
                }
            }
        };
        tokio::time::timeout(limit, raced)
            .await
            .unwrap_or(Err(RunnerError::Deadline {
                after_s: limit.as_secs(),
            }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use quayside_common::config::default_languages;
    use quayside_common::{JobId, JobKind, Limits, Status};

    use super::*;
    use crate::runner::{LogSource, RunnerErrorKind};

    /// Starts its "sandbox" after `start`, then runs until cancelled (answering after
    /// `stop`) or for `run`; records whether its future was dropped before it answered.
    #[derive(Debug, Default)]
    struct Fake {
        start: Duration,
        stop: Duration,
        run: Duration,
        dropped: Arc<AtomicBool>,
    }

    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }

    #[async_trait::async_trait]
    impl Runner for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }

        async fn check(&self) -> Result<(), RunnerError> {
            Ok(())
        }

        async fn run(
            &self,
            _: &RunRequest,
            output: &Output,
            cancel: CancellationToken,
        ) -> Result<RunOutput, RunnerError> {
            let guard = Dropped(Arc::clone(&self.dropped));
            tokio::time::sleep(self.start).await;
            output.sandbox_started();
            output.send(LogSource::Stdout, b"up\n");
            tokio::select! {
                () = cancel.cancelled() => tokio::time::sleep(self.stop).await,
                () = tokio::time::sleep(self.run) => {}
            }
            std::mem::forget(guard);
            let status = if cancel.is_cancelled() {
                Status::Cancelled
            } else {
                Status::Succeeded
            };
            Ok(RunOutput::with_status(status))
        }
    }

    fn request(language: &str) -> RunRequest {
        RunRequest {
            job_id: JobId::parse("j1").expect("id"),
            attempt: 1,
            kind: JobKind::Run,
            language: language.into(),
            language_config: default_languages().remove(language).unwrap_or_default(),
            files: [("main.py".to_owned(), String::new())].into(),
            compiler_options: Vec::new(),
            args: Vec::new(),
            stdin: String::new(),
            limits: Limits {
                compile_wall_time_ms: 1_000,
                run_wall_time_ms: 1_000,
                ..Limits::DEFAULT
            },
            fleet: Fleet::default(),
            tests: None,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[tokio::test(start_paused = true)]
    async fn a_language_without_the_command_never_reaches_the_backend() {
        let fake = Fake::default();
        let dropped = Arc::clone(&fake.dropped);
        let guarded = Guarded::new(fake);
        let req = request("cobol");
        guarded
            .admit(&req)
            .expect("run reports it, admission does not");
        let err = guarded
            .run(&req, &Output::discard(), CancellationToken::new())
            .await
            .expect_err("no command");
        assert!(matches!(err, RunnerError::NoCommand { .. }), "{err}");
        assert_eq!(err.kind(), RunnerErrorKind::Permanent);
        assert_eq!(
            err.to_string(),
            "language \"cobol\" has no command for run jobs"
        );
        assert!(!dropped.load(Ordering::Acquire), "never started");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancel_before_the_sandbox_runs_drops_the_attempt_at_once() {
        let fake = Fake {
            start: secs(30),
            ..Fake::default()
        };
        let dropped = Arc::clone(&fake.dropped);
        let guarded = Guarded::new(fake);
        let cancel = CancellationToken::new();
        let output = Output::discard();
        let req = request("python");
        let started = tokio::time::Instant::now();
        let (ran, ()) = tokio::join!(guarded.run(&req, &output, cancel.clone()), async {
            tokio::time::sleep(secs(1)).await;
            cancel.cancel();
        });
        assert!(matches!(ran, Err(RunnerError::Cancelled)), "{ran:?}");
        assert_eq!(started.elapsed(), secs(1), "at once");
        assert!(
            dropped.load(Ordering::Acquire),
            "dropped, so its guards remove the sandbox"
        );

        let cancelled = CancellationToken::new();
        cancelled.cancel();
        let ran = guarded.run(&request("python"), &output, cancelled).await;
        assert!(
            matches!(ran, Err(RunnerError::Cancelled)),
            "cancelled before it began"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_sandbox_hands_back_its_output_within_the_grace() {
        let guarded = Guarded::new(Fake {
            run: secs(30),
            stop: secs(2),
            ..Fake::default()
        });
        let cancel = CancellationToken::new();
        let (output, mut chunks) = Output::channel();
        let req = request("python");
        let (ran, ()) = tokio::join!(guarded.run(&req, &output, cancel.clone()), async {
            tokio::time::sleep(secs(1)).await;
            cancel.cancel();
        });
        assert_eq!(ran.expect("the program's").status, Status::Cancelled);
        assert_eq!(chunks.recv().await.expect("output").data, b"up\n");

        let stuck = Fake {
            run: secs(30),
            stop: secs(3600),
            ..Fake::default()
        };
        let dropped = Arc::clone(&stuck.dropped);
        let guarded = Guarded::new(stuck);
        let cancel = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let (ran, ()) = tokio::join!(guarded.run(&req, &output, cancel.clone()), async {
            tokio::time::sleep(secs(1)).await;
            cancel.cancel();
        });
        assert!(matches!(ran, Err(RunnerError::Cancelled)), "{ran:?}");
        assert_eq!(started.elapsed(), secs(1) + CANCEL_GRACE);
        assert!(dropped.load(Ordering::Acquire));
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_that_hangs_is_stopped_at_the_deadline() {
        let guarded = Guarded::new(Fake {
            run: secs(3600),
            ..Fake::default()
        });
        let req = request("python");
        let started = tokio::time::Instant::now();
        let err = guarded
            .run(&req, &Output::discard(), CancellationToken::new())
            .await
            .expect_err("hung");
        assert_eq!(started.elapsed(), deadline(&req));
        assert_eq!(err.to_string(), "runner did not return within 62s");
        assert_eq!(err.kind(), RunnerErrorKind::Transient);
    }
}
