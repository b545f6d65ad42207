//! `DockerRunner` against the real Docker engine and a real redis-server for the live log:
//! every language builds and runs, limits hold against hostile programs, and no container is
//! left behind. Needs the runner images (`scripts/build-images.sh`) and `E2E_REDIS_URL`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::query_parameters::ListContainersOptions;
use bollard::Docker;
use quayside_common::config::{
    default_languages, DockerConfig, FileTransfer, LanguageConfig, RedisConfig,
};
use quayside_common::connection::Redis;
use quayside_common::outcome::Encoding;
use quayside_common::{JobId, JobKind, Limits, Status};
use quayside_e2e::{redis_url, within};
use quayside_worker::logs::LogSink;
use quayside_worker::runner::docker::DockerRunner;
use quayside_worker::runner::{RunOutput, RunRequest, Runner, RunnerError};
use tokio_util::sync::CancellationToken;

/// Limits for these tests: the defaults with room for slow compilers on a busy machine.
const LIMITS: Limits = Limits {
    compile_wall_time_ms: 60_000,
    run_wall_time_ms: 10_000,
    ..Limits::DEFAULT
};

/// Worker ids of every harness of this process: all live, so the orphan sweep must spare them.
static WORKERS: tokio::sync::Mutex<Vec<String>> = tokio::sync::Mutex::const_new(Vec::new());

/// A runner under a worker id of its own, plus what its jobs need.
struct Harness {
    runner: DockerRunner,
    redis: Arc<Redis>,
    docker: Docker,
}

impl Harness {
    /// Default config, under the OCI runtime named by `E2E_DOCKER_RUNTIME` if set (scripts/test.sh
    /// runs this suite a second time under gVisor's `runsc`).
    async fn new() -> Self {
        let mut cfg = DockerConfig::default();
        if let Ok(runtime) = std::env::var("E2E_DOCKER_RUNTIME") {
            cfg.runtime = runtime;
        }
        Self::with(cfg, default_languages()).await
    }

    async fn with(cfg: DockerConfig, languages: BTreeMap<String, LanguageConfig>) -> Self {
        let worker = format!("e2e-{}-{:08x}", std::process::id(), rand_u32());
        within(10, "worker registry", WORKERS.lock())
            .await
            .push(worker.clone());
        let redis = Redis::new(&RedisConfig {
            url: redis_url(),
            ..RedisConfig::default()
        })
        .expect("redis config");
        Self {
            runner: DockerRunner::new(cfg, &languages, worker),
            redis: Arc::new(redis),
            docker: within(10, "docker version", async {
                Docker::connect_with_local_defaults()
                    .expect("docker client")
                    .negotiate_version()
                    .await
            })
            .await
            .expect("docker engine"),
        }
    }

    /// Runs `req` to its end and checks that its container is gone afterwards.
    async fn run(&self, req: &RunRequest) -> RunOutput {
        let out = self
            .try_run(req, CancellationToken::new())
            .await
            .expect("runner error");
        self.assert_gone(&req.job_id).await;
        out
    }

    async fn try_run(
        &self,
        req: &RunRequest,
        cancel: CancellationToken,
    ) -> Result<RunOutput, RunnerError> {
        let sink = LogSink::new(Arc::clone(&self.redis), log_key(&req.job_id), 1000);
        within(180, "runner.run", self.runner.run(req, &sink, cancel)).await
    }

    /// The job's live log as (source, bytes) entries.
    async fn log(&self, id: &JobId) -> Vec<(String, Vec<u8>)> {
        let mut conn = within(5, "redis conn", self.redis.conn())
            .await
            .expect("redis");
        let entries: Vec<(String, HashMap<String, Vec<u8>>)> = within(
            5,
            "XRANGE",
            redis::cmd("XRANGE")
                .arg(log_key(id))
                .arg("-")
                .arg("+")
                .query_async(&mut conn),
        )
        .await
        .expect("xrange");
        let _: () = within(
            5,
            "DEL",
            redis::cmd("DEL").arg(log_key(id)).query_async(&mut conn),
        )
        .await
        .expect("del");
        entries
            .into_iter()
            .map(|(_, mut f)| {
                let source =
                    String::from_utf8(f.remove("s").unwrap_or_default()).unwrap_or_default();
                (source, f.remove("d").unwrap_or_default())
            })
            .collect()
    }

