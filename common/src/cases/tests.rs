use serde_json::json;

use super::*;
use crate::admission::{check, check_sizes};
use crate::config::Config;
use crate::job::tests::spec;
use crate::job::{JobKind, JobSpec};

/// A valid job with two tests, as the protocol shows it.
fn with_tests() -> JobSpec {
    serde_json::from_value(json!({
        "v": 1, "id": "sub-17", "kind": "run", "language": "c",
        "files": { "main.c": "int main(){}" },
        "tests": [
            { "name": "01", "stdin": "1 2\n", "expected_stdout": "3\n" },
            { "name": "big", "stdin": "", "args": ["--fast"],
              "limits": { "run_wall_time_ms": 5000, "memory_bytes": 536870912 } }
        ],
        "compare": { "float": { "abs": 1e-9 } },
        "stop_on_failure": true
    }))
    .expect("the protocol's example decodes")
}

/// `spec` fails shape validation with an error starting `field: `.
fn assert_shape_refused(spec: &JobSpec, field: &str) {
    let err = spec.validate_shape().expect_err(field).to_string();
    assert!(err.starts_with(&format!("{field}: ")), "{field}: {err}");
}

fn checker(language: &str) -> Checker {
    Checker {
        language: language.into(),
        files: [("check.c".into(), "int main(){}".into())].into(),
        compiler_options: Vec::new(),
    }
}

#[test]
fn compare_modes_read_as_the_issue_writes_them() {
    let read = |v: serde_json::Value| serde_json::from_value::<Compare>(v);
    assert_eq!(read(json!("exact")).expect("exact"), Compare::Exact);
    assert_eq!(read(json!("lines")).expect("lines"), Compare::Lines);
    assert_eq!(read(json!("tokens")).expect("tokens"), Compare::Tokens);
    assert_eq!(
        read(json!({ "float": { "abs": 1e-6, "rel": 1e-3 } })).expect("float"),
        Compare::Float {
            abs: 1e-6,
            rel: 1e-3
        }
    );
    assert_eq!(
        read(json!({ "float": {} })).expect("float with defaults"),
        Compare::Float {
            abs: DEFAULT_FLOAT_TOLERANCE,
            rel: DEFAULT_FLOAT_TOLERANCE
        }
    );
    for bad in [
        json!("fuzzy"),
        json!({ "float": { "abs": 1e-6, "eps": 1 } }),
        json!({ "float": { "abs": "small" } }),
    ] {
        assert!(read(bad.clone()).is_err(), "{bad} accepted");
    }
    assert_eq!(Compare::default(), Compare::Lines, "the issue's default");
    assert_eq!(
        serde_json::to_value(Compare::Float { abs: 0.5, rel: 0.0 }).expect("encode"),
        json!({ "float": { "abs": 0.5, "rel": 0.0 } })
    );
}

#[test]
fn the_issue_shaped_spec_round_trips_and_validates() {
    let s = with_tests();
    s.validate_shape().expect("valid");
    assert_eq!(s.test_cases().len(), 2);
    assert_eq!(
        s.test_cases()[1].args.as_deref(),
        Some(&["--fast".into()][..])
    );
    assert_eq!(
        s.compare_mode(),
        Compare::Float {
            abs: 1e-9,
            rel: DEFAULT_FLOAT_TOLERANCE
        }
    );
    let back: JobSpec =
        serde_json::from_value(serde_json::to_value(&s).expect("encode")).expect("decode");
    assert_eq!(back, s);
    // A plain job writes none of the new fields: old readers see the spec they knew.
    let plain = serde_json::to_value(spec()).expect("encode");
    for field in ["tests", "compare", "checker", "stop_on_failure"] {
        assert!(
            plain.get(field).is_none(),
            "{field} written for a plain job"
        );
    }
}

#[test]
fn per_test_limits_take_only_the_three_the_issue_names() {
    let err = serde_json::from_value::<TestLimits>(json!({ "pids": 4 })).expect_err("pids");
    assert!(err.to_string().contains("unknown field `pids`"), "{err}");
    let l: TestLimits = serde_json::from_value(json!({ "memory_bytes": 1 << 30 })).expect("memory");
    let applied = l.apply(&Limits::DEFAULT);
    assert_eq!(applied.memory_bytes, 1 << 30);
    assert_eq!(applied.run_wall_time_ms, Limits::DEFAULT.run_wall_time_ms);
    assert_eq!(applied.pids, Limits::DEFAULT.pids);
    assert!(TestLimits::default().is_empty());
}

#[test]
fn test_fields_are_refused_where_they_make_no_sense_naming_the_field() {
    let mut s = with_tests();
    s.kind = JobKind::Compile;
    assert_shape_refused(&s, "tests");

    let mut s = with_tests();
    s.stdin = "1\n".into();
    assert_shape_refused(&s, "stdin");

    let mut s = with_tests();
    s.tests = Some(Vec::new());
    assert_shape_refused(&s, "tests");

    for (field, set) in [
        (
            "compare",
            (|s: &mut JobSpec| s.compare = Some(Compare::Exact)) as fn(&mut JobSpec),
        ),
        ("checker", |s| s.checker = Some(checker("c"))),
        ("stop_on_failure", |s| s.stop_on_failure = true),
    ] {
        let mut s = spec();
        set(&mut s);
        assert_shape_refused(&s, field);
    }

    let mut s = with_tests();
    s.checker = Some(checker("c"));
    assert_shape_refused(&s, "compare");
    s.compare = None;
    s.validate_shape()
        .expect("a checker alone judges the tests");
}

