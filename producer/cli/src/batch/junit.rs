//! JUnit XML for CI: one testsuite per batch with one testcase per job; or, when jobs ran tests
//! (`batch --tests`), one testsuite per job with one testcase per test.
//!
//! Program failures (non-zero exit, build failure, limits, a wrong answer) are `<failure>`; jobs
//! the queue could not run (`rejected`, `dead`, a missing result) and a test whose checker
//! failed are `<error>`; cancelled jobs and skipped tests are `<skipped>`.

use std::fmt::Write as _;

use quayside_common::verdicts::{TestResult, TestStatus};
use quayside_common::Status;

use super::per_test::describe;
use super::summary::Row;

/// Lines of output put in a failure's body and in `system-out`/`system-err`.
const BODY_LINES: usize = 50;
/// Bytes of each captured stream kept in `system-out`/`system-err`.
const STREAM_BYTES: usize = 4096;

#[derive(Clone, Copy)]
enum Verdict {
    Passed,
    Failure,
    Error,
    Skipped,
}

impl Verdict {
    fn tag(self) -> Option<&'static str> {
        match self {
            Self::Passed => None,
            Self::Failure => Some("failure"),
            Self::Error => Some("error"),
            Self::Skipped => Some("skipped"),
        }
    }
}

fn verdict(row: &Row) -> Verdict {
    match row.result.as_ref().map(|r| r.status) {
        Some(Status::Succeeded) => Verdict::Passed,
        Some(Status::Cancelled) => Verdict::Skipped,
        Some(Status::Rejected | Status::Dead) | None => Verdict::Error,
        Some(_) => Verdict::Failure,
    }
}

fn test_verdict(t: &TestResult) -> Verdict {
    match t.status {
        TestStatus::Passed => Verdict::Passed,
        TestStatus::Skipped => Verdict::Skipped,
        // The checker, not the program, gave no verdict.
        TestStatus::CheckerFailed => Verdict::Error,
        _ => Verdict::Failure,
    }
}

/// One `<testcase>` as it will be written.
struct Case<'a> {
    name: &'a str,
    secs: f64,
    verdict: Verdict,
    /// `message` and `type` of the verdict element.
    message: String,
    kind: &'a str,
    body: String,
    stdout: String,
    stderr: String,
}

/// Counted `tests`, `failures`, `errors`, `skipped` and `time` attributes.
fn counts<'a>(cases: impl IntoIterator<Item = &'a Case<'a>>, time: f64) -> String {
    let (mut n, mut failures, mut errors, mut skipped) = (0, 0, 0, 0);
    for c in cases {
        n += 1;
        match c.verdict {
            Verdict::Failure => failures += 1,
            Verdict::Error => errors += 1,
            Verdict::Skipped => skipped += 1,
            Verdict::Passed => {}
        }
    }
    format!(
        "tests=\"{n}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{time:.3}\""
    )
}

/// The job as one testcase.
fn job_case(r: &Row) -> Case<'_> {
    let (stdout, stderr) = r.result.as_ref().map_or_else(Default::default, |res| {
        (res.stdout.lossy(), res.stderr.lossy())
    });
    Case {
        name: &r.name,
        secs: r.exec_ms() as f64 / 1000.0,
        verdict: verdict(r),
        message: format!("{}{}", r.status(), r.exit_note()),
        kind: r.status(),
        body: r.excerpt(BODY_LINES).join("\n"),
        stdout,
        stderr,
    }
}

/// Each test of the job as a testcase; the job itself when it ran none (a build failure, a
/// job that never ran).
fn test_cases(r: &Row) -> Vec<Case<'_>> {
    let tests = r.result.as_ref().map_or(&[][..], |res| &res.tests[..]);
    if tests.is_empty() {
        return vec![job_case(r)];
    }
    tests
        .iter()
        .map(|t| {
            let message = describe(t);
            let mut body = message.clone();
            if !t.stderr.is_empty() {
                body.push('\n');
                body.push_str(&t.stderr.lossy());
            }
            Case {
                name: &t.name,
                secs: t.wall_ms as f64 / 1000.0,
                verdict: test_verdict(t),
                message,
                kind: t.status.as_str(),
                body,
                stdout: t.stdout.lossy(),
                stderr: t.stderr.lossy(),
            }
        })
        .collect()
}

