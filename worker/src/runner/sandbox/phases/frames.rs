//! The tests phase of an attempt's output: each test's frames (see
//! [`crate::runner::sandbox::tests_mode`]) read into its output, judged as its report arrives.

use std::sync::Arc;

use quayside_common::compare::judge;
use quayside_common::verdicts::{job_status, TestResult, TestStatus};
use quayside_common::{Captured, Status};

use super::{CappedOutput, Ending};
use crate::runner::sandbox::run_report::{checker_verdict, run_verdict, RunReport};
use crate::runner::sandbox::tests_mode::{Frame, TestPlan, CHECKER_MESSAGE_BYTES};
use crate::runner::{LogSource, Output, RunOutput};

/// Where the bytes between frames go, besides a running test's streams.
#[derive(Debug)]
enum Collecting {
    /// The checker's build output.
    CheckerBuild(CappedOutput),
    /// The checker's output for the pending test.
    CheckerMessage(CappedOutput),
}

/// The test whose frames are arriving.
#[derive(Debug)]
struct Running {
    index: usize,
    /// Past its `E` frame: bytes are its stderr.
    in_stderr: bool,
    stdout: CappedOutput,
    stderr: CappedOutput,
}

/// Every test's result so far, and the one running.
#[derive(Debug)]
pub struct TestsPhase {
    plan: Arc<TestPlan>,
    results: Vec<TestResult>,
    running: Option<Running>,
    /// Test output bytes kept in results so far, against `plan.max_result_bytes`.
    kept: u64,
    /// A test did not pass under `stop_on_failure`: what the sandbox still prints before it
    /// is stopped (later tests, in the same chunk) is not taken.
    stopped: bool,
    collecting: Option<Collecting>,
    /// The checker's build status and output, once built.
    checker_built: Option<(i64, Captured)>,
    /// A test whose program ran cleanly, waiting for the checker's verdict.
    pending: Option<TestResult>,
    /// What the worker owes the wrapper's stdin (answers for the checker), in order.
    answers: Vec<Vec<u8>>,
}

impl TestsPhase {
    pub fn new(plan: Arc<TestPlan>) -> Self {
        Self {
            plan,
            results: Vec::new(),
            running: None,
            kept: 0,
            stopped: false,
            collecting: None,
            checker_built: None,
            pending: None,
            answers: Vec::new(),
        }
    }

