//! One attempt's output as the wrapper writes it, read the same way by every backend: the
//! build step's output up to `<nonce>:<status>`, then the program's stdout and, where the
//! sandbox has a single stream (a pod log), `<end>:<status>` followed by the program's stderr.
//! Each part is capped; the build and the run are timed apart, each against its own wall time;
//! what is kept goes to the attempt's [`Output`] as it arrives. How the sandbox ended then makes
//! the verdict ([`classify`]).

mod ending;
mod frames;
mod settled;

use std::sync::Arc;
use std::time::Duration;

use quayside_common::{Captured, JobId, JobKind, Limits, Status};
use tokio::time::Instant;

use super::protocol::{PhaseMarker, Scan};
use super::run_report::{run_verdict, RunReport};
use super::tests_mode::{Frame, TestPlan};
use crate::runner::{LogSource, Output, RunOutput, RunnerError};
use frames::{test_frame, tests_output, TestsPhase};
use quayside_common::verdicts::TestStatus;
use settled::StderrEnd;

pub use self::ending::{classify, signal_of, Ending, Verdict};

/// One output stream kept up to `cap` bytes; what arrives beyond is counted, not stored.
#[derive(Debug, Default)]
pub struct CappedOutput {
    kept: Vec<u8>,
    cap: usize,
    exceeded: bool,
}

impl CappedOutput {
    pub fn new(cap: u64) -> Self {
        Self {
            kept: Vec::new(),
            cap: usize::try_from(cap).unwrap_or(usize::MAX),
            exceeded: false,
        }
    }

    /// Appends what fits and returns it (for the live log); marks the stream exceeded if
    /// anything did not fit.
    pub fn push<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let room = self.cap - self.kept.len();
        let fits = &data[..data.len().min(room)];
        self.kept.extend_from_slice(fits);
        if fits.len() < data.len() {
            self.exceeded = true;
        }
        fits
    }

    /// More arrived than the cap allows.
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }

    pub fn into_captured(self) -> Captured {
        Captured::from_bytes(self.kept, self.exceeded)
    }

    /// The bytes kept, and whether more arrived.
    pub fn into_parts(self) -> (Vec<u8>, bool) {
        (self.kept, self.exceeded)
    }
}

#[derive(Debug)]
enum Phase {
    /// Build output, until the build marker.
    Build(PhaseMarker),
    /// The program's stdout, until the end marker if the stream has one.
    Program(Option<PhaseMarker>),
    /// The program's stderr, after the end marker.
    Stderr,
}

/// What one chunk changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Nothing that changes timing.
    Nothing,
    /// The build step ended: the run's wall time starts now.
    BuildEnded,
    /// A stream passed its cap: stop the sandbox.
    OutputExceeded,
    /// A test did not pass under `stop_on_failure`: stop the sandbox, the rest are skipped.
    StopTests,
}

/// The three capped streams of one attempt, where in the wrapper's output the parser is, and
/// the build's and the run's clocks.
#[derive(Debug)]
pub struct PhasedOutput {
    phase: Phase,
    end_nonce: Option<String>,
    compile: CappedOutput,
    stdout: CappedOutput,
    stderr: CappedOutput,
    build_status: Option<i64>,
    /// The status the end marker carried: the wrapper's exit code to come.
    end_status: Option<i64>,
    /// The marker after the program's stderr ([`settled`]).
    stderr_end: StderrEnd,
    /// What `quayside-run` reported about the program, from the end marker.
    report: Option<RunReport>,
    /// A job with tests: their frames, between the build marker and the end marker.
    tests: Option<TestsPhase>,
    compile_wall: Duration,
    /// The job's limits, to read the run report against.
    limits: Limits,
    run_wall: Duration,
    started: Option<Instant>,
    build_ended: Option<Instant>,
    ended: Option<Instant>,
}

impl PhasedOutput {
    /// A parser for a stream whose build marker carries `nonce` and whose end marker (after the
    /// program's stdout; on a single stream the program's stderr follows it) carries
    /// `end_nonce`.
    pub fn new(nonce: &str, end_nonce: Option<&str>, limits: &Limits) -> Self {
        let cap = limits.output_bytes;
        Self {
            phase: Phase::Build(PhaseMarker::new(nonce)),
            end_nonce: end_nonce.map(str::to_owned),
            compile: CappedOutput::new(cap),
            stdout: CappedOutput::new(cap),
            stderr: CappedOutput::new(cap),
            build_status: None,
            end_status: None,
            stderr_end: StderrEnd::new(end_nonce),
            report: None,
            tests: None,
            compile_wall: Duration::from_millis(limits.compile_wall_time_ms),
            limits: *limits,
            run_wall: Duration::from_millis(limits.run_wall_time_ms),
            started: None,
            build_ended: None,
            ended: None,
        }
    }

