//! A finished batch's results, read once (member list + pipelined records), and the human
//! summary and JSON lines made of them.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Duration;

use quayside_common::{JobId, JobResult, Status};
use quayside_producer::{BatchStatus, Producer};
use serde::Serialize;

use super::inputs::NAME_LABEL;
use super::per_test;
use super::progress::human;
use crate::terminal;

/// Lines of output shown per failure in the summary.
const EXCERPT_LINES: usize = 5;
/// Characters kept per excerpt line.
const EXCERPT_WIDTH: usize = 200;

/// One job of the batch as it ended.
pub struct Row {
    pub id: JobId,
    pub name: String,
    /// `None` when the record is gone (expired) or has no result yet.
    pub result: Option<JobResult>,
}

impl Row {
    /// The terminal status, or `missing` for a job without a result.
    pub fn status(&self) -> &'static str {
        self.result
            .as_ref()
            .map_or("missing", |r| r.status.as_str())
    }

    pub fn succeeded(&self) -> bool {
        self.result
            .as_ref()
            .is_some_and(|r| r.status == Status::Succeeded)
    }

    /// ` (exit N)` when the program exited with a code, else nothing.
    pub fn exit_note(&self) -> String {
        self.result
            .as_ref()
            .and_then(|r| r.exit_code)
            .map(|c| format!(" (exit {c})"))
            .unwrap_or_default()
    }

    /// Time spent building and running (not queueing), in milliseconds.
    pub fn exec_ms(&self) -> u64 {
        self.result
            .as_ref()
            .map_or(0, |r| r.durations.compile_ms + r.durations.run_ms)
    }

    /// The output that says why a job did not succeed: the compiler's for a build failure, the
    /// program's stderr (else stdout) otherwise, and the queue's error message; at most `lines`.
    pub fn excerpt(&self, lines: usize) -> Vec<String> {
        let Some(r) = &self.result else {
            return vec!["no result: the job's record is gone (expired?)".into()];
        };
        let first_failure = per_test::first_failure(r);
        let mut text = if let Some(line) = first_failure {
            line
        } else if r.status == Status::CompileError {
            r.compile_output.lossy()
        } else if !r.stderr.is_empty() {
            r.stderr.lossy()
        } else {
            r.stdout.lossy()
        };
        if let Some(e) = &r.error {
            text = format!("{e}\n{text}");
        }
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .take(lines)
            .map(|l| l.chars().take(EXCERPT_WIDTH).collect())
            .collect()
    }
}

/// The batch's jobs as the summary shows them.
pub struct Members {
    /// One per name, in the order names were first enqueued, each at its latest version.
    pub rows: Vec<Row>,
    /// Earlier versions of jobs enqueued again with new content under the same name (their
    /// ids differ: ids follow the content), left out of `rows`.
    pub superseded: usize,
}

/// Every job of the batch with its result: one per name, at the version enqueued last.
///
/// # Errors
/// Unknown batch; Redis errors.
pub async fn rows(
    producer: &Producer,
    batch: &str,
    names: &HashMap<JobId, String>,
) -> anyhow::Result<Members> {
    let ids = producer.batch_jobs(batch).await?;
    let records = producer.statuses(&ids).await?;
    let all = ids.into_iter().zip(records).map(|(id, record)| {
        let (labelled, result) = match record {
            Some(r) => (r.labels.get(NAME_LABEL).cloned(), r.result),
            None => (None, None),
        };
        let name = labelled
            .or_else(|| names.get(&id).cloned())
            .unwrap_or_else(|| id.to_string());
        Row { id, name, result }
    });
    Ok(latest_by_name(all))
}

/// Keeps each name once, at its first place, with its last version.
fn latest_by_name(all: impl Iterator<Item = Row>) -> Members {
    let mut rows: Vec<Row> = Vec::new();
    let mut place: HashMap<String, usize> = HashMap::new();
    let mut superseded = 0;
    for row in all {
        match place.get(&row.name) {
            Some(&i) => {
                rows[i] = row;
                superseded += 1;
            }
            None => {
                place.insert(row.name.clone(), rows.len());
                rows.push(row);
            }
        }
    }
    Members { rows, superseded }
}

