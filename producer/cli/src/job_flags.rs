//! Flags that shape a job, shared by `submit` and `batch`, and reading source files from disk.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context as _};
use quayside_common::config::LanguageConfig;
use quayside_common::{JobKind, JobSpec, Priority};

use crate::usage;

/// How each job is built and run; `submit` applies them to its one job, `batch` to every job.
#[derive(Debug, clap::Args)]
pub struct JobFlags {
    /// Language (a key of the worker's language table); `batch` infers it from the file
    /// extension when absent.
    #[arg(long, short)]
    pub language: Option<String>,
    /// `run` builds and runs the program; `compile` only compiles it (diagnostics, no program).
    #[arg(long, default_value = "run", value_parser = ["run", "compile"])]
    pub kind: String,
    /// Queue priority: high, normal or low.
    #[arg(long, default_value = "normal")]
    pub priority: Priority,
    /// Text to feed the program on stdin.
    #[arg(long, conflicts_with = "stdin_file")]
    pub stdin: Option<String>,
    /// File whose content the program reads on stdin.
    #[arg(long)]
    pub stdin_file: Option<std::path::PathBuf>,
    /// Program argument (repeatable).
    #[arg(long = "arg")]
    pub args: Vec<String>,
    /// Compiler option (repeatable).
    #[arg(long = "option", allow_hyphen_values = true)]
    pub compiler_options: Vec<String>,
    /// Limit as NAME=VALUE, e.g. run_wall_time_ms=2000 (repeatable).
    #[arg(long = "limit")]
    pub limits: Vec<String>,
    /// Executions allowed before the job is dead-lettered (infrastructure failures are
    /// retried; the program's own failure is not); the worker's default when absent.
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Label as KEY=VALUE (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Seconds the result (and everything else the job leaves in Redis) is kept after the
    /// job ends; the worker's default when absent.
    #[arg(long)]
    pub result_ttl_s: Option<u64>,
    /// Tenant the job is run for (fair share and quotas); the default tenant when absent.
    #[arg(long)]
    pub tenant: Option<String>,
    /// URL the fleet POSTs the signed result to when the job ends (a host the operator allows
    /// in `webhooks.allowed_hosts`).
    #[arg(long)]
    pub callback: Option<String>,
}

impl JobFlags {
    /// A spec with every flag applied, no files and the given (or no) language; callers clone
    /// it per job and fill in id, language and files.
    ///
    /// # Errors
    /// A malformed `--label` or `--limit`, or an unreadable `--stdin-file` (usage errors).
    pub fn template(&self) -> anyhow::Result<JobSpec> {
        let kind = if self.kind == "compile" {
            JobKind::Compile
        } else {
            JobKind::Run
        };
        let mut spec = JobSpec::new(
            kind,
            self.language.as_deref().unwrap_or_default(),
            BTreeMap::new(),
        );
        spec.priority = self.priority;
        spec.args = self.args.clone();
        spec.compiler_options = self.compiler_options.clone();
        spec.stdin = match (&self.stdin, &self.stdin_file) {
            (Some(s), _) => s.clone(),
            (None, Some(p)) => {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
            }
            (None, None) => String::new(),
        };
        spec.max_attempts = self.max_attempts;
        spec.result_ttl_s = self.result_ttl_s;
        spec.tenant = self.tenant.clone();
        spec.callback = self.callback.clone();
        for l in &self.labels {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| usage(format!("--label {l}: expected KEY=VALUE")))?;
            spec.labels.insert(k.to_owned(), v.to_owned());
        }
        let mut limits = serde_json::Map::new();
        for l in &self.limits {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| usage(format!("--limit {l}: expected NAME=VALUE")))?;
            let v: u64 = v
                .parse()
                .map_err(|_| usage(format!("--limit {l}: value must be a whole number")))?;
            limits.insert(k.to_owned(), v.into());
        }
        spec.limits =
            serde_json::from_value(limits.into()).map_err(|e| usage(format!("--limit: {e}")))?;
        Ok(spec)
    }
}

/// Adds `path` (a file, or a folder walked recursively) with names relative to `root`.
///
/// # Errors
/// An unreadable file or folder, or a file that is not UTF-8 text.
pub fn collect(
    root: &Path,
    path: &Path,
    files: &mut BTreeMap<String, String>,
) -> anyhow::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .with_context(|| format!("reading folder {}", path.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.path());
        for e in entries {
            collect(root, &e.path(), files)?;
        }
        return Ok(());
    }
    let name = if root == path {
        path.file_name().map(|n| n.to_string_lossy().into_owned())
    } else {
        path.strip_prefix(root)
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    };
    let Some(name) = name else {
        bail!("cannot name {}", path.display())
    };
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading {} (source files must be UTF-8 text)",
            path.display()
        )
    })?;
    files.insert(name, text);
    Ok(())
}

/// A job of a language whose sources have an extension must have one such file, or it fails
/// at build time with "no input files" instead of being refused here. Languages this CLI's
/// table does not know (the worker's may) are not checked.
///
/// # Errors
/// A usage error naming the job and the extension.
pub fn check_has_source(
    name: &str,
    spec: &JobSpec,
    languages: &BTreeMap<String, LanguageConfig>,
) -> anyhow::Result<()> {
    let Some(lang) = languages.get(&spec.language) else {
        return Ok(());
    };
    if lang.source_extension.is_empty() || !lang.source_files(&spec.files).is_empty() {
        return Ok(());
    }
    Err(usage(format!(
        "{name}: a {} job needs a .{} file and it has none",
        spec.language, lang.source_extension
    )))
}