    /// Reads the program's part as the frames of `plan`'s tests ([`super::tests_mode`]).
    #[must_use]
    pub fn with_tests(mut self, plan: Option<Arc<TestPlan>>) -> Self {
        self.tests = plan.map(TestsPhase::new);
        self
    }

    /// What the worker owes the wrapper's stdin now (a checker's answers, in order).
    pub fn take_answers(&mut self) -> Vec<Vec<u8>> {
        self.tests
            .as_mut()
            .map(TestsPhase::take_answers)
            .unwrap_or_default()
    }

    /// The sandbox runs: the build's clock starts.
    pub fn start(&mut self) {
        self.started.get_or_insert_with(Instant::now);
    }

    pub fn has_started(&self) -> bool {
        self.started.is_some()
    }

    /// When the running phase's wall time is up; `None` before [`PhasedOutput::start`].
    pub fn deadline(&self) -> Option<Instant> {
        match (self.started, self.build_ended) {
            (_, Some(built)) => Some(built + self.run_wall),
            (Some(started), None) => Some(started + self.compile_wall),
            (None, None) => None,
        }
    }

    /// Feeds a chunk of the stream that carries the markers (a container's stdout, a pod log).
    pub fn feed(&mut self, chunk: &[u8], output: &Output) -> Progress {
        let mut progress = Progress::Nothing;
        let mut rest = chunk.to_vec();
        loop {
            match &mut self.phase {
                Phase::Build(marker) => match marker.feed(&rest) {
                    Scan::Build(bytes) => {
                        output.send(LogSource::Compile, self.compile.push(&bytes));
                        break;
                    }
                    Scan::Ended {
                        build,
                        status,
                        program,
                        ..
                    } => {
                        output.send(LogSource::Compile, self.compile.push(&build));
                        self.build_status = Some(status);
                        self.build_ended = Some(Instant::now());
                        let end = self.end_nonce.as_deref().map(PhaseMarker::with_detail);
                        self.phase = Phase::Program(end);
                        progress = Progress::BuildEnded;
                        rest = program;
                    }
                },
                Phase::Program(None) => {
                    output.send(LogSource::Stdout, self.stdout.push(&rest));
                    break;
                }
                Phase::Program(Some(marker)) => match marker.feed(&rest) {
                    Scan::Build(bytes) => {
                        self.program_bytes(&bytes, output);
                        break;
                    }
                    Scan::Ended {
                        build,
                        status,
                        detail,
                        program,
                    } => {
                        self.program_bytes(&build, output);
                        rest = program;
                        let frame = Frame::parse(&detail);
                        match (self.tests.as_mut(), frame) {
                            (Some(tests), Some(frame)) => {
                                if test_frame(tests, frame, output) {
                                    progress = Progress::StopTests;
                                }
                                let end = self.end_nonce.as_deref().unwrap_or_default();
                                self.phase = Phase::Program(Some(PhaseMarker::with_detail(end)));
                            }
                            _ => {
                                self.report = read_report(&detail);
                                self.end_status = Some(status);
                                self.phase = Phase::Stderr;
                            }
                        }
                    }
                },
                Phase::Stderr => return self.feed_stderr(&rest, output),
            }
        }
        self.progress(progress)
    }

    /// Bytes of the program's stdout: the job's, or the running test's.
    fn program_bytes(&mut self, bytes: &[u8], output: &Output) {
        match self.tests.as_mut() {
            Some(tests) => tests.bytes(bytes),
            None => output.send(LogSource::Stdout, self.stdout.push(bytes)),
        }
    }

    /// Feeds a chunk of the program's own stderr stream (a container's). The wrapper writes
    /// nothing to stderr before the program starts, so all of it is the program's, even if
    /// it overtakes the marker on the way.
    pub fn feed_stderr(&mut self, chunk: &[u8], output: &Output) -> Progress {
        self.stderr_bytes(chunk, output);
        self.progress(Progress::Nothing)
    }

    fn progress(&self, progress: Progress) -> Progress {
        if progress == Progress::StopTests {
            return progress;
        }
        if self.compile.exceeded() || self.stdout.exceeded() || self.stderr.exceeded() {
            Progress::OutputExceeded
        } else {
            progress
        }
    }

