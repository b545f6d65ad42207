//! The client contract (`docs/protocol.md`): the Python (redis-py) and Node (ioredis) examples in
//! `examples/clients/` run against a real Docker worker and get the right results, wait on jobs
//! other clients enqueued, and one job id is one job whichever client (Python, Node, the CLI,
//! the Rust producer) enqueues it.
//!
//! Needs `scripts/setup-clients.sh` (Python venv, `node_modules`); fails, never skips, without.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use quayside_common::{JobId, JobKind, JobSpec, Priority};
use quayside_e2e::{bin_path, within, TestQueue};
use serde_json::{json, Value};
use tokio::process::Command;

/// What the examples' job computes from its stdin `19 23`.
const EXAMPLE_STDOUT: &str = "read 2 numbers\nsum=42\n";
const EXAMPLE_LOG: [&str; 4] = [
    "[stdout] read 2 numbers",
    "[stderr] adding them up",
    "[stdout] sum=42",
    "[end] succeeded",
];

#[derive(Clone, Copy, Debug)]
enum Lang {
    Python,
    Node,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

impl Lang {
    fn dir(self) -> PathBuf {
        repo().join("examples/clients").join(match self {
            Lang::Python => "python",
            Lang::Node => "node",
        })
    }

    /// The interpreter, after checking that `scripts/setup-clients.sh` has run.
    fn interpreter(self) -> PathBuf {
        let (exe, installed) = match self {
            Lang::Python => {
                let py = repo().join("target/clients-venv/bin/python");
                (py.clone(), py)
            }
            Lang::Node => ("node".into(), self.dir().join("node_modules/ioredis")),
        };
        assert!(
            installed.exists(),
            "{} missing: run scripts/setup-clients.sh first",
            installed.display()
        );
        exe
    }

    fn example(self) -> &'static str {
        match self {
            Lang::Python => "example.py",
            Lang::Node => "example.js",
        }
    }

    /// A one-liner that enqueues `$SPEC` (under `$MAX_DEPTH`) with the client library and
    /// prints `[id, existing]`; a refusal is an error naming its class.
    fn enqueue_snippet(self) -> [&'static str; 2] {
        match self {
            Lang::Python => [
                "-c",
                "import json, os, redis, quayside_client as q\n\
                 r = redis.Redis.from_url(os.environ['REDIS_URL'], decode_responses=True)\n\
                 print(json.dumps(q.enqueue(r, os.environ['QUAYSIDE_QUEUE'], json.loads(os.environ['SPEC']),\n\
                                            int(os.environ['MAX_DEPTH']))))",
            ],
            Lang::Node => [
                "-e",
                "const Redis = require('ioredis'); const q = require('./quayside-client');\n\
                 const r = new Redis(process.env.REDIS_URL);\n\
                 q.enqueue(r, process.env.QUAYSIDE_QUEUE, JSON.parse(process.env.SPEC), +process.env.MAX_DEPTH)\n\
                 .then(({ id, existing }) => console.log(JSON.stringify([id, existing])))\n\
                 .catch((e) => { console.error(e.constructor.name, e.message); process.exitCode = 1; })\n\
                 .finally(() => r.quit());",
            ],
        }
    }
}