/// Counts by status, the slowest jobs, and the failures with the first lines of their output.
///
/// # Errors
/// Writing to `out` failed.
pub fn print(
    out: &mut impl Write,
    status: &BatchStatus,
    members: &Members,
    slowest: usize,
    failures: usize,
) -> std::io::Result<()> {
    let rows = &members.rows;
    let wall = match (status.created_at_ms, status.finished_at_ms) {
        (Some(a), Some(b)) => format!(" in {}", human(Duration::from_millis(b.saturating_sub(a)))),
        _ => String::new(),
    };
    let earlier = match members.superseded {
        0 => String::new(),
        n => format!(" ({n} earlier version(s) of jobs enqueued again with new content left out)"),
    };
    writeln!(
        out,
        "batch {}: {} jobs{wall}{earlier}",
        terminal::line(&status.id),
        rows.len()
    )?;
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for r in rows {
        *by_status.entry(r.status()).or_default() += 1;
    }
    writeln!(out, "\n{:<16} {:>7}", "status", "jobs")?;
    for (s, n) in &by_status {
        writeln!(out, "{s:<16} {n:>7}")?;
    }
    writeln!(out, "{:<16} {:>7}", "total", rows.len())?;

    // Jobs that never ran (cancelled while queued, rejected) have no time to rank.
    let mut by_time: Vec<&Row> = rows.iter().filter(|r| r.exec_ms() > 0).collect();
    by_time.sort_by_key(|r| std::cmp::Reverse(r.exec_ms()));
    if slowest > 0 && !by_time.is_empty() {
        writeln!(out, "\nslowest (build + run time)")?;
        for r in by_time.iter().take(slowest) {
            let t = human(Duration::from_millis(r.exec_ms()));
            writeln!(
                out,
                "  {t:>8}  {:<15} {}",
                r.status(),
                terminal::line(&r.name)
            )?;
        }
    }

    per_test::scores(out, rows)?;
    per_test::slowest_tests(out, rows, slowest)?;

    let failed: Vec<&Row> = rows.iter().filter(|r| !r.succeeded()).collect();
    if failed.is_empty() {
        writeln!(out, "\nall {} jobs succeeded", rows.len())?;
        return Ok(());
    }
    writeln!(out, "\nnot succeeded: {}", failed.len())?;
    for r in failed.iter().take(failures) {
        let code = r.exit_note();
        let name = terminal::line(&r.name);
        writeln!(out, "  {:<15} {name}{code}  [{}]", r.status(), r.id)?;
        for line in r.excerpt(EXCERPT_LINES) {
            writeln!(out, "      | {}", terminal::line(&line))?;
        }
    }
    if failed.len() > failures {
        writeln!(
            out,
            "  ... and {} more (--failures N shows more; --junit/--json list all)",
            failed.len() - failures
        )?;
    }
    Ok(())
}

/// One line per job, for CI.
#[derive(Serialize)]
struct JsonLine<'a> {
    id: &'a JobId,
    name: &'a str,
    batch: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i64>,
    /// Build + run time in milliseconds.
    duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a JobResult>,
}

