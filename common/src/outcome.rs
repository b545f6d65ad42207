//! What a job ended as: [`Status`] and the full [`JobResult`].

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::job::{JobId, PROTOCOL_VERSION};
use crate::verdicts::{Summary, TestResult};

/// Lifecycle state of a job record. The last eleven are terminal: exactly one is ever written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// In a priority stream, not yet claimed.
    Queued,
    /// Waiting in the delayed set for a retry after an infrastructure failure.
    Delayed,
    /// Claimed by a worker that holds its lease.
    Running,
    /// Exit code 0.
    Succeeded,
    /// Non-zero exit or killed by a signal.
    Failed,
    /// The build step failed; its output is in `compile_output`.
    CompileError,
    TimedOut,
    MemoryExceeded,
    OutputExceeded,
    /// A job with tests: a test's output did not match (or its checker said so).
    WrongAnswer,
    /// A job with tests: its checker did not build or gave no verdict (exit 3, a crash).
    CheckerFailed,
    Cancelled,
    /// The job itself is invalid; `error` says why. Also dead-lettered.
    Rejected,
    /// Gave up after infrastructure failures; `error` holds the last one. Also dead-lettered.
    Dead,
}

impl Status {
    pub const TERMINAL: [Status; 11] = [
        Status::Succeeded,
        Status::Failed,
        Status::CompileError,
        Status::TimedOut,
        Status::MemoryExceeded,
        Status::OutputExceeded,
        Status::WrongAnswer,
        Status::CheckerFailed,
        Status::Cancelled,
        Status::Rejected,
        Status::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Delayed => "delayed",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::CompileError => "compile_error",
            Self::TimedOut => "timed_out",
            Self::MemoryExceeded => "memory_exceeded",
            Self::OutputExceeded => "output_exceeded",
            Self::WrongAnswer => "wrong_answer",
            Self::CheckerFailed => "checker_failed",
            Self::Cancelled => "cancelled",
            Self::Rejected => "rejected",
            Self::Dead => "dead",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Queued | Self::Delayed | Self::Running)
    }

    /// Succeeded is the only terminal status a batch counts as passed.
    pub fn is_success(self) -> bool {
        self == Self::Succeeded
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| format!("unknown status {s:?}"))
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How [`Captured::data`] is encoded: text when the bytes are UTF-8, base64 otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    Utf8,
    Base64,
}

/// One captured output stream, capped at the job's output limit. Bytes are kept exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Captured {
    pub data: String,
    #[serde(default)]
    pub encoding: Encoding,
    /// More was produced than was kept.
    #[serde(default)]
    pub truncated: bool,
}

impl Captured {
    /// Keeps `bytes` as text if they are UTF-8, as base64 otherwise, so nothing is lost.
    pub fn from_bytes(bytes: Vec<u8>, truncated: bool) -> Self {
        match String::from_utf8(bytes) {
            Ok(data) => Self {
                data,
                encoding: Encoding::Utf8,
                truncated,
            },
            Err(e) => Self {
                data: base64::engine::general_purpose::STANDARD.encode(e.as_bytes()),
                encoding: Encoding::Base64,
                truncated,
            },
        }
    }

    /// The original bytes.
    pub fn bytes(&self) -> Vec<u8> {
        match self.encoding {
            Encoding::Utf8 => self.data.as_bytes().to_vec(),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(&self.data)
                .unwrap_or_default(),
        }
    }

    /// The text, with invalid UTF-8 replaced: for display only.
    pub fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Time spent in each phase, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durations {
    /// From enqueue to the start of the attempt that finished it.
    pub queued_ms: u64,
    pub compile_ms: u64,
    pub run_ms: u64,
    /// From enqueue to the terminal result.
    pub total_ms: u64,
}

/// The terminal result of a job, stored in its record and sent to waiters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub v: u32,
    pub id: JobId,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Signal number when the program was killed by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default)]
    pub stdout: Captured,
    #[serde(default)]
    pub stderr: Captured,
    #[serde(default)]
    pub compile_output: Captured,
    /// Why the job was rejected, dead-lettered or cancelled; the last infrastructure error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub durations: Durations,
    /// User + system CPU time of the program (of every test, summed), when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
    /// High-water resident set of the program's largest process (the largest of every
    /// test's), when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// One entry per test of the spec, in order; empty for a job without tests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<TestResult>,
    /// Tests passed out of the spec's tests; set exactly when the spec has tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Executions started, the one that finished included.
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    pub finished_at_ms: u64,
}

impl JobResult {
    /// A result with no program output, e.g. `rejected`, `dead` or `cancelled`.
    pub fn without_output(id: JobId, status: Status, error: Option<String>, attempts: u32) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id,
            status,
            exit_code: None,
            signal: None,
            stdout: Captured::default(),
            stderr: Captured::default(),
            compile_output: Captured::default(),
            error,
            durations: Durations::default(),
            cpu_ms: None,
            peak_memory_bytes: None,
            tests: Vec::new(),
            summary: None,
            attempts,
            worker: None,
            runner: None,
            finished_at_ms: crate::now_ms(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_output_is_kept_byte_for_byte() {
        let raw = vec![0xff, 0xfe, b'a', 0];
        let c = Captured::from_bytes(raw.clone(), false);
        assert_eq!(c.encoding, Encoding::Base64);
        assert_eq!(c.bytes(), raw);
        let text = Captured::from_bytes(b"hi\n".to_vec(), true);
        assert_eq!(
            (text.encoding, text.data.as_str(), text.truncated),
            (Encoding::Utf8, "hi\n", true)
        );
    }

    #[test]
    fn status_names_match_the_protocol() {
        for s in Status::TERMINAL {
            assert!(s.is_terminal());
            assert_eq!(s.as_str().parse::<Status>(), Ok(s));
            assert_eq!(
                serde_json::to_string(&s).expect("serialize"),
                format!("\"{s}\"")
            );
        }
        assert!(!Status::Running.is_terminal());
    }
}