#[test]
fn each_test_is_checked_and_named_by_index() {
    let mut s = with_tests();
    s.tests.as_mut().expect("tests")[1].name = "01".into();
    let err = s.validate_shape().expect_err("duplicate").to_string();
    assert_eq!(err, "tests[1].name: \"01\" is the name of an earlier test");

    let mut s = with_tests();
    s.tests.as_mut().expect("tests")[0].name = "a b".into();
    assert_shape_refused(&s, "tests[0].name");

    let mut s = with_tests();
    s.tests.as_mut().expect("tests")[1].args = Some(vec!["ok".into(), "a\0".into()]);
    assert_shape_refused(&s, "tests[1].args[1]");

    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        let mut s = with_tests();
        s.compare = Some(Compare::Float { abs: 0.0, rel: bad });
        assert_shape_refused(&s, "compare.float.rel");
    }
}

#[test]
fn a_checker_is_checked_like_the_job_files_under_its_own_name() {
    let mut s = with_tests();
    s.compare = None;
    let mut c = checker("c");
    c.files = [("../escape.c".into(), String::new())].into();
    s.checker = Some(c);
    assert_shape_refused(&s, "checker.files[\"../escape.c\"]");

    let mut c = checker("c");
    c.files.clear();
    s.checker = Some(c);
    assert_shape_refused(&s, "checker.files");

    let mut c = checker("");
    c.files = checker("c").files;
    s.checker = Some(c);
    assert_shape_refused(&s, "checker.language");

    let mut c = checker("c");
    c.compiler_options = vec!["-O2\0".into()];
    s.checker = Some(c);
    assert_shape_refused(&s, "checker.compiler_options[0]");
}

#[test]
fn admission_caps_tests_and_names_the_test() {
    let cfg = Config::default();
    let l = &cfg.limits;
    let refused = |s: &JobSpec, field: &str| {
        let err = check_sizes(l, &cfg.queue, s).expect_err(field).to_string();
        assert!(err.starts_with(&format!("{field}: ")), "{field}: {err}");
    };
    check_sizes(l, &cfg.queue, &with_tests()).expect("fits");

    let mut s = with_tests();
    let one = s.test_cases()[0].clone();
    s.tests = Some(
        (0..=l.max_tests)
            .map(|i| TestCase {
                name: format!("t{i}"),
                ..one.clone()
            })
            .collect(),
    );
    refused(&s, "tests");

    let mut s = with_tests();
    s.tests.as_mut().expect("tests")[1].limits.memory_bytes = Some(l.max.memory_bytes + 1);
    refused(&s, "tests[1].limits.memory_bytes");
    s.tests.as_mut().expect("tests")[1].limits.memory_bytes = Some(1);
    refused(&s, "tests[1].limits.memory_bytes");

    let mut s = with_tests();
    s.tests.as_mut().expect("tests")[0].stdin = "x".repeat(l.max_stdin_bytes as usize + 1);
    refused(&s, "tests[0].stdin");

    let mut s = with_tests();
    s.tests.as_mut().expect("tests")[1].args = Some(vec!["a".into(); l.max_args as usize + 1]);
    refused(&s, "tests[1].args");

    // Many tests of legal size still add up: the whole spec is bounded.
    let mut s = with_tests();
    let input = "x".repeat((l.max_stdin_bytes / 2) as usize);
    s.tests = Some(
        (0..=l.max_spec_bytes / (l.max_stdin_bytes / 2))
            .map(|i| TestCase {
                name: format!("t{i}"),
                stdin: input.clone(),
                ..one.clone()
            })
            .collect(),
    );
    refused(&s, "spec");

    let mut s = with_tests();
    s.compare = None;
    let mut c = checker("c");
    c.files = [(
        format!("{}.c", "d/".repeat(l.max_folder_depth as usize + 1)),
        String::new(),
    )]
    .into();
    let name = c.files.keys().next().expect("one").clone();
    s.checker = Some(c);
    refused(&s, &format!("checker.files[{name:?}]"));
}

#[test]
fn a_checker_must_run_in_the_job_image() {
    let cfg = Config::load(None).expect("defaults");
    let mut s = with_tests();
    s.compare = None;
    s.checker = Some(checker("c"));
    check(&cfg, &s).expect("a C checker for a C job");
    for (language, why) in [("cpp", "needs image"), ("cobol", "unknown language")] {
        s.checker = Some(checker(language));
        let err = check(&cfg, &s).expect_err(language).to_string();
        assert!(
            err.starts_with("checker.language: ") && err.contains(why),
            "{err}"
        );
    }
}

#[test]
fn text_bytes_count_every_test_and_the_checker() {
    let plain = spec();
    let mut s = plain.clone();
    s.tests = with_tests().tests;
    let tests: usize = s.test_cases().iter().map(TestCase::text_bytes).sum();
    assert_eq!(
        tests,
        "01".len() + "1 2\n".len() + "3\n".len() + "big".len() + "--fast".len()
    );
    assert_eq!(s.text_bytes(), plain.text_bytes() + tests);
    s.checker = Some(checker("c"));
    assert_eq!(
        s.text_bytes(),
        plain.text_bytes() + tests + "c".len() + "check.c".len() + "int main(){}".len()
    );
}

#[test]
fn an_error_moves_inside_its_test() {
    let err = SpecError::field("limits.memory_bytes", "too much").within("tests[3]");
    assert_eq!(err.to_string(), "tests[3].limits.memory_bytes: too much");
}
