//! The tests phase of an attempt's output: each test's frames (see
//! [`crate::runner::sandbox::tests_mode`]) read into its output, judged as its report arrives.

use std::sync::Arc;

use quayside_common::compare::judge;
use quayside_common::verdicts::{TestResult, TestStatus};
use quayside_common::Captured;

use super::{CappedOutput, Ending};
use crate::runner::sandbox::run_report::{run_verdict, RunReport};
use crate::runner::sandbox::tests_mode::{Frame, TestPlan};

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
}

impl TestsPhase {
    pub fn new(plan: Arc<TestPlan>) -> Self {
        Self {
            plan,
            results: Vec::new(),
            running: None,
            kept: 0,
            stopped: false,
        }
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
        if let Some(r) = self.running.as_mut() {
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
                let result = self.judge(r, line);
                self.stopped = self.plan.stop_on_failure && result.status != TestStatus::Passed;
                self.results.push(result);
                self.results.last()
            }
        }
    }

    /// The verdict of a test from its report and output.
    fn judge(&mut self, r: Running, line: &str) -> TestResult {
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
        result
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
