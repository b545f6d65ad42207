//! Admission: whether a well-formed spec fits a configuration. The worker checks every job it
//! claims with it (a misfit is `rejected`); the HTTP gateway checks before enqueueing, so a
//! caller hears `422` at once instead of finding a rejected result later.

use crate::config::Config;
use crate::job::{JobSpec, SpecError};
use crate::limits::Limits;

/// Checks a shape-valid spec against a configuration: a known language, sizes within
/// `limits.max_*`, attempts and result TTL within the queue caps, limits within `limits.max`.
///
/// # Errors
/// The first problem found, naming the field.
pub fn check(cfg: &Config, spec: &JobSpec) -> Result<(), SpecError> {
    if !cfg.languages.contains_key(&spec.language) {
        let known: Vec<&str> = cfg.languages.keys().map(String::as_str).collect();
        return Err(SpecError::field(
            "language",
            format!(
                "unknown language {:?} (configured: {})",
                spec.language,
                known.join(", ")
            ),
        ));
    }
    let l = &cfg.limits;
    let checks = [
        ("files", spec.files.len() as u64, l.max_files, "files"),
        (
            "files",
            spec.source_bytes() as u64,
            l.max_source_bytes,
            "bytes of source",
        ),
        ("stdin", spec.stdin.len() as u64, l.max_stdin_bytes, "bytes"),
        (
            "max_attempts",
            u64::from(spec.max_attempts.unwrap_or(1)),
            u64::from(cfg.queue.max_attempts_cap),
            "attempts",
        ),
        (
            "result_ttl_s",
            spec.result_ttl_s.unwrap_or(0),
            cfg.queue.max_result_ttl_s,
            "seconds",
        ),
    ];
    for (field, got, max, unit) in checks {
        if got > max {
            return Err(SpecError::field(
                field,
                format!("{got} {unit} exceeds the configured maximum of {max}"),
            ));
        }
    }
    if let Some(ttl) = spec.result_ttl_s {
        if ttl < cfg.queue.min_result_ttl_s {
            return Err(SpecError::field(
                "result_ttl_s",
                format!(
                    "{ttl} seconds is below the configured minimum of {} (queue.min_result_ttl_s)",
                    cfg.queue.min_result_ttl_s
                ),
            ));
        }
    }
    check_entry_file(cfg, spec)?;
    resolve_limits(cfg, spec)?;
    Ok(())
}

/// A job whose program starts from an entry file (`{entry}` in its language's commands) must
/// have it: its only source file, or the language's `entry_file` at the top of `files`.
fn check_entry_file(cfg: &Config, spec: &JobSpec) -> Result<(), SpecError> {
    let Some(lang) = cfg.languages.get(&spec.language) else {
        return Ok(());
    };
    let commands = match spec.kind {
        crate::JobKind::Compile => [lang.compile_only_command.as_str(), ""],
        crate::JobKind::Run => [lang.build_command.as_str(), lang.run_command.as_str()],
    };
    if !commands.iter().any(|c| c.contains("{entry}")) {
        return Ok(());
    }
    let entry = lang.entry_file_for(&spec.files);
    if spec.files.contains_key(entry) {
        return Ok(());
    }
    let sources = lang.source_files(&spec.files).len();
    Err(SpecError::field(
        "files",
        format!(
            "a {} job with {sources} .{} files starts from {entry}, which is missing: add {entry}, \
             or send a single .{} file",
            spec.language, lang.source_extension, lang.source_extension
        ),
    ))
}

/// The job's limits: its own, else its language's defaults, else the worker's; never over
/// the worker's maxima.
///
/// # Errors
/// A limit that is zero or over its maximum, named as `limits.<field>`.
pub fn resolve_limits(cfg: &Config, spec: &JobSpec) -> Result<Limits, SpecError> {
    let l = &cfg.limits;
    let defaults = match cfg.languages.get(&spec.language) {
        Some(lang) => lang.default_limits(&l.default, &l.max)?,
        None => l.default,
    };
    spec.limits.resolve(&defaults, &l.max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobKind;

    fn python(files: &[&str]) -> JobSpec {
        JobSpec::new(
            JobKind::Run,
            "python",
            files
                .iter()
                .map(|f| ((*f).to_owned(), "print(1)".to_owned()))
                .collect(),
        )
    }

    #[test]
    fn a_multi_file_job_without_its_entry_file_is_refused_naming_files() {
        let cfg = Config::load(None).expect("defaults");
        assert!(
            check(&cfg, &python(&["hello.py"])).is_ok(),
            "a lone file is the entry"
        );
        assert!(check(&cfg, &python(&["main.py", "util.py"])).is_ok());
        let err = check(&cfg, &python(&["a.py", "b.py"])).expect_err("no main.py");
        let msg = err.to_string();
        assert!(
            msg.starts_with("files:") && msg.contains("main.py"),
            "{msg}"
        );
        // A folder's main.py is not the entry: the program starts from /work/main.py.
        assert!(check(&cfg, &python(&["src/main.py", "b.py"])).is_err());
    }

    #[test]
    fn a_result_ttl_below_the_floor_is_refused_naming_the_field() {
        let cfg = Config::load(None).expect("defaults");
        for ttl in [0, 1, cfg.queue.min_result_ttl_s - 1] {
            let mut s = python(&["main.py"]);
            s.result_ttl_s = Some(ttl);
            let msg = check(&cfg, &s).expect_err("below the floor").to_string();
            assert!(
                msg.starts_with("result_ttl_s:") && msg.contains("queue.min_result_ttl_s"),
                "{msg}"
            );
        }
        let mut s = python(&["main.py"]);
        s.result_ttl_s = Some(cfg.queue.min_result_ttl_s);
        assert!(check(&cfg, &s).is_ok());
    }
}