/// The JUnit document for `batch`; `time` is the batch's wall time in seconds.
pub fn render(batch: &str, rows: &[Row], time: f64) -> String {
    let per_test = rows
        .iter()
        .any(|r| r.result.as_ref().is_some_and(|res| !res.tests.is_empty()));
    let suites: Vec<(&str, Vec<Case<'_>>, f64)> = if per_test {
        rows.iter()
            .map(|r| (r.name.as_str(), test_cases(r), r.exec_ms() as f64 / 1000.0))
            .collect()
    } else {
        vec![(batch, rows.iter().map(job_case).collect(), time)]
    };
    let totals = counts(suites.iter().flat_map(|(_, c, _)| c), time);
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"{}\" {totals}>",
        if per_test {
            escape(batch)
        } else {
            "quayside".into()
        }
    );
    for (name, cases, secs) in &suites {
        let suite = escape(name);
        let _ = writeln!(x, "  <testsuite name=\"{suite}\" {}>", counts(cases, *secs));
        for c in cases {
            write_case(&mut x, &suite, c);
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

fn write_case(x: &mut String, classname: &str, c: &Case<'_>) {
    let _ = write!(
        x,
        "    <testcase name=\"{}\" classname=\"{classname}\" time=\"{:.3}\"",
        escape(c.name),
        c.secs
    );
    let Some(tag) = c.verdict.tag() else {
        x.push_str("/>\n");
        return;
    };
    let _ = writeln!(x, ">");
    let _ = writeln!(
        x,
        "      <{tag} message=\"{}\" type=\"{}\">{}</{tag}>",
        escape(&c.message),
        escape(c.kind),
        escape(
            &c.body
                .lines()
                .take(BODY_LINES)
                .collect::<Vec<_>>()
                .join("\n")
        )
    );
    for (tag, text) in [("system-out", &c.stdout), ("system-err", &c.stderr)] {
        if !text.is_empty() {
            let text: String = text.chars().take(STREAM_BYTES).collect();
            let _ = writeln!(x, "      <{tag}>{}</{tag}>", escape(&text));
        }
    }
    x.push_str("    </testcase>\n");
}

/// Escapes text for XML content and attributes, dropping characters XML 1.0 cannot hold.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::summary::tests::{mixed_rows, tests_rows};

    #[test]
    fn hostile_output_is_escaped_and_counts_match_the_cases() {
        let rows = mixed_rows();
        let xml = render("nightly", &rows, 12.5);
        let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
        let suite = doc
            .descendants()
            .find(|n| n.has_tag_name("testsuite"))
            .expect("testsuite");
        let attr = |k: &str| suite.attribute(k).unwrap_or_default();
        assert_eq!(
            (
                attr("tests"),
                attr("failures"),
                attr("errors"),
                attr("skipped")
            ),
            ("6", "2", "1", "1")
        );
        assert_eq!(attr("time"), "12.500");
        let cases: Vec<_> = suite
            .children()
            .filter(|n| n.has_tag_name("testcase"))
            .collect();
        assert_eq!(cases.len(), 6);
        assert_eq!(cases[0].attribute("time"), Some("1.500"));
        assert_eq!(cases[1].attribute("name"), Some("bad&<x>.c"));
        let failure = cases[1]
            .children()
            .find(|n| n.has_tag_name("failure"))
            .expect("failure");
        assert_eq!(failure.attribute("message"), Some("compile_error"));
        let body = failure.text().unwrap_or_default();
        assert!(
            body.contains("expected ';' before \"}\" <here> &"),
            "{body}"
        );
        let crash = cases[2]
            .children()
            .find(|n| n.has_tag_name("failure"))
            .expect("failure");
        assert_eq!(crash.attribute("message"), Some("failed (exit 3)"));
        assert_eq!(crash.text(), Some("Traceback\n]]></failure><evil/>"));
        assert!(cases[3].children().any(|n| n.has_tag_name("error")));
        assert!(cases[4].children().any(|n| n.has_tag_name("skipped")));
    }

    #[test]
    fn with_tests_each_job_is_a_testsuite_and_each_test_a_testcase() {
        let xml = render("grading", &tests_rows(), 9.0);
        let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "testsuites");
        let attrs = |n: roxmltree::Node<'_, '_>| {
            ["name", "tests", "failures", "errors", "skipped"]
                .map(|k| n.attribute(k).unwrap_or_default().to_owned())
        };
        assert_eq!(attrs(root), ["grading", "10", "4", "0", "2"]);
        let suites: Vec<_> = root
            .children()
            .filter(|n| n.has_tag_name("testsuite"))
            .collect();
        let got: Vec<_> = suites.iter().map(|s| attrs(*s)).collect();
        let want = |a: [&str; 5]| a.map(str::to_owned);
        assert_eq!(
            got,
            [
                want(["good.c", "3", "0", "0", "0"]),
                want(["wrong.c", "3", "2", "0", "0"]),
                want(["crash.c", "3", "1", "0", "2"]),
                want(["broken.c", "1", "1", "0", "0"]),
            ]
        );
        let case = |suite: usize, i: usize| {
            suites[suite]
                .children()
                .filter(|n| n.has_tag_name("testcase"))
                .nth(i)
                .expect("testcase")
        };
        assert_eq!(case(0, 1).attribute("name"), Some("2"));
        assert_eq!(case(0, 1).attribute("time"), Some("1.500"));
        assert_eq!(case(0, 1).attribute("classname"), Some("good.c"));
        let wrong = case(1, 1)
            .children()
            .find(|n| n.has_tag_name("failure"))
            .expect("failure");
        assert_eq!(wrong.attribute("type"), Some("wrong_answer"));
        assert_eq!(
            wrong.attribute("message"),
            Some("wrong_answer: line 1: expected \"3\", got \"4\"")
        );
        let timeout = case(1, 2)
            .children()
            .find(|n| n.has_tag_name("failure"))
            .expect("failure");
        assert_eq!(timeout.attribute("message"), Some("timed_out after 2.0s"));
        let crash = case(2, 0)
            .children()
            .find(|n| n.has_tag_name("failure"))
            .expect("failure");
        assert_eq!(crash.attribute("message"), Some("failed (signal 11)"));
        assert!(case(2, 2).children().any(|n| n.has_tag_name("skipped")));
        let build = case(3, 0);
        assert_eq!(build.attribute("name"), Some("broken.c"));
        let failure = build
            .children()
            .find(|n| n.has_tag_name("failure"))
            .expect("failure");
        assert_eq!(failure.attribute("type"), Some("compile_error"));
        assert!(failure.text().unwrap_or_default().contains("error: nope"));
    }

    #[test]
    fn a_checker_failure_is_an_error_not_the_programs_failure() {
        use crate::batch::summary::tests::test;
        let mut rows = tests_rows();
        let res = rows[0].result.as_mut().expect("result");
        res.tests[0] = test("1", TestStatus::CheckerFailed, 5);
        let xml = render("g", &rows[..1], 1.0);
        let doc = roxmltree::Document::parse(&xml).expect("xml");
        let error = doc
            .descendants()
            .find(|n| n.has_tag_name("error"))
            .expect("an error");
        assert_eq!(error.attribute("type"), Some("checker_failed"));
        let suite = doc
            .descendants()
            .find(|n| n.has_tag_name("testsuite"))
            .expect("suite");
        assert_eq!(suite.attribute("errors"), Some("1"));
        assert_eq!(suite.attribute("failures"), Some("0"));
    }
}
