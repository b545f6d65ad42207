//! `--tests DIR`, `--compare MODE`, `--checker FILE`, `--stop-on-failure`: every job of the
//! batch carries the folder's tests and is judged the same way (compiled once, run per test).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use quayside_common::cases::{Checker, Compare, DEFAULT_FLOAT_TOLERANCE};
use quayside_common::config::LanguageConfig;
use quayside_common::{JobKind, JobSpec};

use super::tests_dir::read_tests;
use crate::job_flags::collect;
use crate::usage;

#[derive(Debug, clap::Args)]
pub struct TestsFlags {
    /// Folder of tests (`NAME.in` with `NAME.out` or `NAME.ans`, as Polygon, Kattis and DMOJ
    /// packages lay them out): every job is built once and run against each.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["stdin", "stdin_file"])]
    tests: Option<PathBuf>,
    /// How output is compared with the answer: exact, lines (default: trailing spaces and
    /// blank lines ignored), tokens, float (tokens, numbers within 1e-6), float:TOL or
    /// float:ABS,REL.
    #[arg(long, value_name = "MODE", requires = "tests", value_parser = parse_compare)]
    compare: Option<Compare>,
    /// Checker source (a file, or a folder with its headers) judging each test instead of
    /// --compare: run as `checker input output answer`, exit 0 accepted, 1 wrong answer,
    /// 2 presentation error, 3 checker failure (testlib's convention).
    #[arg(
        long,
        value_name = "FILE",
        requires = "tests",
        conflicts_with = "compare"
    )]
    checker: Option<PathBuf>,
    /// Stop at the first test that does not pass; the rest are `skipped`.
    #[arg(long, requires = "tests")]
    stop_on_failure: bool,
}

impl TestsFlags {
    /// Puts the tests and how they are judged on `template`; nothing without `--tests`.
    ///
    /// # Errors
    /// A tests folder the reader refuses (naming the file), `--tests` with `--kind compile`, a
    /// checker that cannot be read or whose language cannot be told (usage errors).
    pub fn apply(
        &self,
        template: &mut JobSpec,
        languages: &BTreeMap<String, LanguageConfig>,
    ) -> anyhow::Result<()> {
        let Some(dir) = &self.tests else {
            return Ok(());
        };
        if template.kind == JobKind::Compile {
            return Err(usage(
                "--tests runs the program against each test: it needs --kind run",
            ));
        }
        let tests = read_tests(dir).map_err(|e| usage(format!("--tests: {e:#}")))?;
        template.tests = Some(tests);
        template.compare = self.compare;
        template.stop_on_failure = self.stop_on_failure;
        if let Some(path) = &self.checker {
            template.checker = Some(checker(path, languages)?);
        }
        Ok(())
    }
}

/// `exact`, `lines`, `tokens`, `float`, `float:TOL` (both tolerances) or `float:ABS,REL`.
fn parse_compare(s: &str) -> Result<Compare, String> {
    let mode = match s.split_once(':') {
        None => match s {
            "exact" => Compare::Exact,
            "lines" => Compare::Lines,
            "tokens" => Compare::Tokens,
            "float" => Compare::Float {
                abs: DEFAULT_FLOAT_TOLERANCE,
                rel: DEFAULT_FLOAT_TOLERANCE,
            },
            _ => {
                return Err(format!(
                    "{s:?} is not a mode: exact, lines, tokens, float, float:TOL or float:ABS,REL"
                ))
            }
        },
        Some(("float", tolerances)) => {
            let number = |t: &str| {
                t.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("float:{tolerances}: {t:?} is not a number"))
            };
            let (abs, rel) = match tolerances.split_once(',') {
                Some((a, r)) => (number(a)?, number(r)?),
                None => {
                    let t = number(tolerances)?;
                    (t, t)
                }
            };
            Compare::Float { abs, rel }
        }
        Some(_) => {
            return Err(format!(
                "{s:?}: only float takes tolerances (float:ABS,REL)"
            ))
        }
    };
    mode.validate().map_err(|e| e.to_string())?;
    Ok(mode)
}

