//! The real `quayside-worker` binary with the Docker runner: jobs submitted through the producer
//! library end with the right status, hostile jobs are contained, invalid ones are rejected
//! before any container starts, and the worker keeps serving throughout.

use std::collections::BTreeMap;
use std::process::Command;

use quayside_common::{JobId, JobKind, JobSpec, Priority, Status};
use quayside_e2e::TestQueue;

fn job(language: &str, files: &[(&str, &str)], stdin: &str) -> JobSpec {
    let files: BTreeMap<String, String> = files
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    let mut spec = JobSpec::new(JobKind::Run, language, files);
    spec.stdin = stdin.to_owned();
    spec.limits.run_wall_time_ms = Some(3_000);
    spec.limits.compile_wall_time_ms = Some(60_000);
    spec
}

fn containers_of(queue_jobs: &[JobId]) -> usize {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            "label=quayside.job",
            "--format",
            "{{.Label \"quayside.job\"}}",
        ])
        .output()
        .expect("docker ps");
    let listed = String::from_utf8_lossy(&out.stdout);
    listed
        .lines()
        .filter(|l| queue_jobs.iter().any(|id| id.as_str() == *l))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_and_invalid_jobs_end_correctly_and_the_worker_keeps_serving() {
    let q = TestQueue::new("docker");
    q.spawn_real_worker(|c| {
        c.worker.slots = 2;
        c.worker.lease_ms = 10_000;
    });
    let hello = job(
        "c",
        &[(
            "main.c",
            "#include <stdio.h>\nint main(){char b[64];fgets(b,64,stdin);printf(\"hi %s\",b);}",
        )],
        "there\n",
    );
    let fork_bomb = job(
        "c",
        &[("main.c", "#include <unistd.h>\nint main(){for(;;)fork();}")],
        "",
    );
    let memory_bomb = job(
        "c",
        &[("main.c", "#include <stdlib.h>\n#include <string.h>\nint main(){for(;;){char*p=malloc(1<<20);if(p)memset(p,1,1<<20);}}")],
        "",
    );
    let spin = job("python", &[("main.py", "while True: pass")], "");
    let flood = job(
        "python",
        &[(
            "main.py",
            "import sys\nb=b'x'*65536\nwhile True: sys.stdout.buffer.write(b)",
        )],
        "",
    );
    let broken = job(
        "cpp",
        &[("main.cpp", "int main() { return undefined; }")],
        "",
    );
    let net = job(
        "python",
        &[("main.py", "import socket\ntry:\n  socket.create_connection(('1.1.1.1', 80), timeout=2)\n  print('connected')\nexcept OSError as e:\n  print('blocked', e.errno)")],
        "",
    );
    let mut cases = vec![
        (hello.clone(), vec![Status::Succeeded]),
        (fork_bomb, vec![Status::Failed, Status::TimedOut]),
        (memory_bomb, vec![Status::MemoryExceeded]),
        (spin, vec![Status::TimedOut]),
        (flood, vec![Status::OutputExceeded]),
        (broken, vec![Status::CompileError]),
        (net.clone(), vec![Status::Succeeded]),
    ];
    for (spec, _) in &mut cases {
        spec.priority = Priority::High;
    }
    let specs: Vec<JobSpec> = cases.iter().map(|(s, _)| s.clone()).collect();
    q.producer.enqueue_many(&specs).await.expect("enqueue");

    // Invalid jobs written straight to the stream (the library would refuse them client-side).
    let mut escape = job("c", &[("main.c", "int main(){}")], "");
    escape.files = BTreeMap::from([("../../etc/evil.c".to_owned(), "int main(){}".to_owned())]);
    let mut huge = job("c", &[("main.c", "int main(){}")], "");
    huge.files
        .insert("big.c".into(), format!("/*{}*/", "x".repeat(10 << 20)));
    for spec in [&escape, &huge] {
        q.raw_enqueue(spec).await;
    }

    let ids: Vec<JobId> = specs.iter().map(|s| s.id.clone()).collect();
    let results = q.wait_all(&ids, 240).await;
    for ((spec, expected), r) in cases.iter().zip(&results) {
        assert!(
            expected.contains(&r.status),
            "{} ({}): got {} {:?} {:?}",
            spec.id,
            spec.files.keys().next().unwrap_or(&String::new()),
            r.status,
            r.error,
            r.stderr.lossy()
        );
    }
    assert_eq!(results[0].stdout.data, "hi there\n");
    assert!(
        results[5].compile_output.lossy().contains("undefined"),
        "diagnostic kept"
    );
    assert!(
        results[6].stdout.data.starts_with("blocked"),
        "network: {}",
        results[6].stdout.lossy()
    );

    for (spec, why) in [
        (&escape, "files[\"../../etc/evil.c\"]"),
        (&huge, "exceeds the configured maximum"),
    ] {
        let r = q.wait_one(&spec.id, 30).await;
        assert_eq!(r.status, Status::Rejected);
        assert!(
            r.error.as_deref().unwrap_or("").contains(why),
            "{:?}",
            r.error
        );
        assert_eq!(r.runner, None, "rejected before any runner was involved");
    }

    // Still serving after all that.
    let mut again = hello.clone();
    again.id = JobId::generate();
    q.producer.enqueue(&again).await.expect("enqueue");
    let r = q.wait_one(&again.id, 60).await;
    assert_eq!(
        (r.status, r.stdout.data.as_str()),
        (Status::Succeeded, "hi there\n")
    );

    let mut all = ids.clone();
    all.extend([escape.id.clone(), huge.id.clone(), again.id.clone()]);
    q.assert_settled(&all).await;
    assert_eq!(
        containers_of(&all),
        0,
        "no container of these jobs left on the engine"
    );
}
