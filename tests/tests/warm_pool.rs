//! The Docker runner's warm pool, through the real `quayside-worker` binary on the shared
//! engine: a job served from a warm container ends exactly as on the cold path for every
//! language; a container serves one job; limits other than the pool's profile go cold; a
//! waiting container that dies is replaced; a killed worker's pool and a drained one leave
//! nothing; cancel and timeout end as on the cold path. Whether a job was served warm is read
//! from the worker's `/metrics` (hits and misses by language), never assumed.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt as _;
use quayside_common::config::Config;
use quayside_common::{JobId, JobKind, JobResult, JobSpec, Status};
use quayside_e2e::ops::http_get;
use quayside_e2e::sandboxes::docker_ps as containers;
use quayside_e2e::{free_addr, within, TestQueue, WorkerHandle};

/// One program per language: reads a line, prints it with its args to stdout, a line to
/// stderr, and exits 3.
const PROGRAMS: [(&str, &str, &str); 6] = [
    (
        "c",
        "main.c",
        "#include <stdio.h>\nint main(int c,char**v){char b[64]={0};fgets(b,64,stdin);\
         printf(\"c %d %s|%s\",c-1,v[1],b);fprintf(stderr,\"to stderr\\n\");return 3;}\n",
    ),
    (
        "cpp",
        "main.cpp",
        "#include <iostream>\n#include <string>\nint main(int c,char**v){std::string l;\
         std::getline(std::cin,l);std::cout<<\"cpp \"<<c-1<<' '<<v[1]<<'|'<<l<<'\\n';\
         std::cerr<<\"to stderr\\n\";return 3;}\n",
    ),
    (
        "go",
        "main.go",
        "package main\nimport (\"bufio\";\"fmt\";\"os\")\nfunc main(){l,_:=bufio.NewReader(os.Stdin).\
         ReadString('\\n');fmt.Printf(\"go %d %s|%s\",len(os.Args)-1,os.Args[1],l);\
         fmt.Fprintln(os.Stderr,\"to stderr\");os.Exit(3)}\n",
    ),
    (
        "javascript",
        "main.js",
        "const l=require('fs').readFileSync(0,'utf8').split('\\n')[0]+'\\n';const a=process.argv.slice(2);\
         process.stdout.write(`js ${a.length} ${a[0]}|${l}`);console.error('to stderr');process.exit(3);\n",
    ),
    (
        "python",
        "main.py",
        "import sys\nl=sys.stdin.readline()\nprint(f'py {len(sys.argv)-1} {sys.argv[1]}|{l}',end='')\n\
         print('to stderr',file=sys.stderr)\nsys.exit(3)\n",
    ),
    (
        "rust",
        "main.rs",
        "use std::io::BufRead;\nfn main(){let mut l=String::new();std::io::stdin().lock().\
         read_line(&mut l).unwrap();let a:Vec<String>=std::env::args().skip(1).collect();\
         print!(\"rs {} {}|{}\",a.len(),a[0],l);eprintln!(\"to stderr\");std::process::exit(3);}\n",
    ),
];

fn job(language: &str, file: &str, source: &str) -> JobSpec {
    let files = BTreeMap::from([(file.to_owned(), source.to_owned())]);
    JobSpec::new(JobKind::Run, language, files)
}

fn python(source: &str) -> JobSpec {
    job("python", "main.py", source)
}

/// A real worker on `q` serving its metrics on a port of its own; `tweak` changes its config.
fn worker(q: &TestQueue, tweak: impl FnOnce(&mut Config)) -> (WorkerHandle, String) {
    let addr = free_addr();
    let listen = addr.clone();
    let w = q.spawn_real_worker(move |c| {
        c.metrics.listen_addr = listen;
        c.worker.slots = 2;
        tweak(c);
    });
    (w, addr)
}

/// Drains worker `w` (SIGTERM) and checks it left no container: the pool's stubs of a
/// SIGKILLed worker exit, but wait for the next sweep to be removed.
async fn drain(w: &WorkerHandle) {
    w.signal(15);
    assert_eq!(w.wait_exit(60).await, Some(0), "a clean drain");
    let left = containers(&format!("quayside.worker={}", w.id));
    assert!(left.is_empty(), "a drain leaves nothing: {left:?}");
}

/// Only `languages` keep a warm container: the pool of every test stays small.
fn pool_of(c: &mut Config, languages: &[&str]) {
    for (language, _, _) in PROGRAMS {
        let size = usize::from(languages.contains(&language));
        c.runner.docker.warm.size.insert(language.to_owned(), size);
    }
}

