//! The `quayside` CLI as a script would use it: exit codes and `--json` output.

use std::process::{Command, Output};

use quayside_e2e::TestQueue;

fn cli(q: &TestQueue, args: &[&str]) -> Output {
    let exe = std::env::current_exe().expect("exe");
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .join("quayside");
    assert!(
        bin.exists(),
        "{} not built: run cargo test --workspace",
        bin.display()
    );
    Command::new(bin)
        .args([
            "--redis-url",
            &q.cfg.redis.url,
            "--queue",
            &q.cfg.queue.name,
        ])
        .args(args)
        .output()
        .expect("run quayside")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test]
async fn exit_codes_and_json_output_scripts_can_rely_on() {
    let q = TestQueue::new("cli");
    let script = q.path("job.txt");
    std::fs::write(&script, "print hi from cli\n").expect("write");
    let failing = q.path("fail.txt");
    std::fs::write(&failing, "exit 7\n").expect("write");

    // No worker yet: waiting times out with code 4.
    let out = cli(
        &q,
        &["submit", "--language", "script", "--id", "cli-1", &script],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "cli-1");
    let out = cli(&q, &["wait", "cli-1", "--timeout", "0.3"]);
    assert_eq!(out.status.code(), Some(4));

    q.spawn_worker(|_| {});
    let out = cli(&q, &["--json", "wait", "cli-1", "--timeout", "20"]);
    assert_eq!(out.status.code(), Some(0));
    let r = json(&out);
    assert_eq!(
        (r["status"].as_str(), r["stdout"]["data"].as_str()),
        (Some("succeeded"), Some("hi from cli\n"))
    );

    let out = cli(
        &q,
        &[
            "--json",
            "submit",
            "--language",
            "script",
            "--wait",
            "--timeout",
            "20",
            &failing,
        ],
    );
    assert_eq!(out.status.code(), Some(1), "job ended but did not succeed");
    assert_eq!(json(&out)["exit_code"], 7);

    let out = cli(
        &q,
        &[
            "--json",
            "submit",
            "--language",
            "script",
            "--id",
            "cli-1",
            &script,
        ],
    );
    assert_eq!(json(&out)["created"], false, "same id is the same job");

    let out = cli(&q, &["status", "no-such-job"]);
    assert_eq!(out.status.code(), Some(3));
    let out = cli(
        &q,
        &["submit", "--language", "script", "--id", "bad id!", &script],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid job id"));

    let out = cli(&q, &["--json", "stats"]);
    let stats = json(&out);
    assert_eq!(stats["queue"], q.cfg.queue.name.as_str());
    assert_eq!(stats["priorities"].as_array().map(Vec::len), Some(3));

    let out = cli(&q, &["--json", "dlq", "list"]);
    assert_eq!(json(&out), serde_json::json!([]));
}
