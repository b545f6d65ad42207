//! Admission: whether a well-formed spec fits a configuration. The worker checks every job it
//! claims with it (a misfit is `rejected`, never retried); the HTTP gateway checks before
//! enqueueing, so a caller hears `422` at once instead of finding a rejected result later; the
//! producer library checks what it can without the workers' language table ([`check_sizes`]).
//!
//! Everything a job controls is bounded here, so that no job can make itself fail as an
//! infrastructure error (an engine that refuses its container, an archive too big for memory,
//! a config too big for the engine's disk): it gets `rejected`, naming the field, instead.

use std::collections::BTreeMap;

use crate::config::{Config, LimitsConfig, QueueConfig, TenantConfig, WebhooksConfig};
use crate::job::{JobSpec, SpecError};
use crate::limits::Limits;

/// Checks a shape-valid spec against a configuration: a known language, sizes within the
/// `limits.max_*` caps, attempts and result TTL within the queue caps, limits within
/// `limits.min..=limits.max`.
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
    check_sizes(&cfg.limits, &cfg.queue, spec)?;
    check_has_source(cfg, spec)?;
    check_entry_file(cfg, spec)?;
    check_checker_language(cfg, spec)?;
    check_callback(&cfg.webhooks, &cfg.tenants, spec)?;
    resolve_limits(cfg, spec)?;
    Ok(())
}

/// A job's `callback`, if it has one, against the operator's webhook rules: an allowed host,
/// not an internal address unless allowed, and a tenant with a signing secret.
///
/// # Errors
/// Why the callback is refused, naming `callback`.
pub fn check_callback(
    webhooks: &WebhooksConfig,
    tenants: &BTreeMap<String, TenantConfig>,
    spec: &JobSpec,
) -> Result<(), SpecError> {
    let Some(url) = &spec.callback else {
        return Ok(());
    };
    crate::callback::check(webhooks, url).map_err(|e| SpecError::field("callback", e))?;
    if crate::callback::secret_for(webhooks, tenants, spec.tenant.as_deref()).is_none() {
        let whose = match &spec.tenant {
            Some(t) => format!("tenant {t:?} has no tenants.{t}.webhook_secret"),
            None => "the default tenant has no webhooks.secret".to_owned(),
        };
        return Err(SpecError::field(
            "callback",
            format!("{whose}: its webhooks could not be signed"),
        ));
    }
    Ok(())
}

/// A checker runs in the job's sandbox, so its language must be known and share the job's
/// image (a C++ checker for a C job needs an image with g++).
fn check_checker_language(cfg: &Config, spec: &JobSpec) -> Result<(), SpecError> {
    let Some(checker) = &spec.checker else {
        return Ok(());
    };
    let field = "checker.language";
    let Some(lang) = cfg.languages.get(&checker.language) else {
        return Err(SpecError::field(
            field,
            format!("unknown language {:?}", checker.language),
        ));
    };
    let job_image = cfg.languages.get(&spec.language).map(|l| l.image.as_str());
    if job_image != Some(lang.image.as_str()) {
        return Err(SpecError::field(
            field,
            format!(
                "a {} checker needs image {}, and the job runs in {} (use the job's language)",
                checker.language,
                lang.image,
                job_image.unwrap_or("another image")
            ),
        ));
    }
    Ok(())
}