    async fn containers(&self, label: &str) -> Vec<String> {
        let filters = HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        within(
            10,
            "list containers",
            self.docker.list_containers(Some(options)),
        )
        .await
        .expect("list containers")
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
    }

    async fn assert_gone(&self, id: &JobId) {
        let left = self.containers(&format!("quayside.job={id}")).await;
        assert!(
            left.is_empty(),
            "containers of job {id} left behind: {left:?}"
        );
    }
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}

fn log_key(id: &JobId) -> String {
    format!("e2e:docker-runner:{id}:log")
}

fn job(language: &str, files: &[(&str, &str)], stdin: &str) -> RunRequest {
    RunRequest {
        job_id: JobId::generate(),
        attempt: 1,
        kind: JobKind::Run,
        language: language.to_owned(),
        language_config: default_languages()
            .remove(language)
            .expect("known language"),
        files: files
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect(),
        compiler_options: Vec::new(),
        args: Vec::new(),
        stdin: stdin.to_owned(),
        limits: LIMITS,
    }
}

fn c(source: &str) -> RunRequest {
    job("c", &[("main.c", source)], "")
}

fn python(source: &str) -> RunRequest {
    job("python", &[("main.py", source)], "")
}

fn show(out: &RunOutput) -> String {
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

const HELLO: [(&str, &str, &str); 6] = [
    (
        "c",
        "main.c",
        "#include <stdio.h>\nint main(void) { char n[64]; if (scanf(\"%63s\", n) != 1) return 2; printf(\"hello, %s\\n\", n); return 0; }\n",
    ),
    (
        "cpp",
        "main.cpp",
        "#include <iostream>\n#include <string>\nint main() { std::string n; std::cin >> n; std::cout << \"hello, \" << n << std::endl; }\n",
    ),
    ("python", "main.py", "import sys\nprint(f\"hello, {sys.stdin.readline().strip()}\")\n"),
    (
        "rust",
        "main.rs",
        "fn main() { let mut n = String::new(); std::io::stdin().read_line(&mut n).unwrap(); println!(\"hello, {}\", n.trim()); }\n",
    ),
    (
        "go",
        "main.go",
        "package main\n\nimport (\n\t\"bufio\"\n\t\"fmt\"\n\t\"os\"\n)\n\nfunc main() {\n\ts := bufio.NewScanner(os.Stdin)\n\ts.Scan()\n\tfmt.Printf(\"hello, %s\\n\", s.Text())\n}\n",
    ),
    (
        "javascript",
        "main.js",
        "const n = require('fs').readFileSync(0, 'utf8').trim();\nconsole.log(`hello, ${n}`);\n",
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn every_language_builds_and_runs_hello_world_from_stdin() {
    let h = Harness::new().await;
    let runs = HELLO.iter().map(|(lang, file, source)| {
        let req = job(lang, &[(file, source)], "quayside\n");
        let h = &h;
        async move { (lang, h.run(&req).await, h.log(&req.job_id).await) }
    });
    for (lang, out, log) in futures_util::future::join_all(runs).await {
        assert_eq!(out.status, Status::Succeeded, "{lang}: {}", show(&out));
        assert_eq!(out.stdout.data, "hello, quayside\n", "{lang}");
        assert_eq!(out.exit_code, Some(0), "{lang}");
        assert!(out.stderr.is_empty(), "{lang}: {}", show(&out));
        let streamed: Vec<u8> = log
            .iter()
            .filter(|(s, _)| s == "stdout")
            .flat_map(|(_, d)| d.clone())
            .collect();
        assert_eq!(
            streamed, b"hello, quayside\n",
            "{lang}: stdout reached the live log"
        );
    }
}

/// What the runner base (`deploy/images/base`) gives every language image, checked in each
/// image as the runner starts it: the runner user, HOME and TMPDIR on the tmpfs, no setuid or
/// setgid file on the root filesystem, no apt lists left behind.
#[tokio::test(flavor = "multi_thread")]
async fn every_image_runs_as_the_runner_user_with_no_setuid_files() {
    const PROBE: &str = "echo \"$(id -u):$(id -g) home=$HOME tmp=$TMPDIR\"; \
        find / -xdev -type f -perm /6000 2>/dev/null | sed 's/^/setid /'; \
        ls -A /var/lib/apt/lists 2>/dev/null | sed 's/^/apt /'";
    let h = Harness::new().await;
    for (lang, file, _) in HELLO {
        let mut req = job(lang, &[(file, "")], "");
        req.language_config.build_command.clear();
        req.language_config.run_command = PROBE.into();
        let out = h.run(&req).await;
        assert_eq!(out.status, Status::Succeeded, "{lang}: {}", show(&out));
        assert_eq!(
            out.stdout.data,
            "10001:10001 home=/tmp tmp=/tmp\n",
            "{lang}: {}",
            show(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn options_reach_the_compiler_and_args_reach_the_program_unexpanded() {
    let h = Harness::new().await;
    let mut req = c("#include <stdio.h>\nint main(int argc, char **argv) { printf(\"%s\", GREETING); for (int i = 1; i < argc; i++) printf(\"|%s\", argv[i]); puts(\"\"); return 0; }\n");
    req.compiler_options = vec!["-DGREETING=\"hi there\"".into(), "-Wall".into()];
    req.args = vec!["a b".into(), "$(id)".into(), "'q".into(), String::new()];
    let out = h.run(&req).await;
    assert_eq!(out.status, Status::Succeeded, "{}", show(&out));
    assert_eq!(out.stdout.data, "hi there|a b|$(id)|'q|\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_file_c_project_with_a_subfolder() {
    let h = Harness::new().await;
    let req = job(
        "c",
        &[
            ("main.c", "#include <stdio.h>\n#include \"util/util.h\"\nint main(void) { printf(\"%d\\n\", twice(21)); return 0; }\n"),
            ("util/util.c", "#include \"util.h\"\nint twice(int x) { return 2 * x; }\n"),
            ("util/util.h", "int twice(int x);\n"),
        ],
        "",
    );
    let out = h.run(&req).await;
    assert_eq!(out.status, Status::Succeeded, "{}", show(&out));
    assert_eq!(out.stdout.data, "42\n");
    assert!(
        out.compile_ms > 0 && out.run_ms < 5_000,
        "{} / {}",
        out.compile_ms,
        out.run_ms
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cpp_compile_error_reports_the_diagnostic() {
    let h = Harness::new().await;
    let req = job(
        "cpp",
        &[("main.cpp", "int main() { return undefined_name; }\n")],
        "",
    );
    let out = h.run(&req).await;
    assert_eq!(out.status, Status::CompileError, "{}", show(&out));
    let diag = out.compile_output.lossy();
    assert!(
        diag.contains("error") && diag.contains("undefined_name"),
        "{diag}"
    );
    assert_eq!((out.exit_code, out.run_ms), (None, 0));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    let log = h.log(&req.job_id).await;
    assert!(log
        .iter()
        .any(|(s, d)| s == "compile" && String::from_utf8_lossy(d).contains("undefined_name")));
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_failures_report_exit_code_and_signal() {
    let h = Harness::new().await;
    let out = h
        .run(&c(
            "#include <stdio.h>\nint main(void) { fprintf(stderr, \"bad\\n\"); return 3; }\n",
        ))
        .await;
    assert_eq!(
        (out.status, out.exit_code, out.signal),
        (Status::Failed, Some(3), None),
        "{}",
        show(&out)
    );
    assert_eq!(out.stderr.data, "bad\n");

    let out = h
        .run(&c("#include <stdlib.h>\nint main(void) { abort(); }\n"))
        .await;
    assert_eq!(
        (out.status, out.exit_code, out.signal),
        (Status::Failed, Some(134), Some(6)),
        "{}",
        show(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn compile_only_jobs_check_without_running() {
    let h = Harness::new().await;
    let mut req = c("#include <stdio.h>\nint main(void) { puts(\"never runs\"); return 1; }\n");
    req.kind = JobKind::Compile;
    let out = h.run(&req).await;
    assert_eq!(out.status, Status::Succeeded, "{}", show(&out));
    assert!(out.stdout.is_empty() && out.run_ms == 0, "{}", show(&out));

    let mut req = job(
        "rust",
        &[(
            "main.rs",
            "fn main() { println!(\"never runs\"); std::process::exit(1) }\n",
        )],
        "",
    );
    req.kind = JobKind::Compile;
    let out = h.run(&req).await;
    assert_eq!(out.status, Status::Succeeded, "{}", show(&out));
    assert!(out.stdout.is_empty());

    let mut req = job(
        "rust",
        &[("main.rs", "fn main() { let x: u8 = \"no\"; }\n")],
        "",
    );
    req.kind = JobKind::Compile;
    let out = h.run(&req).await;
    assert_eq!(out.status, Status::CompileError, "{}", show(&out));
    assert!(
        out.compile_output.lossy().contains("mismatched types"),
        "{}",
        show(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fork_bomb_is_held_by_the_pids_limit() {
    let h = Harness::new().await;
    let mut req = c("#include <unistd.h>\nint main(void) { for (;;) fork(); }\n");
    req.limits.run_wall_time_ms = 3_000;
    req.limits.pids = 32;
    let out = h.run(&req).await;
    assert!(
        matches!(out.status, Status::TimedOut | Status::Failed),
        "{}",
        show(&out)
    );
    // The host still works: it can start processes, and the next job runs normally.
    assert!(std::process::Command::new("true")
        .status()
        .expect("spawn on host")
        .success());
    let out = h
        .run(&job(HELLO[0].0, &[(HELLO[0].1, HELLO[0].2)], "again\n"))
        .await;
    assert_eq!(out.stdout.data, "hello, again\n", "{}", show(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_bomb_is_memory_exceeded() {
    let h = Harness::new().await;
    let mut req = c("#include <stdlib.h>\n#include <string.h>\nint main(void) { for (;;) { char *p = malloc(1 << 20); if (!p) return 9; memset(p, 1, 1 << 20); } }\n");
    req.limits.memory_bytes = 64 << 20;
    let out = h.run(&req).await;
    assert_eq!(out.status, Status::MemoryExceeded, "{}", show(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn infinite_loop_times_out_at_the_run_limit() {
    let h = Harness::new().await;
    let mut req = c("int main(void) { for (;;) {} }\n");
    req.limits.run_wall_time_ms = 1_500;
    let out = h.run(&req).await;
    assert_eq!(out.status, Status::TimedOut, "{}", show(&out));
    assert!(
        (1_500..2_500).contains(&out.run_ms),
        "run_ms {}",
        out.run_ms
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sleeping_program_times_out_quickly() {
    let h = Harness::new().await;
    let mut req = python("import time\ntime.sleep(3600)\n");
    req.limits.run_wall_time_ms = 1_000;
    let started = Instant::now();
    let out = h.run(&req).await;
    assert_eq!(out.status, Status::TimedOut, "{}", show(&out));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// Resident memory of this test process, in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_megabytes_of_output_is_cut_at_the_cap_with_bounded_memory() {
    let h = Harness::new().await;
    let req = c("#include <stdio.h>\n#include <string.h>\nint main(void) { static char b[65536]; memset(b, 'x', sizeof b); for (int i = 0; i < 1600; i++) fwrite(b, 1, sizeof b, stdout); return 0; }\n");
    let before = rss_bytes();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampler = {
        let peak = Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_bytes(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let out = h.run(&req).await;
    sampler.abort();
    assert_eq!(out.status, Status::OutputExceeded, "{}", show(&out));
    assert!(out.stdout.truncated);
    assert_eq!(out.stdout.data.len() as u64, LIMITS.output_bytes);
    let growth = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before);
    eprintln!(
        "worker RSS growth while capping 100 MB of output: {} KiB",
        growth / 1024
    );
    assert!(growth < 48 << 20, "RSS grew by {growth} bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn filling_the_tmpfs_fails_cleanly() {
    let h = Harness::new().await;
    let req = python("with open('/work/big', 'wb') as f:\n    for _ in range(200):\n        f.write(b'x' * (1 << 20))\n");
    let out = h.run(&req).await;
    assert_eq!(out.status, Status::Failed, "{}", show(&out));
    let err = out.stderr.lossy();
    // ENOSPC from the full tmpfs, or SIGXFSZ from the file-size limit: either stops it.
    assert!(
        err.contains("No space left") || out.signal == Some(25),
        "{}",
        show(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_root_filesystem_is_read_only() {
    let h = Harness::new().await;
    let out = h.run(&python("open('/evil', 'w').write('x')\n")).await;
    assert_eq!(out.status, Status::Failed, "{}", show(&out));
    // gVisor checks permissions before the mount's read-only flag and says EACCES; runc's
    // kernel says EROFS. Either way nothing is written.
    let refused = if std::env::var("E2E_DOCKER_RUNTIME").is_ok_and(|r| r.contains("runsc")) {
        "Permission denied"
    } else {
        "Read-only file system"
    };
    assert!(out.stderr.lossy().contains(refused), "{}", show(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn there_is_no_network() {
    let h = Harness::new().await;
    // Only loopback exists, and the host's loopback (where Redis listens) is out of reach.
    let port = redis_url()
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok())
        .unwrap_or(6379);
    let out = h
        .run(&python(&format!(
            "import os, socket\nprint(sorted(os.listdir('/sys/class/net')))\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('connected')\nexcept OSError as e:\n    print(type(e).__name__)\n"
        )))
        .await;
    assert_eq!(out.status, Status::Succeeded, "{}", show(&out));
    assert_eq!(out.stdout.data, "['lo']\nConnectionRefusedError\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_files_are_out_of_reach() {
    let h = Harness::new().await;
    let secret = format!("/tmp/quayside-host-secret-{:08x}", rand_u32());
    std::fs::write(&secret, "host secret").expect("write host file");
    let out = h
        .run(&python(&format!(
            "import os\nprint(os.getuid(), os.getgid())\nfor p in ['{secret}', '/etc/shadow']:\n    try:\n        print(open(p).read())\n    except OSError as e:\n        print(p, type(e).__name__)\n"
        )))
        .await;
    std::fs::remove_file(&secret).ok();
    assert_eq!(out.status, Status::Succeeded, "{}", show(&out));
    assert_eq!(
        out.stdout.data,
        format!("10001 10001\n{secret} FileNotFoundError\n/etc/shadow PermissionError\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn non_utf8_output_is_kept_byte_for_byte() {
    let h = Harness::new().await;
    let out = h
        .run(&c("#include <stdio.h>\nint main(void) { fwrite(\"\\xff\\xfe\\0a\\n\", 1, 5, stdout); return 0; }\n"))
        .await;
    assert_eq!(out.status, Status::Succeeded, "{}", show(&out));
    assert_eq!(out.stdout.encoding, Encoding::Base64);
    assert_eq!(out.stdout.bytes(), b"\xff\xfe\0a\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_mid_run_stops_and_removes_the_container() {
    let h = Harness::new().await;
    let req = python("import time\nprint('started', flush=True)\ntime.sleep(30)\n");
    let cancel = CancellationToken::new();
    let canceller = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            cancel.cancel();
            Instant::now()
        })
    };
    let result = h.try_run(&req, cancel).await;
    let cancelled_at = within(10, "canceller", canceller).await.expect("canceller");
    assert!(matches!(result, Err(RunnerError::Cancelled)), "{result:?}");
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(2),
        "returned {:?} after the cancel",
        cancelled_at.elapsed()
    );
    h.assert_gone(&req.job_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_run_still_removes_its_container() {
    // The worker's outer timeout drops the run future instead of cancelling it.
    let h = Harness::new().await;
    let req = python("import time\ntime.sleep(30)\n");
    let sink = LogSink::new(Arc::clone(&h.redis), log_key(&req.job_id), 1000);
    let run = h.runner.run(&req, &sink, CancellationToken::new());
    assert!(
        tokio::time::timeout(Duration::from_secs(3), run)
            .await
            .is_err(),
        "still running"
    );
    let label = format!("quayside.job={}", req.job_id);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !h.containers(&label).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "container of a dropped run left behind"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_engine_refusal_is_a_transient_failure_and_leaves_nothing() {
    let cfg = DockerConfig {
        runtime: "no-such-runtime".into(),
        ..DockerConfig::default()
    };
    let h = Harness::with(cfg, default_languages()).await;
    let req = c("int main(void) { return 0; }\n");
    let err = h
        .try_run(&req, CancellationToken::new())
        .await
        .expect_err("unknown runtime");
    assert!(
        matches!(
            err,
            RunnerError::Failed {
                transient: true,
                ..
            }
        ),
        "{err:?}"
    );
    h.assert_gone(&req.job_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn archive_upload_transfer_runs_a_multi_file_project() {
    let cfg = DockerConfig {
        file_transfer: FileTransfer::Archive,
        ..DockerConfig::default()
    };
    let h = Harness::with(cfg, default_languages()).await;
    let req = job(
        "c",
        &[
            ("main.c", "#include <stdio.h>\n#include \"lib/add.h\"\nint main(void) { int a, b; scanf(\"%d %d\", &a, &b); printf(\"%d\\n\", add(a, b)); return 0; }\n"),
            ("lib/add.c", "#include \"add.h\"\nint add(int a, int b) { return a + b; }\n"),
            ("lib/add.h", "int add(int a, int b);\n"),
        ],
        "2 40\n",
    );
    let out = h.run(&req).await;
    assert_eq!(out.status, Status::Succeeded, "{}", show(&out));
    assert_eq!(out.stdout.data, "42\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_images_and_an_unreachable_engine_are_runner_errors() {
    let nope = LanguageConfig {
        image: "quayside/runner-nope:1".into(),
        ..default_languages().remove("c").expect("c")
    };
    let h = Harness::with(
        DockerConfig::default(),
        BTreeMap::from([("nope".to_owned(), nope.clone())]),
    )
    .await;
    let err = within(30, "check", h.runner.check())
        .await
        .expect_err("image is missing");
    assert!(
        matches!(&err, RunnerError::ImageMissing { image } if image == "quayside/runner-nope:1"),
        "{err:?}"
    );
    assert!(err.to_string().contains("scripts/build-images.sh"), "{err}");
    let mut req = c("int main(void) { return 0; }\n");
    req.language_config = nope;
    assert!(matches!(
        h.try_run(&req, CancellationToken::new()).await,
        Err(RunnerError::ImageMissing { .. })
    ));

    let down = DockerConfig {
        socket: "unix:///nonexistent/docker.sock".into(),
        ..DockerConfig::default()
    };
    let h = Harness::with(down, default_languages()).await;
    let err = within(30, "check", h.runner.check())
        .await
        .expect_err("no engine");
    assert!(matches!(err, RunnerError::Unavailable { .. }), "{err:?}");
    let err = h
        .try_run(
            &c("int main(void) { return 0; }\n"),
            CancellationToken::new(),
        )
        .await
        .expect_err("no engine");
    assert!(matches!(err, RunnerError::Unavailable { .. }), "{err:?}");

    within(30, "check", Harness::new().await.runner.check())
        .await
        .expect("all default images present");
}

#[tokio::test(flavor = "multi_thread")]
async fn orphan_sweep_removes_only_containers_of_dead_workers() {
    use bollard::models::ContainerCreateBody;
    use bollard::query_parameters::CreateContainerOptions;

    let h = Harness::new().await;
    let tag = format!("{:08x}", rand_u32());
    let (dead, live) = (format!("dead-{tag}"), format!("live-{tag}"));
    for worker in [&dead, &live] {
        let body = ContainerCreateBody {
            image: Some(quayside_common::config::default_image("c")),
            cmd: Some(vec!["true".into()]),
            labels: Some(HashMap::from([
                ("quayside.job".to_owned(), format!("sweep-{tag}")),
                ("quayside.worker".to_owned(), worker.clone()),
            ])),
            ..Default::default()
        };
        within(
            10,
            "create",
            h.docker
                .create_container(None::<CreateContainerOptions>, body),
        )
        .await
        .expect("create labelled container");
    }
    // Holding the registry: no harness starts (and so no container appears) with an id the
    // sweep would take for dead.
    let workers = within(10, "worker registry", WORKERS.lock()).await;
    let alive: Vec<String> = workers.iter().cloned().chain([live.clone()]).collect();
    let removed = within(30, "sweep", h.runner.sweep_orphans(&alive, Duration::ZERO))
        .await
        .expect("sweep");
    drop(workers);
    assert!(removed >= 1);
    assert!(
        h.containers(&format!("quayside.worker={dead}"))
            .await
            .is_empty(),
        "dead worker's container removed"
    );
    let kept = h.containers(&format!("quayside.worker={live}")).await;
    assert_eq!(kept.len(), 1, "live worker's container kept");
    for id in kept {
        within(
            10,
            "remove",
            h.docker.remove_container(
                &id,
                Some(bollard::query_parameters::RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            ),
        )
        .await
        .expect("remove");
    }
}

/// Not a check: prints the end-to-end latency of a one-line C job (p50, runner called
/// directly, container removal included) next to a bare create+start+wait+remove of
/// `quayside/runner-c true`, once with the engine's defaults and once with the job
/// containers' hardening. Run with
/// `cargo test -p quayside-e2e --release --test docker_runner -- --ignored --nocapture latency`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: prints numbers, asserts nothing"]
async fn latency_report() {
    use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
    use bollard::query_parameters::{
        CreateContainerOptions, RemoveContainerOptions, StartContainerOptions, WaitContainerOptions,
    };
    use futures_util::StreamExt as _;

    let h = Harness::new().await;
    let archive = Harness::with(
        DockerConfig {
            file_transfer: FileTransfer::Archive,
            ..DockerConfig::default()
        },
        default_languages(),
    )
    .await;
    let bare = |host_config: HostConfig| {
        let docker = h.docker.clone();
        async move {
            let started = Instant::now();
            let body = ContainerCreateBody {
                image: Some(quayside_common::config::default_image("c")),
                cmd: Some(vec!["true".into()]),
                user: Some("10001:10001".into()),
                host_config: Some(host_config),
                ..Default::default()
            };
            let id = docker
                .create_container(None::<CreateContainerOptions>, body)
                .await
                .expect("create")
                .id;
            docker
                .start_container(&id, None::<StartContainerOptions>)
                .await
                .expect("start");
            let _ = docker
                .wait_container(&id, None::<WaitContainerOptions>)
                .next()
                .await;
            let remove = RemoveContainerOptions {
                force: true,
                ..Default::default()
            };
            docker
                .remove_container(&id, Some(remove))
                .await
                .expect("remove");
            started.elapsed().as_secs_f64() * 1e3
        }
    };
    let hardened = || HostConfig {
        memory: Some(256 << 20),
        memory_swap: Some(256 << 20),
        nano_cpus: Some(1_000_000_000),
        pids_limit: Some(64),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([
            (
                "/work".to_owned(),
                "rw,exec,nosuid,nodev,size=67108864,uid=10001,gid=10001,mode=0700".to_owned(),
            ),
            (
                "/tmp".to_owned(),
                "rw,noexec,nosuid,nodev,size=67108864,mode=1777".to_owned(),
            ),
        ])),
        network_mode: Some("none".into()),
        ipc_mode: Some("none".into()),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        ..Default::default()
    };
    let source = "#include <stdio.h>\nint main(void) { puts(\"one line\"); return 0; }\n";
    let rounds = 21;
    let (mut plain, mut same, mut job_ms, mut compile, mut run, mut uploaded) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        plain.push(within(60, "bare cycle", bare(HostConfig::default())).await);
        same.push(within(60, "bare cycle", bare(hardened())).await);
        let req = c(source);
        let started = Instant::now();
        let out = h.run(&req).await;
        job_ms.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(out.stdout.data, "one line\n");
        compile.push(out.compile_ms as f64);
        let started = Instant::now();
        assert_eq!(archive.run(&c(source)).await.stdout.data, "one line\n");
        uploaded.push(started.elapsed().as_secs_f64() * 1e3);
        run.push(out.run_ms as f64);
    }
    let p50 = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (job, plain, same) = (p50(job_ms), p50(plain), p50(same));
    eprintln!(
        "p50 of {rounds}: C run job with file_transfer = archive {:.1} ms",
        p50(uploaded)
    );
    eprintln!(
        "p50 of {rounds}: C run job {job:.1} ms (compile_ms {:.0}, run_ms {:.0}); bare `true` cycle: engine defaults {plain:.1} ms (ratio {:.2}), same hardening {same:.1} ms (ratio {:.2})",
        p50(compile),
        p50(run),
        job / plain,
        job / same
    );
}
