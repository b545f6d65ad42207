//! What the runner tests share: a readable dump of a run's output, the containers carrying a
//! label on the engine, and the docker CLI for what happens to a sandbox from outside.

use bollard::Docker;
use quayside_common::Status;
use quayside_worker::runner::docker::labelled;
use quayside_worker::runner::RunOutput;

use crate::within;

/// A run's status and streams, for an assertion's message.
pub fn show(out: &RunOutput) -> String {
    format!(
        "{:?} exit={:?} signal={:?}\n--- stdout\n{}\n--- stderr\n{}\n--- compile\n{}",
        out.status,
        out.exit_code,
        out.signal,
        out.stdout.lossy(),
        out.stderr.lossy(),
        out.compile_output.lossy()
    )
}

/// Runs the docker CLI on the shared engine with `args` (`kill ID`, `rm -f ID`, …), which must
/// succeed.
pub fn docker(args: &[&str]) {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(out.status.success(), "docker {args:?}: {out:?}");
}

/// The ids of the shared engine's containers, running or not, that carry `label` (`key` or
/// `key=value`), through the docker CLI (for tests with no engine client of their own).
pub fn docker_ps(label: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label={label}"))
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Asserts how a run ended: its status, exit code and signal, with the whole run as the message.
#[track_caller]
pub fn assert_ended(out: &RunOutput, status: Status, exit_code: Option<i64>, signal: Option<i32>) {
    assert_eq!(
        (out.status, out.exit_code, out.signal),
        (status, exit_code, signal),
        "{}",
        show(out)
    );
}

/// The ids of the containers, running or not, that carry `label` (`key=value`).
pub async fn containers(docker: &Docker, label: &str) -> Vec<String> {
    within(10, "list containers", labelled(docker, label))
        .await
        .expect("list containers")
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}
