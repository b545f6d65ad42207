//! What each test of a job ended as: [`TestStatus`], [`TestResult`], [`Summary`], and the job
//! status they add up to ([`job_status`]).

use serde::{Deserialize, Serialize};

use crate::outcome::{Captured, Status};

/// The verdict of one test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestStatus {
    /// Exited 0 and the output matched (or the checker accepted it).
    Passed,
    /// Exited 0 but the output did not match, or the checker said wrong / presentation error.
    WrongAnswer,
    /// Non-zero exit or killed by a signal: a runtime error.
    Failed,
    TimedOut,
    MemoryExceeded,
    OutputExceeded,
    /// The checker did not give a verdict: exit 3 (testlib's "fail"), another code, a signal,
    /// or one of its limits. The submitter's checker is at fault, not the infrastructure.
    CheckerFailed,
    /// Not run: an earlier test failed under `stop_on_failure`, or the sandbox ended.
    Skipped,
}

impl TestStatus {
    pub const ALL: [TestStatus; 8] = [
        TestStatus::Passed,
        TestStatus::WrongAnswer,
        TestStatus::Failed,
        TestStatus::TimedOut,
        TestStatus::MemoryExceeded,
        TestStatus::OutputExceeded,
        TestStatus::CheckerFailed,
        TestStatus::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::WrongAnswer => "wrong_answer",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::MemoryExceeded => "memory_exceeded",
            Self::OutputExceeded => "output_exceeded",
            Self::CheckerFailed => "checker_failed",
            Self::Skipped => "skipped",
        }
    }

    /// The job status a test with this verdict gives the job when it is the first that did
    /// not pass. A test is skipped only after one that did not pass, or when the sandbox was
    /// stopped before it ran: that is `cancelled`.
    pub fn job_status(self) -> Status {
        match self {
            Self::Passed => Status::Succeeded,
            Self::WrongAnswer => Status::WrongAnswer,
            Self::Failed => Status::Failed,
            Self::TimedOut => Status::TimedOut,
            Self::MemoryExceeded => Status::MemoryExceeded,
            Self::OutputExceeded => Status::OutputExceeded,
            Self::CheckerFailed => Status::CheckerFailed,
            Self::Skipped => Status::Cancelled,
        }
    }
}

impl std::fmt::Display for TestStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One test's result, in the job result's `tests`, in the order of the spec's `tests`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestResult {
    pub name: String,
    pub status: TestStatus,
    /// The program's exit status, when it ran to an exit (as for a job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Signal number when the program was killed by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub wall_ms: u64,
    /// User + system CPU time of the program and its descendants.
    pub cpu_ms: u64,
    /// High-water resident set of the program's largest process.
    pub peak_memory_bytes: u64,
    /// The test's stdout as kept in the result (capped per test, see `docs/protocol.md`).
    #[serde(default)]
    pub stdout: Captured,
    #[serde(default)]
    pub stderr: Captured,
    /// What the checker printed, when one ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checker_message: Option<String>,
}

impl TestResult {
    /// A test that never ran.
    pub fn skipped(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            status: TestStatus::Skipped,
            exit_code: None,
            signal: None,
            wall_ms: 0,
            cpu_ms: 0,
            peak_memory_bytes: 0,
            stdout: Captured::default(),
            stderr: Captured::default(),
            checker_message: None,
        }
    }
}

/// How many tests passed, out of how many the job has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub passed: u32,
    pub total: u32,
}

impl Summary {
    /// Counts `tests` (which hold one entry per test of the spec).
    pub fn of(tests: &[TestResult]) -> Self {
        let passed = tests
            .iter()
            .filter(|t| t.status == TestStatus::Passed)
            .count();
        Self {
            passed: u32::try_from(passed).unwrap_or(u32::MAX),
            total: u32::try_from(tests.len()).unwrap_or(u32::MAX),
        }
    }
}

/// The status of a job whose program was built and ran its tests: `succeeded` when every test
/// passed, else the status of the first test that did not pass. (A build failure is
/// `compile_error` before any test, and never reaches here.)
pub fn job_status(tests: &[TestResult]) -> Status {
    tests
        .iter()
        .map(|t| t.status)
        .find(|s| *s != TestStatus::Passed)
        .map_or(Status::Succeeded, TestStatus::job_status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test(name: &str, status: TestStatus) -> TestResult {
        TestResult {
            status,
            ..TestResult::skipped(name)
        }
    }

    #[test]
    fn names_match_the_protocol() {
        for s in TestStatus::ALL {
            assert_eq!(
                serde_json::to_string(&s).expect("serialize"),
                format!("\"{s}\"")
            );
        }
    }

    #[test]
    fn the_job_takes_the_status_of_the_first_test_that_did_not_pass() {
        use TestStatus::*;
        let cases = [
            (vec![Passed, Passed], Status::Succeeded),
            (vec![Passed, WrongAnswer, TimedOut], Status::WrongAnswer),
            (vec![TimedOut, WrongAnswer], Status::TimedOut),
            (
                vec![Passed, MemoryExceeded, Skipped],
                Status::MemoryExceeded,
            ),
            (vec![Failed], Status::Failed),
            (vec![Passed, OutputExceeded], Status::OutputExceeded),
            (vec![CheckerFailed, Passed], Status::CheckerFailed),
        ];
        for (statuses, want) in cases {
            let tests: Vec<_> = statuses.iter().map(|s| test("t", *s)).collect();
            assert_eq!(job_status(&tests), want, "{statuses:?}");
        }
    }

    #[test]
    fn summary_counts_passed_of_all() {
        let tests = [
            test("a", TestStatus::Passed),
            test("b", TestStatus::WrongAnswer),
            test("c", TestStatus::Passed),
            test("d", TestStatus::Skipped),
        ];
        assert_eq!(
            Summary::of(&tests),
            Summary {
                passed: 2,
                total: 4
            }
        );
    }

    #[test]
    fn a_result_reads_back_as_the_protocol_shows_it() {
        let json = serde_json::json!({
            "name": "01", "status": "wrong_answer", "exit_code": 0, "wall_ms": 3, "cpu_ms": 1,
            "peak_memory_bytes": 1458176,
            "stdout": { "data": "4\n", "encoding": "utf8", "truncated": false },
            "stderr": { "data": "", "encoding": "utf8", "truncated": false },
            "checker_message": "expected 3, found 4"
        });
        let t: TestResult = serde_json::from_value(json.clone()).expect("decode");
        assert_eq!(t.status, TestStatus::WrongAnswer);
        assert_eq!(serde_json::to_value(&t).expect("encode"), json);
    }
}
