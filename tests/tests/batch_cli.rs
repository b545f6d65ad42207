//! `quayside batch` as CI and people use it: a 500-job mixed batch through real Docker workers
//! with its summary, JUnit file and JSON lines; the progress bar under a pseudo-terminal and
//! plain lines without one; status from another process; cancel; idempotent re-submits; a bad
//! manifest line; Ctrl-C and `--timeout` leaving the batch running.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use quayside_common::Status;
use quayside_e2e::{run_bounded as run, within, TestQueue};
use quayside_producer::BatchStatus;

/// The batch's counters from Redis.
async fn counters(q: &TestQueue, batch: &str) -> Option<BatchStatus> {
    q.producer.batch_status(batch).await.expect("batch status")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, body).expect("write source");
}

/// A JUnit file as CI reads it: the testsuite's attributes and its testcases.
struct JUnit {
    suite: HashMap<String, String>,
    cases: Vec<Case>,
}

struct Case {
    name: String,
    time: f64,
    /// `(failure|error|skipped, message, body)`; `None` for a pass.
    verdict: Option<(String, String, String)>,
}

fn read_junit(path: &Path) -> JUnit {
    let xml = std::fs::read_to_string(path).expect("JUnit file");
    let doc = roxmltree::Document::parse(&xml).expect("JUnit is well-formed XML");
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .expect("a testsuite");
    let cases = suite
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|c| Case {
            name: c.attribute("name").expect("testcase name").to_owned(),
            time: c
                .attribute("time")
                .and_then(|t| t.parse().ok())
                .expect("time"),
            verdict: c
                .children()
                .find(|n| {
                    ["failure", "error", "skipped"]
                        .iter()
                        .any(|t| n.has_tag_name(*t))
                })
                .map(|v| {
                    let message = v.attribute("message").unwrap_or_default().to_owned();
                    let body = v.text().unwrap_or_default().to_owned();
                    (v.tag_name().name().to_owned(), message, body)
                }),
        })
        .collect();
    JUnit {
        suite: suite
            .attributes()
            .map(|a| (a.name().to_owned(), a.value().to_owned()))
            .collect(),
        cases,
    }
}

/// What each job of the mixed batch is, and what it must end as.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    PyOk,
    COk,
    CBroken,
    PyExit3,
    PySpin,
}

impl Kind {
    fn of(i: usize) -> Self {
        match i % 25 {
            1 | 2 => Self::CBroken,
            3 => Self::PyExit3,
            4 => Self::PySpin,
            5 => Self::COk,
            _ => Self::PyOk,
        }
    }

