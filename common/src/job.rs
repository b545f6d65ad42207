//! What a producer submits: [`JobSpec`] and its parts.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cases::{validate_job_tests, Checker, Compare, TestCase};
use crate::limits::LimitsSpec;

/// The protocol version this build speaks; carried as `v` in every spec and result.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest accepted job id or batch id.
pub const MAX_ID_LEN: usize = 128;
/// Longest file path the kernel takes (`PATH_MAX`); `limits.max_path_bytes` is usually lower.
const MAX_PATH_LEN: usize = 4096;
/// Longest path component the kernel takes (`NAME_MAX`).
const MAX_NAME_LEN: usize = 255;

/// A job's identity: the caller's idempotency key, or a generated UUIDv7 (time-sortable).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// Generates a new time-sortable id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// Checks that `s` is a usable id: 1..=128 chars of `[A-Za-z0-9._:-]`, so it is safe inside a
    /// Redis key, a channel name and a container label.
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        check_id("id", s)?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `compile` builds and reports diagnostics only; `run` builds, links and runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Compile,
    Run,
}

impl JobKind {
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Compile => "compile",
            Self::Run => "run",
        }
    }
}

/// Priority levels, each its own Redis stream. Workers drain them in this order.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    /// Highest first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    pub fn as_label(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }

    /// Position in [`Priority::ALL`]; also the stream index used by the Lua scripts.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_index(i: usize) -> Option<Self> {
        Self::ALL.get(i).copied()
    }
}

impl std::str::FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_label() == s)
            .ok_or_else(|| format!("unknown priority {s:?} (expected high, normal or low)"))
    }
}

/// One job as it travels on the wire (version [`PROTOCOL_VERSION`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Protocol version; must be [`PROTOCOL_VERSION`].
    pub v: u32,
    pub id: JobId,
    pub kind: JobKind,
    /// A key of the worker's language table, e.g. `c`, `python`.
    pub language: String,
    /// Relative path (folders allowed) to file text.
    pub files: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compiler_options: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stdin: String,
    /// Unset fields take the worker's defaults.
    #[serde(default)]
    pub limits: LimitsSpec,
    #[serde(default)]
    pub priority: Priority,
    /// Executions allowed before the job is dead-lettered; unset takes the worker default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// How long the result (and everything else the job left) lives after it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_ttl_s: Option<u64>,
    /// Inputs to run the program against, built once: each gets its own verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<Vec<TestCase>>,
    /// How each test's stdout is compared with its `expected_stdout` (default `lines`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<Compare>,
    /// A program that judges each test instead of `compare`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checker: Option<Checker>,
    /// The first test that does not pass ends the run; the rest are `skipped`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop_on_failure: bool,
    /// Who the job is run for: the unit of fair share and quotas (`docs/design/tenants.md`).
    /// Unset is the default tenant (as for raw `XADD` producers). The gateway never takes it
    /// from a request body: a caller's tenant comes from its token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// A URL (`https://…`, or `http://…`) the fleet POSTs the signed result to when the job
    /// ends (`docs/protocol.md`, "Completion webhooks"). Only hosts the operator allows
    /// (`webhooks.allowed_hosts`) are accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
}

