//! The sandbox keys each backend had of its own before `runner.sandbox` held them once
//! (`runner.docker.user`, `runner.kubernetes.seccomp`, …). Configs and deployments written for
//! them keep working: each is read as the `runner.sandbox` key it became, source by source, so
//! precedence stays defaults < file < environment whichever name a source uses.

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

/// Each former key and the `runner.sandbox` key it is read as.
const FORMER_KEYS: [(&str, &str); 14] = [
    ("runner.docker.user", "runner.sandbox.user"),
    ("runner.docker.uid_range", "runner.sandbox.uid_range"),
    ("runner.docker.seccomp", "runner.sandbox.seccomp"),
    ("runner.docker.tmpfs_bytes", "runner.sandbox.work_dir_bytes"),
    (
        "runner.docker.max_file_bytes",
        "runner.sandbox.max_file_bytes",
    ),
    (
        "runner.docker.max_open_files",
        "runner.sandbox.max_open_files",
    ),
    (
        "runner.docker.api_timeout_ms",
        "runner.sandbox.api_timeout_ms",
    ),
    ("runner.kubernetes.user", "runner.sandbox.user"),
    ("runner.kubernetes.uid_range", "runner.sandbox.uid_range"),
    ("runner.kubernetes.seccomp", "runner.sandbox.seccomp"),
    (
        "runner.kubernetes.work_dir_bytes",
        "runner.sandbox.work_dir_bytes",
    ),
    (
        "runner.kubernetes.max_file_bytes",
        "runner.sandbox.max_file_bytes",
    ),
    (
        "runner.kubernetes.max_open_files",
        "runner.sandbox.max_open_files",
    ),
    (
        "runner.kubernetes.api_timeout_ms",
        "runner.sandbox.api_timeout_ms",
    ),
];

/// A source (file, environment) whose former keys are read as their `runner.sandbox` keys.
pub(in crate::config) struct FormerKeys<P>(pub P);

impl<P: Provider> Provider for FormerKeys<P> {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut data = self.0.data()?;
        for dict in data.values_mut() {
            rename(dict).map_err(Error::from)?;
        }
        Ok(data)
    }

    fn profile(&self) -> Option<Profile> {
        self.0.profile()
    }
}

/// Moves each former key of one source to its `runner.sandbox` key. Two names of one setting
/// with different values in the same source (say `runner.docker.user` and
/// `runner.kubernetes.user`, which each backend once read on its own) are refused: one of them
/// would silently lose.
fn rename(dict: &mut Dict) -> Result<(), String> {
    for (former, key) in FORMER_KEYS {
        let Some(value) = take(dict, former) else {
            continue;
        };
        match find(dict, key) {
            Some(set) if *set != value => {
                return Err(format!(
                    "{former} is read as {key}, which this source also sets to another value: \
                     set {key} once, for both backends"
                ));
            }
            _ => insert(dict, key, value),
        }
    }
    Ok(())
}

fn find<'a>(dict: &'a Dict, path: &str) -> Option<&'a Value> {
    match path.split_once('.') {
        None => dict.get(path),
        Some((head, rest)) => match dict.get(head)? {
            Value::Dict(_, inner) => find(inner, rest),
            _ => None,
        },
    }
}

fn take(dict: &mut Dict, path: &str) -> Option<Value> {
    match path.split_once('.') {
        None => dict.remove(path),
        Some((head, rest)) => match dict.get_mut(head)? {
            Value::Dict(_, inner) => take(inner, rest),
            _ => None,
        },
    }
}

/// Sets `path`, making the sections on the way; a section that is not a table is left for
/// extraction to refuse with its type error.
fn insert(dict: &mut Dict, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            dict.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let section = dict
                .entry(head.to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = section {
                insert(inner, rest, value);
            }
        }
    }
}
