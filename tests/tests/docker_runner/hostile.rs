//! Hostile programs against the sandbox's second layer: the kernel surface the seccomp profile
//! takes away, the wrapper out of the job's reach, jobs side by side under their own uids, and
//! what a build cut short leaves. Under `runsc` (`E2E_DOCKER_RUNTIME`) the seccomp profile is
//! not applied: gVisor's own kernel answers, and the checks say which answers differ.

use std::time::Duration;

use quayside_common::config::{
    default_languages, DockerConfig, FileTransfer, JobUser, RunnerConfig, SeccompProfile,
};
use quayside_common::{JobKind, Status};
use quayside_e2e::within;
use tokio_util::sync::CancellationToken;

use super::{c, job, python, show, Harness};

fn gvisor() -> bool {
    std::env::var("E2E_DOCKER_RUNTIME").is_ok_and(|r| r.contains("runsc"))
}

/// Tries what a job never needs and prints `<what>: <strerror or "allowed">` per line.
const PROBE: &str = r#"#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static void report(const char *what, long r) {
    printf("%s: %s\n", what, r < 0 ? strerror(errno) : "allowed");
}

int main(void) {
    char buf[256] = {0}, out[16];
    struct iovec local = {out, sizeof out}, remote = {(void *)0x400000, sizeof out};
    report("socket AF_VSOCK", socket(40, SOCK_STREAM, 0));
    report("socket AF_VSOCK, high bits", syscall(SYS_socket, 0x100000028L, SOCK_STREAM, 0));
    report("socket AF_ALG", socket(38, SOCK_SEQPACKET, 0));
    report("socket AF_NETLINK", socket(16, SOCK_RAW, 0));
    report("io_uring_setup", syscall(425, 8, buf));
    report("ptrace attach 1", ptrace(PTRACE_ATTACH, 1, 0, 0));
    report("process_vm_readv 1", process_vm_readv(1, &local, 1, &remote, 1, 0));
    report("open /proc/1/mem rw", open("/proc/1/mem", O_RDWR));
    report("open /proc/1/mem ro", open("/proc/1/mem", O_RDONLY));
    report("open /proc/1/environ", open("/proc/1/environ", O_RDONLY));
    report("keyctl", syscall(SYS_keyctl, 0, -3, 1));
    report("bpf", syscall(SYS_bpf, 0, buf, 0));
    report("perf_event_open", syscall(SYS_perf_event_open, buf, 0, -1, -1, 0));
    report("userfaultfd", syscall(SYS_userfaultfd, 0));
    report("unshare user namespace", unshare(CLONE_NEWUSER));
    report("socket AF_INET", socket(AF_INET, SOCK_STREAM, 0));
    report("socket AF_UNIX", socket(AF_UNIX, SOCK_STREAM, 0));
    return 0;
}
"#;

/// Refused under every runtime: these reach the host kernel or the wrapper (pid 1).
const REFUSED: [&str; 11] = [
    "socket AF_VSOCK",
    "socket AF_VSOCK, high bits",
    "socket AF_ALG",
    "ptrace attach 1",
    "process_vm_readv 1",
    "open /proc/1/mem rw",
    "open /proc/1/mem ro",
    "keyctl",
    "bpf",
    "perf_event_open",
    "userfaultfd",
];
/// Refused under runc; under gVisor its own user-space kernel answers them, and nothing
/// reaches the host's.
const REFUSED_UNDER_RUNC: [&str; 4] = [
    "socket AF_NETLINK",
    "io_uring_setup",
    "open /proc/1/environ",
    "unshare user namespace",
];

