//! What a test finds on this machine: the Redis the suite runs against, the workspace's built
//! binaries, free loopback ports and folders of a test's own. Every test and harness piece uses these, so there is one
//! way to find each.

use std::path::{Path, PathBuf};

/// The Redis the suite runs against.
pub fn redis_url() -> String {
    std::env::var("E2E_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A binary of the workspace (`quayside`, `quayside-worker`, `quayside-test-worker`, …), built
/// by cargo next to the test executables (`target/<profile>/NAME`).
///
/// # Panics
/// When it is not built, saying how to build it.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .join(name);
    assert!(
        bin.exists(),
        "{} not built: run cargo build --workspace --bins first",
        bin.display()
    );
    bin
}

/// The stdout of a command that must have exited 0 (its stderr is the failure message).
#[track_caller]
pub fn stdout_ok(out: &std::process::Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh folder of this test process's own under the temp dir (`qs-<name>-<pid>`), for a
/// private server's data or a test's files.
pub fn private_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qs-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create private dir");
    dir
}

/// A loopback port nothing listens on right now (the OS picks it; another process may still
/// take it before the caller binds, which tests retry or tolerate).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// [`free_port`] as an address, for a listener setting (`metrics.listen_addr`,
/// `gateway.listen_addr`).
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Runs a command (the built CLI, say) to completion with stdin closed, bounded by `secs`.
pub async fn run_bounded(mut cmd: std::process::Command, secs: u64) -> std::process::Output {
    cmd.stdin(std::process::Stdio::null());
    crate::within(
        secs,
        &format!("{cmd:?}"),
        tokio::process::Command::from(cmd).output(),
    )
    .await
    .expect("run the command")
}

/// `redis-cli -p PORT ARGS…` against a server on 127.0.0.1; its stdout.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