/// The checker at `path` (a file, or a folder of its sources and headers), in the language of
/// its extension.
fn checker(path: &Path, languages: &BTreeMap<String, LanguageConfig>) -> anyhow::Result<Checker> {
    let mut files = BTreeMap::new();
    collect(path, path, &mut files).map_err(|e| usage(format!("--checker: {e:#}")))?;
    let found: Vec<&str> = languages
        .iter()
        .filter(|(_, l)| !l.source_files(&files).is_empty())
        .map(|(name, _)| name.as_str())
        .collect();
    let language = match found.as_slice() {
        [one] => (*one).to_owned(),
        [] => {
            return Err(usage(format!(
                "--checker {}: no source file of a known language in it",
                path.display()
            )))
        }
        many => {
            return Err(usage(format!(
                "--checker {}: mixes languages ({})",
                path.display(),
                many.join(", ")
            )))
        }
    };
    Ok(Checker {
        language,
        files,
        compiler_options: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quayside_common::config::default_languages;

    #[test]
    fn compare_modes_parse_and_bad_ones_say_what_is_allowed() {
        assert_eq!(parse_compare("exact"), Ok(Compare::Exact));
        assert_eq!(parse_compare("tokens"), Ok(Compare::Tokens));
        assert_eq!(parse_compare("lines"), Ok(Compare::Lines));
        assert_eq!(
            parse_compare("float"),
            Ok(Compare::Float {
                abs: 1e-6,
                rel: 1e-6
            })
        );
        assert_eq!(
            parse_compare("float:1e-3"),
            Ok(Compare::Float {
                abs: 1e-3,
                rel: 1e-3
            })
        );
        assert_eq!(
            parse_compare("float:0.5,0"),
            Ok(Compare::Float { abs: 0.5, rel: 0.0 })
        );
        for (bad, says) in [
            ("line", "is not a mode"),
            ("float:x", "\"x\" is not a number"),
            ("float:-1", "compare.float.abs"),
            ("tokens:1", "only float takes tolerances"),
        ] {
            let e = parse_compare(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn tests_folder_compare_and_checker_go_on_every_job() {
        let dir = std::env::temp_dir().join(format!("quayside-tests-flags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("1.in"), "1 2\n").expect("write");
        std::fs::write(dir.join("1.ans"), "3\n").expect("write");
        std::fs::write(dir.join("check.cpp"), "int main(){}").expect("write");
        let flags = TestsFlags {
            tests: Some(dir.clone()),
            compare: None,
            checker: Some(dir.join("check.cpp")),
            stop_on_failure: true,
        };
        let mut spec = JobSpec::new(JobKind::Run, "cpp", BTreeMap::new());
        flags
            .apply(&mut spec, &default_languages())
            .expect("applied");
        let tests = spec.tests.as_deref().expect("tests");
        assert_eq!(
            (tests.len(), tests[0].expected_stdout.as_deref()),
            (1, Some("3\n"))
        );
        let checker = spec.checker.clone().expect("checker");
        assert_eq!(checker.language, "cpp");
        assert!(checker.files.contains_key("check.cpp"));
        assert!(spec.stop_on_failure);

        let mut compile = JobSpec::new(JobKind::Compile, "cpp", BTreeMap::new());
        let e = flags
            .apply(&mut compile, &default_languages())
            .expect_err("compile jobs run no tests");
        assert!(e.to_string().contains("needs --kind run"), "{e}");
        let missing = TestsFlags {
            tests: Some(dir.join("nope")),
            ..flags
        };
        let e = missing
            .apply(&mut spec, &default_languages())
            .expect_err("no folder");
        assert!(format!("{e:#}").contains("nope"), "{e:#}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