    fn status(self) -> &'static str {
        match self {
            Self::PyOk | Self::COk => "succeeded",
            Self::CBroken => "compile_error",
            Self::PyExit3 => "failed",
            Self::PySpin => "timed_out",
        }
    }

    fn spec(self, i: usize) -> serde_json::Value {
        let (language, file, source) = match self {
            Self::PyOk => ("python", "main.py", format!("print({i})\n")),
            Self::COk => (
                "c",
                "main.c",
                format!(
                    "#include <stdio.h>\nint main(void) {{ printf(\"c{i}\\n\"); return 0; }}\n"
                ),
            ),
            Self::CBroken => (
                "c",
                "main.c",
                format!("int main(void) {{ return missing_{i}; }}\n"),
            ),
            Self::PyExit3 => (
                "python",
                "main.py",
                "import sys\nprint('giving up', file=sys.stderr)\nsys.exit(3)\n".to_owned(),
            ),
            Self::PySpin => ("python", "main.py", "while True:\n    pass\n".to_owned()),
        };
        let run_ms = if self == Self::PySpin { 300 } else { 10_000 };
        serde_json::json!({
            "kind": "run",
            "language": language,
            "files": { file: source },
            "limits": { "run_wall_time_ms": run_ms },
            "labels": { "name": format!("job-{i:03}-{self:?}") },
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_mixed_jobs_end_with_a_complete_summary_junit_file_and_json_lines() {
    const N: usize = 500;
    let q = TestQueue::new("batch-500");
    for _ in 0..2 {
        q.spawn_real_worker(|c| {
            c.worker.slots = 3;
            c.worker.lease_ms = 10_000;
        });
    }
    let manifest = q.dir.join("jobs.jsonl");
    let mut lines = String::new();
    let mut expected: BTreeMap<String, Kind> = BTreeMap::new();
    for i in 0..N {
        let kind = Kind::of(i);
        let spec = kind.spec(i);
        expected.insert(spec["labels"]["name"].as_str().expect("name").into(), kind);
        lines.push_str(&format!("{spec}\n"));
    }
    std::fs::write(&manifest, lines).expect("manifest");
    let junit = q.dir.join("junit.xml");

    let started = Instant::now();
    let mut cmd = q.cli();
    cmd.args(["--json", "batch", "--batch-id", "mixed", "--wait"])
        .arg("--manifest")
        .arg(&manifest)
        .arg("--junit")
        .arg(&junit);
    let out = run(cmd, 300).await;
    let took = started.elapsed();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "some jobs failed: {stderr}");

    // Without a terminal, progress is plain lines, at most one per 5 s (plus first and last).
    assert!(
        !stderr.contains('\u{1b}') && !stderr.contains('\r'),
        "{stderr:?}"
    );
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("batch mixed: ") && l.contains(" ended: "))
        .collect();
    assert!(progress.len() >= 2, "{stderr}");
    assert!(
        progress.len() as u64 <= took.as_secs() / 5 + 3,
        "{} lines in {took:?}",
        progress.len()
    );
    let last = progress.last().expect("a last line");
    assert!(
        last.starts_with("batch mixed: 500/500 ended: 420 ok, 80 failed"),
        "{last}"
    );

    // JSON lines: exactly one per job, nothing else on stdout.
    let stdout = text(&out.stdout);
    let mut seen_ids = HashSet::new();
    let mut by_name: HashMap<String, serde_json::Value> = HashMap::new();
    for line in stdout.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(seen_ids.insert(v["id"].as_str().expect("id").to_owned()));
        assert_eq!(v["batch"], "mixed");
        by_name.insert(v["name"].as_str().expect("name").to_owned(), v);
    }
    assert_eq!((seen_ids.len(), by_name.len()), (N, N));
    let members = q.producer.batch_jobs("mixed").await.expect("members");
    assert_eq!(
        members
            .iter()
            .map(|id| id.to_string())
            .collect::<HashSet<_>>(),
        seen_ids
    );
    for (name, kind) in &expected {
        let v = &by_name[name];
        assert_eq!(v["status"], kind.status(), "{name}: {v}");
        match kind {
            Kind::PyExit3 => {
                assert_eq!(v["exit_code"], 3, "{name}");
                assert_eq!(v["result"]["stderr"]["data"], "giving up\n");
            }
            Kind::CBroken => {
                let compiler = v["result"]["compile_output"]["data"].as_str().unwrap_or("");
                assert!(compiler.contains("missing_"), "{name}: {compiler}");
            }
            Kind::COk | Kind::PyOk => assert_eq!(v["exit_code"], 0, "{name}"),
            Kind::PySpin => assert!(v["duration_ms"].as_u64() >= Some(300), "{v}"),
        }
    }

    // JUnit: one testcase per job, failures exactly where jobs did not succeed.
    let report = read_junit(&junit);
    let counts =
        ["name", "tests", "failures", "errors", "skipped"].map(|k| report.suite[k].as_str());
    assert_eq!(counts, ["mixed", "500", "80", "0", "0"]);
    assert_eq!(report.cases.len(), N);
    let mut names = HashSet::new();
    for case in report.cases {
        let kind = expected[&case.name];
        let name = case.name;
        match (kind.status(), case.verdict) {
            ("succeeded", None) => {}
            ("succeeded", Some(v)) => panic!("{name} succeeded but is a {v:?}"),
            (status, None) => panic!("{name} ended {status} but has no failure"),
            (status, Some((tag, message, body))) => {
                assert_eq!(tag, "failure", "{name}");
                assert!(message.starts_with(status), "{name}: {message}");
                if kind == Kind::CBroken {
                    assert!(body.contains("error"), "{name}: {body}");
                }
            }
        }
        assert!(case.time > 0.0 && case.time < 60.0, "{name}: {}", case.time);
        names.insert(name);
    }
    assert_eq!(names.len(), N, "testcase names are the job names");

    // From another process, after the waiter exited: counters and the summary from Redis.
    let mut cmd = q.cli();
    cmd.args(["--json", "batch", "status", "mixed"]);
    let status: serde_json::Value =
        serde_json::from_slice(&run(cmd, 30).await.stdout).expect("json");
    assert_eq!(status["done"], true);
    assert_eq!(
        status["by_status"],
        serde_json::json!({"succeeded": 420, "compile_error": 40, "failed": 20, "timed_out": 20})
    );
    // And listed among the newest batches, as a table and as JSON.
    let mut cmd = q.cli();
    cmd.args(["--json", "batch", "list"]);
    let list: serde_json::Value = serde_json::from_slice(&run(cmd, 30).await.stdout).expect("json");
    assert_eq!(list[0]["id"], "mixed", "{list}");
    assert_eq!(
        (list[0]["total"].clone(), list[0]["done"].clone()),
        (500.into(), true.into())
    );
    let mut cmd = q.cli();
    cmd.args(["batch", "list"]);
    let table = text(&run(cmd, 30).await.stdout);
    let row = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(
        row,
        ["mixed", "default", "done", "500", "420", "80", "0", "0"],
        "{table}"
    );

    let mut cmd = q.cli();
    cmd.args(["batch", "wait", "mixed", "--slowest", "3"]);
    let out = run(cmd, 60).await;
    assert_eq!(out.status.code(), Some(1));
    let summary = text(&out.stdout);
    for row in [
        "compile_error         40",
        "failed                20",
        "succeeded            420",
        "timed_out             20",
        "total                500",
        "not succeeded: 80",
        "      | giving up",
    ] {
        assert!(summary.contains(row), "missing {row:?} in:\n{summary}");
    }
    let slowest = summary.split("slowest").nth(1).expect("slowest section");
    assert_eq!(
        slowest
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .count(),
        3
    );
    eprintln!("500 mixed jobs: submit to summary in {took:?}");
    q.assert_settled(&members).await;
}

