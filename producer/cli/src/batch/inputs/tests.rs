use super::*;
use quayside_common::config::default_languages;
use quayside_common::{JobId, JobKind};

/// A fresh folder holding `files` (paths may have folders).
fn folder(files: &[(&str, &str)]) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "quayside-inputs-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::remove_dir_all(&dir).ok();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    dir
}

fn plan(
    sources: &[PathBuf],
    globs: &[String],
    shared: &[String],
    language: &str,
) -> anyhow::Result<Plan> {
    let template = JobSpec::new(JobKind::Run, language, BTreeMap::new());
    let paths = Paths {
        sources,
        globs,
        shared,
    };
    from_paths(&paths, &template, &default_languages(), "b")
}

/// Job name (without the folder) -> its file names.
fn jobs(plan: &Plan, dir: &Path) -> BTreeMap<String, Vec<String>> {
    let prefix = format!("{}/", display_name(dir));
    plan.jobs
        .iter()
        .map(|p| {
            (
                p.name.strip_prefix(&prefix).unwrap_or(&p.name).to_owned(),
                p.spec.files.keys().cloned().collect(),
            )
        })
        .collect()
}

#[test]
fn a_folders_headers_go_to_each_of_its_sources_and_other_files_become_no_job() {
    let dir = folder(&[
        ("a.c", "#include \"util.h\"\nint main(void){return f();}"),
        ("b.c", "#include \"util.h\"\nint main(void){return 0;}"),
        ("util.h", "static int f(void){return 0;}"),
        ("defs.inc", "1"),
        ("README.md", "notes"),
        ("proj/main.c", "int main(void){return 0;}"),
        ("proj/x.h", ""),
    ]);
    let p = plan(std::slice::from_ref(&dir), &[], &[], "").expect("plan");
    let got = jobs(&p, &dir);
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        got,
        BTreeMap::from([
            ("a.c".into(), names(&["a.c", "defs.inc", "util.h"])),
            ("b.c".into(), names(&["b.c", "defs.inc", "util.h"])),
            ("proj".into(), names(&["main.c", "x.h"])),
        ])
    );
    assert!(p.jobs.iter().all(|j| j.spec.language == "c"));
    assert_eq!(p.skipped, [format!("{}/README.md", display_name(&dir))]);

    // The same under --language c, and through a glob.
    let p = plan(std::slice::from_ref(&dir), &[], &[], "c").expect("plan");
    assert_eq!(jobs(&p, &dir).len(), 3);
    let glob = format!("{}/*", dir.display());
    let p = plan(&[], &[glob], &[], "").expect("plan");
    assert_eq!(jobs(&p, &dir), got);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn no_header_or_data_file_becomes_a_job_and_the_hint_says_what_to_do() {
    let dir = folder(&[
        ("util.h", ""),
        ("notes.txt", ""),
        ("only/x.h", ""),
        ("hdrs/a.h", ""),
    ]);
    let err = |r: anyhow::Result<Plan>| format!("{:#}", r.expect_err("refused"));
    let header = err(plan(&[dir.join("util.h")], &[], &[], ""));
    assert!(
        header.contains("util.h is a header, not a program"),
        "{header}"
    );
    assert!(header.contains("--shared"), "{header}");
    // With --language the header is still a header.
    let header = err(plan(&[dir.join("util.h")], &[], &[], "c"));
    assert!(header.contains("is a header"), "{header}");
    let data = err(plan(&[dir.join("notes.txt")], &[], &[], ""));
    assert!(
        data.contains("no source file of a known language"),
        "{data}"
    );
    assert!(data.contains("--shared"), "{data}");
    // Naming the language does not make a C job out of a file gcc would not build.
    let forced = err(plan(&[dir.join("notes.txt")], &[], &[], "c"));
    assert!(forced.contains("a c job needs a .c file"), "{forced}");
    let project = err(plan(&[dir.join("only")], &[], &[], "c"));
    assert!(project.contains("has no source file"), "{project}");
    let headers_only = err(plan(&[], &[format!("{}/hdrs/*", dir.display())], &[], ""));
    assert!(
        headers_only.contains("has no source file"),
        "{headers_only}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn shared_files_go_to_every_job_and_clashes_are_refused() {
    let dir = folder(&[
        ("subs/a.c", "int main(void){return 0;}"),
        ("subs/b.py", "print(1)"),
        ("lib/common.h", "#define N 3"),
        ("data/in.txt", "1 2"),
        ("other/common.h", ""),
        ("subs2/common.h", ""),
        ("subs2/c.c", ""),
    ]);
    let shared = [
        format!("{}/lib/*.h", dir.display()),
        format!("{}/data", dir.display()),
    ];
    let p = plan(&[dir.join("subs")], &[], &shared, "").expect("plan");
    for job in &p.jobs {
        assert_eq!(job.spec.files["common.h"], "#define N 3", "{}", job.name);
        assert_eq!(job.spec.files["data/in.txt"], "1 2", "{}", job.name);
    }
    let langs: Vec<_> = p.jobs.iter().map(|j| j.spec.language.as_str()).collect();
    assert_eq!(
        langs,
        ["c", "python"],
        "shared files do not change the language"
    );
    let err = |r: anyhow::Result<Plan>| format!("{:#}", r.expect_err("refused"));
    let twice = [
        format!("{}/lib/*.h", dir.display()),
        format!("{}/other/*.h", dir.display()),
    ];
    let e = err(plan(&[dir.join("subs")], &[], &twice, ""));
    assert!(e.contains("two files are named common.h"), "{e}");
    let e = err(plan(&[dir.join("subs2")], &[], &shared[..1], ""));
    assert!(e.contains("its own common.h and a shared common.h"), "{e}");
    let e = err(plan(&[dir.join("subs")], &[], &["/no/such/*.h".into()], ""));
    assert!(e.contains("--shared /no/such/*.h matches nothing"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn ids_follow_the_content_so_an_edit_gets_a_new_id_and_nothing_else_does() {
    let dir = folder(&[
        ("a.c", "int main(void){return 0;}"),
        ("b.c", "int main(void){return 1;}"),
    ]);
    let ids = || -> Vec<JobId> {
        plan(std::slice::from_ref(&dir), &[], &[], "")
            .expect("plan")
            .jobs
            .into_iter()
            .map(|p| p.spec.id)
            .collect()
    };
    let first = ids();
    assert_eq!(ids(), first, "same inputs, same ids");
    std::fs::write(dir.join("b.c"), "int main(void){return 2;}").expect("edit");
    let second = ids();
    assert_eq!(second[0], first[0], "a.c did not change");
    assert_ne!(second[1], first[1], "b.c changed");
    let mut template = JobSpec::new(JobKind::Run, "", BTreeMap::new());
    template.compiler_options = vec!["-O0".into()];
    let paths = Paths {
        sources: std::slice::from_ref(&dir),
        globs: &[],
        shared: &[],
    };
    let flagged = from_paths(&paths, &template, &default_languages(), "b").expect("plan");
    assert!(
        flagged.jobs.iter().all(|p| !second.contains(&p.spec.id)),
        "new flags, new ids"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn language_comes_from_the_one_known_extension() {
    let languages = default_languages();
    let roles = Roles::new("", &languages);
    let files = |names: &[&str]| -> BTreeMap<String, String> {
        names
            .iter()
            .map(|n| (n.to_string(), String::new()))
            .collect()
    };
    let infer = |names: &[&str]| infer_language("job", &files(names), &roles);
    assert_eq!(
        infer(&["main.c", "util.h", "README"]).ok().as_deref(),
        Some("c")
    );
    assert_eq!(infer(&["src/x.py"]).ok().as_deref(), Some("python"));
    let unknown = infer(&["notes.txt"]).expect_err("no language");
    assert!(
        unknown.to_string().contains(".c, .cpp, .go, .js, .py, .rs"),
        "{unknown}"
    );
    let mixed = infer(&["a.c", "b.cpp"]).expect_err("two languages");
    assert!(mixed.to_string().contains("c, cpp"), "{mixed}");
}

#[test]
fn a_language_this_cli_does_not_know_takes_every_file_but_headers() {
    // `--language script` names a language of the worker's own table.
    let dir = folder(&[("one.txt", "print 1"), ("two", "print 2"), ("lib.h", "")]);
    let p = plan(std::slice::from_ref(&dir), &[], &[], "script").expect("plan");
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        jobs(&p, &dir),
        BTreeMap::from([
            ("one.txt".into(), names(&["lib.h", "one.txt"])),
            ("two".into(), names(&["lib.h", "two"])),
        ])
    );
    std::fs::remove_dir_all(&dir).ok();
}
