//! The language table (`languages.<name>.*`): per language, its runner image, how its
//! sources are found, and how a job is built, run or compiled only. Empty in the config means
//! the built-in table of the images in `deploy/images`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ConfigError, LimitsConfig};
use crate::job::SpecError;
use crate::limits::{Limits, LimitsSpec};

/// How one language is built and run. Commands are `sh -c` strings run in `/work`, where
/// `{options}` becomes the job's compiler options, `{sources}` the job's files ending in
/// `.{source_extension}` and `{entry}` the entry file (the job's only source file when it has
/// exactly one), each shell-quoted. The job's args are the positional parameters of the run
/// command, so it passes them on as `"$@"`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LanguageConfig {
    /// Runner image, e.g. `quayside/runner-c:3`; never pulled.
    pub image: String,
    /// Extension of this language's source files, without the dot; what `{sources}` lists.
    pub source_extension: String,
    /// The file the program starts from in a multi-file job, e.g. `main.py`.
    pub entry_file: String,
    /// Builds the program before a `run` job runs it; empty = nothing to build.
    pub build_command: String,
    /// Runs the built program with the job's stdin; must pass `"$@"` on for the job's args.
    pub run_command: String,
    /// What a `compile` job runs: diagnostics only, no program (object files, metadata).
    pub compile_only_command: String,
    /// Defaults for this language where a job sets no limit, over `limits.default` (e.g. more
    /// memory for the Go toolchain). Still bounded by `limits.min` and `limits.max`.
    #[serde(skip_serializing_if = "is_default_limits")]
    pub limits: LimitsSpec,
}

fn is_default_limits(l: &LimitsSpec) -> bool {
    *l == LimitsSpec::default()
}

impl LanguageConfig {
    /// This language's default limits: its own where set, the worker's otherwise.
    ///
    /// # Errors
    /// A language default over `max` (refused by config validation first).
    pub fn default_limits(&self, limits: &LimitsConfig) -> Result<Limits, SpecError> {
        self.limits
            .resolve(&limits.default, &limits.min, &limits.max)
    }

    /// The job's source files: those ending in `.{source_extension}`, in name order.
    pub fn source_files<'a>(&self, files: &'a BTreeMap<String, String>) -> Vec<&'a str> {
        let suffix = format!(".{}", self.source_extension);
        files
            .keys()
            .filter(|f| !self.source_extension.is_empty() && f.ends_with(&suffix))
            .map(String::as_str)
            .collect()
    }

    /// The file a job's program starts from (`{entry}`): its only source file when it has
    /// exactly one, whatever its name (`quayside submit hello.py`), else `entry_file`.
    pub fn entry_file_for<'a>(&'a self, files: &'a BTreeMap<String, String>) -> &'a str {
        match self.source_files(files).as_slice() {
            [only] => only,
            _ => self.entry_file.as_str(),
        }
    }
}

/// Tag of the runner images the built-in language table names: the content of
/// `deploy/images/VERSION` (a test keeps them equal), bumped whenever an image changes so an
/// old image is never taken for the new one.
pub const RUNNER_IMAGE_VERSION: &str = "3";

/// The runner image of a built-in language: `quayside/runner-<language>:<RUNNER_IMAGE_VERSION>`.
pub fn default_image(language: &str) -> String {
    format!("quayside/runner-{language}:{RUNNER_IMAGE_VERSION}")
}

/// The built-in language table, matching the images of `deploy/images`.
pub fn default_languages() -> BTreeMap<String, LanguageConfig> {
    // Go needs a module for `.` and `./...` to name the sources (sub-packages import as main/x).
    const GO_MOD: &str = "[ -f go.mod ] || go mod init main >/dev/null 2>&1";
    let lang = |name: &str, ext: &str, entry: &str, build: &str, run: &str, check: &str| {
        let config = LanguageConfig {
            image: default_image(name),
            source_extension: ext.to_owned(),
            entry_file: entry.to_owned(),
            build_command: build.to_owned(),
            run_command: run.to_owned(),
            compile_only_command: check.to_owned(),
            limits: LimitsSpec::default(),
        };
        (name.to_owned(), config)
    };
    let mut table = BTreeMap::from([
        lang(
            "c",
            "c",
            "main.c",
            "gcc -O2 -pipe -std=gnu17 {options} -o main {sources} -lm",
            r#"./main "$@""#,
            "gcc -std=gnu17 {options} -c {sources}",
        ),
        lang(
            "cpp",
            "cpp",
            "main.cpp",
            "g++ -O2 -pipe -std=gnu++17 {options} -o main {sources}",
            r#"./main "$@""#,
            "g++ -std=gnu++17 {options} -c {sources}",
        ),
        lang(
            "python",
            "py",
            "main.py",
            "",
            r#"python3 {entry} "$@""#,
            "python3 -m py_compile {sources}",
        ),
        lang(
            "rust",
            "rs",
            "main.rs",
            "rustc --edition 2021 -O {options} -o main {entry}",
            r#"./main "$@""#,
            "rustc --edition 2021 --emit=metadata {options} -o /tmp/check.rmeta {entry}",
        ),
        lang(
            "go",
            "go",
            "main.go",
            &format!("{GO_MOD}; go build {{options}} -o main ."),
            r#"./main "$@""#,
            &format!("{GO_MOD}; go build {{options}} -o /dev/null ./..."),
        ),
        lang(
            "javascript",
            "js",
            "main.js",
            "",
            r#"node {entry} "$@""#,
            // `node --check` takes one file per call.
            r#"for f in {sources}; do node --check "$f" || exit 1; done"#,
        ),
    ]);
    // The Go toolchain runs many threads and needs more memory than a C compiler.
    if let Some(go) = table.get_mut("go") {
        go.limits.memory_bytes = Some(512 << 20);
        go.limits.pids = Some(128);
    }
    table
}

/// Refuses a language without an image, or whose own default limits fall outside
/// `limits.min`..`limits.max`.
pub(super) fn validate(
    languages: &BTreeMap<String, LanguageConfig>,
    limits: &LimitsConfig,
) -> Result<(), ConfigError> {
    for (name, lang) in languages {
        if lang.image.is_empty() {
            return Err(ConfigError::Invalid {
                key: "languages.<name>.image",
                problem: format!("language {name:?} has no image"),
            });
        }
        lang.default_limits(limits)
            .map_err(|e| ConfigError::Invalid {
                key: "languages.<name>.limits",
                problem: format!("language {name:?}: {e}"),
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_images_carry_the_tag_scripts_build_images_gives_them() {
        let version = include_str!("../../../deploy/images/VERSION").trim();
        assert_eq!(RUNNER_IMAGE_VERSION, version, "bump both together");
    }

    #[test]
    fn every_default_language_can_build_run_and_check() {
        let langs = default_languages();
        assert_eq!(langs.len(), 6);
        for (name, l) in &langs {
            assert_eq!(
                l.image,
                format!("quayside/runner-{name}:{RUNNER_IMAGE_VERSION}")
            );
            assert!(
                !l.source_extension.is_empty()
                    && l.entry_file.ends_with(&format!(".{}", l.source_extension)),
                "{name}"
            );
            assert!(
                l.run_command.contains(r#""$@""#),
                "{name}: args must reach the program"
            );
            assert!(!l.compile_only_command.is_empty(), "{name}");
        }
        for compiled in ["c", "cpp", "rust", "go"] {
            let l = &langs[compiled];
            assert!(
                l.build_command.contains("{options}"),
                "{compiled}: options reach the compiler"
            );
            assert!(l.compile_only_command.contains("{options}"), "{compiled}");
        }
    }
}