/// Everything [`check`] does that needs no language table: the size and shape caps, the queue
/// caps, and the limits the job set against floors and maxima. What a producer can check
/// before sending (its workers may know languages it does not).
///
/// # Errors
/// The first problem found, naming the field.
pub fn check_sizes(l: &LimitsConfig, queue: &QueueConfig, spec: &JobSpec) -> Result<(), SpecError> {
    let bytes = |list: &[String]| list.iter().map(String::len).sum::<usize>() as u64;
    let checks = [
        ("files", spec.files.len() as u64, l.max_files, "files"),
        (
            "files",
            spec.source_bytes() as u64,
            l.max_source_bytes,
            "bytes of source",
        ),
        ("stdin", spec.stdin.len() as u64, l.max_stdin_bytes, "bytes"),
        ("args", spec.args.len() as u64, l.max_args, "arguments"),
        (
            "args",
            bytes(&spec.args),
            l.max_args_bytes,
            "bytes of arguments",
        ),
        (
            "compiler_options",
            spec.compiler_options.len() as u64,
            l.max_compiler_options,
            "options",
        ),
        (
            "compiler_options",
            bytes(&spec.compiler_options),
            l.max_compiler_options_bytes,
            "bytes of options",
        ),
        ("labels", spec.labels.len() as u64, l.max_labels, "labels"),
        (
            "max_attempts",
            u64::from(spec.max_attempts.unwrap_or(1)),
            u64::from(queue.max_attempts_cap),
            "attempts",
        ),
        (
            "result_ttl_s",
            spec.result_ttl_s.unwrap_or(0),
            queue.max_result_ttl_s,
            "seconds",
        ),
    ];
    for (field, got, max, unit) in checks {
        over(field.to_owned(), got, max, unit)?;
    }
    let checker_files = spec.checker.iter().flat_map(|c| c.files.keys());
    let files = spec.files.keys().map(|n| ("files", n));
    for (map, name) in files.chain(checker_files.map(|n| ("checker.files", n))) {
        let field = || format!("{map}[{name:?}]");
        over(
            field(),
            name.len() as u64,
            l.max_path_bytes,
            "bytes of path",
        )?;
        let depth = name.matches('/').count() as u64;
        over(field(), depth, l.max_folder_depth, "folders deep")?;
    }
    for (key, value) in &spec.labels {
        let size = (key.len() + value.len()) as u64;
        over(format!("labels[{key:?}]"), size, l.max_label_bytes, "bytes")?;
    }
    check_test_sizes(l, spec)?;
    // Last: the caps above name a more precise field for most oversized specs.
    over(
        "spec".into(),
        spec.text_bytes() as u64,
        l.max_spec_bytes,
        "bytes of text in all",
    )?;
    if let Some(ttl) = spec.result_ttl_s {
        if ttl < queue.min_result_ttl_s {
            return Err(SpecError::field(
                "result_ttl_s",
                format!(
                    "{ttl} seconds is below the configured minimum of {} (queue.min_result_ttl_s)",
                    queue.min_result_ttl_s
                ),
            ));
        }
    }
    spec.limits.check_set(&l.min, &l.max)
}

/// The caps on a job's test cases: how many, and each one's args, stdin and limits, named
/// `tests[i].<field>`.
fn check_test_sizes(l: &LimitsConfig, spec: &JobSpec) -> Result<(), SpecError> {
    let bytes = |list: &[String]| list.iter().map(String::len).sum::<usize>() as u64;
    over(
        "tests".into(),
        spec.test_cases().len() as u64,
        l.max_tests,
        "tests",
    )?;
    for (i, t) in spec.test_cases().iter().enumerate() {
        if let Some(args) = &t.args {
            over(
                format!("tests[{i}].args"),
                args.len() as u64,
                l.max_args,
                "arguments",
            )?;
            over(
                format!("tests[{i}].args"),
                bytes(args),
                l.max_args_bytes,
                "bytes of arguments",
            )?;
        }
        over(
            format!("tests[{i}].stdin"),
            t.stdin.len() as u64,
            l.max_stdin_bytes,
            "bytes",
        )?;
        t.limits
            .check_set(&l.min, &l.max)
            .map_err(|e| e.within(&format!("tests[{i}]")))?;
    }
    Ok(())
}

fn over(field: String, got: u64, max: u64, unit: &str) -> Result<(), SpecError> {
    if got > max {
        return Err(SpecError::field(
            field,
            format!("{got} {unit} exceeds the configured maximum of {max}"),
        ));
    }
    Ok(())
}

