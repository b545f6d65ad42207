//! A job with tests (docs/design/tests-per-job.md §2): the plan the worker resolves from the
//! spec, the wrapper's tests mode, and the frames it prints.
//!
//! After the build marker the wrapper runs each test under `quayside-run` with the test's wall
//! time and output cap, its stdin from the test's input file and its stdout and stderr into
//! files, then prints one frame per test on stdout:
//!
//! ```text
//! <end>:0 T <i>\n  <stdout of test i>  <end>:0 E <i>\n  <stderr of test i>  <end>:0 R <i> <report>\n
//! ```
//!
//! and finally the end marker `<end>:<status> \n`. The end nonce reaches the wrapper only
//! through its stdin header, so the program cannot forge a frame; the worker judges each test
//! as its `R` frame arrives. Expected outputs never enter the sandbox with the archive.
//!
//! With a checker, the checker is built first in `/work/.quayside/checker` (its output between
//! `B 0` and `C <status>`), and after each test's `R` the wrapper reads one line from its
//! stdin: `-` (the worker judged the test already: it did not run to a clean exit) or the byte
//! count of the test's expected output, followed by those bytes, sent by the worker only now
//! that the program is dead. The wrapper checks that nothing changed the checker since its
//! last run, runs it as `checker input output answer` under the helper, and prints
//! `K <i>`, the checker's output, then `Q <i> <report>` (or `Q <i> tampered`).

use std::collections::BTreeMap;

use quayside_common::cases::{Compare, TestCase};
use quayside_common::Limits;

use super::protocol::{shell_quote, HELPER};

/// Where the test inputs go in the job's archive (under `/work`).
pub const INPUTS_DIR: &str = ".quayside/tests";
/// Exit status of the wrapper when the image has no [`HELPER`], which tests need.
pub const EXIT_NO_HELPER: i64 = 123;
/// Wall time allowed per test on top of its own, for the helper and the frames.
const PER_TEST_SLACK_MS: u64 = 250;
/// Where the checker's files go in the archive (under `/work`), and where it is built and run.
pub const CHECKER_DIR: &str = ".quayside/checker";
/// Bytes of the checker's stdout and of its stderr shown as `checker_message`.
pub const CHECKER_MESSAGE_BYTES: u64 = 4096;

/// A checker as the sandbox builds and runs it.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedChecker {
    pub files: BTreeMap<String, String>,
    /// Its language's build command, expanded (run in [`CHECKER_DIR`]).
    pub build: String,
    /// Its language's run command, expanded (run in [`CHECKER_DIR`] with the three paths).
    pub run: String,
}

/// One test as the sandbox runs it: its input, args and resolved limits.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedTest {
    pub name: String,
    pub stdin: String,
    pub args: Vec<String>,
    pub expected_stdout: Option<String>,
    /// The job's resolved limits with the test's overrides.
    pub limits: Limits,
}

/// The tests of a job and how they are judged and kept.
#[derive(Clone, Debug, PartialEq)]
pub struct TestPlan {
    pub tests: Vec<PlannedTest>,
    pub compare: Compare,
    pub stop_on_failure: bool,
    /// Bytes of each stream kept per test in the result (`limits.test_output_kept_bytes`).
    pub kept_bytes: u64,
    /// Bytes of test output the whole result keeps (`limits.max_result_output_bytes`).
    pub max_result_bytes: u64,
    /// Judges each test instead of `compare` ([`TestPlan::with_checker`]).
    pub checker: Option<PlannedChecker>,
}

impl TestPlan {
    /// Resolves each case against the job's limits and args.
    pub fn new(
        cases: &[TestCase],
        job: &Limits,
        job_args: &[String],
        compare: Compare,
        stop_on_failure: bool,
        kept_bytes: u64,
        max_result_bytes: u64,
    ) -> Self {
        let tests = cases
            .iter()
            .map(|case| PlannedTest {
                name: case.name.clone(),
                stdin: case.stdin.clone(),
                args: case.args.clone().unwrap_or_else(|| job_args.to_vec()),
                expected_stdout: case.expected_stdout.clone(),
                limits: case.limits.apply(job),
            })
            .collect();
        Self {
            tests,
            compare,
            stop_on_failure,
            kept_bytes,
            max_result_bytes,
            checker: None,
        }
    }

    #[must_use]
    pub fn with_checker(mut self, checker: Option<PlannedChecker>) -> Self {
        self.checker = checker;
        self
    }

    /// What the worker sends on the wrapper's stdin after test `index`'s report: its expected
    /// output for the checker, or `-` when the checker is not needed.
    pub fn answer(&self, index: usize, needed: bool) -> Vec<u8> {
        match self.tests.get(index).filter(|_| needed) {
            Some(test) => {
                let expected = test.expected_stdout.as_deref().unwrap_or_default();
                let mut line = format!("{}\n", expected.len()).into_bytes();
                line.extend_from_slice(expected.as_bytes());
                line
            }
            None => b"-\n".to_vec(),
        }
    }

