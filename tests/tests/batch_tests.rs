//! `quayside batch` for graders and CI (issue 13): a folder of C submissions sharing a header,
//! re-run after editing one (only that one runs again, the summary says so), `--tests` putting
//! a tests folder on every job (checked in Redis), its mistakes refused naming the file, and a
//! folder graded per test with its JUnit read by a parser, then a fix re-running only it.

use std::collections::BTreeMap;
use std::path::Path;

use quayside_common::wire::decode_spec;
use quayside_common::JobId;
use quayside_e2e::{run_bounded as run, TestQueue};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, body).expect("write");
}

/// A C submission that prints `greeting(n)` from the folder's header and the shared one.
fn greeter(n: u32) -> String {
    format!(
        "#include <stdio.h>\n#include \"greet.h\"\n#include \"extra.h\"\n\
         int main(void) {{ printf(\"%s %d\\n\", GREETING, {n} + EXTRA); return 0; }}\n"
    )
}

/// `--json` lines of a finished batch by job name: (id, stdout, finished_at_ms).
fn by_name(stdout: &[u8]) -> BTreeMap<String, (String, String, u64)> {
    text(stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            let name = v["name"].as_str().expect("name");
            let name = name.rsplit('/').next().unwrap_or(name).to_owned();
            let out = v["result"]["stdout"]["data"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            let at = v["result"]["finished_at_ms"].as_u64().expect("ended");
            (name, (v["id"].as_str().expect("id").to_owned(), out, at))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edited_submission_runs_again_and_nothing_else_does() {
    let q = TestQueue::new("batch-edit");
    q.spawn_real_worker(|c| c.worker.slots = 2);
    let subs = q.dir.join("subs");
    for (i, name) in ["a.c", "b.c", "c.c"].into_iter().enumerate() {
        write(&subs, name, &greeter(i as u32));
    }
    write(&subs, "greet.h", "#define GREETING \"hello\"\n");
    write(&subs, "README.md", "three submissions\n");
    write(&q.dir, "lib/extra.h", "#define EXTRA 100\n");
    let shared = format!("{}/lib/*.h", q.dir.display());
    let batch = |extra: &[&str]| {
        let mut c = q.cli();
        c.args([
            "--json",
            "batch",
            "--batch-id",
            "g",
            "--wait",
            "--timeout",
            "120",
        ])
        .args(["--shared", &shared])
        .args(extra)
        .arg(&subs);
        c
    };

    let first = run(batch(&[]), 150).await;
    let stderr = text(&first.stderr);
    assert_eq!(first.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("3 jobs enqueued: 3 new, 0 unchanged"),
        "{stderr}"
    );
    assert!(
        stderr.contains("README.md") && stderr.contains("became no job"),
        "{stderr}"
    );
    let before = by_name(&first.stdout);
    let outputs: Vec<&str> = before.values().map(|(_, out, _)| out.as_str()).collect();
    assert_eq!(
        outputs,
        ["hello 100\n", "hello 101\n", "hello 102\n"],
        "each job built with the folder's header and the shared one, and no header became a job"
    );

    let same = run(batch(&[]), 150).await;
    assert!(
        text(&same.stderr).contains("3 jobs enqueued: 0 new, 3 unchanged"),
        "{}",
        text(&same.stderr)
    );
    assert_eq!(by_name(&same.stdout), before, "the same records");

    write(&subs, "b.c", &greeter(41));
    let edited = run(batch(&[]), 150).await;
    let stderr = text(&edited.stderr);
    assert_eq!(edited.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("3 jobs enqueued: 1 new, 2 unchanged"),
        "{stderr}"
    );
    let after = by_name(&edited.stdout);
    assert_eq!(
        after.len(),
        3,
        "one line per submission, at its latest version"
    );
    assert_eq!(after["a.c"], before["a.c"], "a.c did not run again");
    assert_eq!(after["c.c"], before["c.c"], "c.c did not run again");
    assert_ne!(after["b.c"].0, before["b.c"].0, "b.c has a new id");
    assert_eq!(after["b.c"].1, "hello 141\n", "and its new result");
    let st = q
        .producer
        .batch_status("g")
        .await
        .expect("status")
        .expect("exists");
    assert_eq!((st.total, st.succeeded), (4, 4), "exactly one more job ran");

    // The text summary says an earlier version was left out.
    let mut wait = q.cli();
    wait.args(["batch", "wait", "g"]);
    let summary = run(wait, 60).await;
    assert!(
        text(&summary.stdout).contains("batch g: 3 jobs")
            && text(&summary.stdout).contains("1 earlier version(s)"),
        "{}",
        text(&summary.stdout)
    );

    // Other flags under the same batch id: new jobs, not the old results.
    let flagged = run(batch(&["--option", "-DEXTRA_UNUSED=1"]), 150).await;
    let stderr = text(&flagged.stderr);
    assert_eq!(flagged.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("3 jobs enqueued: 3 new, 0 unchanged"),
        "{stderr}"
    );
    let ids: Vec<JobId> = q.producer.batch_jobs("g").await.expect("members");
    assert_eq!(ids.len(), 7);
    q.assert_settled(&ids).await;
}

/// The specs of the batch's jobs as their records hold them, by file name.
async fn enqueued(q: &TestQueue, batch: &str) -> BTreeMap<String, quayside_common::JobSpec> {
    let mut conn = q.conn().await;
    let mut specs = BTreeMap::new();
    for id in q.producer.batch_jobs(batch).await.expect("members") {
        let json: String = redis::cmd("HGET")
            .arg(q.keys.job(&id))
            .arg("spec")
            .query_async(&mut conn)
            .await
            .expect("HGET spec");
        let spec = decode_spec(json.as_bytes()).expect("a spec");
        let name = spec.labels["name"]
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_owned();
        specs.insert(name, spec);
    }
    specs
}

#[tokio::test(flavor = "multi_thread")]
async fn tests_folder_goes_on_every_job_and_its_mistakes_are_refused_naming_the_file() {
    let q = TestQueue::new("batch-tests-dir");
    let subs = q.dir.join("subs");
    write(&subs, "a.c", "int main(void) { return 0; }\n");
    write(&subs, "b.py", "print(input())\n");
    let tests = q.dir.join("tests");
    for (name, input, answer) in [
        ("10", "10\n", "10\n"),
        ("2", "2\n", "2\n"),
        ("1", "1\n", "1\n"),
    ] {
        write(&tests, &format!("{name}.in"), input);
        write(&tests, &format!("{name}.ans"), answer);
    }
    write(&tests, "0.in", "no answer: judged by its exit code\n");
    let submit = |extra: &[&str]| {
        let mut c = q.cli();
        c.args(["batch", "--batch-id", "t", "--tests"])
            .arg(&tests)
            .args(extra)
            .arg(&subs);
        c
    };

    let out = run(
        submit(&["--compare", "float:1e-3", "--stop-on-failure"]),
        30,
    )
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("2 jobs enqueued: 2 new, 0 unchanged"),
        "{stderr}"
    );
    let specs = enqueued(&q, "t").await;
    assert_eq!(specs.keys().collect::<Vec<_>>(), ["a.c", "b.py"]);
    for spec in specs.values() {
        let cases = spec.tests.as_deref().expect("tests");
        let names: Vec<_> = cases.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["0", "1", "2", "10"], "natural order");
        assert_eq!(cases[0].expected_stdout, None);
        assert_eq!(cases[3].stdin, "10\n");
        assert_eq!(cases[3].expected_stdout.as_deref(), Some("10\n"));
        assert_eq!(
            spec.compare,
            Some(quayside_common::cases::Compare::Float {
                abs: 1e-3,
                rel: 1e-3
            })
        );
        assert!(spec.stop_on_failure);
        assert_eq!(spec.batch.as_deref(), Some("t"));
    }

    // A test is part of every job's content: editing one answer makes every job new.
    write(&tests, "2.ans", "two\n");
    let out = run(
        submit(&["--compare", "float:1e-3", "--stop-on-failure"]),
        30,
    )
    .await;
    assert!(
        text(&out.stderr).contains("2 jobs enqueued: 2 new, 0 unchanged"),
        "{}",
        text(&out.stderr)
    );

    // Mistakes: exit 2, the file or flag named, nothing enqueued.
    let before = q
        .producer
        .batch_status("t")
        .await
        .expect("status")
        .expect("t")
        .total;
    write(&tests, "orphan.out", "1\n");
    let out = run(submit(&[]), 30).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("orphan.out has no input orphan.in"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_file(tests.join("orphan.out")).expect("rm");
    let checker = q.dir.join("check.cpp");
    write(&q.dir, "check.cpp", "int main() { return 0; }\n");
    let cases: [(Vec<String>, &str); 4] = [
        (
            vec![
                "--compare".into(),
                "lines".into(),
                "--checker".into(),
                checker.display().to_string(),
            ],
            "cannot be used with",
        ),
        (vec!["--compare".into(), "line".into()], "is not a mode"),
        (vec!["--kind".into(), "compile".into()], "needs --kind run"),
        (vec!["--stdin".into(), "x".into()], "cannot be used with"),
    ];
    for (extra, says) in cases {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let out = run(submit(&extra), 30).await;
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{extra:?}: {}",
            text(&out.stderr)
        );
    }
    let mut no_tests = q.cli();
    no_tests.args(["batch", "--compare", "exact"]).arg(&subs);
    let out = run(no_tests, 30).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--tests"),
        "{}",
        text(&out.stderr)
    );
    let after = q
        .producer
        .batch_status("t")
        .await
        .expect("status")
        .expect("t")
        .total;
    assert_eq!(after, before, "nothing was enqueued by a refused batch");
}

