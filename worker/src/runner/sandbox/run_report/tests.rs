use super::*;

/// Lines the helper wrote in tests/tests/measure.rs (runc, then gVisor).
const TOUCH: &str = "exit=0 signal=- timed_out=0 wall_us=118766 cpu_us=65777 maxrss_kb=103400 \
                     oom_kills=0 stdout_bytes=- stderr_bytes=- orphans=0 subreaper=1";
const OOM: &str = "exit=- signal=9 timed_out=0 wall_us=489155 cpu_us=249615 maxrss_kb=260916 \
                   oom_kills=1 stdout_bytes=- stderr_bytes=- orphans=0 subreaper=1";
const GVISOR_SLEEP: &str = "exit=0 signal=- timed_out=0 wall_us=1040924 cpu_us=0 \
                            maxrss_kb=3988 oom_kills=- stdout_bytes=- stderr_bytes=- orphans=0 \
                            subreaper=0";

fn report(line: &str) -> RunReport {
    line.parse().expect(line)
}

/// A clean run's report with `f` applied.
fn run(f: impl FnOnce(&mut RunReport)) -> RunReport {
    let mut r = RunReport {
        exit_code: Some(0),
        maxrss_kb: 2048,
        oom_kills: Some(0),
        stdout_bytes: Some(10),
        stderr_bytes: Some(0),
        ..RunReport::default()
    };
    f(&mut r);
    r
}

#[test]
fn the_helpers_own_lines_read_back() {
    let t = report(TOUCH);
    assert_eq!(
        (t.exit_code, t.signal, t.cpu_ms(), t.wall_ms()),
        (Some(0), None, 65, 118)
    );
    assert_eq!(t.peak_memory_bytes(), 103400 * 1024);
    assert_eq!((t.oom_kills, t.stdout_bytes), (Some(0), None));
    let o = report(OOM);
    assert_eq!(
        (o.exit_code, o.signal, o.oom_kills),
        (None, Some(9), Some(1))
    );
    let g = report(GVISOR_SLEEP);
    assert_eq!((g.oom_kills, g.cpu_us), (None, 0));
}

#[test]
fn a_malformed_line_is_an_error_naming_the_problem() {
    let cases = [
        ("", "no exit"),
        ("hello world", "is not key=value"),
        (
            &TOUCH.replace("cpu_us=65777", "cpu_us=lots"),
            "cpu_us is not a number",
        ),
        (
            &TOUCH.replace("timed_out=0", "timed_out=yes"),
            "timed_out is not 0 or 1",
        ),
        (
            &TOUCH.replace("signal=-", "signal=9"),
            "exactly one of exit and signal",
        ),
        (&TOUCH.replace(" maxrss_kb=103400", ""), "no maxrss_kb"),
    ];
    for (line, problem) in cases {
        let err = line.parse::<RunReport>().expect_err(line);
        assert!(err.to_string().contains(problem), "{line:?}: {err}");
    }
}

#[test]
fn run_verdicts_follow_the_limits_of_the_test() {
    let limits = Limits {
        memory_bytes: 64 << 20,
        output_bytes: 100,
        ..Limits::DEFAULT
    };
    let cases = [
        (run(|_| {}), None),
        (run(|r| r.exit_code = Some(3)), Some(TestStatus::Failed)),
        (
            run(|r| {
                r.exit_code = None;
                r.signal = Some(11)
            }),
            Some(TestStatus::Failed),
        ),
        (
            run(|r| {
                r.exit_code = None;
                r.signal = Some(9);
                r.timed_out = true
            }),
            Some(TestStatus::TimedOut),
        ),
        (
            run(|r| {
                r.exit_code = None;
                r.signal = Some(9);
                r.oom_kills = Some(1)
            }),
            Some(TestStatus::MemoryExceeded),
        ),
        // The sandbox allowed more (another test raised it); this test's own limit holds.
        (
            run(|r| r.maxrss_kb = (64 << 10) + 1),
            Some(TestStatus::MemoryExceeded),
        ),
        (run(|r| r.maxrss_kb = 64 << 10), None),
        (
            run(|r| r.stdout_bytes = Some(101)),
            Some(TestStatus::OutputExceeded),
        ),
        (
            run(|r| r.stderr_bytes = Some(101)),
            Some(TestStatus::OutputExceeded),
        ),
        (run(|r| r.stdout_bytes = Some(100)), None),
        (
            run(|r| {
                r.exit_code = None;
                r.signal = Some(SIGXFSZ)
            }),
            Some(TestStatus::OutputExceeded),
        ),
    ];
    for (report, want) in cases {
        assert_eq!(run_verdict(&report, &limits), want, "{report:?}");
    }
}

#[test]
fn without_a_cgroup_count_only_a_kill_near_the_limit_is_memory() {
    let limits = Limits {
        memory_bytes: 100 << 20,
        ..Limits::DEFAULT
    };
    let killed = |peak_mib: u64| {
        run(|r| {
            r.exit_code = None;
            r.signal = Some(9);
            r.oom_kills = None;
            r.maxrss_kb = peak_mib << 10;
        })
    };
    assert_eq!(
        run_verdict(&killed(95), &limits),
        Some(TestStatus::MemoryExceeded)
    );
    assert_eq!(
        run_verdict(&killed(5), &limits),
        Some(TestStatus::Failed),
        "a program that kills itself small is a runtime error"
    );
}

#[test]
fn checker_exit_codes_follow_testlib() {
    let checked = |f: fn(&mut RunReport)| checker_verdict(&run(f));
    assert_eq!(checked(|_| {}), TestStatus::Passed);
    assert_eq!(checked(|r| r.exit_code = Some(1)), TestStatus::WrongAnswer);
    assert_eq!(
        checked(|r| r.exit_code = Some(2)),
        TestStatus::WrongAnswer,
        "presentation error"
    );
    for broken in [
        (|r: &mut RunReport| r.exit_code = Some(3)) as fn(&mut RunReport),
        |r| r.exit_code = Some(7),
        |r| {
            r.exit_code = None;
            r.signal = Some(11)
        },
        |r| r.timed_out = true,
    ] {
        assert_eq!(checked(broken), TestStatus::CheckerFailed);
    }
}
