//! What a batch is made of: folders (one job per source file, one per sub-folder project, the
//! folder's headers shared with its source files), glob matches, or a JSON-lines manifest, each
//! job with a name and an id derived from the batch id, that name and the job's content, so
//! submitting the same inputs under the same batch id again adds nothing and an edited one runs
//! again. `--shared` files are added to every job.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use quayside_common::config::LanguageConfig;
use quayside_common::JobSpec;
use quayside_producer::batch_member_id as job_id;

use crate::job_flags::{check_has_source, collect};
use crate::usage;

pub use manifest::from_manifest;
pub use quayside_producer::NAME_LABEL;

mod manifest;

/// Extensions of files that are included by sources, never built alone: in a folder or glob
/// they go to every job of that folder or glob instead of becoming jobs.
const HEADERS: [&str; 4] = ["h", "hpp", "hh", "inc"];

/// One job of the batch, with the name reports use for it.
#[derive(Debug)]
pub struct Planned {
    pub name: String,
    pub spec: JobSpec,
}

/// The jobs, and the files of folders and globs that became no job (neither a source nor a
/// header), for the caller to mention.
#[derive(Debug)]
pub struct Plan {
    pub jobs: Vec<Planned>,
    pub skipped: Vec<String>,
}

/// What the batch's paths are.
pub struct Paths<'a> {
    /// Folders or files given on the command line.
    pub sources: &'a [PathBuf],
    /// `--glob` patterns: each match is a file or folder of the batch.
    pub globs: &'a [String],
    /// `--shared` patterns: files (or folders) added to every job.
    pub shared: &'a [String],
}

/// What a file is to a batch.
#[derive(Debug, PartialEq)]
enum Role {
    Source,
    Header,
    Other,
}

/// Tells sources from headers and other files: a source ends in the extension of the job
/// language (`--language`), or of any known language when none is given.
struct Roles<'a> {
    /// Extension -> language, for languages that have one.
    by_extension: HashMap<&'a str, &'a str>,
    /// `--language` as the table knows it; `None` when not given.
    chosen: Option<&'a LanguageConfig>,
    /// `--language` names a language this CLI's table does not know (the worker's may): every
    /// file is taken as a source, as it cannot be told.
    unknown_language: bool,
}

impl<'a> Roles<'a> {
    fn new(language: &str, languages: &'a BTreeMap<String, LanguageConfig>) -> Self {
        let chosen = languages.get(language);
        Self {
            by_extension: languages
                .iter()
                .filter(|(_, l)| !l.source_extension.is_empty())
                .map(|(name, l)| (l.source_extension.as_str(), name.as_str()))
                .collect(),
            chosen,
            unknown_language: !language.is_empty() && chosen.is_none(),
        }
    }

    fn of(&self, path: &Path) -> Role {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match self.chosen {
            Some(l) if !ext.is_empty() && l.source_extension == ext => Role::Source,
            _ if HEADERS.contains(&ext) => Role::Header,
            // A language without an extension (or one only the worker knows) takes any file.
            Some(l) if l.source_extension.is_empty() => Role::Source,
            _ if self.unknown_language => Role::Source,
            Some(_) => Role::Other,
            None if self.by_extension.contains_key(ext) => Role::Source,
            None => Role::Other,
        }
    }

    /// The known extensions, for messages: `.c, .cpp, .py`.
    fn known(&self) -> String {
        let mut known: Vec<&str> = self.by_extension.keys().copied().collect();
        known.sort_unstable();
        format!(".{}", known.join(", ."))
    }
}

/// A job to be: the path it is made of and the headers shared with it.
struct Unit {
    path: PathBuf,
    /// Index into the header groups of its folder or glob.
    group: Option<usize>,
}