    /// The sandbox's own limits: the largest memory of any test (a test that raises it gets
    /// it; one that lowers it is held to it by its peak), and a run wall time that fits every
    /// test one after the other.
    pub fn sandbox_limits(&self, job: &Limits) -> Limits {
        let memory_bytes = self
            .tests
            .iter()
            .map(|t| t.limits.memory_bytes)
            .fold(job.memory_bytes, u64::max);
        let run_wall_time_ms = self
            .tests
            .iter()
            .map(|t| t.limits.run_wall_time_ms.saturating_add(PER_TEST_SLACK_MS))
            .fold(1_000, u64::saturating_add);
        Limits {
            memory_bytes,
            run_wall_time_ms,
            ..*job
        }
    }

    /// The test inputs and the checker's files, to add to the job's archive.
    pub fn input_files(&self) -> BTreeMap<String, String> {
        let checker = self.checker.iter().flat_map(|c| &c.files);
        self.tests
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("{INPUTS_DIR}/{i}.in"), t.stdin.clone()))
            .chain(checker.map(|(name, text)| (format!("{CHECKER_DIR}/{name}"), text.clone())))
            .collect()
    }

    /// The wrapper's tests mode, in place of running the program once: `run` is the language's
    /// run command (using `"$@"`), already expanded. Ends with the end marker and `$s` = 0.
    pub fn script(&self, run: &str) -> String {
        let out = "/tmp/.quayside-out";
        let err = "/tmp/.quayside-err";
        let mut s = format!(
            "t() {{\n\
             i=$1 w=$2 o=$3\n\
             shift 3\n\
             printf '%s:0 T %d\\n' \"$end\" \"$i\"\n\
             r=$({HELPER} --report-fd 3 --wall-ms \"$w\" --output-bytes \"$o\" \
             --stdin {inputs}/\"$i\".in --stdout {out} --stderr {err} \
             -- /bin/sh -c {cmd} quayside \"$@\" 3>&1 </dev/null)\n\
             head -c $((o + 1)) {out} 2>/dev/null\n\
             printf '%s:0 E %d\\n' \"$end\" \"$i\"\n\
             head -c $((o + 1)) {err} 2>/dev/null\n\
             printf '%s:0 R %d %s\\n' \"$end\" \"$i\" \"$r\"\n\
             [ -z \"$chk\" ] || k \"$i\" \"$w\"\n\
             rm -f {out} {err}\n\
             }}\nchk=\n",
            inputs = shell_quote(&format!("{}/{INPUTS_DIR}", super::WORK_DIR)),
            cmd = shell_quote(&format!("\n{run}\n")),
        );
        if let Some(checker) = &self.checker {
            s.push_str(&checker_script(checker, out));
        }
        for (i, t) in self.tests.iter().enumerate() {
            let args: Vec<String> = t.args.iter().map(|a| shell_quote(a)).collect();
            s.push_str(&format!(
                "t {i} {} {} {}\n",
                t.limits.run_wall_time_ms,
                t.limits.output_bytes,
                args.join(" ")
            ));
        }
        if self.checker.is_some() {
            s.push_str("fi\n");
        }
        s.push_str("s=0\nr=\n");
        s
    }
}

/// The checker's part of the tests mode: `k` checks one test, then the checker is built and
/// hashed; the tests that follow run only if it built (the caller closes the `if`).
fn checker_script(checker: &PlannedChecker, out: &str) -> String {
    let dir = format!("{}/{CHECKER_DIR}", super::WORK_DIR);
    let q = shell_quote(&dir);
    let ans = "/tmp/.quayside-ans";
    let (kout, kerr) = ("/tmp/.quayside-kout", "/tmp/.quayside-kerr");
    format!(
        "h() {{ find {q} -type f -exec sha256sum {{}} + | sort | sha256sum; }}\n\
         k() {{\n\
         IFS= read -r n || exit 124\n\
         [ \"$n\" = - ] && return\n\
         head -c \"$n\" > {ans}\n\
         if [ \"$(h)\" != \"$chk\" ]; then printf '%s:0 Q %d tampered\\n' \"$end\" \"$1\"; rm -f {ans}; return; fi\n\
         r=$({HELPER} --report-fd 3 --wall-ms \"$2\" --output-bytes 1048576 --stdout {kout} --stderr {kerr} \
         -- /bin/sh -c {cmd} quayside {inputs}/\"$1\".in {out} {ans} 3>&1 </dev/null)\n\
         printf '%s:0 K %d\\n' \"$end\" \"$1\"\n\
         head -c {m} {kout}; head -c {m} {kerr}\n\
         printf '%s:0 Q %d %s\\n' \"$end\" \"$1\" \"$r\"\n\
         rm -f {ans} {kout} {kerr}\n\
         chk=$(h)\n\
         }}\n\
         printf '%s:0 B 0\\n' \"$end\"\n\
         (cd {q} && (\n{build}\n)) </dev/null 2>&1\n\
         c=$?\n\
         printf '%s:0 C %d\\n' \"$end\" \"$c\"\n\
         if [ \"$c\" -eq 0 ]; then\n\
         chk=$(h)\n",
        inputs = shell_quote(&format!("{}/{INPUTS_DIR}", super::WORK_DIR)),
        cmd = shell_quote(&format!("cd {q} && (\n{}\n)", checker.run)),
        build = if checker.build.trim().is_empty() { "true" } else { &checker.build },
        m = CHECKER_MESSAGE_BYTES,
    )
}

