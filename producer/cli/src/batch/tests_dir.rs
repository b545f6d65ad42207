//! `quayside batch --tests DIR`: a folder of test cases in the layout Polygon, Kattis and DMOJ
//! packages use, `NAME.in` with its answer `NAME.out` or `NAME.ans`, read once into the
//! `tests` every job of the batch carries. Not wired into `batch` yet (docs/design/tests-per-job.md §7).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context as _};
use quayside_common::cases::TestCase;
use quayside_common::JobId;

/// Extensions an answer file may have; `.in` is the input.
const ANSWERS: [&str; 2] = ["out", "ans"];

/// The test cases of `dir`, in natural order of their names (`2` before `10`). Other files
/// (a checker's source, a statement) are left alone; an input without an answer is a test
/// judged by its exit code alone.
///
/// # Errors
/// A folder that cannot be read or holds no `.in` file, an answer without its input, an input
/// with two answers, a name a test cannot have, a file that is not UTF-8; each names the file.
pub(crate) fn read_tests(dir: &Path) -> anyhow::Result<Vec<TestCase>> {
    let mut inputs = BTreeMap::new();
    let mut answers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if !path.is_file() {
            continue;
        }
        let (Some(stem), Some(ext)) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        if ext == "in" {
            inputs.insert(stem.to_owned(), path.clone());
        } else if ANSWERS.contains(&ext) {
            answers
                .entry(stem.to_owned())
                .or_default()
                .push(format!("{stem}.{ext}"));
        }
    }
    if let Some((stem, files)) = answers.iter().find(|(s, _)| !inputs.contains_key(*s)) {
        bail!("{}: {} has no input {stem}.in", dir.display(), files[0]);
    }
    if let Some((_, files)) = answers.iter_mut().find(|(_, f)| f.len() > 1) {
        files.sort(); // the folder's listing order is the filesystem's
        bail!(
            "{}: {} are two answers for one test: keep one",
            dir.display(),
            files.join(" and ")
        );
    }
    if inputs.is_empty() {
        bail!(
            "{}: no tests (expected NAME.in files, each with NAME.out or NAME.ans)",
            dir.display()
        );
    }
    let mut names: Vec<&String> = inputs.keys().collect();
    names.sort_by(|a, b| natural(a, b));
    names
        .into_iter()
        .map(|name| {
            JobId::parse(name)
                .with_context(|| format!("{}: {name}.in cannot name a test", dir.display()))?;
            let answer = answers.get(name).map(|a| dir.join(&a[0]));
            Ok(TestCase {
                name: name.clone(),
                stdin: read_text(&inputs[name])?,
                args: None,
                expected_stdout: answer.as_deref().map(read_text).transpose()?,
                limits: Default::default(),
            })
        })
        .collect()
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", path.display()))
}

/// Orders names with their digit runs compared as numbers: `t2` < `t10`, `01` = `1` broken
/// by the text.
fn natural(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let number = |d: &str| {
        let t = d.trim_start_matches('0');
        (t.len(), t.to_owned())
    };
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(&cb) {
        let ord = match (x, y) {
            ((true, x), (true, y)) => number(x).cmp(&number(y)),
            ((_, x), (_, y)) => x.cmp(y),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder's files: name and content.
    type Files = Vec<(&'static str, &'static [u8])>;

    /// A fresh folder holding `files`.
    fn folder(files: &[(&str, &[u8])]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "quayside-tests-dir-{}-{}",
            std::process::id(),
            uuid_like()
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (name, data) in files {
            std::fs::write(dir.join(name), data).expect("write");
        }
        dir
    }

    fn uuid_like() -> u128 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        u128::from(N.fetch_add(1, Ordering::Relaxed))
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
    }

    fn error(files: &[(&str, &[u8])]) -> String {
        let dir = folder(files);
        let err = read_tests(&dir).expect_err("refused");
        std::fs::remove_dir_all(&dir).ok();
        format!("{err:#}")
    }

    #[test]
    fn polygon_and_kattis_layouts_read_in_natural_order() {
        let dir = folder(&[
            ("10.in", b"ten\n"),
            ("10.ans", b"10\n"),
            ("2.in", b"two\n"),
            ("2.out", b"2\n"),
            ("1.in", b""),
            ("checker.cpp", b"int main(){}"),
        ]);
        let tests = read_tests(&dir).expect("tests");
        std::fs::remove_dir_all(&dir).ok();
        let got: Vec<_> = tests
            .iter()
            .map(|t| {
                (
                    t.name.as_str(),
                    t.stdin.as_str(),
                    t.expected_stdout.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("1", "", None),
                ("2", "two\n", Some("2\n")),
                ("10", "ten\n", Some("10\n"))
            ]
        );
    }

    #[test]
    fn mistakes_are_refused_naming_the_file() {
        let b = |s: &'static str| s.as_bytes();
        let raw: &[u8] = b"\xff\xfe";
        let cases: [(Files, &str); 5] = [
            (vec![("a.out", b("1"))], "a.out has no input a.in"),
            (
                vec![("a.in", b("1")), ("a.out", b("1")), ("a.ans", b("1"))],
                "a.ans and a.out are two answers",
            ),
            (vec![("readme.txt", b("hi"))], "no tests"),
            (vec![("a b.in", b("1"))], "a b.in cannot name a test"),
            (vec![("a.in", raw)], "a.in is not UTF-8"),
        ];
        for (files, says) in cases {
            let err = error(&files);
            assert!(err.contains(says), "{says:?} not in {err}");
        }
    }

    #[test]
    fn natural_order_compares_numbers_as_numbers() {
        let mut names = vec!["t10", "t2", "t1", "b", "a10", "a9", "t02", "10", "9"];
        names.sort_by(|a, b| natural(a, b));
        assert_eq!(
            names,
            ["9", "10", "a9", "a10", "b", "t1", "t02", "t2", "t10"]
        );
    }
}