/// A testsuite of a JUnit file: its name, counts, and each testcase's name and verdict tag.
type Suite = (String, [String; 4], Vec<(String, Option<String>)>);

fn suites(xml: &str) -> Vec<Suite> {
    let doc = roxmltree::Document::parse(xml).expect("JUnit is well-formed XML");
    doc.descendants()
        .filter(|n| n.has_tag_name("testsuite"))
        .map(|s| {
            let counts = ["tests", "failures", "errors", "skipped"]
                .map(|k| s.attribute(k).unwrap_or_default().to_owned());
            let cases = s
                .children()
                .filter(|c| c.has_tag_name("testcase"))
                .map(|c| {
                    let verdict = c.children().find(|v| v.is_element()).map(|v| {
                        format!(
                            "{}:{}",
                            v.tag_name().name(),
                            v.attribute("type").unwrap_or("")
                        )
                    });
                    (c.attribute("name").unwrap_or_default().to_owned(), verdict)
                })
                .collect();
            (
                s.attribute("name").unwrap_or_default().to_owned(),
                counts,
                cases,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_folder_of_submissions_is_graded_per_test_with_junit_and_a_fix_reruns_only_it() {
    let q = TestQueue::new("batch-grade");
    q.spawn_real_worker(|c| c.worker.slots = 2);
    let subs = q.dir.join("subs");
    let reads = "#include <stdio.h>\n#include <stdlib.h>\nint main(void) { long a, b; \
                 if (scanf(\"%ld %ld\", &a, &b) != 2) return 2;";
    write(
        &subs,
        "right.c",
        &format!("{reads} printf(\"%ld\\n\", a + b); return 0; }}\n"),
    );
    write(
        &subs,
        "wrong.c",
        &format!("{reads} printf(\"%ld\\n\", a + b + (a == 3)); return 0; }}\n"),
    );
    write(
        &subs,
        "crash.c",
        &format!("{reads} if (a == 2) abort(); printf(\"%ld\\n\", a + b); return 0; }}\n"),
    );
    write(
        &subs,
        "slow.c",
        &format!("{reads} while (a == 4) {{}} printf(\"%ld\\n\", a + b); return 0; }}\n"),
    );
    write(&subs, "broken.c", "int main(void) { return missing; }\n");
    let tests = q.dir.join("tests");
    for a in 1..=5 {
        write(&tests, &format!("{a}.in"), &format!("{a} 10\n"));
        write(&tests, &format!("{a}.out"), &format!("{}\n", a + 10));
    }
    let junit = q.dir.join("junit.xml");
    let grade = || {
        let mut c = q.cli();
        c.args(["batch", "--batch-id", "grade", "--wait", "--timeout", "240"])
            // Generous: a test is starved for a second at times on a loaded 2-core machine.
            .args(["--limit", "run_wall_time_ms=4000", "--tests"])
            .arg(&tests)
            .arg("--junit")
            .arg(&junit)
            .arg(&subs);
        c
    };
    let out = run(grade(), 300).await;
    let summary = text(&out.stdout);
    let xml = std::fs::read_to_string(&junit).expect("JUnit file");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{summary}\n{}",
        text(&out.stderr)
    );
    for line in [
        "      5/5  succeeded       ",
        "      4/5  wrong_answer    ",
        "      4/5  failed          ",
        "      4/5  timed_out       ",
        "      0/5  compile_error   ",
        "slowest tests",
        "test 3: wrong_answer",
    ] {
        assert!(
            summary.contains(line),
            "missing {line:?} in:\n{summary}\n{xml}"
        );
    }
    let got = suites(&xml);
    let by: BTreeMap<String, &Suite> = got
        .iter()
        .map(|s| (s.0.rsplit('/').next().unwrap_or("").to_owned(), s))
        .collect();
    assert_eq!(by.len(), 5, "one testsuite per submission: {xml}");
    let verdicts =
        |name: &str| -> Vec<Option<String>> { by[name].2.iter().map(|(_, v)| v.clone()).collect() };
    let pass = None;
    let fail = |t: &str| Some(format!("failure:{t}"));
    assert_eq!(by["right.c"].1, ["5", "0", "0", "0"].map(String::from));
    assert_eq!(
        by["right.c"]
            .2
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["1", "2", "3", "4", "5"]
    );
    assert_eq!(
        verdicts("wrong.c"),
        [
            pass.clone(),
            pass.clone(),
            fail("wrong_answer"),
            pass.clone(),
            pass.clone()
        ]
    );
    assert_eq!(
        verdicts("crash.c"),
        [
            pass.clone(),
            fail("failed"),
            pass.clone(),
            pass.clone(),
            pass.clone()
        ]
    );
    assert_eq!(
        verdicts("slow.c"),
        [
            pass.clone(),
            pass.clone(),
            pass.clone(),
            fail("timed_out"),
            pass.clone()
        ]
    );
    assert_eq!(verdicts("broken.c"), [fail("compile_error")]);

    // Fixing one submission re-runs exactly that one.
    write(
        &subs,
        "wrong.c",
        &format!("{reads} printf(\"%ld\\n\", a + b); return 0; }}\n"),
    );
    let out = run(grade(), 300).await;
    assert!(
        text(&out.stderr).contains("5 jobs enqueued: 1 new, 4 unchanged"),
        "{}",
        text(&out.stderr)
    );
    let suites_after = suites(&std::fs::read_to_string(&junit).expect("JUnit file"));
    let wrong = suites_after
        .iter()
        .find(|s| s.0.ends_with("wrong.c"))
        .expect("wrong.c");
    assert_eq!(wrong.1, ["5", "0", "0", "0"].map(String::from));
    let st = q
        .producer
        .batch_status("grade")
        .await
        .expect("status")
        .expect("exists");
    assert_eq!(st.total, 6);
}
