//! No job-controlled byte reaches a terminal unescaped. Every human output of the `quayside`
//! CLI is run on jobs whose output, compiler output, name label, batch file name, error and
//! dead letter hold an OSC window title, an OSC 52 clipboard write, a screen clear, cursor
//! moves, a carriage return, a C1 CSI, DEL and a bidi override; none of those may reach stdout
//! or stderr raw, while their escaped form must be visible. `--json` keeps the bytes exact.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use quayside_common::{JobId, Status};
use quayside_e2e::{within, TestQueue};

/// Everything a job could print to take over a terminal.
const HOSTILE: &str = "\u{1b}]0;pwned\u{7}\u{1b}]52;c;cHduZWQ=\u{7}\u{1b}[2J\u{1b}[H\u{1b}[1A\rall jobs succeeded\u{9b}31m\u{7f}\u{202e}";
/// How the start of [`HOSTILE`] must be shown instead.
const SHOWN: &str = "\\x1b]0;pwned\\x07\\x1b]52;c;cHduZWQ=\\x07\\x1b[2J";
/// A batch file name a hostile repository could hold (refused as a job file name; the error
/// line that says so must not obey it either).
const FILE_NAME: &str = "evil-\u{1b}]0;title\u{7}.txt";

/// What a terminal would obey: C0 but newline and tab, DEL, C1, bidi overrides and isolates.
fn obeyed(c: char) -> bool {
    (c.is_control() && !matches!(c, '\n' | '\t'))
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn assert_inert(what: &str, bytes: &[u8]) {
    let text = std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("{what}: not UTF-8: {e}"));
    let raw: Vec<char> = text.chars().filter(|&c| obeyed(c)).collect();
    assert!(
        raw.is_empty(),
        "{what}: {raw:?} reached the terminal in {text:?}"
    );
}

async fn run(mut command: Command) -> Output {
    within(60, "quayside", async move {
        tokio::task::spawn_blocking(move || command.output().expect("run quayside"))
            .await
            .expect("join")
    })
    .await
}

fn script(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// A batch manifest: one job running `body` under a hostile name, and one that succeeds.
fn manifest(q: &TestQueue, body: &str) -> String {
    let line = |name: &str, body: &str| {
        serde_json::json!({
            "kind": "run", "language": "script", "files": { "job.txt": body },
            "labels": { "name": name },
        })
        .to_string()
    };
    let path = q.path("manifest.jsonl");
    let text = format!(
        "{}\n{}\n",
        line(HOSTILE, body),
        line("fine", "sleep 300\nprint ok\n")
    );
    std::fs::write(&path, text).expect("write manifest");
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn no_job_controlled_byte_reaches_a_terminal_raw() {
    let q = TestQueue::new("terminal");
    q.spawn_worker(|c| c.worker.slots = 4);
    let print_all = [
        format!("print {HOSTILE}"),
        format!("eprint {HOSTILE}"),
        format!("cprint {HOSTILE}"),
        "exit 3".to_owned(),
    ];
    let print_all: Vec<&str> = print_all.iter().map(String::as_str).collect();
    let mut failed = q.job(&script(&print_all));
    failed.id = JobId::parse("term-failed").expect("id");
    failed.labels = BTreeMap::from([("name".to_owned(), HOSTILE.to_owned())]);
    let mut dead = q.job(&format!("permanent {HOSTILE}\n"));
    dead.id = JobId::parse("term-dead").expect("id");
    dead.max_attempts = Some(1);
    q.producer
        .enqueue_many(&[failed.clone(), dead.clone()])
        .await
        .expect("enqueue");
    let results = q.wait_all(&[failed.id.clone(), dead.id.clone()], 30).await;
    assert_eq!(results[0].status, Status::Failed);
    assert_eq!(results[1].status, Status::Dead);

    let file = q.path("job.txt");
    std::fs::write(&file, script(&print_all)).expect("write");
    let batch_dir = q.dir.join("batch");
    std::fs::create_dir_all(&batch_dir).expect("mkdir");
    std::fs::write(batch_dir.join(FILE_NAME), script(&print_all)).expect("write");
    let dir = batch_dir.display().to_string();
    let jobs = manifest(&q, &script(&print_all));

    let commands: Vec<Vec<&str>> = vec![
        vec!["wait", "term-failed"],
        vec!["status", "term-failed"],
        vec!["logs", "term-failed"],
        vec!["status", "term-dead"],
        vec!["dlq", "list"],
        vec!["cancel", "term-failed"],
        vec!["submit", "--language", "script", "--wait", &file],
        vec!["batch", &dir, "--language", "script"],
        vec!["batch", "--manifest", &jobs, "--batch-id", "term", "--wait"],
        vec!["batch", "status", "term"],
        vec!["batch", "wait", "term"],
        vec!["stats"],
        // Lines carrying text of the caller's: an unknown batch named like the job.
        vec!["batch", "status", HOSTILE],
        vec!["batch", "cancel", HOSTILE],
        vec!["dlq", "replay", "--all"],
    ];
    let mut seen = String::new();
    for args in &commands {
        let mut cli = q.cli();
        cli.args(args);
        let out = run(cli).await;
        let what = args.join(" ");
        assert_inert(&format!("{what} (stdout)"), &out.stdout);
        assert_inert(&format!("{what} (stderr)"), &out.stderr);
        seen.push_str(&String::from_utf8_lossy(&out.stdout));
        seen.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    for part in [
        SHOWN,
        "\\rall jobs succeeded\\u{9b}31m\\x7f\\u{202e}",
        "evil-\\u{1b}]0;title\\u{7}.txt",
    ] {
        assert!(
            seen.contains(part),
            "shown, not dropped: {part:?} in {seen}"
        );
    }

    // --json: valid JSON, safe on a terminal, and the exact bytes once decoded.
    let mut cli = q.cli();
    cli.args(["--json", "wait", "term-failed"]);
    let out = run(cli).await;
    assert_inert("--json wait", &out.stdout);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    for stream in ["stdout", "stderr", "compile_output"] {
        assert_eq!(r[stream]["data"], format!("{HOSTILE}\n"), "{stream}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_progress_bar_shows_a_hostile_job_name_escaped() {
    let q = TestQueue::new("terminal-tty");
    q.spawn_worker(|c| c.worker.slots = 2);
    let jobs = manifest(&q, "sleep 300\nexit 3\n");
    // On a pseudo-terminal, so the bar and its live failure lines draw.
    let pty = q.cli_on_terminal(
        "xterm",
        &format!("batch --batch-id tty --wait --manifest {jobs}"),
    );
    let out = run(pty).await;
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "one job failed: {screen:?}");
    assert!(
        screen.contains(&format!("  failed          {SHOWN}")),
        "the live failure line shows the name escaped: {screen:?}"
    );
    // The bar draws with CSI sequences of its own; none of the name's may pass.
    for raw in ["\u{1b}]", "\u{7}", "\u{1b}[2J", "\u{9b}", "\u{202e}"] {
        assert!(
            !screen.contains(raw),
            "{raw:?} reached the terminal: {screen:?}"
        );
    }
}