fn answers(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(what, answer)| (what.to_owned(), answer.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kernel_surface_no_job_needs_is_closed_and_the_wrapper_is_out_of_reach() {
    let h = Harness::new().await;
    let out = h.run(&c(PROBE)).await;
    assert_eq!(out.status, Status::Succeeded, "{}", show(&out));
    let got = answers(&out.stdout.data);
    assert_eq!(got.len(), 17, "{}", show(&out));
    for (what, answer) in &got {
        let refused = REFUSED.contains(&what.as_str())
            || (!gvisor() && REFUSED_UNDER_RUNC.contains(&what.as_str()));
        if refused {
            assert_ne!(answer, "allowed", "{what} must fail inside the job");
        }
    }
    for control in ["socket AF_INET", "socket AF_UNIX"] {
        assert!(
            got.contains(&(control.to_owned(), "allowed".to_owned())),
            "{control} is what programs use: {}",
            show(&out)
        );
    }
    if gvisor() {
        return;
    }
    // The profile is what closes them: under the engine's default profile the same program
    // opens a vsock socket and an io_uring on this host.
    let mut cfg = RunnerConfig::default();
    cfg.sandbox.seccomp = SeccompProfile::RuntimeDefault;
    let default = Harness::with_runner(cfg, default_languages()).await;
    let out = default.run(&c(PROBE)).await;
    let got = answers(&out.stdout.data);
    for opened in ["socket AF_VSOCK", "io_uring_setup"] {
        assert!(
            got.contains(&(opened.to_owned(), "allowed".to_owned())),
            "{opened} under the engine's default profile: {}",
            show(&out)
        );
    }
}

/// Takes every per-user resource it can and holds it: inotify instances, pipe buffer pages
/// (1 MiB per pipe up to the per-user soft limit), queued real-time signals, processes.
const HOG: &str = r#"#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

int main(void) {
    int inotify = 0, pipes = 0, signals = 0, children = 0, fds[2];
    while (inotify < 1000 && inotify_init1(0) >= 0) inotify++;
    while (pipes < 80 && pipe(fds) == 0 && fcntl(fds[1], F_SETPIPE_SZ, 1 << 20) >= 0) pipes++;
    /* What the wrapper's own pipes left of the budget, in 64 KiB pipes. */
    while (pipes < 200 && pipe(fds) == 0 && fcntl(fds[1], F_SETPIPE_SZ, 1 << 16) >= 0) pipes++;
    sigset_t rt;
    sigemptyset(&rt);
    sigaddset(&rt, SIGRTMIN);
    sigprocmask(SIG_BLOCK, &rt, NULL);
    union sigval v = {0};
    while (signals < 200000 && sigqueue(getpid(), SIGRTMIN, v) == 0) signals++;
    for (; children < 1000; children++) {
        pid_t p = fork();
        if (p < 0) break;
        if (p == 0) { pause(); _exit(0); }
    }
    const char *secrets[] = {"/work/hog-secret", "/tmp/hog-secret"};
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(secrets[i], "w");
        if (f) { fputs("hog", f); fclose(f); }
    }
    printf("hog uid %d inotify %d pipes %d signals %d children %d holding\n",
           (int)getuid(), inotify, pipes, signals, children);
    fflush(stdout);
    for (;;) pause();
}
"#;

/// Beside the hog: its own uid, what it can see, and whether it gets what any job should.
const NEIGHBOUR: &str = r#"#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    int fds[2], forked = 0;
    timer_t t;
    printf("uid %d\n", (int)getuid());
    printf("inotify %s\n", inotify_init1(0) >= 0 ? "ok" : strerror(errno));
    printf("pipe %d\n", pipe(fds) == 0 ? fcntl(fds[1], F_GETPIPE_SZ) : -errno);
    printf("timer %s\n", timer_create(CLOCK_MONOTONIC, NULL, &t) == 0 ? "ok" : strerror(errno));
    for (; forked < 8; forked++) {
        pid_t p = fork();
        if (p < 0) break;
        if (p == 0) _exit(0);
    }
    while (wait(NULL) > 0) {}
    printf("forked %d\n", forked);
    int others = 0;
    DIR *proc = opendir("/proc");
    for (struct dirent *e; proc && (e = readdir(proc));) {
        char path[300], line[256];
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/status", e->d_name);
        FILE *f = fopen(path, "r");
        while (f && fgets(line, sizeof line, f))
            if (!strncmp(line, "Uid:", 4) && atoi(line + 5) != (int)getuid()) others++;
        if (f) fclose(f);
    }
    printf("processes of other uids %d\n", others);
    printf("hog files %s %s\n", access("/work/hog-secret", F_OK) ? "absent" : "visible",
           access("/tmp/hog-secret", F_OK) ? "absent" : "visible");
    return 0;
}
"#;