/// Runs `args` with the language's interpreter in its example folder, against the test's queue.
async fn run(q: &TestQueue, lang: Lang, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(lang.interpreter());
    cmd.args(args)
        .current_dir(lang.dir())
        .env("REDIS_URL", &q.cfg.redis.url)
        .env("QUAYSIDE_QUEUE", &q.cfg.queue.name)
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let out = within(60, &format!("{lang:?} {args:?}"), cmd.output())
        .await
        .unwrap_or_else(|e| {
            panic!("cannot run {lang:?} ({e}): run scripts/setup-clients.sh first")
        });
    eprintln!(
        "--- {lang:?} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs the example on job `id`; returns its output lines and the result it printed last.
async fn run_example(q: &TestQueue, lang: Lang, id: &str) -> (Vec<String>, Value) {
    let out = run(q, lang, &[lang.example()], &[("JOB_ID", id)]).await;
    assert_eq!(out.status.code(), Some(0), "{lang:?} example failed");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let result = serde_json::from_str(lines.last().expect("output")).expect("result JSON");
    (lines, result)
}

/// Enqueues `spec` with the language's client library; returns what it said already existed,
/// or its error output.
async fn enqueue_with(
    q: &TestQueue,
    lang: Lang,
    spec: &Value,
    max_depth: u64,
) -> Result<Option<String>, String> {
    let env = [
        ("SPEC", spec.to_string()),
        ("MAX_DEPTH", max_depth.to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = run(q, lang, &lang.enqueue_snippet(), &env).await;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let [id, existing]: [Value; 2] =
        serde_json::from_slice(&out.stdout).expect("[id, existing] JSON");
    assert_eq!(id, spec["id"]);
    Ok(existing.as_str().map(str::to_owned))
}

/// Asserts `want` appear in `lines` in this order (other lines may come between).
fn assert_in_order(lines: &[String], want: &[&str]) {
    let mut rest = lines.iter();
    for w in want {
        assert!(
            rest.any(|l| l == w),
            "{w:?} missing or out of order in {lines:#?}"
        );
    }
}

fn python_job(id: &str, program: &str, stdin: &str) -> JobSpec {
    let mut spec = JobSpec::new(
        JobKind::Run,
        "python",
        BTreeMap::from([("main.py".to_owned(), program.to_owned())]),
    );
    spec.id = JobId::parse(id).expect("id");
    spec.stdin = stdin.to_owned();
    spec.limits.run_wall_time_ms = Some(10_000);
    spec
}

async fn stream_entries(q: &TestQueue) -> u64 {
    let mut conn = q.conn().await;
    let mut n = 0;
    for p in Priority::ALL {
        let len: u64 = redis::cmd("XLEN")
            .arg(q.keys.stream(p))
            .query_async(&mut conn)
            .await
            .expect("XLEN");
        n += len;
    }
    n
}

#[test]
fn the_vendored_enqueue_script_is_the_one_quayside_runs() {
    let (_, body) = quayside_common::scripts::BODIES
        .iter()
        .find(|(name, _)| *name == "enqueue")
        .expect("enqueue script");
    let vendored = std::fs::read_to_string(repo().join("examples/clients/enqueue.lua"))
        .expect("read examples/clients/enqueue.lua");
    assert!(
        vendored == quayside_common::scripts::source(body),
        "examples/clients/enqueue.lua is stale: \
         cargo run -p quayside-cli --bin quayside -- script enqueue > examples/clients/enqueue.lua"
    );
}

async fn example_runs_a_job_end_to_end(lang: Lang) {
    let q = TestQueue::new(&format!("{lang:?}-example").to_lowercase());
    let done = q.count_completions().await;
    q.spawn_real_worker(|_| {});
    let id = format!("{lang:?}-example-1").to_lowercase();

    let (lines, result) = run_example(&q, lang, &id).await;

    assert_eq!(lines[0], format!("enqueued {id}"));
    assert!(
        ["queued", "running"]
            .map(|s| format!("enqueued again: nothing added, the job is {s}"))
            .contains(&lines[1]),
        "{lines:#?}"
    );
    assert_in_order(&lines, &EXAMPLE_LOG);
    assert_eq!(result["id"], id.as_str());
    assert_eq!(result["status"], "succeeded");
    assert_eq!(result["exit_code"], 0);
    assert_eq!(result["stdout"]["data"], EXAMPLE_STDOUT);
    assert_eq!(result["stderr"]["data"], "adding them up\n");
    assert_eq!(result["attempts"], 1);
    let id = JobId::parse(&id).expect("id");
    done.wait_for(1, 10).await;
    done.assert_exactly_once(std::slice::from_ref(&id));
    q.assert_settled(&[id]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_example_runs_a_job_and_follows_its_logs() {
    example_runs_a_job_end_to_end(Lang::Python).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_node_example_runs_a_job_and_follows_its_logs() {
    example_runs_a_job_end_to_end(Lang::Node).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_and_node_wait_on_a_job_the_rust_producer_enqueued() {
    let q = TestQueue::new("clients-cross");
    let done = q.count_completions().await;
    let spec = python_job(
        "from-rust",
        "import sys\nn = int(sys.stdin.read())\nprint('rust job', flush=True)\nprint(f'square={n * n}')\n",
        "12\n",
    );
    assert!(q.producer.enqueue(&spec).await.expect("enqueue").created);
    q.spawn_real_worker(|_| {});

    // Both examples ask for the same id with their own job: they follow the Rust one instead.
    let ((py_lines, py), (js_lines, js)) = tokio::join!(
        run_example(&q, Lang::Python, "from-rust"),
        run_example(&q, Lang::Node, "from-rust"),
    );
    for (lines, result) in [(py_lines, py), (js_lines, js)] {
        assert!(
            lines[0].starts_with("from-rust already exists ("),
            "{lines:#?}"
        );
        assert_in_order(
            &lines,
            &[
                "[stdout] rust job",
                "[stdout] square=144",
                "[end] succeeded",
            ],
        );
        assert_eq!(result["status"], "succeeded");
        assert_eq!(result["stdout"]["data"], "rust job\nsquare=144\n");
    }
    done.wait_for(1, 10).await;
    done.assert_exactly_once(std::slice::from_ref(&spec.id));
    q.assert_settled(&[spec.id]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_id_is_one_job_through_python_node_the_cli_and_the_producer() {
    let q = TestQueue::new("clients-idem");
    let done = q.count_completions().await;
    let first = json!({
        "id": "shared-id",
        "kind": "run",
        "language": "python",
        "files": { "main.py": "print('python enqueued me')" },
        "batch": "b1",
    });
    // No worker yet, so every later enqueue finds the job queued.
    assert_eq!(enqueue_with(&q, Lang::Python, &first, 1).await, Ok(None));

    let mut other = first.clone();
    other["files"]["main.py"] = json!("print('someone else enqueued me')");
    assert_eq!(
        enqueue_with(&q, Lang::Node, &other, 1).await,
        Ok(Some("queued".into()))
    );
    // The script's max_depth holds for them: one queued entry fills a queue of depth 1.
    let mut second = other.clone();
    second["id"] = json!("another-id");
    for lang in [Lang::Python, Lang::Node] {
        let err = enqueue_with(&q, lang, &second, 1).await.expect_err("full");
        assert!(err.contains("QueueFull"), "{lang:?}: {err}");
    }
    let script = q.path("other.py");
    std::fs::write(&script, "print('the cli enqueued me')\n").expect("write");
    let mut cli = Command::new(bin_path("quayside"));
    cli.args([
        "--redis-url",
        &q.cfg.redis.url,
        "--queue",
        &q.cfg.queue.name,
    ])
    .args(["--json", "submit", "--language", "python", "--batch", "b1"])
    .args(["--id", "shared-id", &script])
    .kill_on_drop(true);
    let cli = within(30, "quayside submit", cli.output())
        .await
        .expect("run quayside");
    let answer: Value = serde_json::from_slice(&cli.stdout).expect("CLI JSON");
    assert_eq!(
        (&answer["created"], &answer["state"]),
        (&json!(false), &json!("queued"))
    );
    let spec = python_job("shared-id", "print('rust enqueued me')", "");
    let enqueued = q.producer.enqueue(&spec).await.expect("enqueue");
    assert!(!enqueued.created);

    // One entry, one batch member, and the record Python wrote.
    assert_eq!(stream_entries(&q).await, 1);
    let batch = q.producer.batch_status("b1").await.expect("batch");
    assert_eq!(batch.map(|b| (b.total, b.remaining)), Some((1, 1)));
    assert_eq!(
        q.producer.batch_jobs("b1").await.expect("members"),
        std::slice::from_ref(&spec.id)
    );

    q.spawn_real_worker(|_| {});
    let result = q.wait_one(&spec.id, 60).await;
    assert_eq!(result.stdout.lossy(), "python enqueued me\n");
    done.wait_for(1, 10).await;
    done.assert_exactly_once(std::slice::from_ref(&spec.id));
    q.assert_settled(&[spec.id]).await;
}

/// The fenced `lang` blocks of the protocol doc's section on other languages.
fn doc_blocks(lang: &str) -> Vec<Vec<String>> {
    let doc = std::fs::read_to_string(repo().join("docs/protocol.md")).expect("read protocol.md");
    let (_, section) = doc
        .split_once("## Clients in other languages")
        .expect("section in protocol.md");
    let section = section.split("\n## ").next().unwrap_or_default();
    let fence = format!("```{lang}\n");
    section
        .split(fence.as_str())
        .skip(1)
        .map(|b| {
            let block = b.split("```").next().unwrap_or_default();
            block.lines().map(|l| l.trim().to_owned()).collect()
        })
        .collect()
}

/// Whether every non-empty line of `block` is a line of `file`, in the same order.
fn shown_in(block: &[String], file: &str) -> bool {
    let mut lines = file.lines().map(str::trim);
    block
        .iter()
        .filter(|l| !l.is_empty())
        .all(|want| lines.any(|l| l == want))
}

#[test]
fn the_client_code_in_the_protocol_doc_is_the_code_the_tests_run() {
    for (fence, lang, files) in [
        ("python", Lang::Python, ["quayside_client.py", "example.py"]),
        ("js", Lang::Node, ["quayside-client.js", "example.js"]),
    ] {
        let sources: Vec<String> = files
            .iter()
            .map(|f| std::fs::read_to_string(lang.dir().join(f)).expect("read example"))
            .collect();
        let blocks = doc_blocks(fence);
        assert!(blocks.len() >= 2, "protocol.md shows no {fence} client");
        for block in blocks {
            assert!(
                sources.iter().any(|s| shown_in(&block, s)),
                "docs/protocol.md shows {fence} code that examples/clients/ does not have \
                 (edit both):\n{}",
                block.join("\n")
            );
        }
    }
}