/// One job per source file directly in a folder and one per sub-folder; a file source is one
/// job and a glob match is one job per source file or folder. A folder's (or glob's) headers
/// go to each of its file jobs. `template` carries the job flags (and tests); the language is
/// inferred from extensions when it has none.
///
/// # Errors
/// Unreadable sources, a pattern matching nothing, a folder or glob without a source file, a
/// header or other non-source file named alone, two jobs of one name, a language that cannot be
/// inferred, a job without a source file of its language, a shared file clashing with a job's.
pub fn from_paths(
    paths: &Paths<'_>,
    template: &JobSpec,
    languages: &BTreeMap<String, LanguageConfig>,
    batch: &str,
) -> anyhow::Result<Plan> {
    let roles = Roles::new(&template.language, languages);
    let mut units: Vec<Unit> = Vec::new();
    let mut groups: Vec<BTreeMap<String, String>> = Vec::new();
    let mut skipped = Vec::new();
    // Sorts a folder's entries or a glob's matches into jobs, shared headers and the rest.
    let mut group =
        |what: String, found: Vec<PathBuf>, units: &mut Vec<Unit>| -> anyhow::Result<()> {
            let index = groups.len();
            let mut headers = BTreeMap::new();
            let before = units.len();
            for path in found {
                // A sub-folder is a project of its own, with its own headers.
                if path.is_dir() {
                    units.push(Unit { path, group: None });
                    continue;
                }
                match roles.of(&path) {
                    Role::Source => units.push(Unit {
                        path,
                        group: Some(index),
                    }),
                    Role::Header => collect(&path, &path, &mut headers)?,
                    Role::Other => skipped.push(display_name(&path)),
                }
            }
            if units.len() == before {
                return Err(usage(format!(
                    "{what} has no source file (files ending in {}); headers and data files go \
                 with the sources beside them or, for every job, with --shared",
                    roles.known()
                )));
            }
            groups.push(headers);
            Ok(())
        };
    for source in paths.sources {
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
            group(format!("folder {}", source.display()), entries, &mut units)?;
        } else if source.exists() {
            if roles.of(source) == Role::Header {
                let name = display_name(source);
                return Err(usage(format!(
                    "{name} is a header, not a program: to give it to every job, pass \
                     --shared {name} (a folder's headers go to its source files by themselves)"
                )));
            }
            units.push(Unit {
                path: source.clone(),
                group: None,
            });
        } else {
            return Err(usage(format!(
                "{}: no such file or folder",
                source.display()
            )));
        }
    }
    for pattern in paths.globs {
        let matches = glob::glob(pattern).map_err(|e| usage(format!("--glob {pattern}: {e}")))?;
        let mut found = Vec::new();
        for m in matches {
            let path = m.with_context(|| format!("--glob {pattern}"))?;
            if !is_hidden(&path) {
                found.push(path);
            }
        }
        if found.is_empty() {
            return Err(usage(format!("--glob {pattern} matches nothing")));
        }
        group(format!("--glob {pattern}"), found, &mut units)?;
    }
    let shared = shared_files(paths.shared)?;
    let mut seen = BTreeSet::new();
    let mut planned = Vec::with_capacity(units.len());
    for unit in units {
        let name = display_name(&unit.path);
        if !seen.insert(name.clone()) {
            return Err(usage(format!("{name} is given twice")));
        }
        let mut spec = template.clone();
        collect(&unit.path, &unit.path, &mut spec.files)?;
        if spec.files.is_empty() {
            return Err(usage(format!("{name}: no files in it")));
        }
        if spec.language.is_empty() {
            spec.language = infer_language(&name, &spec.files, &roles)?;
        }
        check_has_source(&name, &spec, languages)?;
        let headers = unit.group.map(|g| &groups[g]).into_iter().flatten();
        for (file, text) in headers.chain(&shared) {
            if spec.files.insert(file.clone(), text.clone()).is_some() {
                return Err(usage(format!(
                    "{name}: its own {file} and a shared {file} (a header beside it or \
                     --shared) clash; rename one"
                )));
            }
        }
        spec.id = job_id(batch, &name, &spec);
        planned.push(Planned { name, spec });
    }
    Ok(Plan {
        jobs: planned,
        skipped,
    })
}

/// The files `--shared` patterns match: a file by its name, a folder as itself with its files
/// under it (`data/in.txt`).
fn shared_files(patterns: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut files = BTreeMap::new();
    for pattern in patterns {
        let matches = glob::glob(pattern).map_err(|e| usage(format!("--shared {pattern}: {e}")))?;
        let mut any = false;
        for m in matches {
            let path = m.with_context(|| format!("--shared {pattern}"))?;
            any = true;
            let root = if path.is_dir() {
                path.parent().unwrap_or(Path::new("")).to_path_buf()
            } else {
                path.clone()
            };
            let mut found = BTreeMap::new();
            collect(&root, &path, &mut found)?;
            for (name, text) in found {
                if files.insert(name.clone(), text).is_some() {
                    return Err(usage(format!(
                        "--shared: two files are named {name}; every job gets one file of a name"
                    )));
                }
            }
        }
        if !any {
            return Err(usage(format!("--shared {pattern} matches nothing")));
        }
    }
    Ok(files)
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
    roles: &Roles<'_>,
) -> anyhow::Result<String> {
    let found: BTreeSet<&str> = files
        .keys()
        .filter_map(|f| Path::new(f).extension()?.to_str())
        .filter_map(|ext| roles.by_extension.get(ext).copied())
        .collect();
    match found.len() {
        1 => Ok(found.into_iter().next().unwrap_or_default().to_owned()),
        0 => Err(usage(format!(
            "{name}: no source file of a known language (files ending in {}); headers and \
             data files go to every job with --shared; a language of the worker's own table \
             is named with --language",
            roles.known()
        ))),
        _ => Err(usage(format!(
            "{name}: mixes languages ({}); pass --language",
            found.into_iter().collect::<Vec<_>>().join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests;