/// The check a tests-mode wrapper makes before anything else runs: the image must have the
/// helper (an operator's own image may not).
pub fn helper_check() -> String {
    format!("[ -x {HELPER} ] || exit {EXIT_NO_HELPER}\n")
}

/// What one frame marker says, from its detail (`T 3`, `E 3`, `R 3 <report>`); `None` for
/// the end marker (empty detail) or anything else.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Start(usize),
    Stderr(usize),
    Report(usize, &'a str),
    /// The checker's build starts.
    CheckerBuild,
    /// The checker's build ended with this status.
    CheckerBuilt(i64),
    /// The checker's output for test `i` follows.
    CheckerOutput(usize),
    /// The checker's report for test `i` (`tampered`: the checker changed since its last run).
    CheckerReport(usize, &'a str),
}

impl<'a> Frame<'a> {
    pub fn parse(detail: &'a str) -> Option<Self> {
        let (kind, rest) = detail.split_once(' ')?;
        let (index, report) = rest.split_once(' ').unwrap_or((rest, ""));
        let index = index.parse().ok()?;
        match kind {
            "T" => Some(Self::Start(index)),
            "E" => Some(Self::Stderr(index)),
            "R" => Some(Self::Report(index, report)),
            "B" => Some(Self::CheckerBuild),
            "C" => Some(Self::CheckerBuilt(index as i64)),
            "K" => Some(Self::CheckerOutput(index)),
            "Q" => Some(Self::CheckerReport(index, report)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quayside_common::cases::TestLimits;

    fn case(name: &str, limits: TestLimits) -> TestCase {
        TestCase {
            name: name.into(),
            stdin: format!("{name}\n"),
            args: None,
            expected_stdout: None,
            limits,
        }
    }

    #[test]
    fn a_plan_resolves_each_tests_limits_and_sizes_the_sandbox_for_all() {
        let job = Limits::DEFAULT;
        let big = TestLimits {
            memory_bytes: Some(512 << 20),
            run_wall_time_ms: Some(5_000),
            ..TestLimits::default()
        };
        let small = TestLimits {
            memory_bytes: Some(32 << 20),
            ..TestLimits::default()
        };
        let mut lowered = case("b", small);
        lowered.args = Some(vec!["x y".into()]);
        let plan = TestPlan::new(
            &[case("a", big), lowered],
            &job,
            &["job-arg".into()],
            Compare::Lines,
            false,
            4096,
            1 << 20,
        );
        assert_eq!(plan.tests[0].limits.memory_bytes, 512 << 20);
        assert_eq!(plan.tests[1].limits.memory_bytes, 32 << 20);
        assert_eq!(plan.tests[0].args, ["job-arg"], "the job's args by default");
        assert_eq!(plan.tests[1].args, ["x y"]);
        let sandbox = plan.sandbox_limits(&job);
        assert_eq!(sandbox.memory_bytes, 512 << 20, "the largest test's");
        assert_eq!(
            sandbox.run_wall_time_ms,
            1_000 + 5_000 + job.run_wall_time_ms + 2 * PER_TEST_SLACK_MS
        );
        assert_eq!(
            plan.input_files().keys().collect::<Vec<_>>(),
            [".quayside/tests/0.in", ".quayside/tests/1.in"]
        );
        let script = plan.script("./main \"$@\"");
        assert!(script.contains("\nt 0 5000 "), "{script}");
        assert!(script.contains("\nt 1 "), "{script}");
        assert!(script.contains(" 'x y'\n"), "args quoted: {script}");
    }

    #[test]
    fn frames_parse_and_anything_else_is_none() {
        assert_eq!(Frame::parse("T 3"), Some(Frame::Start(3)));
        assert_eq!(Frame::parse("E 0"), Some(Frame::Stderr(0)));
        assert_eq!(
            Frame::parse("R 12 exit=0 signal=-"),
            Some(Frame::Report(12, "exit=0 signal=-"))
        );
        assert_eq!(Frame::parse("R 1"), Some(Frame::Report(1, "")));
        for bad in ["", "T", "T x", "X 1", "T -1"] {
            assert_eq!(Frame::parse(bad), None, "{bad:?}");
        }
    }
}
