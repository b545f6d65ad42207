//! What a batch is made of: folders (one job per file, one per sub-folder project), glob
//! matches, or a JSON-lines manifest, each job with a name and an id derived from the batch id
//! and that name, so submitting the same inputs under the same batch id again adds nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use quayside_common::config::LanguageConfig;
use quayside_common::job::PROTOCOL_VERSION;
use quayside_common::wire::decode_spec;
use quayside_common::{JobId, JobSpec};
use quayside_producer::batch_member_id as job_id;

use crate::job_flags::collect;
use crate::usage;

pub use quayside_producer::NAME_LABEL;

/// One job of the batch, with the name reports use for it.
#[derive(Debug)]
pub struct Planned {
    pub name: String,
    pub spec: JobSpec,
}

/// One job per file directly in a folder and one per sub-folder; a file source is one job and
/// a glob match is one job per file or folder. `template` carries the job flags; the language
/// is inferred from extensions when it has none.
///
/// # Errors
/// Unreadable sources, a pattern matching nothing, two jobs of one name, a language that cannot
/// be inferred.
pub fn from_paths(
    sources: &[PathBuf],
    globs: &[String],
    template: &JobSpec,
    languages: &BTreeMap<String, LanguageConfig>,
    batch: &str,
) -> anyhow::Result<Vec<Planned>> {
    let mut units: Vec<PathBuf> = Vec::new();
    for source in sources {
        if source.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(source)
                .with_context(|| format!("reading folder {}", source.display()))?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            entries.retain(|p| !is_hidden(p));
            entries.sort();
            if entries.is_empty() {
                return Err(usage(format!("folder {} is empty", source.display())));
            }
            units.extend(entries);
        } else if source.exists() {
            units.push(source.clone());
        } else {
            return Err(usage(format!(
                "{}: no such file or folder",
                source.display()
            )));
        }
    }
    for pattern in globs {
        let matches = glob::glob(pattern).map_err(|e| usage(format!("--glob {pattern}: {e}")))?;
        let before = units.len();
        for m in matches {
            let path = m.with_context(|| format!("--glob {pattern}"))?;
            if !is_hidden(&path) {
                units.push(path);
            }
        }
        if units.len() == before {
            return Err(usage(format!("--glob {pattern} matches nothing")));
        }
    }
    let by_extension: HashMap<&str, &str> = languages
        .iter()
        .map(|(name, l)| (l.source_extension.as_str(), name.as_str()))
        .collect();
    let mut seen = BTreeSet::new();
    let mut planned = Vec::with_capacity(units.len());
    for path in units {
        let name = display_name(&path);
        if !seen.insert(name.clone()) {
            return Err(usage(format!("{name} is given twice")));
        }
        let mut spec = template.clone();
        collect(&path, &path, &mut spec.files)?;
        if spec.files.is_empty() {
            return Err(usage(format!("{name}: no files in it")));
        }
        if spec.language.is_empty() {
            spec.language = infer_language(&name, &spec.files, &by_extension)?;
        }
        spec.id = job_id(batch, &name);
        planned.push(Planned { name, spec });
    }
    Ok(planned)
}

/// One full job spec per non-blank line (`v`, `id` and `batch` may be left out). Every line is
/// checked before anything is enqueued.
///
/// # Errors
/// The first bad line, by number; two lines with one id.
pub fn from_manifest(path: &Path, batch: &str) -> anyhow::Result<Vec<Planned>> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("reading manifest {}", path.display()))?;
    }
    let source = path.display();
    let mut planned = Vec::new();
    let mut lines_of: HashMap<JobId, usize> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: String| usage(format!("{source}:{n}: {what} (nothing was enqueued)"));
        let mut value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        let obj = value
            .as_object_mut()
            .ok_or_else(|| bad("expected a JSON object (one job spec)".into()))?;
        obj.entry("v").or_insert(PROTOCOL_VERSION.into());
        match obj.get("batch").and_then(|b| b.as_str()) {
            Some(b) if b != batch => {
                return Err(bad(format!(
                    "batch {b:?} differs from the batch id {batch}"
                )))
            }
            _ => {
                obj.insert("batch".into(), batch.into());
            }
        }
        let label = obj
            .get("labels")
            .and_then(|l| l.get(NAME_LABEL))
            .and_then(|n| n.as_str())
            .map(str::to_owned);
        if !obj.contains_key("id") {
            let key = label.clone().unwrap_or_else(|| format!("line {n}"));
            obj.insert("id".into(), job_id(batch, &key).as_str().into());
        }
        let spec = decode_spec(value.to_string().as_bytes()).map_err(|e| bad(e.to_string()))?;
        if let Some(first) = lines_of.insert(spec.id.clone(), n) {
            return Err(bad(format!("job id {} is also on line {first}", spec.id)));
        }
        let name = label.unwrap_or_else(|| spec.id.to_string());
        planned.push(Planned { name, spec });
    }
    if planned.is_empty() {
        return Err(usage(format!("manifest {source} has no jobs")));
    }
    Ok(planned)
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// The path as the user would write it: `./` dropped, `/` separators.
fn display_name(path: &Path) -> String {
    let s = path.to_string_lossy();
    s.strip_prefix("./")
        .unwrap_or(&s)
        .trim_end_matches('/')
        .to_owned()
}

/// The one language whose extension the job's files carry (headers and data files that match
/// no language are ignored).
fn infer_language(
    name: &str,
    files: &BTreeMap<String, String>,
    by_extension: &HashMap<&str, &str>,
) -> anyhow::Result<String> {
    let found: BTreeSet<&str> = files
        .keys()
        .filter_map(|f| Path::new(f).extension()?.to_str())
        .filter_map(|ext| by_extension.get(ext).copied())
        .collect();
    let mut known: Vec<&str> = by_extension.keys().copied().collect();
    known.sort_unstable();
    match found.len() {
        1 => Ok(found.into_iter().next().unwrap_or_default().to_owned()),
        0 => Err(usage(format!(
            "{name}: cannot tell the language (no file ends in .{}); pass --language",
            known.join(", .")
        ))),
        _ => Err(usage(format!(
            "{name}: mixes languages ({}); pass --language",
            found.into_iter().collect::<Vec<_>>().join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_comes_from_the_one_known_extension() {
        let table: HashMap<&str, &str> = [("c", "c"), ("py", "python"), ("cpp", "cpp")].into();
        let files = |names: &[&str]| -> BTreeMap<String, String> {
            names
                .iter()
                .map(|n| (n.to_string(), String::new()))
                .collect()
        };
        let infer = |names: &[&str]| infer_language("job", &files(names), &table);
        assert_eq!(
            infer(&["main.c", "util.h", "README"]).ok().as_deref(),
            Some("c")
        );
        assert_eq!(infer(&["src/x.py"]).ok().as_deref(), Some("python"));
        let unknown = infer(&["notes.txt"]).expect_err("no language");
        assert!(unknown.to_string().contains("pass --language"), "{unknown}");
        let mixed = infer(&["a.c", "b.cpp"]).expect_err("two languages");
        assert!(mixed.to_string().contains("c, cpp"), "{mixed}");
    }
}
