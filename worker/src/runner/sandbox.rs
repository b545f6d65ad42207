//! What every sandbox backend shares: labels and names, the orphan rule, output capping, the
//! live log, and how an attempt is classified from the way its sandbox ended.
//!
//! - [`protocol`]: the wrapper script a sandbox runs as its main process, its stdin header and
//!   its end-of-build marker.
//! - [`seccomp`]: Quayside's seccomp profile, shared by both backends.

pub mod protocol;
pub mod seccomp;

use std::collections::HashMap;
use std::time::Duration;

use quayside_common::job::SpecError;
use quayside_common::{Captured, JobId, JobKind, Status};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use crate::logs::{LogSink, LogSource};
use crate::runner::{RunRequest, RunnerError};

use self::protocol::{wrapper_failure, EXIT_UNPACK};

/// Label carrying the job id; what cleanup checks and the stop hook count.
pub const LABEL_JOB: &str = "quayside.job";
/// Label carrying the id of the worker that owns the sandbox; what the orphan sweep reads.
pub const LABEL_WORKER: &str = "quayside.worker";
/// Label carrying the attempt number.
pub const LABEL_ATTEMPT: &str = "quayside.attempt";

/// Where job files live inside every sandbox.
pub const WORK_DIR: &str = "/work";

/// Longest single argument the kernel passes to a program (`MAX_ARG_STRLEN`, its NUL included).
pub const MAX_ARG_STRLEN: usize = 32 * 4096;

/// Refuses a program argument the kernel would refuse to pass (`E2BIG`): the sandbox could not
/// start the program, on any runner.
///
/// # Errors
/// `args[i]`, the first argument too long.
pub fn check_args(args: &[String]) -> Result<(), SpecError> {
    let longest = MAX_ARG_STRLEN - 1;
    match args.iter().position(|a| a.len() > longest) {
        Some(i) => Err(SpecError::field(
            format!("args[{i}]"),
            format!("longer than the {longest} bytes the kernel passes in one argument"),
        )),
        None => Ok(()),
    }
}

/// The labels every sandbox of one attempt carries.
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

pub fn labels(job_id: &JobId, attempt: u32, worker_id: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_JOB.to_owned(), job_id.to_string()),
        (LABEL_WORKER.to_owned(), worker_id.to_owned()),
        (LABEL_ATTEMPT.to_owned(), attempt.to_string()),
    ])
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

/// Whether a sandbox belongs to a worker that is gone: its owner label names none of
/// `live_workers`. Sandboxes without an owner label are not Quayside's to judge.
pub fn is_orphan(labels: &HashMap<String, String>, live_workers: &[String]) -> bool {
    labels
        .get(LABEL_WORKER)
        .is_some_and(|owner| !live_workers.iter().any(|w| w == owner))
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

/// Most output chunks waiting for Redis before more are dropped from the live log.
const LIVE_LOG_QUEUE: usize = 256;
/// Largest entry the live log writes; queued chunks of one source are joined up to this.
const LIVE_LOG_ENTRY_BYTES: usize = 64 << 10;

/// Forwards output to the job's log stream from a task of its own, so a slow Redis never
/// stalls the program's pipes or its wall time. Best effort: when the queue is full, chunks are
/// dropped from the live log (the result still has them).
#[derive(Debug)]
pub struct LiveLog {
    tx: mpsc::Sender<(LogSource, Vec<u8>)>,
    task: AbortOnDropHandle<()>,
    dropped: u64,
}

impl LiveLog {
    pub fn start(sink: &LogSink) -> Self {
        let (tx, mut rx) = mpsc::channel::<(LogSource, Vec<u8>)>(LIVE_LOG_QUEUE);
        let sink = sink.clone();
        let task = tokio::spawn(async move {
            let mut next = rx.recv().await;
            while let Some((source, mut data)) = next.take() {
                // Join what is already queued from the same source: fewer, larger entries.
                loop {
                    match rx.try_recv() {
                        Ok((s, more))
                            if s == source && data.len() + more.len() <= LIVE_LOG_ENTRY_BYTES =>
                        {
                            data.extend_from_slice(&more);
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                sink.write(source, &data).await;
                if next.is_none() {
                    next = rx.recv().await;
                }
            }
        });
        Self {
            tx,
            task: AbortOnDropHandle::new(task),
            dropped: 0,
        }
    }

    /// Queues `data` for the log stream; never waits.
    pub fn send(&mut self, source: LogSource, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.tx.try_send((source, data.to_vec())).is_err() {
            self.dropped += 1;
        }
    }

    /// Writes what is queued, waiting at most `grace`; what is left then is dropped.
    pub async fn finish(self, grace: Duration) {
        let Self { tx, task, dropped } = self;
        drop(tx);
        if dropped > 0 {
            tracing::warn!(dropped, "live log fell behind; chunks dropped from it");
        }
        if tokio::time::timeout(grace, task).await.is_err() {
            tracing::warn!("live log not flushed in time; rest dropped");
        }
    }
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
        let oom_in_build = Exited {
            code: 1,
            oom_killed: true,
        };
        for (kind, build) in [
            (JobKind::Run, Some(1)),
            (JobKind::Run, None),
            (JobKind::Compile, Some(0)),
            (JobKind::Compile, Some(1)),
        ] {
            assert_eq!(
                v(kind, build, oom_in_build),
                Ok((Status::MemoryExceeded, None, None)),
                "{kind:?} {build:?}: no program ran, so no exit code"
            );
        }
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
    fn labels_names_signals_and_orphans() {
        let id = JobId::parse("batch:7").expect("id");
        let l = labels(&id, 2, "w1");
        assert_eq!(l[LABEL_JOB], "batch:7");
        assert!(sandbox_name(&id, 2).starts_with("quayside-batch_7-a2-"));
        assert!(!is_orphan(&l, &["w1".to_owned()]));
        assert!(is_orphan(&l, &["w2".to_owned()]));
        assert!(!is_orphan(&HashMap::new(), &[]), "not ours");
        assert_eq!(
            (signal_of(137), signal_of(1), signal_of(128)),
            (Some(9), None, None)
        );
    }
}