    /// The stream ended (or was cut off): the clocks stop, and what a marker scan held back
    /// in case it started a marker is output after all.
    pub fn flush(&mut self, output: &Output) {
        self.ended.get_or_insert_with(Instant::now);
        match &mut self.phase {
            Phase::Build(marker) => {
                let held = marker.take_held();
                output.send(LogSource::Compile, self.compile.push(&held));
            }
            Phase::Program(Some(marker)) => {
                let held = marker.take_held();
                self.program_bytes(&held, output);
            }
            Phase::Program(None) | Phase::Stderr => {}
        }
        let held = self.stderr_end.take_held();
        output.send(LogSource::Stderr, self.stderr.push(&held));
    }

    /// The attempt's output, from how its sandbox ended.
    ///
    /// # Errors
    /// The wrapper ended before its build marker without hitting a limit:
    /// [`RunnerError::Files`] when the job's files did not unpack, [`RunnerError::Wrapper`]
    /// otherwise (with the build output so far, which tells what went wrong).
    pub fn conclude(
        mut self,
        job: &JobId,
        kind: JobKind,
        ending: Ending,
        sandbox_start_ms: Option<u64>,
    ) -> Result<RunOutput, RunnerError> {
        let ms = |from: Option<Instant>, to: Option<Instant>| {
            from.map_or(0, |f| {
                let to = to.or(self.ended).unwrap_or_else(Instant::now);
                u64::try_from(to.saturating_duration_since(f).as_millis()).unwrap_or(u64::MAX)
            })
        };
        let compile_ms = ms(self.started, self.build_ended);
        let run_ms = ms(self.build_ended, None);
        // A job with tests whose build passed: the tests decide, not how the sandbox ended.
        let tests = match self.tests.take() {
            Some(tests) if self.build_status == Some(0) => {
                let checker = tests.checker_build_failure().cloned();
                Some((tests.finish(ending), checker))
            }
            _ => None,
        };
        let ending = self.oom_from_report(ending);
        let verdict = match classify(kind, self.build_status, ending) {
            Ok(verdict) => verdict,
            Err((what, transient)) => {
                let output = self.compile.into_captured().lossy();
                let detail = format!("{what} (job {job}, {ending:?}): {}", output.trim());
                return Err(if transient {
                    RunnerError::Wrapper { detail }
                } else {
                    RunnerError::Files {
                        detail,
                        source: None,
                    }
                });
            }
        };
        if let Some((tests, checker_build)) = tests {
            let mut out = tests_output(tests, ending, self.compile, compile_ms, run_ms);
            out.sandbox_start_ms = sandbox_start_ms;
            if let Some(build) = checker_build {
                // No test ran: the checker the job brought did not build.
                out.status = Status::CheckerFailed;
                out.error = Some(format!("the checker did not build:\n{}", build.lossy()));
            }
            return Ok(out);
        }
        Ok(RunOutput {
            status: verdict.status,
            exit_code: verdict.exit_code,
            signal: verdict.signal,
            // Only a program that ran has a run time.
            run_ms: if kind == JobKind::Run && self.build_status == Some(0) {
                run_ms
            } else {
                0
            },
            stdout: self.stdout.into_captured(),
            stderr: self.stderr.into_captured(),
            compile_output: self.compile.into_captured(),
            compile_ms,
            sandbox_start_ms,
            cpu_ms: self.report.map(|r| r.cpu_ms()),
            peak_memory_bytes: self.report.map(|r| r.peak_memory_bytes()),
            tests: Vec::new(),
            error: None,
        })
    }
}

impl PhasedOutput {
    /// `ending`, taken as an out-of-memory kill when the engine did not say so but the run
    /// report does: gVisor's own memory limit kills the program inside the sandbox, which
    /// then ends normally with 137 and no OOM flag; the report shows a SIGKILL the helper did
    /// not send, at a peak near the limit (the rule a test's verdict follows).
    fn oom_from_report(&self, ending: Ending) -> Ending {
        let Ending::Exited {
            code,
            oom_killed: false,
        } = ending
        else {
            return ending;
        };
        let oom = self.report.is_some_and(|r| {
            run_verdict(&r.through_shell(), &self.limits) == Some(TestStatus::MemoryExceeded)
        });
        Ending::Exited {
            code,
            oom_killed: oom,
        }
    }
}

/// The run report an end marker carries; `None` when it has none (an image without the
/// helper, a compile-only job) or it does not parse (logged: the helper and the worker
/// disagree, which only a version skew explains).
fn read_report(detail: &str) -> Option<RunReport> {
    if detail.trim().is_empty() {
        return None;
    }
    detail
        .parse()
        .inspect_err(|error| tracing::warn!(%error, "ignoring the sandbox's run report"))
        .ok()
}

/// Waits for a deadline that may not be set yet ([`PhasedOutput::deadline`]).
pub async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
