//! `DockerRunner` (guarded, as the worker runs it) against the real Docker engine: every
//! language builds and runs, limits hold against hostile programs, the live log holds whole
//! lines, and no container is left behind. Needs the runner images
//! (`scripts/build-images.sh`); the live log goes to memory, so no Redis.
//!
//! - `hostile`: the kernel surface the seccomp profile takes away, the wrapper out of the
//!   job's reach, jobs running side by side under their own uids, and what a job's build
//!   step leaves when it is cut short.

mod hostile;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use quayside_common::config::{
    default_languages, DockerConfig, FileTransfer, LanguageConfig, RunnerConfig,
};
use quayside_common::outcome::Encoding;
use quayside_common::{JobId, JobKind, Limits, Status};
use quayside_e2e::sandboxes::{self, assert_ended, show};
use quayside_e2e::{redis_url, within};
use quayside_worker::queue::LogWriter;
use quayside_worker::report::live_log::LiveLog;
use quayside_worker::runner::docker::DockerRunner;
use quayside_worker::runner::{
    Fleet, Guarded, LogSource, Output, RunOutput, RunRequest, Runner, RunnerError, RunnerErrorKind,
};
use tokio_util::sync::CancellationToken;

/// Limits for these tests: the defaults with room for slow compilers on a busy machine.
const LIMITS: Limits = Limits {
    compile_wall_time_ms: 60_000,
    run_wall_time_ms: 10_000,
    ..Limits::DEFAULT
};

/// The fleet this process's harnesses run their jobs in: its own, so no other test's sweep
/// (and no sweep of this one's) ever judges them.
fn fleet() -> Fleet {
    static FLEET: std::sync::OnceLock<Fleet> = std::sync::OnceLock::new();
    FLEET
        .get_or_init(|| Fleet {
            queue: "e2e-docker-runner".into(),
            id: format!("{}-{:08x}", std::process::id(), rand_u32()),
        })
        .clone()
}

/// Each job's live log entries, as (source, bytes).
type Logs = Arc<Mutex<HashMap<JobId, Vec<(String, Vec<u8>)>>>>;

/// The live log of one job, kept in memory instead of its log stream.
struct JobLog {
    id: JobId,
    logs: Logs,
}

#[async_trait::async_trait]
impl LogWriter for JobLog {
    async fn write(&self, source: LogSource, data: &[u8]) {
        let mut logs = self.logs.lock().expect("lock");
        let entries = logs.entry(self.id.clone()).or_default();
        entries.push((source.as_str().to_owned(), data.to_vec()));
    }
}

/// A runner under a worker id of its own, plus what its jobs need.
struct Harness {
    runner: Guarded<DockerRunner>,
    logs: Logs,
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

    /// The Docker backend's settings `docker` and the default sandbox settings.
    async fn with(docker: DockerConfig, languages: BTreeMap<String, LanguageConfig>) -> Self {
        let cfg = RunnerConfig {
            docker,
            ..RunnerConfig::default()
        };
        Self::with_runner(cfg, languages).await
    }

