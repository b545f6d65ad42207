//! JUnit XML for CI: one testsuite per batch, one testcase per job.
//!
//! Program failures (non-zero exit, build failure, limits) are `<failure>`; jobs the queue could
//! not run (`rejected`, `dead`, a missing result) are `<error>`; cancelled jobs are `<skipped>`.

use std::fmt::Write as _;

use quayside_common::Status;

use super::summary::Row;

/// Lines of output put in a failure's body and in `system-out`/`system-err`.
const BODY_LINES: usize = 50;
/// Bytes of each captured stream kept in `system-out`/`system-err`.
const STREAM_BYTES: usize = 4096;

enum Verdict {
    Passed,
    Failure,
    Error,
    Skipped,
}

fn verdict(row: &Row) -> Verdict {
    match row.result.as_ref().map(|r| r.status) {
        Some(Status::Succeeded) => Verdict::Passed,
        Some(Status::Cancelled) => Verdict::Skipped,
        Some(Status::Rejected | Status::Dead) | None => Verdict::Error,
        Some(_) => Verdict::Failure,
    }
}

/// The JUnit document for `batch`; `time` is the batch's wall time in seconds.
pub fn render(batch: &str, rows: &[Row], time: f64) -> String {
    let (mut failures, mut errors, mut skipped) = (0, 0, 0);
    for r in rows {
        match verdict(r) {
            Verdict::Failure => failures += 1,
            Verdict::Error => errors += 1,
            Verdict::Skipped => skipped += 1,
            Verdict::Passed => {}
        }
    }
    let b = escape(batch);
    let n = rows.len();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let counts = format!(
        "tests=\"{n}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{time:.3}\""
    );
    let _ = writeln!(x, "<testsuites name=\"quayside\" {counts}>");
    let _ = writeln!(x, "  <testsuite name=\"{b}\" {counts}>");
    for r in rows {
        let secs = r.exec_ms() as f64 / 1000.0;
        let _ = write!(
            x,
            "    <testcase name=\"{}\" classname=\"{b}\" time=\"{secs:.3}\"",
            escape(&r.name)
        );
        let tag = match verdict(r) {
            Verdict::Passed => {
                x.push_str("/>\n");
                continue;
            }
            Verdict::Failure => "failure",
            Verdict::Error => "error",
            Verdict::Skipped => "skipped",
        };
        let status = r.status();
        let code = r.exit_note();
        let _ = writeln!(x, ">");
        let _ = writeln!(
            x,
            "      <{tag} message=\"{status}{code}\" type=\"{status}\">{}</{tag}>",
            escape(&r.excerpt(BODY_LINES).join("\n"))
        );
        if let Some(res) = &r.result {
            for (tag, c) in [("system-out", &res.stdout), ("system-err", &res.stderr)] {
                if !c.is_empty() {
                    let text: String = c.lossy().chars().take(STREAM_BYTES).collect();
                    let _ = writeln!(x, "      <{tag}>{}</{tag}>", escape(&text));
                }
            }
        }
        x.push_str("    </testcase>\n");
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
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
    use crate::batch::summary::tests::mixed_rows;

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
}