    /// What to write to the wrapper's stdin now.
    pub fn take_answers(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.answers)
    }

    /// The checker's build output, when it did not build.
    pub fn checker_build_failure(&self) -> Option<&Captured> {
        self.checker_built
            .as_ref()
            .filter(|(status, _)| *status != 0)
            .map(|(_, output)| output)
    }

    pub fn stop_on_failure(&self) -> bool {
        self.plan.stop_on_failure
    }

    /// The name of test `index`.
    pub fn name(&self, index: usize) -> Option<&str> {
        self.plan.tests.get(index).map(|t| t.name.as_str())
    }

    /// Output of the running test (none runs: wrapper noise, dropped).
    pub fn bytes(&mut self, data: &[u8]) {
        if let Some(Collecting::CheckerBuild(out) | Collecting::CheckerMessage(out)) =
            self.collecting.as_mut()
        {
            out.push(data);
        } else if let Some(r) = self.running.as_mut() {
            if r.in_stderr {
                r.stderr.push(data);
            } else {
                r.stdout.push(data);
            }
        }
    }

    /// Takes one frame. Returns the verdict of a test its report completes.
    pub fn frame(&mut self, frame: Frame<'_>) -> Option<&TestResult> {
        if self.stopped {
            return None;
        }
        match frame {
            Frame::Start(index) => {
                let test = self.plan.tests.get(index)?;
                // Room for one byte past the cap: the report says whether it was passed.
                let cap = test.limits.output_bytes.saturating_add(1);
                self.running = Some(Running {
                    index,
                    in_stderr: false,
                    stdout: CappedOutput::new(cap),
                    stderr: CappedOutput::new(cap),
                });
                None
            }
            Frame::Stderr(index) => {
                if let Some(r) = self.running.as_mut().filter(|r| r.index == index) {
                    r.in_stderr = true;
                }
                None
            }
            Frame::Report(index, line) => {
                let r = self.running.take().filter(|r| r.index == index)?;
                let (result, check) = self.judge(r, line);
                if self.plan.checker.is_some() {
                    self.answers.push(self.plan.answer(index, check));
                    if check {
                        self.pending = Some(result);
                        return None;
                    }
                }
                self.done(result)
            }
            Frame::CheckerBuild => {
                let cap = self.plan.kept_bytes.max(CHECKER_MESSAGE_BYTES);
                self.collecting = Some(Collecting::CheckerBuild(CappedOutput::new(cap)));
                None
            }
            Frame::CheckerBuilt(status) => {
                if let Some(Collecting::CheckerBuild(out)) = self.collecting.take() {
                    self.checker_built = Some((status, out.into_captured()));
                }
                None
            }
            Frame::CheckerOutput(_) => {
                let cap = 2 * CHECKER_MESSAGE_BYTES;
                self.collecting = Some(Collecting::CheckerMessage(CappedOutput::new(cap)));
                None
            }
            Frame::CheckerReport(index, line) => {
                let mut result = self.pending.take()?;
                if self.plan.tests.get(index).map(|t| &t.name) != Some(&result.name) {
                    return None;
                }
                let message = match self.collecting.take() {
                    Some(Collecting::CheckerMessage(out)) => out.into_captured().lossy(),
                    _ => String::new(),
                };
                let (status, message) = match line.parse::<RunReport>() {
                    _ if line == "tampered" => (
                        TestStatus::CheckerFailed,
                        "the checker's files changed after it last ran (the program wrote to \
                         /work/.quayside/checker)"
                            .to_owned(),
                    ),
                    Ok(report) => (checker_verdict(&report.through_shell()), message),
                    Err(_) => (TestStatus::CheckerFailed, message),
                };
                result.status = status;
                let message = message.trim_end();
                result.checker_message = (!message.is_empty()).then(|| message.to_owned());
                self.done(result)
            }
        }
    }

    /// A test's final verdict.
    fn done(&mut self, result: TestResult) -> Option<&TestResult> {
        self.stopped = self.plan.stop_on_failure && result.status != TestStatus::Passed;
        self.results.push(result);
        self.results.last()
    }

    /// The verdict of a test from its report and output, and whether the checker must still
    /// judge it (its program ran to a clean exit, and the job has a checker).
    fn judge(&mut self, r: Running, line: &str) -> (TestResult, bool) {
        let mut check = false;
        let test = &self.plan.tests[r.index];
        let mut result = TestResult::skipped(&test.name);
        let (out, _) = r.stdout.into_parts();
        let (err, _) = r.stderr.into_parts();
        match line.parse::<RunReport>().map(RunReport::through_shell) {
            Ok(report) => {
                // As for a job: a signal is also the status a shell gives it.
                result.signal = report.signal;
                result.exit_code = report
                    .exit_code
                    .or(report.signal.map(|s| 128 + i64::from(s)));
                result.wall_ms = report.wall_ms();
                result.cpu_ms = report.cpu_ms();
                result.peak_memory_bytes = report.peak_memory_bytes();
                result.status = match run_verdict(&report, &test.limits) {
                    Some(status) => status,
                    None if self.plan.checker.is_some() => {
                        check = true;
                        TestStatus::Passed
                    }
                    None => match &test.expected_stdout {
                        Some(expected) => match judge(self.plan.compare, expected.as_bytes(), &out)
                        {
                            Ok(()) => TestStatus::Passed,
                            Err(mismatch) => {
                                result.checker_message = Some(mismatch.to_string());
                                TestStatus::WrongAnswer
                            }
                        },
                        None => TestStatus::Passed,
                    },
                };
            }
            // Only the program can keep the helper from reporting (it may kill it: same uid).
            Err(error) => {
                tracing::debug!(%error, test = %test.name, "no run report");
                result.status = TestStatus::Failed;
            }
        }
        result.stdout = self.keep(out);
        result.stderr = self.keep(err);
        (result, check)
    }

    /// What the result keeps of one stream: `kept_bytes`, within what is left of the result's
    /// budget.
    fn keep(&mut self, mut bytes: Vec<u8>) -> Captured {
        let room = self
            .plan
            .kept_bytes
            .min(self.plan.max_result_bytes.saturating_sub(self.kept));
        let room = usize::try_from(room).unwrap_or(usize::MAX);
        let truncated = bytes.len() > room;
        bytes.truncate(room);
        self.kept += bytes.len() as u64;
        Captured::from_bytes(bytes, truncated)
    }

    /// Every test's result once the sandbox ended as `ending`: the test it ended in gets the
    /// sandbox's verdict, the rest are `skipped`.
    pub fn finish(mut self, ending: Ending) -> Vec<TestResult> {
        if let Some(mut result) = self.pending.take() {
            // The sandbox ended while the checker ran.
            result.status = match ending {
                Ending::Cancelled | Ending::Stopped => TestStatus::Skipped,
                _ => TestStatus::CheckerFailed,
            };
            self.results.push(result);
        }
        if let Some(r) = self.running.take() {
            let test = &self.plan.tests[r.index];
            let mut result = TestResult::skipped(&test.name);
            result.status = match ending {
                Ending::TimedOut => TestStatus::TimedOut,
                Ending::OutputExceeded => TestStatus::OutputExceeded,
                Ending::Exited {
                    oom_killed: true, ..
                } => TestStatus::MemoryExceeded,
                Ending::Exited { .. } => TestStatus::Failed,
                Ending::Cancelled | Ending::Stopped => TestStatus::Skipped,
            };
            let (out, _) = r.stdout.into_parts();
            let (err, _) = r.stderr.into_parts();
            result.stdout = self.keep(out);
            result.stderr = self.keep(err);
            self.results.push(result);
        }
        let done = self.results.len();
        self.results.extend(
            self.plan.tests[done.min(self.plan.tests.len())..]
                .iter()
                .map(|t| TestResult::skipped(&t.name)),
        );
        self.results
    }
}

