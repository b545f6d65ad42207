//! The `quayside` CLI as a script would use it: exit codes and `--json` output.

use std::process::Output;

use quayside_e2e::{stdout_ok, TestQueue};

fn cli(q: &TestQueue, args: &[&str]) -> Output {
    q.cli().args(args).output().expect("run quayside")
}

/// `quayside GLOBAL… submit --language script ARGS…`: a script job from the command line.
fn submit(q: &TestQueue, global: &[&str], args: &[&str]) -> Output {
    q.cli()
        .args(global)
        .args(["submit", "--language", "script"])
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
    let out = submit(&q, &[], &["--id", "cli-1", &script]);
    assert_eq!(stdout_ok(&out).trim(), "cli-1");
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

    let out = submit(&q, &["--json"], &["--wait", "--timeout", "20", &failing]);
    assert_eq!(out.status.code(), Some(1), "job ended but did not succeed");
    assert_eq!(json(&out)["exit_code"], 7);

    let out = submit(&q, &["--json"], &["--id", "cli-1", &script]);
    assert_eq!(json(&out)["created"], false, "same id is the same job");

    let out = cli(&q, &["status", "no-such-job"]);
    assert_eq!(out.status.code(), Some(3));
    let out = submit(&q, &[], &["--id", "bad id!", &script]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid job id"));

    let out = cli(&q, &["--json", "stats"]);
    let stats = json(&out);
    assert_eq!(stats["queue"], q.cfg.queue.name.as_str());
    assert_eq!(stats["priorities"].as_array().map(Vec::len), Some(3));

    // The protocol scripts, for clients in other languages to EVAL.
    let out = cli(&q, &["script", "enqueue"]);
    assert_eq!(out.status.code(), Some(0));
    let lua = String::from_utf8_lossy(&out.stdout);
    assert!(
        lua.contains("local P = ARGV[1]") && lua.contains("'XADD'"),
        "{lua}"
    );
    assert_eq!(cli(&q, &["script", "nope"]).status.code(), Some(2));

    let out = cli(&q, &["--json", "dlq", "list"]);
    assert_eq!(json(&out), serde_json::json!([]));
}

#[tokio::test]
async fn stats_table_shows_in_flight_per_worker_and_totals() {
    let q = TestQueue::new("cli-stats");
    let specs = q.jobs(3, "sleep 3000");
    q.producer.enqueue_many(&specs).await.expect("enqueue");
    q.spawn_worker(|c| {
        c.worker.slots = 2;
        c.worker.heartbeat_interval_ms = 5_000;
    });
    let table = quayside_e2e::within(10, "stats to show two jobs in flight", async {
        loop {
            let out = cli(&q, &["stats"]);
            let table = String::from_utf8_lossy(&out.stdout).into_owned();
            let worker = table.lines().find(|l| l.trim_start().starts_with("w0 "));
            if worker.is_some_and(|l| l.split_whitespace().nth(4) == Some("2")) {
                return table;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    let row = |first: &str| -> Vec<String> {
        let line = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(first))
            .unwrap_or_else(|| panic!("no {first} row in:\n{table}"));
        line.split_whitespace().map(str::to_owned).collect()
    };
    assert_eq!(
        row("normal")[1..],
        ["1", "2", "3"],
        "waiting, running, depth:\n{table}"
    );
    assert!(table.contains("in_flight"), "{table}");
    let totals: Vec<String> = table
        .lines()
        .filter(|l| l.split_whitespace().next() == Some("total"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        totals,
        ["total 1 2 3", "total 2 2"],
        "queue and worker totals:\n{table}"
    );
}

#[tokio::test]
async fn check_finds_jobs_whose_entry_was_trimmed_and_repair_queues_them_again() {
    let q = TestQueue::new("cli-check");
    let specs: Vec<_> = (0..3).map(|i| q.job(&format!("print {i}"))).collect();
    let ids = q.enqueue_all(&specs).await;
    let out = cli(&q, &["check"]);
    assert_eq!(out.status.code(), Some(0), "nothing wrong yet");

    // A raw producer trims the stream before any worker ran: the three entries are gone.
    let mut conn = q.conn().await;
    let _: i64 = redis::cmd("XTRIM")
        .arg(q.keys.stream(quayside_common::Priority::Normal))
        .arg("MAXLEN")
        .arg(0)
        .query_async(&mut conn)
        .await
        .expect("XTRIM");
    let out = cli(&q, &["--json", "check"]);
    assert_eq!(out.status.code(), Some(1), "problems found, not repaired");
    let report = json(&out);
    assert_eq!(
        report["counts"]["queued_entry_gone"].as_u64(),
        Some(3),
        "{report}"
    );
    assert_eq!(report["repaired"].as_bool(), Some(false));

    let out = cli(&q, &["check", "--repair"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("repaired 3 problems"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    q.spawn_worker(|_| {});
    let results = q.wait_all(&ids, 20).await;
    assert!(results
        .iter()
        .all(|r| r.status == quayside_common::Status::Succeeded));
    q.assert_settled(&ids).await;
    assert_eq!(cli(&q, &["check"]).status.code(), Some(0));
}
