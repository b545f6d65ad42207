//! Knowing the verdict before the sandbox has exited.
//!
//! Where stdout and stderr are two streams (Docker), the wrapper writes, after its end marker
//! on stdout, `<end>:<oom kills>\n` on stderr: how many times the kernel's OOM killer fired
//! in the sandbox's memory cgroup over its whole life (`-1` where no cgroup file can be read,
//! as under gVisor). Each stream keeps its order, so
//! once both markers are in, every byte the program wrote has arrived. When, besides, the run
//! report says the program and everything it started are gone (a subreaper reaped them all)
//! and ended by itself with an exit code, and no OOM kill happened, the verdict is the one the
//! engine would give once the container stops: [`PhasedOutput::settled`] gives it then, and the
//! worker need not wait for the container's exit and its state (tens of milliseconds on every
//! job). Anything else (a signal, an OOM kill, an orphan, no report, a job with tests) waits
//! for the engine as before.

use super::{signal_of, Ending, PhasedOutput};
use crate::runner::sandbox::protocol::{PhaseMarker, Scan};
use crate::runner::{LogSource, Output};

/// The stderr end marker's scan: `<end>:<oom kills>\n`, stripped from the program's stderr.
#[derive(Debug)]
pub(super) enum StderrEnd {
    /// No marker on this stream (no end nonce).
    Absent,
    Scanning(PhaseMarker),
    /// Found: the sandbox's OOM kills over its life, `None` where unknown.
    Seen {
        oom_kills: Option<u64>,
    },
}

impl StderrEnd {
    pub(super) fn new(end_nonce: Option<&str>) -> Self {
        end_nonce.map_or(Self::Absent, |n| Self::Scanning(PhaseMarker::new(n)))
    }

    /// The part of `chunk` that is the program's stderr (the marker and nothing else cut out).
    pub(super) fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        let Self::Scanning(marker) = self else {
            return chunk.to_vec();
        };
        match marker.feed(chunk) {
            Scan::Build(bytes) => bytes,
            Scan::Ended {
                build,
                status,
                program,
                ..
            } => {
                *self = Self::Seen {
                    oom_kills: u64::try_from(status).ok(),
                };
                // Nothing of the program writes after the marker; an orphan's bytes still count.
                [build, program].concat()
            }
        }
    }

    /// What a scan held back in case it started the marker: stderr after all.
    pub(super) fn take_held(&mut self) -> Vec<u8> {
        match self {
            Self::Scanning(marker) => marker.take_held(),
            Self::Absent | Self::Seen { .. } => Vec::new(),
        }
    }
}

impl PhasedOutput {
    /// Feeds a chunk of the program's stderr past its end marker's scan.
    pub(super) fn stderr_bytes(&mut self, chunk: &[u8], output: &Output) {
        let bytes = self.stderr_end.feed(chunk);
        output.send(LogSource::Stderr, self.stderr.push(&bytes));
    }

    /// How the sandbox will end, once the wrapper has said all of it (see the module's doc);
    /// `None` while the engine must still be asked.
    pub fn settled(&self) -> Option<Ending> {
        let StderrEnd::Seen { oom_kills: Some(0) } = self.stderr_end else {
            return None;
        };
        let report = self.report?;
        let code = self.end_status?;
        let clean = self.tests.is_none()
            && self.build_status == Some(0)
            && report.subreaper
            && !report.orphans
            && !report.timed_out
            && report.signal.is_none()
            && report.exit_code.is_some()
            && signal_of(code).is_none();
        clean.then_some(Ending::Exited {
            code,
            oom_killed: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use quayside_common::{JobId, JobKind, Limits, Status};

    use super::*;

    const REPORT: &str = "exit=3 signal=- timed_out=0 wall_us=2000 cpu_us=1000 maxrss_kb=900 \
                          oom_kills=0 stdout_bytes=- stderr_bytes=- orphans=0 subreaper=1";

    fn end() -> String {
        "E".repeat(32)
    }

    /// A docker-like attempt: `stdout` and `stderr` fed as two streams, each split at `split`.
    fn docker(stdout: &str, stderr: &str, split: usize) -> PhasedOutput {
        fn halves(s: &str, split: usize) -> [&[u8]; 2] {
            let (a, b) = s.as_bytes().split_at(split.min(s.len()));
            [a, b]
        }
        let mut p = PhasedOutput::new("N", Some(&end()), &Limits::DEFAULT);
        p.start();
        for chunk in halves(stdout, split) {
            p.feed(chunk, &Output::discard());
        }
        for chunk in halves(stderr, split) {
            p.feed_stderr(chunk, &Output::discard());
        }
        p
    }

    fn stdout_with(report: &str) -> String {
        format!("N:0\nout{}:3 {report}\n", end())
    }

    #[test]
    fn both_markers_and_a_clean_report_settle_the_verdict_and_strip_the_marker() {
        let stdout = stdout_with(REPORT);
        let stderr = format!("err{}:0\n", end());
        for split in 0..stderr.len() {
            let mut p = docker(&stdout, &stderr, split);
            let ending = p.settled().expect("settled");
            assert_eq!(
                ending,
                Ending::Exited {
                    code: 3,
                    oom_killed: false
                }
            );
            p.flush(&Output::discard());
            let out = p
                .conclude(&JobId::parse("j").expect("id"), JobKind::Run, ending, None)
                .expect("ran");
            assert_eq!(
                (out.status, out.exit_code, out.stdout.data.as_str()),
                (Status::Failed, Some(3), "out")
            );
            assert_eq!(out.stderr.data, "err", "split at {split}");
        }
    }

    #[test]
    fn anything_the_engine_must_still_tell_waits_for_it() {
        let clean = format!("err{}:0\n", end());
        let cases = [
            (
                "no stderr marker yet",
                stdout_with(REPORT),
                "err".to_owned(),
            ),
            (
                "an OOM kill in the sandbox's life",
                stdout_with(REPORT),
                format!("{}:1\n", end()),
            ),
            (
                "no cgroup count (gVisor)",
                stdout_with(REPORT),
                format!("{}:-1\n", end()),
            ),
            (
                "an orphan",
                stdout_with(&REPORT.replace("orphans=0", "orphans=1")),
                clean.clone(),
            ),
            (
                "no subreaper",
                stdout_with(&REPORT.replace("subreaper=1", "subreaper=0")),
                clean.clone(),
            ),
            (
                "killed by a signal",
                stdout_with(&REPORT.replace("exit=3 signal=-", "exit=- signal=9")),
                clean.clone(),
            ),
            ("no report", stdout_with(""), clean.clone()),
            ("no end marker", "N:0\nout".to_owned(), clean.clone()),
            ("a failed build", "N:1\n".to_owned(), clean.clone()),
        ];
        for (why, stdout, stderr) in cases {
            let p = docker(&stdout, &stderr, 2);
            assert_eq!(p.settled(), None, "{why}");
        }
        let status = docker(&format!("N:0\nout{}:137 {REPORT}\n", end()), &clean, 2);
        assert_eq!(status.settled(), None, "a status a signal gives");
    }
}