/// Starts the hog, waits until it holds everything, runs the neighbour beside it, then stops
/// the hog. Returns the hog's report and the neighbour's stdout.
async fn side_by_side(h: &Harness) -> (String, String) {
    let mut hog = c(HOG);
    hog.limits.run_wall_time_ms = 120_000;
    let cancel = CancellationToken::new();
    let running = {
        let (hog, cancel) = (hog.clone(), cancel.clone());
        async move { h.try_run(&hog, cancel).await }
    };
    let watch = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let printed = h.stdout_so_far(&hog.job_id).await;
            if printed.contains("holding") {
                let neighbour = h.run(&c(NEIGHBOUR)).await;
                cancel.cancel();
                return (printed, neighbour);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the hog never settled: {printed:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let (stopped, (hog_report, neighbour)) = tokio::join!(running, watch);
    let stopped = stopped.expect("a cancelled run keeps its output");
    assert_eq!(stopped.status, Status::Cancelled, "{}", show(&stopped));
    h.assert_gone(&hog.job_id).await;
    assert_eq!(neighbour.status, Status::Succeeded, "{}", show(&neighbour));
    (hog_report, neighbour.stdout.data)
}

fn field(report: &str, name: &str) -> i64 {
    let mut words = report.split_whitespace();
    words
        .find(|w| *w == name)
        .and_then(|_| words.next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {report:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_side_by_side_have_their_own_uid_and_cannot_see_or_starve_each_other() {
    let h = Harness::new().await;
    let (hog, neighbour) = side_by_side(&h).await;
    assert_ne!(
        field(&hog, "uid"),
        field(&neighbour, "uid"),
        "{hog} / {neighbour}"
    );
    if !gvisor() {
        // The hog really took its user's share: every inotify instance, the pipe page budget
        // and the queued-signal budget.
        assert_eq!(
            field(&hog, "inotify"),
            128,
            "fs.inotify.max_user_instances: {hog}"
        );
        assert!(
            field(&hog, "pipes") >= 64 && field(&hog, "signals") > 1000,
            "{hog}"
        );
    }
    assert_eq!(
        neighbour.lines().skip(1).collect::<Vec<_>>(),
        [
            "inotify ok",
            "pipe 65536",
            "timer ok",
            "forked 8",
            "processes of other uids 0",
            "hog files absent absent",
        ],
        "hog: {hog}"
    );
    if gvisor() {
        // One kernel per sandbox: per-user counts were never shared there.
        return;
    }
    // The same two jobs under one uid for every attempt: the neighbour is starved. This is
    // what the per-attempt uid prevents. (A uid no other job on this engine uses: other
    // test runs' jobs must not be starved by this one.)
    let mut cfg = RunnerConfig::default();
    cfg.sandbox.user = JobUser {
        uid: 20001,
        gid: 10001,
    };
    cfg.sandbox.uid_range = 1;
    let shared = Harness::with_runner(cfg, default_languages()).await;
    let (hog, neighbour) = side_by_side(&shared).await;
    assert_eq!(field(&hog, "uid"), field(&neighbour, "uid"));
    for starved in [
        "inotify Too many open files",
        "pipe 8192",
        "timer Resource temporarily unavailable",
    ] {
        assert!(neighbour.contains(starved), "{starved:?}: {neighbour}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_cut_short_keeps_every_byte_it_printed() {
    let h = Harness::new().await;
    // Shorter than the marker the scan holds back in case it starts one (32 bytes).
    let tail = "the end of the build output";
    let mut req = python("print('never runs')\n");
    req.language_config.build_command = format!("printf '%s' '{tail}'; sleep 60");
    req.limits.compile_wall_time_ms = 2_000;
    let out = h.run(&req).await;
    assert_eq!(out.status, Status::TimedOut, "{}", show(&out));
    assert_eq!(out.compile_output.data, tail, "{}", show(&out));
    let streamed: Vec<u8> = h
        .log(&req.job_id)
        .await
        .into_iter()
        .filter(|(s, _)| s == "compile")
        .flat_map(|(_, d)| d)
        .collect();
    assert_eq!(streamed, tail.as_bytes(), "the live log has it too");
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_exceeded_in_the_build_has_no_exit_code() {
    let h = Harness::new().await;
    for kind in [JobKind::Run, JobKind::Compile] {
        let mut req = python("print('never runs')\n");
        req.kind = kind;
        let build = "python3 -c 'b = [bytearray(1 << 20) for _ in range(1 << 12)]'";
        req.language_config.build_command = build.into();
        req.language_config.compile_only_command = build.into();
        req.limits.memory_bytes = 64 << 20;
        let out = within(120, "oom build", h.run(&req)).await;
        assert_eq!(
            (out.status, out.exit_code, out.signal),
            (Status::MemoryExceeded, None, None),
            "{kind:?}: nothing ran, so there is no exit code: {}",
            show(&out)
        );
        assert!(out.stdout.is_empty() && out.run_ms == 0, "{}", show(&out));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn work_and_its_files_belong_to_the_attempts_uid_in_both_transfer_modes() {
    let source = "import os\nfor p in ['/work', '/work/lib', '/work/lib/data.txt', '/work/main.py']:\n    st = os.stat(p)\n    print(p, st.st_uid == os.getuid(), oct(st.st_mode & 0o777))\n";
    for transfer in [FileTransfer::Stdin, FileTransfer::Archive] {
        let cfg = DockerConfig {
            file_transfer: transfer,
            ..DockerConfig::default()
        };
        let h = Harness::with(cfg, default_languages()).await;
        let req = job("python", &[("main.py", source), ("lib/data.txt", "x")], "");
        let out = h.run(&req).await;
        assert_eq!(
            out.status,
            Status::Succeeded,
            "{transfer:?}: {}",
            show(&out)
        );
        let lines: Vec<&str> = out.stdout.data.lines().collect();
        assert_eq!(
            lines,
            [
                "/work True 0o700",
                "/work/lib True 0o755",
                "/work/lib/data.txt True 0o644",
                "/work/main.py True 0o644",
            ],
            "{transfer:?}"
        );
    }
}

/// The worker concludes a run from the wrapper's end markers, before the container has
/// exited, only when nothing the engine knows could change the verdict: an OOM kill of a
/// child (the program itself exits 0), even one during the build, still makes the job
/// `memory_exceeded`; and the program's last stderr, written just before it exits, all arrives.
#[tokio::test(flavor = "multi_thread")]
async fn an_early_verdict_never_hides_what_the_engine_knows() {
    let h = Harness::new().await;
    let noisy =
        python("import sys\nsys.stderr.write('e' * 300000)\nsys.stderr.flush()\nprint('ok')\n");
    let out = h.run(&noisy).await;
    assert_eq!(
        (out.status, out.stdout.data.as_str(), out.stderr.data.len()),
        (Status::Succeeded, "ok\n", 300_000),
        "{}",
        show(&out)
    );
    assert!(
        out.stderr.data.bytes().all(|b| b == b'e'),
        "nothing but the program's stderr"
    );
    if gvisor() {
        // gVisor's own memory limit kills inside the sandbox and leaves no cgroup count.
        return;
    }
    let hog = "b = [bytearray(1 << 20) for _ in range(1 << 12)]";
    let mut child_oom = python(&format!(
        "import os\npid = os.fork()\nif pid == 0:\n    {hog}\n    os._exit(0)\nos.waitpid(pid, 0)\nprint('parent done')\n"
    ));
    child_oom.limits.memory_bytes = 64 << 20;
    let mut build_oom = python("print('parent done')\n");
    build_oom.language_config.build_command = format!("python3 -c '{hog}'; echo built");
    build_oom.limits.memory_bytes = 64 << 20;
    for (what, req) in [("in the run", child_oom), ("in the build", build_oom)] {
        let out = within(120, "oom", h.run(&req)).await;
        assert_eq!(
            (out.status, out.exit_code, out.stdout.data.as_str()),
            (Status::MemoryExceeded, Some(0), "parent done\n"),
            "a child OOM-killed {what}: {}",
            show(&out)
        );
    }
}
