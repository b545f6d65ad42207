//! The summary's view of jobs that ran tests (`batch --tests`): each submission's score, the
//! slowest tests of the batch, and why a submission's first failing test failed.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

use quayside_common::verdicts::{TestResult, TestStatus};
use quayside_common::JobResult;

use super::progress::human;
use super::summary::Row;
use crate::terminal;

/// `passed/total` per job, in the batch's order, when any job ran tests; a job that ran none
/// (a build failure, a job that never ran) scores `0/N` when every scored job has N tests.
///
/// # Errors
/// Writing to `out` failed.
pub fn scores(out: &mut impl Write, rows: &[Row]) -> std::io::Result<()> {
    let summary = |r: &Row| r.result.as_ref().and_then(|res| res.summary);
    let totals: BTreeSet<u32> = rows.iter().filter_map(summary).map(|s| s.total).collect();
    if totals.is_empty() {
        return Ok(());
    }
    let common = (totals.len() == 1)
        .then(|| totals.first().copied())
        .flatten();
    writeln!(out, "\nscores (tests passed)")?;
    for r in rows {
        let score = match (summary(r), common) {
            (Some(s), _) => format!("{}/{}", s.passed, s.total),
            (None, Some(total)) => format!("0/{total}"),
            (None, None) => "-".to_owned(),
        };
        writeln!(
            out,
            "  {score:>9}  {:<15} {}",
            r.status(),
            terminal::line(&r.name)
        )?;
    }
    Ok(())
}

/// The `n` tests that ran longest across the batch, with their submission.
///
/// # Errors
/// Writing to `out` failed.
pub fn slowest_tests(out: &mut impl Write, rows: &[Row], n: usize) -> std::io::Result<()> {
    let mut ran: Vec<(&Row, &TestResult)> = rows
        .iter()
        .filter_map(|r| Some((r, r.result.as_ref()?)))
        .flat_map(|(r, res)| res.tests.iter().map(move |t| (r, t)))
        .filter(|(_, t)| t.status != TestStatus::Skipped)
        .collect();
    if n == 0 || ran.is_empty() {
        return Ok(());
    }
    ran.sort_by_key(|(_, t)| std::cmp::Reverse(t.wall_ms));
    writeln!(out, "\nslowest tests (wall time, cpu time, peak memory)")?;
    for (r, t) in ran.into_iter().take(n) {
        writeln!(
            out,
            "  {:>8} {:>8} {:>7} MiB  {:<15} {} / {}",
            human(Duration::from_millis(t.wall_ms)),
            human(Duration::from_millis(t.cpu_ms)),
            t.peak_memory_bytes >> 20,
            t.status.as_str(),
            terminal::line(&r.name),
            terminal::line(&t.name)
        )?;
    }
    Ok(())
}

/// `test NAME: STATUS (exit N): checker message` and that test's stderr, for the first test of
/// the job that did not pass; `None` when the job ran no tests or all passed.
pub fn first_failure(res: &JobResult) -> Option<String> {
    let t = res
        .tests
        .iter()
        .find(|t| !matches!(t.status, TestStatus::Passed | TestStatus::Skipped))?;
    let mut line = format!("test {}: {}", t.name, describe(t));
    if !t.stderr.is_empty() {
        line.push('\n');
        line.push_str(&t.stderr.lossy());
    }
    Some(line)
}

/// A test's verdict with what explains it: `wrong_answer: expected "3", got "4"`,
/// `failed (exit 3)`, `timed_out after 1.0s`, `failed (signal 11)` (not the kill of a limit).
pub fn describe(t: &TestResult) -> String {
    let mut s = t.status.as_str().to_owned();
    // A limit's own kill is no news; the signal that ended a crash is.
    let limit = matches!(t.status, TestStatus::TimedOut | TestStatus::MemoryExceeded);
    match (t.exit_code, t.signal) {
        (_, Some(sig)) if !limit => s.push_str(&format!(" (signal {sig})")),
        (Some(code), None) if code != 0 => s.push_str(&format!(" (exit {code})")),
        _ => {}
    }
    if t.status == TestStatus::TimedOut {
        s.push_str(&format!(
            " after {}",
            human(Duration::from_millis(t.wall_ms))
        ));
    }
    if let Some(m) = &t.checker_message {
        s.push_str(": ");
        s.push_str(m);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::summary::tests::tests_rows;

    #[test]
    fn scores_slowest_tests_and_the_first_failure_are_shown() {
        let rows = tests_rows();
        let mut out = Vec::new();
        scores(&mut out, &rows).expect("write");
        slowest_tests(&mut out, &rows, 2).expect("write");
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.contains("      3/3  succeeded       good.c\n"),
            "{text}"
        );
        assert!(
            text.contains("      1/3  wrong_answer    wrong.c\n"),
            "{text}"
        );
        let slow = text.split("slowest tests").nth(1).expect("slowest tests");
        let lines: Vec<&str> = slow.lines().skip(1).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].ends_with("timed_out       wrong.c / 3"), "{text}");
        assert!(lines[1].ends_with("passed          good.c / 2"), "{text}");
        let mut all = Vec::new();
        slowest_tests(&mut all, &rows, 100).expect("write");
        let all = String::from_utf8(all).expect("utf8");
        assert_eq!(
            all.lines().count(),
            2 + 7,
            "skipped tests did not run: {all}"
        );
        assert!(!all.contains("skipped"), "{all}");

        let why = first_failure(rows[1].result.as_ref().expect("result")).expect("a failure");
        assert_eq!(
            why,
            "test 2: wrong_answer: line 1: expected \"3\", got \"4\"\ndebug: n=4\n"
        );
        assert_eq!(
            first_failure(rows[0].result.as_ref().expect("result")),
            None
        );
        assert_eq!(
            describe(&rows[1].result.as_ref().expect("r").tests[2]),
            "timed_out after 2.0s"
        );
    }
}
