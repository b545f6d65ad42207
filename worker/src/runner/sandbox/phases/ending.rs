//! How an attempt ends: the way its sandbox ended ([`Ending`]) and the verdict a plain job
//! gets from it ([`classify`]).

use quayside_common::{JobKind, Status};

use crate::runner::sandbox::protocol::{wrapper_failure, EXIT_UNPACK};
use crate::runner::sandbox::tests_mode::EXIT_NO_HELPER;

/// The signal that killed a program, from a shell-style exit status (128 + n).
///
/// # Caveats
/// A program that calls `exit(137)` looks exactly like one killed by SIGKILL.
pub fn signal_of(exit_code: i64) -> Option<i32> {
    (129..=128 + 64)
        .contains(&exit_code)
        .then(|| (exit_code - 128) as i32)
}

/// How a sandbox's main process ended, as the backend saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It exited by itself; `oom_killed` if the kernel killed any process of it for memory.
    Exited { code: i64, oom_killed: bool },
    /// The worker (or the pod's deadline) stopped it at a wall-time limit.
    TimedOut,
    /// The worker stopped it because an output stream passed its cap.
    OutputExceeded,
    /// The worker stopped it because its cancellation token fired (a user's cancel, or a
    /// drain): the result keeps the output so far.
    Cancelled,
    /// The worker stopped it because a test did not pass under `stop_on_failure`.
    Stopped,
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
/// The wrapper ended before its marker without hitting a limit: what went wrong, and whether
/// a retry may help (not when the job's files do not fit in `/work`).
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
        (Ending::Cancelled | Ending::Stopped, _) => verdict(Status::Cancelled, None),
        // The exit code is the program's only if the program ran: an OOM kill during the build
        // (or the unpack) ends the wrapper with the build's status, which no program returned.
        (
            Ending::Exited {
                code,
                oom_killed: true,
            },
            build,
        ) => {
            let ran = kind == JobKind::Run && build == Some(0);
            verdict(Status::MemoryExceeded, ran.then_some(code))
        }
        (Ending::Exited { code, .. }, None) => {
            let permanent = matches!(code, EXIT_UNPACK | EXIT_NO_HELPER);
            return Err((wrapper_failure(code), !permanent));
        }
        (Ending::Exited { .. }, Some(s)) if s != 0 => verdict(Status::CompileError, None),
        (Ending::Exited { .. }, Some(_)) if kind == JobKind::Compile => {
            verdict(Status::Succeeded, None)
        }
        (Ending::Exited { code: 0, .. }, Some(_)) => verdict(Status::Succeeded, Some(0)),
        (Ending::Exited { code, .. }, Some(_)) => verdict(Status::Failed, Some(code)),
    })
}
