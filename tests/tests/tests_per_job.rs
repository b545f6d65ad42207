//! Compile once, run many (issue 13): jobs with tests through the real `quayside-worker`
//! binary, the Docker runner and the C runner image on the shared engine. Each test's verdict,
//! the job's status, per-test limits, `stop_on_failure`, every compare mode, per-test output
//! caps, and the live log's test marks.

use std::collections::BTreeMap;

use futures_util::StreamExt as _;
use quayside_common::cases::{Compare, TestCase, TestLimits};
use quayside_common::verdicts::{Summary, TestStatus};
use quayside_common::{JobKind, JobResult, JobSpec, Status};
use quayside_e2e::TestQueue;

/// One C program for every test: the first word of its input says what to do.
const PROGRAM: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    char what[32] = "";
    if (scanf("%31s", what) != 1) return 2;
    if (!strcmp(what, "add")) { long a, b; scanf("%ld %ld", &a, &b); printf("%ld\n", a + b); }
    else if (!strcmp(what, "spin")) { for (;;) {} }
    else if (!strcmp(what, "eat")) { for (;;) { char *p = malloc(1 << 20); if (p) memset(p, 1, 1 << 20); } }
    else if (!strcmp(what, "touch")) { int mib; scanf("%d", &mib); size_t n = (size_t)mib << 20;
        volatile char *p = malloc(n); for (size_t i = 0; i < n; i += 4096) p[i] = 1; puts("touched"); }
    else if (!strcmp(what, "crash")) { volatile int *p = 0; *p = 1; }
    else if (!strcmp(what, "fail")) { fputs("bad input\n", stderr); return 3; }
    else if (!strcmp(what, "flood")) { for (;;) fputs("0123456789", stdout); }
    else if (!strcmp(what, "sleep")) { int ms; scanf("%d", &ms); usleep(ms * 1000); puts("slept"); }
    else if (!strcmp(what, "args")) { for (int i = 1; i < argc; i++) printf("%s\n", argv[i]); }
    else if (!strcmp(what, "print")) { int c; getchar(); while ((c = getchar()) != EOF) putchar(c); }
    return 0;
}
"#;

fn case(name: &str, stdin: &str, expected: Option<&str>) -> TestCase {
    TestCase {
        name: name.into(),
        stdin: stdin.into(),
        args: None,
        expected_stdout: expected.map(str::to_owned),
        limits: TestLimits::default(),
    }
}

fn job(tests: Vec<TestCase>) -> JobSpec {
    let files = BTreeMap::from([("main.c".to_owned(), PROGRAM.to_owned())]);
    let mut spec = JobSpec::new(JobKind::Run, "c", files);
    spec.limits.run_wall_time_ms = Some(2_000);
    spec.limits.compile_wall_time_ms = Some(60_000);
    spec.tests = Some(tests);
    spec
}

fn verdicts(r: &JobResult) -> Vec<(&str, TestStatus)> {
    r.tests
        .iter()
        .map(|t| (t.name.as_str(), t.status))
        .collect()
}