/// A job of a language with a source extension must have a file with it: a C job of headers
/// alone would be accepted and then fail in the compiler with "no input files".
fn check_has_source(cfg: &Config, spec: &JobSpec) -> Result<(), SpecError> {
    let Some(lang) = cfg.languages.get(&spec.language) else {
        return Ok(());
    };
    if lang.source_extension.is_empty() || !lang.source_files(&spec.files).is_empty() {
        return Ok(());
    }
    Err(SpecError::field(
        "files",
        format!(
            "a {} job needs a .{} file and has none (headers and data files go beside one)",
            spec.language, lang.source_extension
        ),
    ))
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

/// The job's limits: its own, else its language's defaults, else the worker's; never outside
/// the worker's floors and maxima.
///
/// # Errors
/// A limit below its floor or over its maximum, named as `limits.<field>`.
pub fn resolve_limits(cfg: &Config, spec: &JobSpec) -> Result<Limits, SpecError> {
    let l = &cfg.limits;
    let defaults = match cfg.languages.get(&spec.language) {
        Some(lang) => lang.default_limits(l)?,
        None => l.default,
    };
    spec.limits.resolve(&defaults, &l.min, &l.max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::tests::spec;
    use crate::job::JobKind;

    /// Every cap, each broken by one spec, with the field the refusal must name.
    fn over_the_caps(l: &LimitsConfig) -> Vec<(JobSpec, String)> {
        let with = |f: &dyn Fn(&mut JobSpec)| {
            let mut s = spec();
            f(&mut s);
            s
        };
        let n = |cap: u64| usize::try_from(cap).unwrap_or(usize::MAX);
        let deep = format!("{}main.c", "d/".repeat(n(l.max_folder_depth) + 1));
        // Components within NAME_MAX, the whole path over the cap (assumes a cap above 200).
        let long = format!(
            "{}/{}.c",
            "x".repeat(200),
            "y".repeat(n(l.max_path_bytes) - 200)
        );
        vec![
            (
                with(&|s| s.args = vec!["a".into(); n(l.max_args) + 1]),
                "args".into(),
            ),
            (
                with(&|s| s.args = vec!["a".repeat(n(l.max_args_bytes) + 1)]),
                "args".into(),
            ),
            (
                with(&|s| s.compiler_options = vec!["-O".into(); n(l.max_compiler_options) + 1]),
                "compiler_options".into(),
            ),
            (
                with(&|s| s.compiler_options = vec!["-D".repeat(n(l.max_compiler_options_bytes))]),
                "compiler_options".into(),
            ),
            (
                with(&|s| {
                    s.labels = (0..=n(l.max_labels))
                        .map(|i| (i.to_string(), String::new()))
                        .collect()
                }),
                "labels".into(),
            ),
            (
                with(&|s| s.labels = [("k".to_owned(), "v".repeat(n(l.max_label_bytes)))].into()),
                "labels[\"k\"]".into(),
            ),
            (
                with(&|s| s.files = [(deep.clone(), String::new())].into()),
                format!("files[{deep:?}]"),
            ),
            (
                with(&|s| s.files = [(long.clone(), String::new())].into()),
                format!("files[{long:?}]"),
            ),
        ]
    }

    #[test]
    fn a_job_with_no_file_of_its_languages_extension_is_refused_naming_files() {
        let cfg = Config {
            languages: crate::config::default_languages(),
            ..Config::default()
        };
        let mut s = JobSpec::new(
            crate::JobKind::Run,
            "c",
            [("util.h".to_owned(), "int f(void);".to_owned())].into(),
        );
        let err = check(&cfg, &s).expect_err("headers alone");
        assert!(
            err.to_string().starts_with("files: ") && err.to_string().contains("needs a .c file"),
            "{err}"
        );
        s.files
            .insert("main.c".into(), "int main(void){return 0;}".into());
        check(&cfg, &s).expect("a source beside the header");
    }

    #[test]
    fn every_cap_refuses_and_names_its_field() {
        let cfg = Config::default();
        for (spec, field) in over_the_caps(&cfg.limits) {
            spec.validate_shape()
                .expect("well-formed: only a cap is broken");
            let err = check_sizes(&cfg.limits, &cfg.queue, &spec).expect_err(&field);
            assert!(
                err.to_string().starts_with(&format!("{field}: "))
                    && err.to_string().contains("exceeds the configured maximum"),
                "{field}: {err}"
            );
        }
        check_sizes(&cfg.limits, &cfg.queue, &spec()).expect("a plain job fits");
    }

    #[test]
    fn the_whole_spec_is_bounded_whatever_field_holds_the_bytes() {
        let mut cfg = Config::default();
        cfg.limits.max_spec_bytes = 3 << 20;
        cfg.limits.max_stdin_bytes = 2 << 20;
        let mut s = spec();
        s.stdin = "x".repeat(2 << 20);
        s.files.insert("big.c".into(), "y".repeat((1 << 20) - 100));
        s.args = vec!["z".repeat(1000)];
        let err = check_sizes(&cfg.limits, &cfg.queue, &s).expect_err("too big in all");
        assert!(err.to_string().starts_with("spec: "), "{err}");
    }

    #[test]
    fn floors_hold_at_every_door_and_languages_are_not_needed_for_sizes() {
        let cfg = Config {
            languages: crate::config::default_languages(),
            ..Config::default()
        };
        let mut s = spec();
        s.language = "unknown-to-this-producer".into();
        check_sizes(&cfg.limits, &cfg.queue, &s).expect("sizes do not need the language table");
        s.limits.memory_bytes = Some(1);
        let err = check_sizes(&cfg.limits, &cfg.queue, &s).expect_err("memory floor");
        assert!(
            err.to_string()
                .starts_with("limits.memory_bytes: 1 is below"),
            "{err}"
        );
        let mut s = spec();
        s.limits.pids = Some(1);
        let err = check(&cfg, &s).expect_err("pids floor");
        assert!(
            err.to_string().starts_with("limits.pids: 1 is below"),
            "{err}"
        );
    }

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