    async fn with_runner(cfg: RunnerConfig, languages: BTreeMap<String, LanguageConfig>) -> Self {
        let worker = format!("e2e-{}-{:08x}", std::process::id(), rand_u32());
        Self {
            runner: Guarded::new(DockerRunner::new(cfg, &languages, worker)),
            logs: Logs::default(),
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

    /// Runs `req` with its output going through the worker's live log into memory, then
    /// waits for the removal of its containers (which runs after the verdict, off the job's
    /// path), so no test leaves one behind when its runtime ends.
    async fn try_run(
        &self,
        req: &RunRequest,
        cancel: CancellationToken,
    ) -> Result<RunOutput, RunnerError> {
        let (output, chunks) = Output::channel();
        let writer = JobLog {
            id: req.job_id.clone(),
            logs: Arc::clone(&self.logs),
        };
        let live = LiveLog::start(chunks, writer);
        let out = within(180, "runner.run", self.runner.run(req, &output, cancel)).await;
        live.finish(output, Duration::from_secs(2)).await;
        self.assert_gone(&req.job_id).await;
        out
    }

    /// What the job printed to stdout so far, from its live log (which stays as it is).
    async fn stdout_so_far(&self, id: &JobId) -> String {
        let stdout: Vec<u8> = self
            .entries(id)
            .into_iter()
            .filter(|(s, _)| s == "stdout")
            .flat_map(|(_, d)| d)
            .collect();
        String::from_utf8_lossy(&stdout).into_owned()
    }

    /// The job's live log as (source, bytes) entries, which it then forgets.
    async fn log(&self, id: &JobId) -> Vec<(String, Vec<u8>)> {
        self.logs
            .lock()
            .expect("lock")
            .remove(id)
            .unwrap_or_default()
    }

    /// The job's live log as (source, bytes) entries.
    fn entries(&self, id: &JobId) -> Vec<(String, Vec<u8>)> {
        let logs = self.logs.lock().expect("lock");
        logs.get(id).cloned().unwrap_or_default()
    }

    async fn containers(&self, label: &str) -> Vec<String> {
        sandboxes::containers(&self.docker, label).await
    }

    /// Nothing of the job is left once its removal, which runs after its verdict, is done.
    async fn assert_gone(&self, id: &JobId) {
        let label = format!("quayside.job={id}");
        let gone = async {
            while !self.containers(&label).await.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        within(30, &format!("containers of job {id} removed"), gone).await;
    }
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
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
        fleet: fleet(),
        tests: None,
    }
}

fn c(source: &str) -> RunRequest {
    job("c", &[("main.c", source)], "")
}

fn python(source: &str) -> RunRequest {
    job("python", &[("main.py", source)], "")
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
    // One language at a time: six sandboxes at once on two cores (rustc and go building under
    // gVisor) once starved node's start past its 10 s wall time: the machine's verdict, not the runner's.
    for (lang, file, source) in HELLO {
        let req = job(lang, &[(file, source)], "quayside\n");
        let (out, log) = (h.run(&req).await, h.log(&req.job_id).await);
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
/// image as the runner starts it: the attempt's own unprivileged uid with the runner group,
/// HOME and TMPDIR on the tmpfs, no setuid or setgid file on the root filesystem, no apt lists
/// left behind.
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
        // `find /` stats every file of the image: under gVisor, on a loaded machine, the C++
        // image's took over the default 10 s once. The probe is about identity, not speed.
        req.limits.run_wall_time_ms = 60_000;
        let out = h.run(&req).await;
        assert_eq!(out.status, Status::Succeeded, "{lang}: {}", show(&out));
        let (uid, rest) = out.stdout.data.split_once(':').expect("uid:gid");
        let uid: u32 = uid.parse().expect("numeric uid");
        assert!(
            (10001..10001 + (1 << 20)).contains(&uid),
            "{lang}: the attempt's own uid: {}",
            show(&out)
        );
        assert_eq!(rest, "10001 home=/tmp tmp=/tmp\n", "{lang}: {}", show(&out));
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
    assert_ended(&out, Status::Failed, Some(3), None);
    assert_eq!(out.stderr.data, "bad\n");

    let out = h
        .run(&c("#include <stdlib.h>\nint main(void) { abort(); }\n"))
        .await;
    assert_ended(&out, Status::Failed, Some(134), Some(6));
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
    let out = h.run(&req).await;
    assert_eq!(out.status, Status::TimedOut, "{}", show(&out));
    // Stopped at its limit, not when the sleep ends: the run's own time, which leaves out the
    // sandbox's start (seconds on a loaded machine, and not what the limit bounds).
    assert!(
        (1_000..2_000).contains(&out.run_ms),
        "run_ms {}",
        out.run_ms
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
    let (ids, rest) = out
        .stdout
        .data
        .split_once('\n')
        .expect("two lines at least");
    let (uid, gid) = ids.split_once(' ').expect("uid gid");
    let uid: u32 = uid.parse().expect("uid");
    assert!(
        (10001..10001 + (1 << 20)).contains(&uid) && gid == "10001",
        "an unprivileged uid of the attempt's own: {ids}"
    );
    assert_eq!(
        rest,
        format!("{secret} FileNotFoundError\n/etc/shadow PermissionError\n")
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
async fn cancel_mid_run_stops_removes_the_container_and_keeps_the_output() {
    let h = Harness::new().await;
    let req = python("import sys, time\nprint('started', flush=True)\nprint('oops', file=sys.stderr, flush=True)\ntime.sleep(30)\n");
    let cancel = CancellationToken::new();
    // Cancels once both lines are in the live log: a fixed delay raced the program's start
    // under gVisor.
    let canceller = async {
        within(60, "both lines in the live log", async {
            loop {
                let sources: Vec<String> =
                    h.entries(&req.job_id).into_iter().map(|e| e.0).collect();
                if sources.iter().any(|s| s == "stdout") && sources.iter().any(|s| s == "stderr") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        cancel.cancel();
        Instant::now()
    };
    let (result, cancelled_at) = tokio::join!(h.try_run(&req, cancel.clone()), canceller);
    let out = result.expect("cancelled after the start: the output so far");
    assert_eq!(out.status, Status::Cancelled, "{}", show(&out));
    assert_eq!(
        (out.stdout.data.as_str(), out.stderr.data.as_str()),
        ("started\n", "oops\n"),
        "what it printed before the cancel"
    );
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(2),
        "returned {:?} after the cancel",
        cancelled_at.elapsed()
    );
    h.assert_gone(&req.job_id).await;

    // Cancelled before the sandbox started: nothing ran, nothing to keep.
    let cancel = CancellationToken::new();
    cancel.cancel();
    let req = python("print('never')\n");
    assert!(matches!(
        h.try_run(&req, cancel).await,
        Err(RunnerError::Cancelled)
    ));
    h.assert_gone(&req.job_id).await;
}

/// Waits until the job's container runs, then does `what` to it with the docker CLI.
async fn from_outside(h: &Harness, req: &RunRequest, what: &'static [&'static str]) {
    let label = format!("quayside.job={}", req.job_id);
    let id = within(60, "container running", async {
        loop {
            if let Some(id) = h.containers(&label).await.into_iter().next() {
                let state = h
                    .docker
                    .inspect_container(
                        &id,
                        None::<bollard::query_parameters::InspectContainerOptions>,
                    )
                    .await
                    .ok()
                    .and_then(|i| i.state)
                    .and_then(|s| s.running);
                if state == Some(true) {
                    return id;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // Once the program printed, it is past the build step.
    tokio::time::sleep(Duration::from_millis(500)).await;
    sandboxes::docker(&[what, &[id.as_str()]].concat());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_killed_or_removed_from_outside_is_an_infrastructure_failure() {
    let h = Arc::new(Harness::new().await);
    for what in [&["kill"][..], &["rm", "-f"][..], &["stop", "-t", "1"][..]] {
        let req = python("import time\nprint('up', flush=True)\ntime.sleep(30)\n");
        let run = {
            let (h, req) = (Arc::clone(&h), req.clone());
            tokio::spawn(async move { h.try_run(&req, CancellationToken::new()).await })
        };
        from_outside(&h, &req, what).await;
        let err = within(30, "run ends", run)
            .await
            .expect("task")
            .expect_err("not the program's verdict");
        assert!(
            matches!(err, RunnerError::Interrupted { .. }),
            "docker {what:?}: {err:?}"
        );
        assert_eq!(err.kind(), RunnerErrorKind::Transient, "retried");
        h.assert_gone(&req.job_id).await;
    }
}

/// x86-64 only: the program makes the sandbox's main process (the wrapper, PID 1) exit with
/// 137 as if SIGKILLed from outside, through ptrace (same uid, no Yama here), or failing that
/// by scribbling over its stack through /proc/1/mem.
const FORGE_AN_OUTSIDE_KILL: &str = r#"
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
class Regs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_ulonglong) for n in (
        "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags "
        "rsp ss fs_base gs_base ds es fs gs").split()]
print("forging", flush=True)
if libc.ptrace(16, 1, None, None) == 0:  # PTRACE_ATTACH
    os.waitpid(1, 0x40000000)  # __WALL
    r = Regs()
    libc.ptrace(12, 1, None, ctypes.byref(r))  # PTRACE_GETREGS
    code = bytes.fromhex("b8e7000000bf890000000f05") + b"\x90" * 4  # exit_group(137)
    for i in range(0, 16, 8):
        word = struct.unpack("<Q", code[i:i + 8])[0]
        libc.ptrace(5, 1, ctypes.c_void_p(r.rip + i), ctypes.c_void_p(word))  # POKETEXT
    r.orig_rax = (1 << 64) - 1
    libc.ptrace(13, 1, None, ctypes.byref(r))  # PTRACE_SETREGS
    libc.ptrace(17, 1, None, None)  # PTRACE_DETACH
else:
    try:
        maps = open("/proc/1/maps").read().splitlines()
        stack = [l for l in maps if "[stack]" in l][0].split()[0].split("-")
        with open("/proc/1/mem", "r+b") as mem:
            mem.seek(int(stack[0], 16))
            mem.write(b"\xff" * (int(stack[1], 16) - int(stack[0], 16)))
    except OSError as e:
        print("cannot touch the wrapper:", e, flush=True)
import time
time.sleep(5)
sys.exit(3)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_program_cannot_make_its_own_ending_look_like_an_outside_kill() {
    let h = Harness::new().await;
    // Killing itself is the program's verdict.
    let out = h
        .run(&python(
            "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
        ))
        .await;
    assert_ended(&out, Status::Failed, Some(137), Some(9));
    if cfg!(target_arch = "x86_64") {
        // So is killing (or crashing) the wrapper that runs it: only the engine's own record
        // of a kill makes an infrastructure failure.
        let out = h.run(&python(FORGE_AN_OUTSIDE_KILL)).await;
        assert_eq!(out.status, Status::Failed, "{}", show(&out));
        assert!(out.stdout.data.starts_with("forging"), "{}", show(&out));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn live_log_entries_hold_whole_lines_and_a_waiting_prompt_still_shows() {
    let h = Harness::new().await;
    // Words written in pieces, flushed each time; then a prompt that waits (far longer than
    // the 200 ms hold) before its answer; then a line to stderr in the middle of one.
    let req = python(
        "import sys, time\n\
         for piece in ['hel', 'lo wo', 'rld\\nsecond ', 'line\\n']:\n\
         \x20   sys.stdout.write(piece); sys.stdout.flush()\n\
         sys.stdout.write('name? '); sys.stdout.flush(); time.sleep(2)\n\
         sys.stdout.write('bob\\nhalf'); sys.stdout.flush()\n\
         sys.stderr.write('warn\\n'); sys.stderr.flush()\n\
         sys.stdout.write(' done\\n')\n",
    );
    let out = h.run(&req).await;
    assert_eq!(
        out.stdout.data,
        "hello world\nsecond line\nname? bob\nhalf done\n",
        "{}",
        show(&out)
    );
    let log: Vec<(String, String)> = h
        .log(&req.job_id)
        .await
        .into_iter()
        .map(|(s, d)| (s, String::from_utf8_lossy(&d).into_owned()))
        .collect();
    let stdout: Vec<&str> = log
        .iter()
        .filter(|(s, _)| s == "stdout")
        .map(|(_, d)| d.as_str())
        .collect();
    assert_eq!(
        stdout.concat(),
        out.stdout.data,
        "the entries add up to the output"
    );
    for entry in &stdout {
        assert!(
            entry.ends_with('\n') || *entry == "name? " || *entry == "half",
            "{entry:?} is cut mid-line: {log:?}"
        );
    }
    assert!(
        stdout.contains(&"name? "),
        "the prompt showed before its answer: {log:?}"
    );
    assert!(
        stdout.iter().any(|e| e.contains("hello world\n")),
        "pieces joined: {log:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_run_still_removes_its_container() {
    // The worker's outer timeout drops the run future instead of cancelling it.
    let h = Harness::new().await;
    let req = python("import time\ntime.sleep(30)\n");
    let output = Output::discard();
    let run = h.runner.run(&req, &output, CancellationToken::new());
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
    assert!(matches!(err, RunnerError::Api { .. }), "{err:?}");
    assert_eq!(err.kind(), RunnerErrorKind::Transient);
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
async fn the_sweep_judges_only_its_own_fleet_and_spares_another_fleets_long_job() {
    use bollard::models::ContainerCreateBody;
    use bollard::query_parameters::CreateContainerOptions;

    let tag = format!("{:08x}", rand_u32());
    let ours = Fleet {
        queue: "qa".into(),
        id: format!("a-{tag}"),
    };
    let same_queue_other_redis = Fleet {
        queue: "qa".into(),
        id: format!("a2-{tag}"),
    };
    let other_queue = Fleet {
        queue: "qb".into(),
        id: format!("b-{tag}"),
    };
    // A long job of another fleet, running through a runner of its own.
    let theirs = Arc::new(Harness::new().await);
    let mut long = python("import time\ntime.sleep(4)\nprint('finished')\n");
    long.fleet = other_queue.clone();
    let running = {
        let (h, req) = (Arc::clone(&theirs), long.clone());
        tokio::spawn(async move { h.try_run(&req, CancellationToken::new()).await })
    };

    let h = Harness::new().await;
    let me = h.runner.inner().worker_id().to_owned();
    let far = (quayside_common::now_ms() / 1000 + 3600).to_string();
    let labelled = |fleet: &Fleet, worker: &str, deadline: &str, what: &str| {
        HashMap::from([
            ("quayside.job".to_owned(), format!("sweep-{tag}-{what}")),
            ("quayside.worker".to_owned(), worker.to_owned()),
            ("quayside.queue".to_owned(), fleet.queue.clone()),
            ("quayside.fleet".to_owned(), fleet.id.clone()),
            ("quayside.deadline".to_owned(), deadline.to_owned()),
        ])
    };
    let cases = [
        (labelled(&ours, "w-dead", &far, "dead"), false),
        (labelled(&ours, "w-live", &far, "live"), true),
        (labelled(&ours, &me, &far, "mine"), false),
        (
            labelled(&same_queue_other_redis, "w-dead", &far, "twin"),
            true,
        ),
        (
            labelled(&same_queue_other_redis, &me, &far, "twin-same-id"),
            true,
        ),
        (labelled(&other_queue, "w-dead", &far, "other"), true),
        (labelled(&other_queue, "w-dead", "1000", "expired"), false),
    ];
    for (labels, _) in &cases {
        let body = ContainerCreateBody {
            image: Some(quayside_common::config::default_image("c")),
            cmd: Some(vec!["true".into()]),
            labels: Some(labels.clone()),
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
    within(60, "their job running", async {
        while h
            .containers(&format!("quayside.job={}", long.job_id))
            .await
            .is_empty()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let removed = within(
        30,
        "sweep",
        h.runner
            .inner()
            .sweep_fleet(&ours, &["w-live".to_owned()], Duration::ZERO),
    )
    .await
    .expect("sweep");
    assert!(removed >= 3, "removed {removed}");
    for (labels, kept) in &cases {
        let left = h
            .containers(&format!("quayside.job={}", labels["quayside.job"]))
            .await;
        assert_eq!(left.len(), usize::from(*kept), "{labels:?}");
        for id in left {
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
    let out = within(60, "their job", running)
        .await
        .expect("task")
        .expect("their job ran to its end");
    assert_eq!(
        (out.status, out.stdout.data.as_str()),
        (Status::Succeeded, "finished\n")
    );
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