/// Twelve script-runner jobs in a folder, one of them failing.
fn small_folder(q: &TestQueue, name: &str) -> String {
    let dir = q.dir.join(name);
    for i in 0..11 {
        write(&dir, &format!("ok{i:02}.txt"), "sleep 150\nprint ok\n");
    }
    write(&dir, "bad.txt", "sleep 100\nexit 4\n");
    dir.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_is_a_redrawn_bar_on_a_terminal() {
    let q = TestQueue::new("batch-tty");
    q.spawn_worker(|c| c.worker.slots = 2);
    let dir = small_folder(&q, "jobs");
    let args = format!("batch --language script --batch-id tty --wait {dir}");
    let script = q.cli_on_terminal("xterm", &args);
    let out = run(script, 60).await;
    let screen = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "one job failed: {screen:?}");
    assert!(
        screen.contains("\u{1b}[2K"),
        "the bar redraws its line: {screen:?}"
    );
    let frames = screen.matches("/12 ").count();
    assert!(frames >= 3, "{frames} frames: {screen:?}");
    assert!(
        screen.contains("12/12 11 ok, 1 failed, 0 running, 0 queued"),
        "{screen:?}"
    );
    assert!(screen.contains("jobs/s"), "{screen:?}");
    assert!(
        screen.contains("  failed          "),
        "live failure line: {screen:?}"
    );
    assert!(
        screen.contains("not succeeded: 1"),
        "the summary follows: {screen:?}"
    );

    // A terminal that cannot redraw gets the plain lines.
    let script = q.cli_on_terminal("dumb", "batch wait tty");
    let screen = text(&run(script, 60).await.stdout);
    assert!(!screen.contains('\u{1b}'), "{screen:?}");
    assert!(
        screen.contains("batch tty: 12/12 ended: 11 ok, 1 failed"),
        "{screen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn resubmits_are_idempotent_and_cancel_ends_what_is_queued() {
    let q = TestQueue::new("batch-cancel");
    let dir = small_folder(&q, "jobs");
    // `quayside --json batch --language script --batch-id again` with these inputs, as JSON.
    let submit = |inputs: &[&str]| {
        let mut c = q.cli();
        c.args(["--json", "batch", "--language", "script"])
            .args(["--batch-id", "again"])
            .args(inputs);
        c
    };
    let all = format!("{dir}/*.txt");
    let some = format!("{dir}/ok0*.txt");
    // The folder and the glob name the same files: two jobs of one name are refused.
    let out = run(submit(&[&dir, "--glob", &some]), 30).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is given twice"));
    let nothing = counters(&q, "again").await;
    assert_eq!(nothing, None);

    let json =
        |out: Output| -> serde_json::Value { serde_json::from_slice(&out.stdout).expect("json") };
    let first = json(run(submit(&[&dir]), 30).await);
    assert_eq!(
        first,
        serde_json::json!({"batch": "again", "jobs": 12, "created": 12})
    );
    let second = json(run(submit(&[&dir]), 30).await);
    assert_eq!(second["created"], 0, "same batch id and inputs: same jobs");
    // Ids come from the batch id and the path, however the path was found.
    let third = json(run(submit(&["--glob", &all]), 30).await);
    assert_eq!((&third["jobs"], &third["created"]), (&12.into(), &0.into()));
    let members = q.producer.batch_jobs("again").await.expect("members");
    assert_eq!(members.len(), 12);
    let st = counters(&q, "again").await.expect("exists");
    assert_eq!((st.total, st.queued), (12, 12));

    let mut cancel = q.cli();
    cancel.args(["batch", "cancel", "again"]);
    let out = run(cancel, 30).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("12 cancelled"),
        "{}",
        text(&out.stdout)
    );
    let st = counters(&q, "again").await.expect("exists");
    assert!(st.done);
    assert_eq!(st.by_status.get("cancelled"), Some(&12));

    // Cancelled jobs are skipped test cases; the batch did not succeed.
    let junit = q.dir.join("junit.xml");
    let mut wait = q.cli();
    wait.args(["batch", "wait", "again", "--junit"]).arg(&junit);
    assert_eq!(run(wait, 30).await.status.code(), Some(1));
    let report = read_junit(&junit);
    assert_eq!(report.suite["skipped"], "12");
    assert!(report.cases.iter().all(|c| c
        .verdict
        .as_ref()
        .is_some_and(|(tag, message, _)| tag == "skipped" && message == "cancelled")));
    let records = q.producer.statuses(&members).await.expect("records");
    assert!(
        records
            .iter()
            .all(|r| r.as_ref().map(|r| r.state) == Some(Status::Cancelled)),
        "every job cancelled"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_manifest_line_is_named_and_nothing_is_enqueued() {
    let q = TestQueue::new("batch-manifest");
    let good =
        serde_json::json!({"kind": "run", "language": "script", "files": {"a.txt": "print hi"}});
    let manifest = q.dir.join("jobs.jsonl");
    std::fs::write(
        &manifest,
        format!(
            "{good}\n\n{{\"kind\": \"run\", \"language\": \"script\", \"files\": {{}}}}\n{good}\n"
        ),
    )
    .expect("manifest");
    let mut cmd = q.cli();
    cmd.args(["batch", "--batch-id", "m", "--manifest"])
        .arg(&manifest);
    let out = run(cmd, 30).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("jobs.jsonl:3: invalid job spec: files"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was enqueued"), "{stderr}");
    assert_eq!(counters(&q, "m").await, None);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", q.keys.prefix()))
        .query_async(&mut q.conn().await)
        .await
        .expect("KEYS");
    assert!(keys.is_empty(), "the queue was touched: {keys:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_and_timeout_stop_following_but_not_the_batch() {
    let q = TestQueue::new("batch-interrupt");
    let dir = small_folder(&q, "jobs");
    let mut cmd = q.cli();
    cmd.args([
        "batch",
        "--language",
        "script",
        "--batch-id",
        "int",
        "--wait",
        &dir,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = tokio::process::Command::from(cmd).spawn().expect("spawn");
    let pid = child.id().expect("pid");
    // No worker: the batch stays queued. Interrupt once it is being followed.
    within(10, "batch to exist", async {
        while counters(&q, "int").await.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kill = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    assert!(kill.expect("kill").success());
    let out = within(10, "interrupted CLI to exit", child.wait_with_output())
        .await
        .expect("output");
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("quayside batch wait int"));
    let st = counters(&q, "int").await.expect("exists");
    assert_eq!((st.queued, st.remaining), (12, 12), "nothing was cancelled");

    let mut wait = q.cli();
    wait.args(["batch", "wait", "int", "--timeout", "0.5"]);
    let out = run(wait, 10).await;
    assert_eq!(out.status.code(), Some(4));
    let mut wait = q.cli();
    wait.args(["batch", "wait", "no-such-batch"]);
    assert_eq!(run(wait, 10).await.status.code(), Some(3));
}
