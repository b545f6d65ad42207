use quayside_common::{JobId, JobKind, Limits, Status};
use tokio::sync::mpsc;

use super::*;
use crate::runner::sandbox::protocol::EXIT_UNPACK;
use crate::runner::{Chunk, LogSource, Output};

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

fn limits(cap: u64) -> Limits {
    Limits {
        output_bytes: cap,
        compile_wall_time_ms: 1_000,
        run_wall_time_ms: 2_000,
        ..Limits::DEFAULT
    }
}

fn drain(rx: &mut mpsc::Receiver<Chunk>) -> Vec<(LogSource, String)> {
    let mut out = Vec::new();
    while let Ok(c) = rx.try_recv() {
        out.push((c.source, String::from_utf8_lossy(&c.data).into_owned()));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn one_stream_splits_into_build_stdout_and_stderr_at_the_markers() {
    let (output, mut rx) = Output::channel();
    let mut p = PhasedOutput::new("N0NCE", Some("END"), &limits(100));
    assert_eq!(p.deadline(), None, "no clock before the sandbox runs");
    p.start();
    let t0 = Instant::now();
    assert_eq!(p.deadline(), Some(t0 + Duration::from_secs(1)));
    // Markers split across chunks, at any byte.
    assert_eq!(
        p.feed(
            b"cc main.c
N0N",
            &output
        ),
        Progress::Nothing
    );
    tokio::time::advance(Duration::from_millis(300)).await;
    assert_eq!(
        p.feed(
            b"CE:0
hel",
            &output
        ),
        Progress::BuildEnded
    );
    assert_eq!(
        p.deadline(),
        Some(t0 + Duration::from_millis(300) + Duration::from_secs(2)),
        "the run's wall time starts at the marker"
    );
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(
        p.feed(
            b"lo
EN", &output
        ),
        Progress::Nothing
    );
    assert_eq!(
        p.feed(
            b"D:3
oops
",
            &output
        ),
        Progress::Nothing
    );
    p.flush(&output);
    // What a marker scan holds back goes out later, so chunks may be cut anew; in order.
    let mut streamed: Vec<(LogSource, String)> = Vec::new();
    for (source, text) in drain(&mut rx) {
        match streamed.last_mut() {
            Some((s, t)) if *s == source => t.push_str(&text),
            _ => streamed.push((source, text)),
        }
    }
    assert_eq!(
        streamed,
        [
            (LogSource::Compile, "cc main.c\n".into()),
            (LogSource::Stdout, "hello\n".into()),
            (LogSource::Stderr, "oops\n".into()),
        ]
    );
    let job = JobId::parse("j").expect("id");
    let ending = Ending::Exited {
        code: 3,
        oom_killed: false,
    };
    let out = p.conclude(&job, JobKind::Run, ending, None).expect("ran");
    assert_eq!((out.status, out.exit_code), (Status::Failed, Some(3)));
    assert_eq!(
        (
            out.compile_output.data.as_str(),
            out.stdout.data.as_str(),
            out.stderr.data.as_str()
        ),
        ("cc main.c\n", "hello\n", "oops\n")
    );
    assert_eq!((out.compile_ms, out.run_ms), (300, 500));
}

#[tokio::test(start_paused = true)]
async fn with_no_end_marker_everything_after_the_build_is_stdout() {
    let output = Output::discard();
    let mut p = PhasedOutput::new("N", None, &limits(4));
    p.start();
    assert_eq!(
        p.feed_stderr(b"err", &output),
        Progress::Nothing,
        "before the marker"
    );
    assert_eq!(
        p.feed(
            b"N:0
END:1
",
            &output
        ),
        Progress::OutputExceeded
    );
    p.flush(&output);
    let job = JobId::parse("j").expect("id");
    let out = p
        .conclude(&job, JobKind::Run, Ending::OutputExceeded, Some(7))
        .expect("ran");
    assert_eq!(out.status, Status::OutputExceeded);
    assert_eq!(
        (out.stdout.data.as_str(), out.stdout.truncated),
        ("END:", true),
        "no end marker is looked for"
    );
    assert_eq!(
        (out.stderr.data.as_str(), out.sandbox_start_ms),
        ("err", Some(7))
    );
}

#[tokio::test(start_paused = true)]
async fn a_wrapper_that_dies_before_its_marker_is_an_infrastructure_error() {
    let output = Output::discard();
    let job = JobId::parse("j").expect("id");
    let mut p = PhasedOutput::new("NONCE", None, &limits(100));
    p.start();
    // Held back in case it starts a marker, then output after all.
    p.feed(b"tar: No space left on device\nNON", &output);
    p.flush(&output);
    let ending = Ending::Exited {
        code: EXIT_UNPACK,
        oom_killed: false,
    };
    let err = p
        .conclude(&job, JobKind::Run, ending, None)
        .expect_err("unpack");
    assert!(matches!(err, RunnerError::Files { .. }), "{err:?}");
    assert!(
        err.to_string().contains("did not unpack") && err.to_string().ends_with("device\nNON"),
        "{err}"
    );
    let mut p = PhasedOutput::new("NONCE", None, &limits(100));
    p.flush(&output);
    let killed = Ending::Exited {
        code: 137,
        oom_killed: false,
    };
    let err = p
        .conclude(&job, JobKind::Run, killed, None)
        .expect_err("died");
    assert!(matches!(err, RunnerError::Wrapper { .. }), "{err:?}");
    assert_eq!(err.kind(), crate::runner::RunnerErrorKind::Transient);
}

#[test]
fn a_compile_job_or_a_failed_build_has_no_run_time() {
    let job = JobId::parse("j").expect("id");
    for (kind, marker) in [(JobKind::Compile, "N:0\n"), (JobKind::Run, "N:1\n")] {
        let mut p = PhasedOutput::new("N", None, &limits(100));
        p.start();
        p.feed(marker.as_bytes(), &Output::discard());
        p.flush(&Output::discard());
        let ending = Ending::Exited {
            code: 0,
            oom_killed: false,
        };
        let out = p.conclude(&job, kind, ending, None).expect("ran");
        assert_eq!(out.run_ms, 0, "{kind:?} {marker}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_end_marker_carries_the_programs_cpu_time_and_peak_memory() {
    let report = "exit=0 signal=- timed_out=0 wall_us=1005000 cpu_us=1000223 maxrss_kb=103400 \
                  oom_kills=0 stdout_bytes=- stderr_bytes=- orphans=0 subreaper=1";
    let stream = format!("N:0\nhello{END}:0 {report}\n", END = "E".repeat(32));
    let job = JobId::parse("j").expect("id");
    // Split anywhere: the report is read whole, and the program's output keeps every byte.
    for split in 0..stream.len() {
        let (a, b) = stream.as_bytes().split_at(split);
        let mut p = PhasedOutput::new("N", Some(&"E".repeat(32)), &limits(100));
        p.start();
        p.feed(a, &Output::discard());
        p.feed(b, &Output::discard());
        p.flush(&Output::discard());
        let ending = Ending::Exited {
            code: 0,
            oom_killed: false,
        };
        let out = p.conclude(&job, JobKind::Run, ending, None).expect("ran");
        assert_eq!(out.stdout.data, "hello", "split at {split}");
        assert_eq!(
            (out.cpu_ms, out.peak_memory_bytes),
            (Some(1000), Some(103400 * 1024)),
            "split at {split}"
        );
    }
    // No report (an image without the helper), a garbled one, or no end marker at all: no
    // numbers, never made-up ones.
    for tail in [
        format!("{}:0 \n", "E".repeat(32)),
        format!("{}:0 exit=0 cpu_us=lots\n", "E".repeat(32)),
        String::new(),
    ] {
        let mut p = PhasedOutput::new("N", Some(&"E".repeat(32)), &limits(100));
        p.start();
        p.feed(format!("N:0\nhi{tail}").as_bytes(), &Output::discard());
        p.flush(&Output::discard());
        let ending = Ending::Exited {
            code: 0,
            oom_killed: false,
        };
        let out = p.conclude(&job, JobKind::Run, ending, None).expect("ran");
        assert_eq!(out.stdout.data, "hi", "{tail:?}");
        assert_eq!(
            (out.cpu_ms, out.peak_memory_bytes),
            (None, None),
            "{tail:?}"
        );
    }
}

fn plan(stop_on_failure: bool) -> std::sync::Arc<crate::runner::sandbox::tests_mode::TestPlan> {
    use quayside_common::cases::{Compare, TestCase};
    let case = |name: &str, expected: &str| TestCase {
        name: name.into(),
        stdin: String::new(),
        args: None,
        expected_stdout: Some(expected.into()),
        limits: Default::default(),
    };
    std::sync::Arc::new(crate::runner::sandbox::tests_mode::TestPlan::new(
        &[case("a", "1\n"), case("b", "2\n"), case("c", "3\n")],
        &limits(100),
        &[],
        Compare::Lines,
        stop_on_failure,
        4,
        6,
    ))
}

/// A test's frames as the wrapper prints them.
fn frames(end: &str, i: usize, out: &str, err: &str, exit: i64) -> String {
    format!(
        "{end}:0 T {i}\n{out}{end}:0 E {i}\n{err}{end}:0 R {i} exit={exit} signal=- timed_out=0 \
         wall_us=2000 cpu_us=1000 maxrss_kb=1024 oom_kills=0 stdout_bytes={} stderr_bytes={} \
         orphans=0 subreaper=1\n",
        out.len(),
        err.len()
    )
}

#[tokio::test(start_paused = true)]
async fn test_frames_are_judged_as_they_arrive_and_the_rest_skipped() {
    let end = "E".repeat(32);
    let stream = format!(
        "N:0\n{}{}",
        frames(&end, 0, "1\n", "warn\n", 0),
        frames(&end, 1, "5\n", "", 0)
    );
    let job = JobId::parse("j").expect("id");
    for split in 0..stream.len() {
        let (output, mut rx) = Output::channel();
        let mut p = PhasedOutput::new("N", Some(&end), &limits(100)).with_tests(Some(plan(false)));
        p.start();
        let (a, b) = stream.as_bytes().split_at(split);
        assert_ne!(p.feed(a, &output), Progress::StopTests);
        assert_ne!(p.feed(b, &output), Progress::StopTests);
        // The sandbox stopped while test `c` had not started.
        p.flush(&output);
        let out = p
            .conclude(&job, JobKind::Run, Ending::TimedOut, None)
            .expect("ran");
        let got: Vec<_> = out
            .tests
            .iter()
            .map(|t| (t.name.as_str(), t.status))
            .collect();
        use quayside_common::verdicts::TestStatus::*;
        assert_eq!(
            got,
            [("a", Passed), ("b", WrongAnswer), ("c", Skipped)],
            "split {split}"
        );
        assert_eq!(out.status, Status::WrongAnswer);
        let a = &out.tests[0];
        assert_eq!(
            (a.stdout.data.as_str(), a.stderr.data.as_str()),
            ("1\n", "warn")
        );
        assert!(a.stderr.truncated, "4 bytes kept per stream");
        assert_eq!(
            (
                out.tests[1].stdout.data.as_str(),
                out.tests[1].stdout.truncated
            ),
            ("", true),
            "6 bytes kept in all"
        );
        assert_eq!(
            (out.cpu_ms, out.peak_memory_bytes),
            (Some(2), Some(1 << 20))
        );
        let log: Vec<_> = drain(&mut rx)
            .into_iter()
            .filter(|(s, _)| matches!(s, LogSource::Test | LogSource::Verdict))
            .collect();
        assert_eq!(
            log,
            [
                (LogSource::Test, "a\n".into()),
                (LogSource::Verdict, "a passed 2ms\n".into()),
                (LogSource::Test, "b\n".into()),
                (LogSource::Verdict, "b wrong_answer 2ms\n".into()),
            ]
        );
    }
    // Under stop_on_failure the first failure stops the run, and what follows it in the same
    // chunk is not taken; a test the sandbox ended in gets the sandbox's verdict.
    let stream = format!(
        "N:0\n{}{}{}",
        frames(&end, 0, "9\n", "", 0),
        frames(&end, 1, "2\n", "", 0),
        format_args!("{end}:0 T 2\n3")
    );
    let mut p = PhasedOutput::new("N", Some(&end), &limits(100)).with_tests(Some(plan(true)));
    p.start();
    assert_eq!(
        p.feed(stream.as_bytes(), &Output::discard()),
        Progress::StopTests
    );
    let out = p
        .conclude(&job, JobKind::Run, Ending::Stopped, None)
        .expect("ran");
    let got: Vec<_> = out.tests.iter().map(|t| t.status.as_str()).collect();
    assert_eq!(got, ["wrong_answer", "skipped", "skipped"]);
    let mut p = PhasedOutput::new("N", Some(&end), &limits(100)).with_tests(Some(plan(false)));
    p.start();
    p.feed(format!("N:0\n{end}:0 T 0\n").as_bytes(), &Output::discard());
    let oom = Ending::Exited {
        code: 137,
        oom_killed: true,
    };
    let out = p.conclude(&job, JobKind::Run, oom, None).expect("ran");
    let got: Vec<_> = out.tests.iter().map(|t| t.status.as_str()).collect();
    assert_eq!(
        got,
        ["memory_exceeded", "skipped", "skipped"],
        "gVisor: the sandbox ends"
    );
}

#[tokio::test(start_paused = true)]
async fn a_sigkill_near_the_memory_limit_in_the_report_is_memory_exceeded() {
    let job = JobId::parse("j").expect("id");
    let end = "E".repeat(32);
    let run = |maxrss_kb: u64| {
        let mut p = PhasedOutput::new("N", Some(&end), &limits(100));
        p.start();
        let report = format!(
            "exit=- signal=9 timed_out=0 wall_us=1 cpu_us=1 maxrss_kb={maxrss_kb} \
             oom_kills=- stdout_bytes=- stderr_bytes=- orphans=0 subreaper=0"
        );
        p.feed(
            format!("N:0\n{end}:137 {report}\n").as_bytes(),
            &Output::discard(),
        );
        let ending = Ending::Exited {
            code: 137,
            oom_killed: false,
        };
        p.conclude(&job, JobKind::Run, ending, None)
            .expect("ran")
            .status
    };
    // limits(100) has the default 256 MiB.
    assert_eq!(
        run(250 << 10),
        Status::MemoryExceeded,
        "gVisor's own OOM kill"
    );
    assert_eq!(
        run(10 << 10),
        Status::Failed,
        "a small program killed: not memory"
    );
}