/// The value of the series `name{labels}` (labels in the exporter's order) in `addr`'s
/// `/metrics`, 0 when absent.
async fn metric(addr: &str, series: &str) -> f64 {
    let Ok((200, text)) = http_get(addr, "/metrics").await else {
        return 0.0;
    };
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn series(name: &str, q: &TestQueue, language: &str, reason: Option<&str>) -> String {
    let queue = &q.cfg.queue.name;
    match reason {
        None => format!("{name}{{queue=\"{queue}\",language=\"{language}\"}} "),
        Some(r) => format!("{name}{{queue=\"{queue}\",language=\"{language}\",reason=\"{r}\"}} "),
    }
}

async fn hits(addr: &str, q: &TestQueue, language: &str) -> f64 {
    metric(addr, &series("quayside_pool_hits_total", q, language, None)).await
}

/// Waits until a container of each of `languages` waits in `addr`'s pool.
async fn pool_ready(addr: &str, q: &TestQueue, languages: &[&str]) {
    within(90, "the warm pool to fill", async {
        for language in languages {
            let waiting = series("quayside_pool_containers", q, language, None);
            while metric(addr, &waiting).await < 1.0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    })
    .await;
}

async fn run(q: &TestQueue, spec: &JobSpec, secs: u64) -> JobResult {
    q.producer.enqueue(spec).await.expect("enqueue");
    q.wait_one(&spec.id, secs).await
}

fn ending(r: &JobResult) -> (Status, Option<i64>, Option<i32>, String, String) {
    (
        r.status,
        r.exit_code,
        r.signal,
        r.stdout.lossy(),
        r.stderr.lossy(),
    )
}

/// The same job in every language on a worker with the pool on and one with it off: stdout,
/// stderr, exit code, signal and status are the same bytes, and every warm job was a hit.
#[tokio::test(flavor = "multi_thread")]
async fn every_language_ends_the_same_from_the_pool_as_cold() {
    let (warm_q, cold_q) = (TestQueue::new("warm-same"), TestQueue::new("cold-same"));
    // Roomy wall limits on both sides (the pool's profile is the defaults): this test is about
    // the same ending, and four compilers on two loaded cores can pass the 30 s default.
    let roomy = |c: &mut Config| {
        c.limits.default.compile_wall_time_ms = 120_000;
        c.limits.default.run_wall_time_ms = 60_000;
    };
    let (warm_worker, warm) = worker(&warm_q, roomy);
    let (cold_worker, _) = worker(&cold_q, |c| {
        roomy(c);
        c.runner.docker.warm.enabled = false;
    });
    let languages: Vec<&str> = PROGRAMS.iter().map(|p| p.0).collect();
    pool_ready(&warm, &warm_q, &languages).await;
    let specs: Vec<JobSpec> = PROGRAMS
        .iter()
        .map(|(language, file, source)| {
            let mut spec = job(language, file, source);
            spec.args = vec!["a b".into(), "it's".into()];
            spec.stdin = "line one\nline two\n".into();
            spec
        })
        .collect();
    let ids: Vec<JobId> = warm_q.enqueue_all(&specs).await;
    let twins: Vec<JobSpec> = specs
        .iter()
        .map(|s| JobSpec {
            id: JobId::generate(),
            ..s.clone()
        })
        .collect();
    let twin_ids = cold_q.enqueue_all(&twins).await;
    let (warm_results, cold_results) =
        tokio::join!(warm_q.wait_all(&ids, 180), cold_q.wait_all(&twin_ids, 180));
    for ((language, _, _), (w, c)) in PROGRAMS.iter().zip(warm_results.iter().zip(&cold_results)) {
        assert_eq!(ending(w), ending(c), "{language}: warm vs cold");
        assert_eq!(w.status, Status::Failed, "{language}: {w:?}");
        assert_eq!(w.exit_code, Some(3), "{language}");
        assert_eq!(w.stderr.lossy(), "to stderr\n", "{language}");
        assert!(
            w.stdout.lossy().ends_with(" 2 a b|line one\n"),
            "{language}: {}",
            w.stdout.lossy()
        );
        assert_eq!(
            hits(&warm, &warm_q, language).await,
            1.0,
            "{language} served warm"
        );
    }
    tokio::join!(drain(&warm_worker), drain(&cold_worker));
}

/// Two jobs in a row each get a container of their own: another hostname, and a `/tmp` that
/// does not hold what the first wrote.
#[tokio::test(flavor = "multi_thread")]
async fn a_warm_container_serves_one_job() {
    let q = TestQueue::new("warm-once");
    let (w, addr) = worker(&q, |c| pool_of(c, &["python"]));
    let probe = "import os, socket\nprint(socket.gethostname(), os.path.exists('/tmp/mark'))\n\
                 open('/tmp/mark', 'w').write('x')\n";
    let mut seen = Vec::new();
    for n in 1..=2 {
        pool_ready(&addr, &q, &["python"]).await;
        let r = run(&q, &python(probe), 60).await;
        assert_eq!(
            r.status,
            Status::Succeeded,
            "{:?} {}",
            r.error,
            r.stderr.lossy()
        );
        assert_eq!(
            hits(&addr, &q, "python").await,
            f64::from(n),
            "job {n} served warm"
        );
        seen.push(r.stdout.lossy());
    }
    let (first, second) = (&seen[0], &seen[1]);
    assert!(
        first.ends_with(" False\n") && second.ends_with(" False\n"),
        "{seen:?}"
    );
    assert_ne!(first, second, "another container, another hostname");
    drain(&w).await;
}

/// A job whose limits are not the language's defaults goes cold, counted as a `limits` miss,
/// and ends as it should.
#[tokio::test(flavor = "multi_thread")]
async fn limits_other_than_the_profile_take_the_cold_path() {
    let q = TestQueue::new("warm-limits");
    let (w, addr) = worker(&q, |c| pool_of(c, &["python"]));
    pool_ready(&addr, &q, &["python"]).await;
    let mut spec = python("print('cold')\n");
    spec.limits.memory_bytes = Some(128 << 20);
    let r = run(&q, &spec, 60).await;
    assert_eq!(
        (r.status, r.stdout.lossy().as_str()),
        (Status::Succeeded, "cold\n")
    );
    let misses = series("quayside_pool_misses_total", &q, "python", Some("limits"));
    assert_eq!(metric(&addr, &misses).await, 1.0);
    assert_eq!(hits(&addr, &q, "python").await, 0.0);
    drain(&w).await;
}

/// A waiting container killed from outside is replaced, and a job submitted right after it
/// succeeds (warm or cold, never failed for it).
#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_container_killed_from_outside_is_replaced() {
    let q = TestQueue::new("warm-killed");
    let (w, addr) = worker(&q, |c| pool_of(c, &["python"]));
    pool_ready(&addr, &q, &["python"]).await;
    let label = format!("quayside.worker={}", w.id);
    let before = containers(&label);
    assert_eq!(before.len(), 1, "{before:?}");
    quayside_e2e::sandboxes::docker(&["kill", &before[0]]);
    let r = run(&q, &python("print('after')\n"), 60).await;
    assert_eq!(
        (r.status, r.stdout.lossy().as_str(), r.attempts),
        (Status::Succeeded, "after\n", 1),
        "{:?}",
        r.error
    );
    within(60, "the killed container to be replaced", async {
        loop {
            let now = containers(&label);
            if now.len() == 1 && now[0] != before[0] {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    pool_ready(&addr, &q, &["python"]).await;
    drain(&w).await;
}

/// A worker SIGKILLed with a full pool leaves none of its containers once another worker of
/// the fleet has started; a drained worker leaves none either.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_or_drained_worker_leaves_no_container() {
    let q = TestQueue::new("warm-gone");
    let (killed, addr) = worker(&q, |c| pool_of(c, &["c", "python"]));
    pool_ready(&addr, &q, &["c", "python"]).await;
    let label = format!("quayside.worker={}", killed.id);
    assert_eq!(containers(&label).len(), 2);
    killed.signal(9);
    killed.wait_exit(10).await;
    let (drained, addr) = worker(&q, |c| pool_of(c, &["c", "python"]));
    within(60, "the killed worker's pool to be swept", async {
        while !containers(&label).is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;

    pool_ready(&addr, &q, &["c", "python"]).await;
    let mut slow = python("import time\nprint('up', flush=True)\ntime.sleep(1)\nprint('done')\n");
    slow.id = JobId::generate();
    q.producer.enqueue(&slow).await.expect("enqueue");
    q.wait_state(&slow.id, Status::Running, 60).await;
    drain(&drained).await;
    let r = q.wait_one(&slow.id, 10).await;
    assert_eq!(
        (r.status, r.stdout.lossy().as_str()),
        (Status::Succeeded, "up\ndone\n"),
        "the running job finished within the drain"
    );
}

/// A warm container stopped from outside while its job runs (`docker kill`, `docker rm -f`) is
/// the infrastructure's failure, never the job's verdict, though the container keeps its pool
/// name: the job runs again, succeeds, and the kill spends no attempt. A program that kills
/// itself, or that the kernel kills for memory, gets its own verdict (the engine's events,
/// followed under the pool name, say no one else killed it).
#[tokio::test(flavor = "multi_thread")]
async fn a_warm_container_stopped_from_outside_mid_job_is_retried() {
    use quayside_e2e::sandboxes::docker;

    let q = TestQueue::new("warm-kill");
    let (w, addr) = worker(&q, |c| pool_of(c, &["python"]));
    let program = "import socket, time\nprint('started', socket.gethostname(), flush=True)\n\
                   time.sleep(3)\nprint('done')\n";
    for (n, what) in [&["kill"][..], &["rm", "-f"][..]].into_iter().enumerate() {
        pool_ready(&addr, &q, &["python"]).await;
        let spec = python(program);
        q.producer.enqueue(&spec).await.expect("enqueue");
        // The hostname is the container's id: the job's own container, whatever its name.
        let host = within(60, "the program started", async {
            loop {
                if let Some(line) = q.logged(&spec.id, "stdout").await.first() {
                    return line.trim().trim_start_matches("started ").to_owned();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        docker(&[what, &[host.as_str()]].concat());
        let r = q.wait_one(&spec.id, 120).await;
        assert_eq!(
            (r.status, r.attempts),
            (Status::Succeeded, 1),
            "docker {what:?}: {:?} {}",
            r.error,
            r.stdout.lossy()
        );
        assert!(r.stdout.lossy().ends_with("done\n"), "{}", r.stdout.lossy());
        let runs = q.logged(&spec.id, "stdout").await.concat();
        assert_eq!(
            runs.matches("started").count(),
            2,
            "docker {what:?}: ran again"
        );
        assert!(
            hits(&addr, &q, "python").await >= (n + 1) as f64,
            "served warm"
        );
    }
    pool_ready(&addr, &q, &["python"]).await;
    let served = hits(&addr, &q, "python").await;
    let suicide = python("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n");
    let r = run(&q, &suicide, 60).await;
    assert_eq!(
        (r.status, r.signal, r.attempts),
        (Status::Failed, Some(9), 1),
        "{:?}",
        r.error
    );
    assert_eq!(hits(&addr, &q, "python").await, served + 1.0, "served warm");
    // The pool's profile is the default 256 MiB: a program past it is the kernel's OOM kill.
    pool_ready(&addr, &q, &["python"]).await;
    let hog = python("b = [bytearray(1 << 20) for _ in range(1 << 12)]\n");
    let r = run(&q, &hog, 60).await;
    assert_eq!(
        (r.status, r.attempts),
        (Status::MemoryExceeded, 1),
        "{:?}",
        r.error
    );
    assert_eq!(hits(&addr, &q, "python").await, served + 2.0, "served warm");
    drain(&w).await;
}

/// A cancel and a timeout end a warm job as they end a cold one: same status, same output.
#[tokio::test(flavor = "multi_thread")]
async fn cancel_and_timeout_end_a_warm_job_as_a_cold_one() {
    let q = TestQueue::new("warm-stop");
    let (w, addr) = worker(&q, |c| {
        pool_of(c, &["python"]);
        // The pool's profile times out after 2 s; a job asking for 2.5 s goes cold.
        c.limits.default.run_wall_time_ms = 2_000;
    });
    let spin = "import time\nprint('started', flush=True)\nwhile True: time.sleep(0.05)\n";
    let mut endings = Vec::new();
    for warm in [true, false] {
        pool_ready(&addr, &q, &["python"]).await;
        let mut timeout = python(spin);
        let mut cancelled = python(spin);
        if !warm {
            timeout.limits.run_wall_time_ms = Some(2_500);
            cancelled.limits.run_wall_time_ms = Some(2_500);
        }
        let timed_out = run(&q, &timeout, 60).await;
        pool_ready(&addr, &q, &["python"]).await;
        q.producer.enqueue(&cancelled).await.expect("enqueue");
        // Cancelled once the program has printed, so both keep the same output.
        within(60, "the program to print", async {
            let mut log = q.producer.logs(&cancelled.id, true);
            while let Some(Ok(entry)) = log.next().await {
                if entry.source == "stdout" {
                    return;
                }
            }
            panic!("the log ended before the program printed");
        })
        .await;
        q.producer.cancel(&cancelled.id).await.expect("cancel");
        let cancelled = q.wait_one(&cancelled.id, 30).await;
        endings.push((ending(&timed_out), ending(&cancelled)));
        // The two warm jobs were hits; the cold ones add none.
        assert_eq!(hits(&addr, &q, "python").await, 2.0, "warm: {warm}");
    }
    let (warm, cold) = (&endings[0], &endings[1]);
    assert_eq!(warm.0 .0, Status::TimedOut, "{warm:?}");
    assert_eq!(warm.1 .0, Status::Cancelled, "{warm:?}");
    assert_eq!(warm, cold, "warm vs cold");
    drain(&w).await;
}