/// Writes one JSON object per job: id, name, status, exit code, duration and the full result
/// (outputs included).
///
/// # Errors
/// Writing to `out` failed.
pub fn json_lines(out: &mut impl Write, batch: &str, rows: &[Row]) -> anyhow::Result<()> {
    for r in rows {
        let line = JsonLine {
            id: &r.id,
            name: &r.name,
            batch,
            status: r.status(),
            exit_code: r.result.as_ref().and_then(|r| r.exit_code),
            duration_ms: r.exec_ms(),
            result: r.result.as_ref(),
        };
        writeln!(out, "{}", terminal::json(&line)?)?;
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use quayside_common::verdicts::{Summary, TestResult, TestStatus};
    use quayside_common::Captured;

    pub fn row(name: &str, status: Status, stderr: &str, compile: &str, run_ms: u64) -> Row {
        let safe: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let id = JobId::parse(&format!("b:{safe}")).expect("id");
        let mut r = JobResult::without_output(id.clone(), status, None, 1);
        r.stderr = Captured::from_bytes(stderr.as_bytes().to_vec(), false);
        r.compile_output = Captured::from_bytes(compile.as_bytes().to_vec(), false);
        r.durations.run_ms = run_ms;
        r.exit_code = (status == Status::Failed).then_some(3);
        Row {
            id,
            name: name.to_owned(),
            result: Some(r),
        }
    }

    /// Every kind of ending, with output that is hostile to XML and terminals.
    pub fn mixed_rows() -> Vec<Row> {
        vec![
            row("ok.c", Status::Succeeded, "", "", 1_500),
            row(
                "bad&<x>.c",
                Status::CompileError,
                "",
                "x.c:1: error: expected ';' before \"}\" <here> & \u{1b}[31mred\0\nmore\n",
                20,
            ),
            row(
                "crash.py",
                Status::Failed,
                "Traceback\n]]></failure><evil/>\n",
                "",
                5,
            ),
            row("gone.py", Status::Dead, "", "", 0),
            row("stop.py", Status::Cancelled, "", "", 0),
            row("slow.py", Status::Succeeded, "", "", 300),
        ]
    }

    /// A test's result as a worker reports it.
    pub fn test(name: &str, status: TestStatus, wall_ms: u64) -> TestResult {
        TestResult {
            status,
            wall_ms,
            cpu_ms: wall_ms / 2,
            peak_memory_bytes: 3 << 20,
            exit_code: Some(0),
            ..TestResult::skipped(name)
        }
    }

    /// Submissions of a `batch --tests`: all passed, a wrong answer then a timeout, a crash
    /// with the rest skipped, a build failure.
    pub fn tests_rows() -> Vec<Row> {
        let with_tests = |name: &str, status: Status, tests: Vec<TestResult>| {
            let mut r = row(name, status, "", "", tests.iter().map(|t| t.wall_ms).sum());
            let res = r.result.as_mut().expect("result");
            res.summary = Some(Summary::of(&tests));
            res.tests = tests;
            r
        };
        let mut wrong = test("2", TestStatus::WrongAnswer, 20);
        wrong.checker_message = Some("line 1: expected \"3\", got \"4\"".into());
        wrong.stderr = Captured::from_bytes(b"debug: n=4\n".to_vec(), false);
        let mut timeout = test("3", TestStatus::TimedOut, 2_000);
        (timeout.exit_code, timeout.signal) = (None, Some(9));
        let mut crash = test("1", TestStatus::Failed, 30);
        (crash.exit_code, crash.signal) = (None, Some(11));
        vec![
            with_tests(
                "good.c",
                Status::Succeeded,
                vec![
                    test("1", TestStatus::Passed, 100),
                    test("2", TestStatus::Passed, 1_500),
                    test("3", TestStatus::Passed, 50),
                ],
            ),
            with_tests(
                "wrong.c",
                Status::WrongAnswer,
                vec![test("1", TestStatus::Passed, 10), wrong, timeout],
            ),
            with_tests(
                "crash.c",
                Status::Failed,
                vec![crash, TestResult::skipped("2"), TestResult::skipped("3")],
            ),
            row(
                "broken.c",
                Status::CompileError,
                "",
                "broken.c:1: error: nope",
                40,
            ),
        ]
    }

    fn members(rows: Vec<Row>) -> Members {
        Members {
            rows,
            superseded: 0,
        }
    }

    #[test]
    fn each_name_is_shown_once_at_its_latest_version() {
        let v1 = row("b.c", Status::Failed, "old", "", 5);
        let mut v2 = row("b.c", Status::Succeeded, "new", "", 5);
        v2.id = JobId::parse("b:b_c-2").expect("id");
        let all = vec![
            row("a.c", Status::Succeeded, "", "", 1),
            v1,
            row("c.c", Status::Succeeded, "", "", 1),
            v2,
        ];
        let m = latest_by_name(all.into_iter());
        let got: Vec<_> = m
            .rows
            .iter()
            .map(|r| (r.name.as_str(), r.status()))
            .collect();
        assert_eq!(
            got,
            [
                ("a.c", "succeeded"),
                ("b.c", "succeeded"),
                ("c.c", "succeeded")
            ]
        );
        assert_eq!(m.rows[1].id.as_str(), "b:b_c-2");
        assert_eq!(m.superseded, 1);
    }

    #[test]
    fn a_tests_batch_summary_has_scores_slowest_tests_and_the_failing_test() {
        let status = BatchStatus {
            id: "g".into(),
            ..BatchStatus::default()
        };
        let mut out = Vec::new();
        print(&mut out, &status, &members(tests_rows()), 5, 10).expect("print");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains("scores (tests passed)"), "{text}");
        assert!(
            text.contains("      0/3  failed          crash.c"),
            "{text}"
        );
        assert!(
            text.contains("      0/3  compile_error   broken.c"),
            "a build failure scores 0: {text}"
        );
        assert!(text.contains("slowest tests"), "{text}");
        assert!(
            text.contains("      | test 2: wrong_answer: line 1: expected \"3\", got \"4\""),
            "{text}"
        );
        assert!(
            text.contains("      | test 1: failed (signal 11)"),
            "{text}"
        );
        assert!(text.contains("      | broken.c:1: error: nope"), "{text}");
    }

    #[test]
    fn summary_counts_statuses_ranks_slowest_and_shows_why_jobs_failed() {
        let status = BatchStatus {
            id: "b".into(),
            created_at_ms: Some(1_000),
            finished_at_ms: Some(3_500),
            ..BatchStatus::default()
        };
        let mut out = Vec::new();
        print(&mut out, &status, &members(mixed_rows()), 2, 10).expect("print");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.starts_with("batch b: 6 jobs in 2.5s\n"), "{text}");
        assert!(text.contains("compile_error          1\n"), "{text}");
        assert!(text.contains("succeeded              2\n"), "{text}");
        assert!(text.contains("total                  6\n"), "{text}");
        let slow = text
            .split("slowest")
            .nth(1)
            .and_then(|s| s.split("not succeeded").next())
            .expect("slowest section");
        let (first, second) = (slow.find("ok.c"), slow.find("slow.py"));
        assert!(first.is_some() && first < second, "{text}");
        assert!(!slow.contains("crash.py"), "only the 2 slowest: {text}");
        assert!(text.contains("not succeeded: 4"), "{text}");
        assert!(text.contains("| x.c:1: error: expected"), "{text}");
        assert!(text.contains("failed          crash.py (exit 3)"), "{text}");
        assert!(text.contains("| ]]></failure><evil/>"), "{text}");
        assert!(
            text.contains("\\x1b[31mred\\x00") && !text.contains(['\u{1b}', '\0']),
            "job output is shown, never obeyed: {text}"
        );
    }

    #[test]
    fn json_lines_are_one_object_per_job() {
        let rows = mixed_rows();
        let mut out = Vec::new();
        json_lines(&mut out, "b", &rows).expect("write");
        let text = String::from_utf8(out).expect("utf8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), rows.len());
        assert_eq!(lines[2]["status"], "failed");
        assert_eq!(lines[2]["exit_code"], 3);
        assert_eq!(lines[2]["name"], "crash.py");
        assert_eq!(lines[2]["batch"], "b");
        assert_eq!(lines[2]["duration_ms"], 5);
        assert_eq!(
            lines[2]["result"]["stderr"]["data"],
            "Traceback\n]]></failure><evil/>\n"
        );
    }
}
