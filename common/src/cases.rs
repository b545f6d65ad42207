//! A job's test cases and how they are judged: [`TestCase`], [`TestLimits`], [`Compare`],
//! [`Checker`] (the spec side of `docs/design/tests-per-job.md`). The program is built once and
//! run against every case in the same sandbox.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::job::{check_files, check_id, check_no_nul, JobKind, JobSpec, SpecError};
use crate::limits::{check_field, Limits};

/// Default tolerance of [`Compare::Float`] when a job leaves `abs` or `rel` out.
pub const DEFAULT_FLOAT_TOLERANCE: f64 = 1e-6;

/// One input the program runs against, and what it should print.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// 1..=128 of `[A-Za-z0-9._:-]`, unique in the job: it names a JUnit testcase and a log marker.
    pub name: String,
    /// Fed to the program as its standard input.
    pub stdin: String,
    /// Replaces the job's `args` for this test when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Judged by the job's `compare` mode; without it (and without a checker) exit 0 passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_stdout: Option<String>,
    /// Overrides of the job's resolved limits for this test only.
    #[serde(default, skip_serializing_if = "TestLimits::is_empty")]
    pub limits: TestLimits,
}

impl TestCase {
    /// Bytes of text the case adds to a spec (what `limits.max_spec_bytes` bounds).
    pub fn text_bytes(&self) -> usize {
        self.name.len()
            + self.stdin.len()
            + self.args.iter().flatten().map(String::len).sum::<usize>()
            + self.expected_stdout.as_ref().map_or(0, String::len)
    }
}

/// The limits one test may lower or raise (up to the worker maxima).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_wall_time_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
}

impl TestLimits {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The job's resolved limits with this test's overrides applied.
    pub fn apply(&self, job: &Limits) -> Limits {
        Limits {
            run_wall_time_ms: self.run_wall_time_ms.unwrap_or(job.run_wall_time_ms),
            memory_bytes: self.memory_bytes.unwrap_or(job.memory_bytes),
            output_bytes: self.output_bytes.unwrap_or(job.output_bytes),
            ..*job
        }
    }

    /// Checks the fields the test set against `min..=max`.
    ///
    /// # Errors
    /// The offending field, named `limits.<field>` (the caller prefixes `tests[i].`).
    pub fn check_set(&self, min: &Limits, max: &Limits) -> Result<(), SpecError> {
        let set = [
            ("run_wall_time_ms", self.run_wall_time_ms),
            ("memory_bytes", self.memory_bytes),
            ("output_bytes", self.output_bytes),
        ];
        for (name, v) in set {
            if let Some(v) = v {
                check_field(name, v, min, max)?;
            }
        }
        Ok(())
    }
}

/// How a test's stdout is compared with its `expected_stdout`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Compare {
    /// Byte for byte.
    Exact,
    /// Line by line, ignoring trailing whitespace on each line and trailing blank lines.
    #[default]
    Lines,
    /// Whitespace-separated tokens, equal one by one.
    Tokens,
    /// Tokens; two that both parse as finite numbers match within `abs` or `rel`.
    Float {
        #[serde(default = "default_tolerance")]
        abs: f64,
        #[serde(default = "default_tolerance")]
        rel: f64,
    },
}

fn default_tolerance() -> f64 {
    DEFAULT_FLOAT_TOLERANCE
}

impl Compare {
    /// Checks the tolerances of [`Compare::Float`]: finite and not negative.
    ///
    /// # Errors
    /// `compare.float.abs` or `compare.float.rel`.
    pub fn validate(&self) -> Result<(), SpecError> {
        if let Self::Float { abs, rel } = *self {
            for (name, v) in [("abs", abs), ("rel", rel)] {
                if !v.is_finite() || v < 0.0 {
                    return Err(SpecError::field(
                        format!("compare.float.{name}"),
                        format!("{v} is not a finite number >= 0"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A program that judges each test, built and run in the job's sandbox after the test:
/// `checker input output answer`, exit 0 passed, 1 wrong answer, 2 presentation error,
/// anything else a checker failure (testlib's convention).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checker {
    /// A key of the language table whose image is the job's image.
    pub language: String,
    pub files: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compiler_options: Vec<String>,
}

impl Checker {
    /// Bytes of text the checker adds to a spec.
    pub fn text_bytes(&self) -> usize {
        self.language.len()
            + self
                .files
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + self.compiler_options.iter().map(String::len).sum::<usize>()
    }

    /// Checks what needs no configuration: a language, files with safe paths, no NUL options.
    ///
    /// # Errors
    /// The field, prefixed `checker.`.
    pub fn validate_shape(&self) -> Result<(), SpecError> {
        if self.language.is_empty() {
            return Err(SpecError::field("checker.language", "must not be empty"));
        }
        if self.files.is_empty() {
            return Err(SpecError::field(
                "checker.files",
                "at least one source file is required",
            ));
        }
        check_files("checker.files", &self.files)?;
        check_no_nul("checker.compiler_options", &self.compiler_options)
    }
}

/// Checks a job's test cases for what needs no configuration: names, argument bytes.
///
/// # Errors
/// The first problem found, naming `tests` or `tests[i].<field>`.
fn validate_cases(tests: &[TestCase]) -> Result<(), SpecError> {
    if tests.is_empty() {
        return Err(SpecError::field("tests", "at least one test is required"));
    }
    let mut names = HashSet::with_capacity(tests.len());
    for (i, t) in tests.iter().enumerate() {
        check_id(&format!("tests[{i}].name"), &t.name)?;
        if !names.insert(t.name.as_str()) {
            return Err(SpecError::field(
                format!("tests[{i}].name"),
                format!("{:?} is the name of an earlier test", t.name),
            ));
        }
        if let Some(args) = &t.args {
            check_no_nul(&format!("tests[{i}].args"), args)?;
        }
    }
    Ok(())
}

/// The test-case fields: only on `run` jobs, never with a top-level `stdin`, `compare` and
/// `checker` only with tests and not together.
pub(crate) fn validate_job_tests(spec: &JobSpec) -> Result<(), SpecError> {
    let Some(tests) = &spec.tests else {
        for (field, set) in [
            ("compare", spec.compare.is_some()),
            ("checker", spec.checker.is_some()),
            ("stop_on_failure", spec.stop_on_failure),
        ] {
            if set {
                return Err(SpecError::field(field, "only applies to a job with tests"));
            }
        }
        return Ok(());
    };
    if spec.kind != JobKind::Run {
        return Err(SpecError::field(
            "tests",
            "only `run` jobs take tests (a `compile` job runs nothing)",
        ));
    }
    if !spec.stdin.is_empty() {
        return Err(SpecError::field(
            "stdin",
            "a job with tests takes its input from tests[].stdin",
        ));
    }
    validate_cases(tests)?;
    if let Some(compare) = &spec.compare {
        if spec.checker.is_some() {
            return Err(SpecError::field(
                "compare",
                "cannot be combined with checker (the checker judges each test)",
            ));
        }
        compare.validate()?;
    }
    if let Some(checker) = &spec.checker {
        checker.validate_shape()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
