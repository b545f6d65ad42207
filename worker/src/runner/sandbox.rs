//! What every sandbox backend shares: labels and names, output capping, the live log, and how
//! an attempt is classified from the way its sandbox ended.
//!
//! - [`protocol`]: the wrapper script a sandbox runs as its main process, its stdin header and
//!   its end-of-build marker.
//! - [`fleet`]: the labels that tie a sandbox to its fleet, the orphan rule, and each runner's
//!   list of sandboxes in use or left to remove.
//! - [`live_log`]: output forwarded to the job's log stream in line-aligned entries.

pub mod fleet;
pub mod live_log;
pub mod protocol;

use quayside_common::{Captured, JobId, JobKind, Status};

use crate::runner::{RunRequest, RunnerError};

pub use self::fleet::{
    labels, Fleet, Sandboxes, Sweep, LABEL_ATTEMPT, LABEL_DEADLINE, LABEL_FLEET, LABEL_JOB,
    LABEL_QUEUE, LABEL_WORKER,
};
pub use self::live_log::LiveLog;
use self::protocol::{wrapper_failure, EXIT_UNPACK};

/// Where job files live inside every sandbox.
pub const WORK_DIR: &str = "/work";

/// The job's language has no command for its kind (a config gap, so never worth a retry).
pub fn missing_command(req: &RunRequest) -> RunnerError {
    RunnerError::Failed {
        context: format!(
            "language {:?} has no command for {} jobs",
            req.language,
            req.kind.as_label()
        ),
        transient: false,
        source: None,
    }
}

/// A sandbox name unique per attempt, readable in `docker ps`: `quayside-<job>-a<attempt>-<rand>`.
/// Job-id characters outside `[A-Za-z0-9_.-]` (only `:`) become `_`.
pub fn sandbox_name(job_id: &JobId, attempt: u32) -> String {
    let job: String = job_id
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("quayside-{job}-a{attempt}-{:08x}", rand::random::<u32>())
}

/// The signal that killed a program, from a shell-style exit status (128 + n).
///
/// # Caveats
/// A program that calls `exit(137)` looks exactly like one killed by SIGKILL.
pub fn signal_of(exit_code: i64) -> Option<i32> {
    (129..=128 + 64)
        .contains(&exit_code)
        .then(|| (exit_code - 128) as i32)
}

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
}

/// How a sandbox's main process ended, as the backend saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It exited by itself; `oom_killed` if the kernel killed any process of it for memory.
    Exited { code: i64, oom_killed: bool },
    /// The worker stopped it at a wall-time limit.
    TimedOut,
    /// The worker stopped it because an output stream passed its cap.
    OutputExceeded,
    /// The worker stopped it because its cancellation token fired (a user's cancel, or a
    /// drain): the result keeps the output so far.
    Cancelled,
}

/// The status, exit code and signal a job gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub status: Status,
    pub exit_code: Option<i64>,
    pub signal: Option<i32>,
}

/// Classifies an attempt from how the sandbox ended and the build status its marker reported.
///
/// # Errors
/// The wrapper ended before its marker without hitting a limit: an infrastructure failure,
/// described for [`RunnerError::Failed`](super::RunnerError::Failed), and whether a retry may
/// help (not when the job's files do not fit in `/work`).
pub fn classify(
    kind: JobKind,
    build_status: Option<i64>,
    ending: Ending,
) -> Result<Verdict, (&'static str, bool)> {
    let verdict = |status, exit_code: Option<i64>| Verdict {
        status,
        exit_code,
        signal: exit_code.and_then(signal_of),
    };
    Ok(match (ending, build_status) {
        (Ending::OutputExceeded, _) => verdict(Status::OutputExceeded, None),
        (Ending::TimedOut, _) => verdict(Status::TimedOut, None),
        (Ending::Cancelled, _) => verdict(Status::Cancelled, None),
        (
            Ending::Exited {
                code,
                oom_killed: true,
            },
            _,
        ) => verdict(Status::MemoryExceeded, Some(code)),
        (Ending::Exited { code, .. }, None) => {
            return Err((wrapper_failure(code), code != EXIT_UNPACK))
        }
        (Ending::Exited { .. }, Some(s)) if s != 0 => verdict(Status::CompileError, None),
        (Ending::Exited { .. }, Some(_)) if kind == JobKind::Compile => {
            verdict(Status::Succeeded, None)
        }
        (Ending::Exited { code: 0, .. }, Some(_)) => verdict(Status::Succeeded, Some(0)),
        (Ending::Exited { code, .. }, Some(_)) => verdict(Status::Failed, Some(code)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_capped_and_flagged() {
        let mut out = CappedOutput::new(5);
        assert_eq!(out.push(b"abc"), b"abc");
        assert!(!out.exceeded());
        assert_eq!(out.push(b"de"), b"de");
        assert!(!out.exceeded(), "exactly at the cap is fine");
        assert_eq!(out.push(b"f"), b"");
        assert!(out.exceeded());
        let c = out.into_captured();
        assert_eq!((c.data.as_str(), c.truncated), ("abcde", true));
    }

    #[test]
    fn verdicts_come_from_the_real_ending() {
        use Ending::*;
        let v = |kind, build, ending| {
            classify(kind, build, ending).map(|v| (v.status, v.exit_code, v.signal))
        };
        let exited = |code| Exited {
            code,
            oom_killed: false,
        };
        assert_eq!(
            v(JobKind::Run, Some(0), exited(0)),
            Ok((Status::Succeeded, Some(0), None))
        );
        assert_eq!(
            v(JobKind::Run, Some(0), exited(3)),
            Ok((Status::Failed, Some(3), None))
        );
        assert_eq!(
            v(JobKind::Run, Some(0), exited(137)),
            Ok((Status::Failed, Some(137), Some(9)))
        );
        let oom = Exited {
            code: 137,
            oom_killed: true,
        };
        assert_eq!(
            v(JobKind::Run, Some(0), oom),
            Ok((Status::MemoryExceeded, Some(137), Some(9)))
        );
        assert_eq!(
            v(JobKind::Run, Some(1), exited(1)),
            Ok((Status::CompileError, None, None))
        );
        assert_eq!(
            v(JobKind::Compile, Some(0), exited(0)),
            Ok((Status::Succeeded, None, None))
        );
        assert_eq!(
            v(JobKind::Run, None, TimedOut),
            Ok((Status::TimedOut, None, None))
        );
        assert_eq!(
            v(JobKind::Run, Some(0), OutputExceeded),
            Ok((Status::OutputExceeded, None, None))
        );
        assert_eq!(
            v(JobKind::Run, None, Cancelled),
            Ok((Status::Cancelled, None, None)),
            "cancelled even before the build ended"
        );
        assert_eq!(
            v(JobKind::Run, None, exited(EXIT_UNPACK)).map_err(|e| e.1),
            Err(false),
            "files too big: permanent"
        );
        assert_eq!(
            v(JobKind::Run, None, exited(137)).map_err(|e| e.1),
            Err(true),
            "killed from outside: retry"
        );
    }

    #[test]
    fn labels_names_and_signals() {
        let id = JobId::parse("batch:7").expect("id");
        let l = labels(&Fleet::default(), &id, 2, "w1", 0);
        assert_eq!(l[LABEL_JOB], "batch:7");
        assert!(sandbox_name(&id, 2).starts_with("quayside-batch_7-a2-"));
        assert_eq!(
            (signal_of(137), signal_of(1), signal_of(128)),
            (Some(9), None, None)
        );
    }
}