/// Takes one test frame: logs where a test starts and its verdict. Returns whether the run
/// should stop (a test did not pass under `stop_on_failure`).
pub(super) fn test_frame(tests: &mut TestsPhase, frame: Frame<'_>, output: &Output) -> bool {
    if let Frame::Start(index) = frame {
        if let Some(name) = tests.name(index) {
            output.send(LogSource::Test, format!("{name}\n").as_bytes());
        }
    }
    let stop_on_failure = tests.stop_on_failure();
    match tests.frame(frame) {
        Some(result) => {
            let verdict = format!("{} {} {}ms\n", result.name, result.status, result.wall_ms);
            output.send(LogSource::Verdict, verdict.as_bytes());
            stop_on_failure && result.status != quayside_common::verdicts::TestStatus::Passed
        }
        None => false,
    }
}

/// The output of a job with tests whose build passed: the job's status is the first test's
/// that did not pass (`cancelled` when it was cancelled); cpu time summed, peak the largest.
pub(super) fn tests_output(
    tests: Vec<TestResult>,
    ending: Ending,
    compile: CappedOutput,
    compile_ms: u64,
    run_ms: u64,
) -> RunOutput {
    let status = match ending {
        Ending::Cancelled => Status::Cancelled,
        _ => job_status(&tests),
    };
    let ran = tests
        .iter()
        .filter(|t| t.status != quayside_common::verdicts::TestStatus::Skipped);
    let cpu_ms = ran.clone().map(|t| t.cpu_ms).sum();
    let peak = ran.map(|t| t.peak_memory_bytes).max().unwrap_or(0);
    RunOutput {
        status,
        exit_code: None,
        signal: None,
        stdout: Captured::default(),
        stderr: Captured::default(),
        compile_output: compile.into_captured(),
        compile_ms,
        run_ms,
        sandbox_start_ms: None,
        cpu_ms: Some(cpu_ms),
        peak_memory_bytes: Some(peak),
        tests,
        error: None,
    }
}