impl JobSpec {
    /// A `run` job with one source file and every optional field unset.
    pub fn new(kind: JobKind, language: &str, files: BTreeMap<String, String>) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id: JobId::generate(),
            kind,
            language: language.to_owned(),
            files,
            compiler_options: Vec::new(),
            args: Vec::new(),
            stdin: String::new(),
            limits: LimitsSpec::default(),
            priority: Priority::Normal,
            max_attempts: None,
            batch: None,
            labels: BTreeMap::new(),
            result_ttl_s: None,
            tests: None,
            compare: None,
            checker: None,
            stop_on_failure: false,
            tenant: None,
            callback: None,
        }
    }

    /// The test cases, none for a plain job.
    pub fn test_cases(&self) -> &[TestCase] {
        self.tests.as_deref().unwrap_or_default()
    }

    /// The compare mode tests are judged by: the job's, or `lines`.
    pub fn compare_mode(&self) -> Compare {
        self.compare.unwrap_or_default()
    }

    /// Total bytes of all source files.
    pub fn source_bytes(&self) -> usize {
        self.files.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Total bytes of all the spec's text: ids, language, file names and contents, stdin, args,
    /// compiler options and labels. What `limits.max_spec_bytes` bounds.
    pub fn text_bytes(&self) -> usize {
        let list = |l: &[String]| l.iter().map(String::len).sum::<usize>();
        let map =
            |m: &BTreeMap<String, String>| m.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        self.id.as_str().len()
            + self.language.len()
            + self.batch.as_ref().map_or(0, String::len)
            + self.callback.as_ref().map_or(0, String::len)
            + map(&self.files)
            + self.stdin.len()
            + list(&self.args)
            + list(&self.compiler_options)
            + map(&self.labels)
            + self
                .test_cases()
                .iter()
                .map(TestCase::text_bytes)
                .sum::<usize>()
            + self.checker.as_ref().map_or(0, Checker::text_bytes)
    }

    /// Checks what needs no worker configuration: version, ids, file names.
    ///
    /// # Errors
    /// The first problem found, naming the field.
    pub fn validate_shape(&self) -> Result<(), SpecError> {
        if self.v != PROTOCOL_VERSION {
            return Err(SpecError::Version(self.v));
        }
        check_id("id", self.id.as_str())?;
        if let Some(b) = &self.batch {
            check_id("batch", b)?;
        }
        if let Some(t) = &self.tenant {
            check_tenant(t)?;
        }
        if let Some(url) = &self.callback {
            crate::callback::Target::parse(url).map_err(|e| SpecError::field("callback", e))?;
        }
        if self.language.is_empty() {
            return Err(SpecError::field("language", "must not be empty"));
        }
        if self.files.is_empty() {
            return Err(SpecError::field(
                "files",
                "at least one source file is required",
            ));
        }
        check_files("files", &self.files)?;
        check_no_nul("args", &self.args)?;
        check_no_nul("compiler_options", &self.compiler_options)?;
        if self.max_attempts == Some(0) {
            return Err(SpecError::field("max_attempts", "must be at least 1"));
        }
        validate_job_tests(self)
    }
}

/// Why a spec is not acceptable. The message names the field, for the submitter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("unsupported protocol version v={0} (this build speaks v={PROTOCOL_VERSION})")]
    Version(u32),
    #[error("{field}: {problem}")]
    Field { field: String, problem: String },
}

