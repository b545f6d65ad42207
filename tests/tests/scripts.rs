//! `scripts/lib.sh`'s step runner, as the scripts use it: quiet steps print one line each and
//! keep their output in the run's log folder; a failing step stops the script and shows its
//! log's path and tail (cargo test steps: every failing test's output); `--verbose` prints
//! everything; a failing command inside a step function stops the step.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Runs `body` as a script that sourced lib.sh (with `set -euo pipefail`, as every script
/// does), with `args` as its arguments, `QUAYSIDE_VERBOSE` set to `verbose` if given, and its
/// log folder under a fresh temporary folder (returned).
fn script(name: &str, body: &str, args: &[&str], verbose: Option<&str>) -> (Output, PathBuf) {
    let dir = std::env::temp_dir().join(format!("qs-scripts-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(format!("{name}.sh"));
    let lib = repo().join("scripts/lib.sh");
    let text = format!(
        "#!/usr/bin/env bash\n# {name}: a test script\nset -euo pipefail\nsource '{}'\nparse_flags \"$@\"\n{body}\n",
        lib.display()
    );
    std::fs::write(&path, text).expect("write script");
    let mut cmd = Command::new("bash");
    cmd.arg(&path)
        .args(args)
        .env("TMPDIR", &dir)
        .env_remove("SCRIPT_LOG_DIR");
    match verbose {
        Some(v) => cmd.env("QUAYSIDE_VERBOSE", v),
        None => cmd.env_remove("QUAYSIDE_VERBOSE"),
    };
    (cmd.output().expect("run bash"), dir)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The one log folder the run made (`/tmp/quayside-<script>.XXXXXX`, here under `dir`).
fn log_dir(dir: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "one log folder per run: {dirs:?}");
    dirs[0].clone()
}

const NOISY: &str = "noisy() { for i in $(seq 500); do echo \"line $i\"; done; }";

#[test]
fn quiet_steps_print_one_line_each_and_keep_their_output_in_the_log_folder() {
    // What is installed already is not installed again, silently.
    let body = format!(
        "{NOISY}\nensure_packages bash:bash coreutils\n\
         step 'first step' noisy\nstep 'second step' noisy\necho done"
    );
    let (out, dir) = script("quiet", &body, &[], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "the log folder, then one line per step: {err}"
    );
    assert!(lines[0].starts_with("==> logs: "), "{err}");
    assert!(
        lines[1].starts_with("==> first step") && lines[1].ends_with('s'),
        "name and time: {err}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
    let logs = log_dir(&dir);
    let first = std::fs::read_to_string(logs.join("quiet-01-first-step.log")).expect("log");
    assert_eq!(first.lines().count(), 500);
    assert!(logs.join("quiet-02-second-step.log").exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_failing_step_stops_the_script_and_shows_its_log_path_and_tail() {
    let body = format!(
        "{NOISY}\nfails() {{ noisy; echo 'the real error' >&2; false; echo 'never printed'; }}\n\
         step 'doomed step' fails\necho 'after the failure'"
    );
    let (out, dir) = script("failing", &body, &[], None);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the script stops with the step's status"
    );
    let err = stderr(&out);
    let log = log_dir(&dir).join("failing-01-doomed-step.log");
    assert!(
        err.contains("!! doomed step failed after")
            && err.contains(&format!("(exit 1); log: {}", log.display())),
        "{err}"
    );
    assert!(
        err.contains("the real error"),
        "the tail shows the error: {err}"
    );
    assert!(
        err.contains("line 500") && !err.contains("line 400\n"),
        "only the tail: {err}"
    );
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(
        !logged.contains("never printed"),
        "errexit holds inside the step's function"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("after the failure"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_failing_test_step_shows_every_failing_test_but_not_the_passing_ones() {
    // What `cargo test` prints: many passing tests, one failure with its captured output far
    // from the end, the summary.
    let body = r#"fake_cargo_test() {
  echo 'running 302 tests'
  echo 'test crashing::one ... FAILED'
  for i in $(seq 300); do echo "test passing::t$i ... ok"; done
  echo 'test skipped ... ignored'
  printf '\nfailures:\n\n---- crashing::one stdout ----\nthread panicked at tests/x.rs:1:1:\nassertion failed: the detail\n\nfailures:\n    crashing::one\n\n'
  echo 'test result: FAILED. 300 passed; 1 failed; 1 ignored'
  for i in $(seq 60); do echo "   Doc-tests filler $i"; done
  echo 'error: 1 target failed:'
  return 101
}
step --tests 'cargo test' fake_cargo_test"#;
    let (out, dir) = script("tests", body, &[], None);
    let _ = std::fs::remove_dir_all(dir);
    assert_eq!(out.status.code(), Some(101));
    let err = stderr(&out);
    for wanted in [
        "test crashing::one ... FAILED",
        "---- crashing::one stdout ----",
        "assertion failed: the detail",
        "test result: FAILED. 300 passed; 1 failed; 1 ignored",
        "error: 1 target failed:",
    ] {
        assert!(err.contains(wanted), "{wanted:?} missing: {err}");
    }
    assert!(
        !err.contains("passing::t1 ... ok") && !err.contains("... ignored"),
        "{err}"
    );
}

#[test]
fn verbose_prints_everything_and_makes_no_log_folder() {
    let body = format!("{NOISY}\nstep 'loud step' noisy");
    for (name, args, env) in [
        ("verbose-flag", &["--verbose"][..], None),
        ("verbose-env", &[][..], Some("1")),
    ] {
        let (out, dir) = script(name, &body, args, env);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("line 1\n") && stdout.contains("line 500\n"),
            "{name}"
        );
        assert!(stderr(&out).contains("==> loud step"), "{name}");
        let made = std::fs::read_dir(&dir)
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .count();
        assert_eq!(made, 0, "{name}: no log folder");
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Every `QUAYSIDE_*` variable the scripts read that is not a config key (no `__`), e.g.
/// `QUAYSIDE_VERBOSE` or `QUAYSIDE_IMAGE_CACHE`, may be set in the shell that starts the
/// worker and the CLI: they must not take it for an unknown config key and refuse to start.
#[test]
fn the_scripts_own_quayside_variables_do_not_stop_the_worker_or_the_cli() {
    let mut names = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(repo().join("scripts")).expect("scripts/") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("script");
        for (at, _) in text.match_indices("QUAYSIDE_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !name.contains("__") && name.len() > "QUAYSIDE_".len() {
                names.insert(name);
            }
        }
    }
    assert!(names.contains("QUAYSIDE_VERBOSE"), "{names:?}");
    for name in &names {
        for (bin, args) in [
            ("quayside-worker", &["--print-config"][..]),
            ("quayside", &["script", "finish"][..]),
        ] {
            let out = Command::new(quayside_e2e::bin_path(bin))
                .args(args)
                .env(name, "1")
                .output()
                .expect("run");
            assert!(
                out.status.success(),
                "{bin} with {name}=1: {}",
                stderr(&out)
            );
        }
    }
}