fn worker(q: &TestQueue) {
    q.spawn_real_worker(|c| {
        c.worker.slots = 2;
        c.worker.lease_ms = 10_000;
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_tests_one_build_each_with_its_verdict() {
    let q = TestQueue::new("tests-per-job");
    worker(&q);
    let mut tests: Vec<TestCase> = (0..14)
        .map(|i| {
            case(
                &format!("add-{i:02}"),
                &format!("add {i} {i}\n"),
                Some(&format!("{}\n", 2 * i)),
            )
        })
        .collect();
    tests.insert(3, case("wrong", "add 1 1\n", Some("3\n")));
    let mut spin = case("spin", "spin\n", Some(""));
    spin.limits.run_wall_time_ms = Some(500);
    tests.push(spin);
    tests.push(case("eat", "eat\n", None));
    tests.push(case("crash", "crash\n", None));
    let mut flood = case("flood", "flood\n", None);
    flood.limits.output_bytes = Some(10_000);
    tests.push(flood);
    let mut args = case("args", "args\n", Some("a b\nc\n"));
    args.args = Some(vec!["a b".into(), "c".into()]);
    tests.push(args);
    assert_eq!(tests.len(), 20);
    let spec = job(tests);
    q.producer.enqueue(&spec).await.expect("enqueue");
    let r = q.wait_one(&spec.id, 240).await;

    let mut expected: Vec<(String, TestStatus)> = (0..14)
        .map(|i| (format!("add-{i:02}"), TestStatus::Passed))
        .collect();
    expected.insert(3, ("wrong".into(), TestStatus::WrongAnswer));
    for (name, status) in [
        ("spin", TestStatus::TimedOut),
        ("eat", TestStatus::MemoryExceeded),
        ("crash", TestStatus::Failed),
        ("flood", TestStatus::OutputExceeded),
        ("args", TestStatus::Passed),
    ] {
        expected.push((name.into(), status));
    }
    let expected: Vec<(&str, TestStatus)> =
        expected.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    assert_eq!(verdicts(&r), expected, "{:?}", r.error);
    assert_eq!(
        r.status,
        Status::WrongAnswer,
        "the first test that did not pass"
    );
    assert_eq!(
        r.summary,
        Some(Summary {
            passed: 15,
            total: 20
        })
    );

    let test = |name: &str| r.tests.iter().find(|t| t.name == name).expect("test");
    let wrong = test("wrong");
    assert_eq!(wrong.stdout.data, "2\n");
    assert!(
        wrong
            .checker_message
            .as_deref()
            .is_some_and(|m| m.contains("line 1")),
        "{:?}",
        wrong.checker_message
    );
    let crash = test("crash");
    assert_eq!((crash.exit_code, crash.signal), (Some(139), Some(11)));
    let spin = test("spin");
    // Killed at its own 500 ms, not the job's 2 s (the upper bound only catches the latter).
    assert!((500..2_000).contains(&spin.wall_ms), "{}", spin.wall_ms);
    let flood = test("flood");
    assert_eq!(
        (flood.stdout.data.len(), flood.stdout.truncated),
        (4096, true),
        "kept per test: limits.test_output_kept_bytes"
    );
    let eat = test("eat");
    assert!(
        eat.peak_memory_bytes > 200 << 20,
        "{}",
        eat.peak_memory_bytes
    );
    // Every test ran in the one sandbox after one build: one compile, measured once.
    assert!(r.durations.compile_ms > 0);
    assert!(
        r.compile_output.data.is_empty(),
        "{}",
        r.compile_output.lossy()
    );
    assert_eq!(r.cpu_ms, Some(r.tests.iter().map(|t| t.cpu_ms).sum()));
    assert_eq!(r.exit_code, None, "each test has its own");

    // The live log marks where each test starts, in order, and its verdict.
    let entries: Vec<_> = q
        .producer
        .logs(&spec.id, false)
        .map(|e| e.expect("log entry"))
        .collect()
        .await;
    let starts: Vec<String> = entries
        .iter()
        .filter(|e| e.source == "test")
        .map(|e| String::from_utf8_lossy(&e.data).trim_end().to_owned())
        .collect();
    let names: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();
    assert_eq!(starts, names);
    assert!(
        entries
            .iter()
            .any(|e| e.source == "verdict" && e.data.starts_with(b"wrong wrong_answer ")),
        "{entries:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_per_test_stop_on_failure_and_a_failed_build() {
    let q = TestQueue::new("tests-limits");
    worker(&q);
    // Raised wall time: sleeps past the job's 2 s and passes. Lowered memory: touches 64 MiB
    // under its own 32 MiB (the sandbox has the job's 256), memory_exceeded by its peak.
    let mut slow = case("slow", "sleep 2500\n", Some("slept\n"));
    slow.limits.run_wall_time_ms = Some(5_000);
    let mut small = case("small", "touch 64\n", Some("touched\n"));
    small.limits.memory_bytes = Some(32 << 20);
    let mut raised = case("raised", "touch 300\n", Some("touched\n"));
    raised.limits.memory_bytes = Some(512 << 20);
    let limits = job(vec![slow, small, raised, case("fails", "fail\n", None)]);

    let mut stopping = job(vec![
        case("one", "add 1 2\n", Some("3\n")),
        case("two", "fail\n", Some("")),
        case("three", "add 1 2\n", Some("3\n")),
        case("four", "spin\n", None),
    ]);
    stopping.stop_on_failure = true;

    let mut broken = job(vec![case("one", "add 1 2\n", Some("3\n"))]);
    broken.files.insert(
        "main.c".into(),
        "int main(void) { return undefined; }".into(),
    );

    for spec in [&limits, &stopping, &broken] {
        q.producer.enqueue(spec).await.expect("enqueue");
    }
    let r = q.wait_one(&limits.id, 240).await;
    assert_eq!(
        verdicts(&r),
        [
            ("slow", TestStatus::Passed),
            ("small", TestStatus::MemoryExceeded),
            ("raised", TestStatus::Passed),
            ("fails", TestStatus::Failed),
        ],
        "{:?}",
        r.tests
    );
    assert_eq!(r.status, Status::MemoryExceeded);
    let fails = &r.tests[3];
    assert_eq!(
        (fails.exit_code, fails.stderr.data.as_str()),
        (Some(3), "bad input\n")
    );
    assert!(r.tests[2].peak_memory_bytes > 300 << 20, "{:?}", r.tests[2]);

    let r = q.wait_one(&stopping.id, 240).await;
    assert_eq!(
        verdicts(&r),
        [
            ("one", TestStatus::Passed),
            ("two", TestStatus::Failed),
            ("three", TestStatus::Skipped),
            ("four", TestStatus::Skipped),
        ]
    );
    assert_eq!(r.status, Status::Failed);
    assert_eq!(
        r.summary,
        Some(Summary {
            passed: 1,
            total: 4
        })
    );
    assert!(
        r.durations.run_ms < 2_000,
        "stopped at the failure, not after the spin's 2 s: {}",
        r.durations.run_ms
    );

    let r = q.wait_one(&broken.id, 240).await;
    assert_eq!(r.status, Status::CompileError);
    assert!(r.tests.is_empty());
    assert_eq!(
        r.summary,
        Some(Summary {
            passed: 0,
            total: 1
        })
    );
    assert!(r.compile_output.lossy().contains("undefined"));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_compare_mode_judges_as_documented() {
    let q = TestQueue::new("tests-compare");
    worker(&q);
    // The program prints its input after the first line: each test prints exactly `out`.
    let t = |name: &str, out: &str, expected: &str| {
        case(name, &format!("print\n{out}"), Some(expected))
    };
    let modes = [
        (
            Compare::Exact,
            vec![
                (t("same", "1 2\n", "1 2\n"), TestStatus::Passed),
                (
                    t("trailing-space", "1 2 \n", "1 2\n"),
                    TestStatus::WrongAnswer,
                ),
            ],
        ),
        (
            Compare::Lines,
            vec![
                (t("trailing", "1 2  \n\n\n", "1 2\n"), TestStatus::Passed),
                (t("inner-space", "1  2\n", "1 2\n"), TestStatus::WrongAnswer),
            ],
        ),
        (
            Compare::Tokens,
            vec![
                (t("spacing", "1\n  2\t\n", "1 2\n"), TestStatus::Passed),
                (t("other", "1 3\n", "1 2\n"), TestStatus::WrongAnswer),
            ],
        ),
        (
            Compare::Float {
                abs: 1e-6,
                rel: 1e-6,
            },
            vec![
                (
                    t("close", "0.3333333\n", "0.33333333333\n"),
                    TestStatus::Passed,
                ),
                (
                    t("far", "0.334\n", "0.33333333333\n"),
                    TestStatus::WrongAnswer,
                ),
            ],
        ),
    ];
    let mut specs = Vec::new();
    for (mode, cases) in &modes {
        let mut spec = job(cases.iter().map(|(c, _)| c.clone()).collect());
        spec.compare = Some(*mode);
        q.producer.enqueue(&spec).await.expect("enqueue");
        specs.push(spec);
    }
    for ((mode, cases), spec) in modes.iter().zip(&specs) {
        let r = q.wait_one(&spec.id, 240).await;
        let expected: Vec<(&str, TestStatus)> =
            cases.iter().map(|(c, s)| (c.name.as_str(), *s)).collect();
        assert_eq!(verdicts(&r), expected, "{mode:?}: {:?}", r.tests);
        assert_eq!(r.status, Status::WrongAnswer, "{mode:?}");
    }
}

/// A testlib-style checker (`checker input output answer`): numbers within 1e-4 pass, others
/// are a wrong answer (exit 1), no number is a presentation error (exit 2).
const FLOAT_CHECKER: &str = r#"#include <stdio.h>
int main(int argc, char **argv) {
    if (argc != 4) return 3;
    FILE *out = fopen(argv[2], "r"), *ans = fopen(argv[3], "r");
    double found, expected;
    if (!out || !ans || fscanf(ans, "%lf", &expected) != 1) return 3;
    if (fscanf(out, "%lf", &found) != 1) { fprintf(stderr, "presentation error: no number\n"); return 2; }
    double d = found - expected;
    if (d < 0) d = -d;
    if (d > 1e-4) { printf("wrong answer: expected %g, found %g\n", expected, found); return 1; }
    printf("ok %g\n", found);
    return 0;
}
"#;

fn checker(source: &str) -> quayside_common::cases::Checker {
    quayside_common::cases::Checker {
        language: "c".into(),
        files: BTreeMap::from([("check.c".to_owned(), source.to_owned())]),
        compiler_options: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checker_judges_each_test_and_its_own_failure_is_checker_failed() {
    let q = TestQueue::new("tests-checker");
    worker(&q);
    let print =
        |name: &str, out: &str, answer: &str| case(name, &format!("print\n{out}"), Some(answer));
    let mut floats = job(vec![
        print("close", "0.33333\n", "0.333333333\n"),
        print("far", "0.5\n", "0.333333333\n"),
        print("empty", "", "1\n"),
        case("crash", "crash\n", Some("1\n")),
        // The program rewrites the checker's source between two checks.
        case("tamper", "print\n1\n", Some("1\n")),
        print("after", "2\n", "2\n"),
    ]);
    // `print` echoes its input; the tampering test's program appends to the checker first.
    floats.files.insert(
        "main.c".into(),
        PROGRAM.replace(
            "else if (!strcmp(what, \"print\"))",
            "else if (!strcmp(what, \"tamper\")) { FILE *f = fopen(\"/work/.quayside/checker/check.c\", \"a\"); if (f) fputs(\"/* x */\", f); }\n    else if (!strcmp(what, \"print\"))",
        ),
    );
    floats.tests.as_mut().expect("tests")[4].stdin = "tamper\n".into();
    floats.checker = Some(checker(FLOAT_CHECKER));

    let mut crashing = job(vec![case("one", "add 1 2\n", Some("3\n"))]);
    crashing.checker = Some(checker(
        "int main(void) { volatile int *p = 0; *p = 1; return 0; }\n",
    ));
    let mut broken = job(vec![case("one", "add 1 2\n", Some("3\n"))]);
    broken.checker = Some(checker("int main(void) { return nope; }\n"));
    let mut three = job(vec![case("one", "add 1 2\n", Some("3\n"))]);
    three.checker = Some(checker("int main(void) { return 3; }\n"));
    for spec in [&floats, &crashing, &broken, &three] {
        q.producer.enqueue(spec).await.expect("enqueue");
    }

    let r = q.wait_one(&floats.id, 240).await;
    assert_eq!(
        verdicts(&r),
        [
            ("close", TestStatus::Passed),
            ("far", TestStatus::WrongAnswer),
            ("empty", TestStatus::WrongAnswer),
            ("crash", TestStatus::Failed),
            ("tamper", TestStatus::CheckerFailed),
            // A checker that was changed is never trusted again in this sandbox.
            ("after", TestStatus::CheckerFailed),
        ],
        "{:?} {:?}",
        r.error,
        r.tests
    );
    assert_eq!(
        r.status,
        Status::WrongAnswer,
        "the first test that did not pass"
    );
    let message = |i: usize| r.tests[i].checker_message.clone().unwrap_or_default();
    assert_eq!(message(0), "ok 0.33333");
    assert_eq!(message(1), "wrong answer: expected 0.333333, found 0.5");
    assert_eq!(message(2), "presentation error: no number");
    assert!(message(4).contains("changed"), "{}", message(4));

    for (spec, error) in [(&crashing, None), (&broken, Some("nope")), (&three, None)] {
        let r = q.wait_one(&spec.id, 240).await;
        assert_eq!(
            r.status,
            Status::CheckerFailed,
            "{:?} {:?}",
            r.error,
            r.tests
        );
        assert_eq!(r.attempts, 1, "a checker's failure is never retried");
        match error {
            Some(e) => {
                assert!(
                    r.error.as_deref().is_some_and(|m| m.contains(e)),
                    "{:?}",
                    r.error
                );
                assert_eq!(verdicts(&r), [("one", TestStatus::Skipped)]);
            }
            None => assert_eq!(verdicts(&r), [("one", TestStatus::CheckerFailed)]),
        }
    }
}