impl SpecError {
    pub fn field(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Field {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The same error with its field inside `prefix` (`limits.x` in `tests[3]` is
    /// `tests[3].limits.x`).
    pub fn within(self, prefix: &str) -> Self {
        match self {
            Self::Field { field, problem } => Self::Field {
                field: format!("{prefix}.{field}"),
                problem,
            },
            other => other,
        }
    }
}

/// Refuses an argument list holding a NUL byte, which no `exec` can pass: `{field}[i]`.
pub(crate) fn check_no_nul(field: &str, list: &[String]) -> Result<(), SpecError> {
    match list.iter().position(|a| a.contains('\0')) {
        Some(i) => Err(SpecError::field(
            format!("{field}[{i}]"),
            "NUL bytes cannot be passed in an argument",
        )),
        None => Ok(()),
    }
}

/// Every path of a file map stays inside its folder, and no file is also a folder; errors name
/// `{field}[path]`.
pub(crate) fn check_files(field: &str, files: &BTreeMap<String, String>) -> Result<(), SpecError> {
    for name in files.keys() {
        check_path(field, name)?;
    }
    check_file_folder_clash(field, files)
}

pub(crate) fn check_id(field: &str, s: &str) -> Result<(), SpecError> {
    if s.is_empty() || s.len() > MAX_ID_LEN {
        return Err(SpecError::field(
            field,
            format!("must be 1 to {MAX_ID_LEN} characters"),
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(SpecError::field(
            field,
            format!("character {c:?} not allowed (use A-Z a-z 0-9 . _ : -)"),
        ));
    }
    Ok(())
}

/// Longest tenant id: it is part of stream keys and metric labels.
pub const MAX_TENANT_LEN: usize = 64;

/// Tenant ids that name something else: the default tenant (write no tenant instead) and the
/// metric label that unconfigured tenants fold into.
pub const RESERVED_TENANTS: [&str; 2] = ["default", "other"];

/// Checks a tenant id: a spec's `tenant` and a configured tenant's name follow the same rule.
///
/// # Errors
/// Empty, longer than [`MAX_TENANT_LEN`], characters outside `[A-Za-z0-9._:-]`, or reserved.
pub fn check_tenant(t: &str) -> Result<(), SpecError> {
    check_id("tenant", t)?;
    if t.len() > MAX_TENANT_LEN {
        return Err(SpecError::field(
            "tenant",
            format!("must be 1 to {MAX_TENANT_LEN} characters"),
        ));
    }
    if RESERVED_TENANTS.contains(&t) {
        return Err(SpecError::field(
            "tenant",
            format!("{t:?} is reserved (leave the tenant unset for the default tenant)"),
        ));
    }
    Ok(())
}

/// A file name must stay inside the job's work folder: relative, no `..`, no empty or `.` parts.
fn check_path(files: &str, name: &str) -> Result<(), SpecError> {
    let field = || format!("{files}[{name:?}]");
    if name.is_empty() || name.len() > MAX_PATH_LEN {
        return Err(SpecError::field(
            field(),
            format!("path must be 1 to {MAX_PATH_LEN} bytes"),
        ));
    }
    if name.starts_with('/') {
        return Err(SpecError::field(field(), "absolute paths are not allowed"));
    }
    if name.contains(['\0', '\\']) || name.chars().any(char::is_control) {
        return Err(SpecError::field(
            field(),
            "control characters and backslashes are not allowed",
        ));
    }
    for part in name.split('/') {
        match part {
            "" => return Err(SpecError::field(field(), "empty path component")),
            long if long.len() > MAX_NAME_LEN => {
                return Err(SpecError::field(
                    field(),
                    format!("a path component is longer than {MAX_NAME_LEN} bytes"),
                ))
            }
            "." | ".." => {
                return Err(SpecError::field(
                    field(),
                    "`.` and `..` components are not allowed",
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// No file may also be a folder of another (`a.c` and `a.c/b.h`): the archive could not hold
/// both, and unpacking would fail inside the sandbox.
fn check_file_folder_clash(field: &str, files: &BTreeMap<String, String>) -> Result<(), SpecError> {
    for name in files.keys() {
        if let Some((folder, _)) = name
            .match_indices('/')
            .map(|(i, _)| name.split_at(i))
            .find(|(folder, _)| files.contains_key(*folder))
        {
            return Err(SpecError::field(
                format!("{field}[{name:?}]"),
                format!("{folder:?} is both a file and a folder"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small valid `run` job.
    pub(crate) fn spec() -> JobSpec {
        JobSpec::new(
            JobKind::Run,
            "c",
            [("main.c".into(), "int main(){}".into())].into(),
        )
    }

    #[test]
    fn generated_ids_sort_by_creation() {
        let a = JobId::generate();
        let b = JobId::generate();
        assert!(a < b, "{a} !< {b}");
        JobId::parse(a.as_str()).expect("generated ids are valid");
    }

    #[test]
    fn id_rejects_key_breaking_characters() {
        for bad in ["", "a b", "a{b}", "a/b", &"x".repeat(129)] {
            assert!(JobId::parse(bad).is_err(), "{bad:?} accepted");
        }
        JobId::parse("build-42:main.c_v1").expect("valid id");
    }

    #[test]
    fn tenants_are_short_ids_and_not_reserved_names() {
        let mut s = spec();
        s.tenant = Some("team-a.builds".into());
        s.validate_shape().expect("a valid tenant");
        for (bad, why) in [
            ("", "1 to"),
            ("a b", "not allowed"),
            ("a{b}", "not allowed"),
            (&"t".repeat(65), "1 to 64"),
            ("default", "reserved"),
            ("other", "reserved"),
        ] {
            s.tenant = Some(bad.to_owned());
            let e = s.validate_shape().expect_err(bad).to_string();
            assert!(e.starts_with("tenant: ") && e.contains(why), "{bad:?}: {e}");
        }
        s.tenant = Some("t".repeat(64));
        s.validate_shape().expect("64 characters fit");
    }

    #[test]
    fn a_tenant_travels_in_the_json_and_an_unset_one_is_left_out() {
        let mut s = spec();
        let json = serde_json::to_string(&s).expect("json");
        assert!(!json.contains("tenant"), "{json}");
        s.tenant = Some("acme".into());
        let back: JobSpec =
            serde_json::from_str(&serde_json::to_string(&s).expect("json")).expect("parse");
        assert_eq!(back.tenant.as_deref(), Some("acme"));
    }

    #[test]
    fn paths_that_escape_the_work_folder_are_rejected() {
        for bad in [
            "../x.c",
            "/etc/passwd",
            "a/../../b",
            "a//b",
            "./a",
            "a\\b",
            "a\0b",
            "",
        ] {
            let mut s = spec();
            s.files = [(bad.to_string(), String::new())].into();
            let err = s.validate_shape().expect_err(bad);
            assert!(err.to_string().starts_with("files["), "{err}");
        }
        let mut s = spec();
        s.files = [("src/lib/util.c".to_string(), String::new())].into();
        s.validate_shape().expect("nested relative path is fine");
        s.files = [(format!("{}/a.c", "x".repeat(256)), String::new())].into();
        let err = s.validate_shape().expect_err("NAME_MAX");
        assert!(err.to_string().contains("longer than 255 bytes"), "{err}");
    }

    #[test]
    fn a_file_cannot_also_be_a_folder() {
        let mut s = spec();
        s.files = [
            ("a.c".to_string(), String::new()),
            ("a.c/b.h".to_string(), String::new()),
        ]
        .into();
        let err = s.validate_shape().expect_err("clash");
        assert_eq!(
            err.to_string(),
            "files[\"a.c/b.h\"]: \"a.c\" is both a file and a folder"
        );
        s.files = [
            ("src/a.c".to_string(), String::new()),
            ("src/a.c.d/b.h".to_string(), String::new()),
            ("src".to_string() + "x", String::new()),
        ]
        .into();
        s.validate_shape()
            .expect("prefixes that are not folders are fine");
    }

    #[test]
    fn nul_bytes_never_reach_an_argument_list() {
        let mut s = spec();
        s.args = vec!["ok".into(), "a\0b".into()];
        assert_eq!(
            s.validate_shape().expect_err("nul").to_string(),
            "args[1]: NUL bytes cannot be passed in an argument"
        );
        let mut s = spec();
        s.compiler_options = vec!["-O2\0".into()];
        assert!(s
            .validate_shape()
            .expect_err("nul")
            .to_string()
            .starts_with("compiler_options[0]: "));
    }

    #[test]
    fn version_and_required_fields_are_checked() {
        let mut s = spec();
        s.v = 2;
        assert_eq!(s.validate_shape(), Err(SpecError::Version(2)));
        let mut s = spec();
        s.files.clear();
        assert!(s
            .validate_shape()
            .expect_err("no files")
            .to_string()
            .starts_with("files:"));
        let mut s = spec();
        s.max_attempts = Some(0);
        assert!(s.validate_shape().is_err());
    }

    #[test]
    fn priority_round_trips_through_index_and_label() {
        for p in Priority::ALL {
            assert_eq!(Priority::from_index(p.index()), Some(p));
            assert_eq!(p.as_label().parse::<Priority>(), Ok(p));
        }
    }
}
