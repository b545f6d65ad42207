//! What `quayside-run` (deploy/images/base/quayside-run.c) reports about one run, and the
//! verdict of a test from it: the per-test half of docs/design/tests-per-job.md §3.
//!
//! The helper writes one line, `key=value` pairs, after the program and everything it started
//! are gone, so the program cannot write it; a line that does not parse is the sandbox's
//! failure, never a verdict.

use std::collections::HashMap;

use quayside_common::verdicts::TestStatus;
use quayside_common::Limits;

/// Signal a write past `RLIMIT_FSIZE` raises (SIGXFSZ on Linux).
const SIGXFSZ: i32 = 25;
/// Under gVisor the helper cannot read the cgroup's OOM count: a SIGKILL it did not send, to a
/// program whose peak reached this share of its memory limit, is taken as the OOM killer's.
const OOM_PEAK_SHARE: f64 = 0.9;

/// One run as the helper saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    pub exit_code: Option<i64>,
    pub signal: Option<i32>,
    /// The helper killed the program at its wall time.
    pub timed_out: bool,
    pub wall_us: u64,
    /// User + system CPU time of the program and every descendant reaped.
    pub cpu_us: u64,
    /// Peak resident set of the largest process, in KiB.
    pub maxrss_kb: u64,
    /// OOM kills in the memory cgroup during the run; `None` where no cgroup file is readable.
    pub oom_kills: Option<u64>,
    /// Sizes of the redirected streams; `None` when a stream was not redirected.
    pub stdout_bytes: Option<u64>,
    pub stderr_bytes: Option<u64>,
    /// A descendant outlived the run (it dies with the sandbox).
    pub orphans: bool,
    /// The helper was the program's subreaper, so `orphans` covers every descendant (not
    /// under gVisor; `false` in a report without the field).
    pub subreaper: bool,
}

impl RunReport {
    pub fn cpu_ms(&self) -> u64 {
        self.cpu_us / 1000
    }

    pub fn wall_ms(&self) -> u64 {
        self.wall_us / 1000
    }

    pub fn peak_memory_bytes(&self) -> u64 {
        self.maxrss_kb.saturating_mul(1024)
    }

    /// The report with an exit status of 128 + n read as signal n: the run command's shell
    /// stands between the helper and the program and passes a signal on as that status (so a
    /// program that calls `exit(137)` looks killed, as for a job).
    #[must_use]
    pub fn through_shell(mut self) -> Self {
        if let Some(signal) = self.exit_code.and_then(super::signal_of) {
            self.signal = Some(signal);
            self.exit_code = None;
        }
        self
    }
}

/// Why a report line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable run report ({problem}): {line:?}")]
pub struct ReportError {
    pub problem: String,
    pub line: String,
}

impl std::str::FromStr for RunReport {
    type Err = ReportError;

    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let fail = |problem: String| ReportError {
            problem,
            line: line.chars().take(300).collect(),
        };
        let fields: HashMap<&str, &str> = line
            .split_whitespace()
            .map(|kv| {
                kv.split_once('=')
                    .ok_or_else(|| fail(format!("{kv:?} is not key=value")))
            })
            .collect::<Result<_, _>>()?;
        let get = |key: &str| {
            fields
                .get(key)
                .copied()
                .ok_or_else(|| fail(format!("no {key}")))
        };
        let number = |key: &str| -> Result<u64, ReportError> {
            get(key)?
                .parse()
                .map_err(|_| fail(format!("{key} is not a number")))
        };
        // `-` means "not known" (or, for exit and signal, "did not end that way").
        let optional = |key: &str| -> Result<Option<u64>, ReportError> {
            match get(key)? {
                "-" => Ok(None),
                _ => number(key).map(Some),
            }
        };
        let flag = |key: &str| -> Result<bool, ReportError> {
            match get(key)? {
                "0" => Ok(false),
                "1" => Ok(true),
                _ => Err(fail(format!("{key} is not 0 or 1"))),
            }
        };
        let report = Self {
            exit_code: optional("exit")?.map(|c| c as i64),
            signal: optional("signal")?.and_then(|s| i32::try_from(s).ok()),
            timed_out: flag("timed_out")?,
            wall_us: number("wall_us")?,
            cpu_us: number("cpu_us")?,
            maxrss_kb: number("maxrss_kb")?,
            oom_kills: optional("oom_kills")?,
            stdout_bytes: optional("stdout_bytes")?,
            stderr_bytes: optional("stderr_bytes")?,
            orphans: flag("orphans")?,
            subreaper: match get("subreaper") {
                Ok(_) => flag("subreaper")?,
                Err(_) => false,
            },
        };
        if report.exit_code.is_some() == report.signal.is_some() {
            return Err(fail("exactly one of exit and signal must be set".into()));
        }
        Ok(report)
    }
}

/// How a test's program run ended, before its output is judged; `None` when it exited 0 within
/// every limit and only the output (or the checker) decides.
///
/// `limits` are the test's own ([`quayside_common::cases::TestLimits::apply`]): a test that
/// lowers `memory_bytes` below the sandbox's is held to it by its peak, after the fact.
pub fn run_verdict(report: &RunReport, limits: &Limits) -> Option<TestStatus> {
    let peak = report.peak_memory_bytes();
    let killed_unasked = report.signal == Some(9) && !report.timed_out;
    let oom = match report.oom_kills {
        Some(n) => n > 0,
        None => killed_unasked && peak as f64 >= OOM_PEAK_SHARE * limits.memory_bytes as f64,
    };
    let over_output = [report.stdout_bytes, report.stderr_bytes]
        .into_iter()
        .flatten()
        .any(|b| b > limits.output_bytes);
    Some(if report.timed_out {
        TestStatus::TimedOut
    } else if oom || peak > limits.memory_bytes {
        TestStatus::MemoryExceeded
    } else if over_output || report.signal == Some(SIGXFSZ) {
        TestStatus::OutputExceeded
    } else if report.exit_code != Some(0) {
        TestStatus::Failed
    } else {
        return None;
    })
}

/// The verdict of a checker run (testlib's convention): 0 passed, 1 wrong answer, 2
/// presentation error (a wrong answer too); 3, any other code, a signal or a limit is the
/// checker's own failure.
pub fn checker_verdict(report: &RunReport) -> TestStatus {
    match (report.timed_out, report.exit_code) {
        (false, Some(0)) => TestStatus::Passed,
        (false, Some(1 | 2)) => TestStatus::WrongAnswer,
        _ => TestStatus::CheckerFailed,
    }
}

#[cfg(test)]
mod tests;
