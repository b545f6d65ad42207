//! `quayside-run`, the helper that runs every program (and each test of a job) and measures it
//! (`deploy/images/base/quayside-run.c`, docs/design/tests-per-job.md §3), as the runner
//! images ship it, in the real C runner image on the shared Docker engine, under runc and
//! gVisor, with the runner's hardening (no network, read-only root, non-root, no capabilities,
//! memory and pid limits). Containers are started with `--rm` and the label
//! `quayside.e2e=measure`.
//!
//! What it must report, from the issue: a program touching 100 MiB reports 100 MiB ± 10%, a
//! 1 s CPU spin 1000 ms ± 15%, a 1 s sleep near 0; and what the per-test verdicts rest on: the
//! wall-time kill, the output cap, the cgroup's OOM count, that nothing the program started
//! outlives it, and that the program cannot reach into the helper (same uid) to rewrite its
//! report. The same numbers through a whole job: `runner_contract`'s `measured` cases.

use std::collections::HashMap;
use std::process::{Command, Stdio};

use quayside_common::config::default_image;

/// Builds two C programs in `/tmp`, then runs each `(name, helper arguments)` of `runs` under
/// the image's helper, printing `<name> <report>` per run.
fn script(runs: &[(&str, &str)]) -> String {
    let mut s = String::from(
        "cat > /tmp/touch.c <<'C'\n\
         #include <stdlib.h>\n\
         int main(int argc, char **argv) {\n\
             size_t n = (size_t)atoi(argv[1]) << 20;\n\
             volatile char *p = malloc(n);\n\
             for (size_t i = 0; i < n; i += 4096) p[i] = 1;\n\
             return 0;\n\
         }\n\
         C\n\
         cat > /tmp/spin.c <<'C'\n\
         #include <time.h>\n\
         int main(void) {\n\
             struct timespec t;\n\
             do clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); while (t.tv_sec < 1);\n\
             return 0;\n\
         }\n\
         C\n\
         gcc -O2 -o /tmp/touch /tmp/touch.c && gcc -O2 -o /tmp/spin /tmp/spin.c || exit 9\n",
    );
    for (name, args) in runs {
        s.push_str(&format!(
            "echo \"{name} $(/usr/local/bin/quayside-run --report-fd 1 {args})\"\n"
        ));
    }
    s
}

/// Runs `script` in the C runner image under `runtime`; returns each run's report as
/// key -> value, by name.
fn run(runtime: &str, script: &str) -> HashMap<String, HashMap<String, String>> {
    let image = default_image("c");
    let out = Command::new("timeout")
        .args(["180", "docker", "run", "--rm", "--runtime", runtime])
        .args(["--network", "none", "--read-only"])
        .args(["--tmpfs", "/tmp:rw,exec,size=64m"])
        .args(["--user", "10001:10001", "--cap-drop", "ALL"])
        .args(["--security-opt", "no-new-privileges"])
        .args(["--memory", "256m", "--memory-swap", "256m"])
        // As the Docker runner does (worker/src/runner/docker/spec.rs): Debian's runsc fails
        // under a pids cgroup limit, so gVisor gets RLIMIT_NPROC instead.
        .args(if runtime == "runsc" {
            ["--ulimit", "nproc=64"]
        } else {
            ["--pids-limit", "64"]
        })
        .args([
            "--label",
            "quayside.e2e=measure",
            &image,
            "sh",
            "-c",
            script,
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("docker CLI");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{runtime}: {:?}\n{text}", out.status);
    text.lines()
        .filter_map(|line| {
            let (name, report) = line.split_once(' ')?;
            let fields = report
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            Some((name.to_owned(), fields))
        })
        .collect()
}

fn num(report: &HashMap<String, String>, key: &str) -> f64 {
    report
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} missing or not a number in {report:?}"))
}

/// The measures every runtime must get right.
fn assert_measures(runtime: &str, reports: &HashMap<String, HashMap<String, String>>) {
    let get = |name: &str| {
        reports
            .get(name)
            .unwrap_or_else(|| panic!("{runtime}: no report for {name} in {reports:?}"))
    };
    let touch = get("touch");
    let mib = num(touch, "maxrss_kb") / 1024.0;
    assert!(
        (90.0..=110.0).contains(&mib),
        "{runtime}: 100 MiB reported as {mib:.1} MiB"
    );

    let spin = get("spin");
    let cpu_ms = num(spin, "cpu_us") / 1000.0;
    assert!(
        (850.0..=1150.0).contains(&cpu_ms),
        "{runtime}: a 1 s spin reported {cpu_ms:.0} ms of CPU"
    );

    let sleep = get("sleep");
    let (cpu_ms, wall_ms) = (
        num(sleep, "cpu_us") / 1000.0,
        num(sleep, "wall_us") / 1000.0,
    );
    assert!(
        cpu_ms < 100.0,
        "{runtime}: a 1 s sleep used {cpu_ms:.0} ms of CPU"
    );
    assert!(
        wall_ms >= 1000.0,
        "{runtime}: a 1 s sleep took {wall_ms:.0} ms"
    );

    let slow = get("slow");
    assert_eq!(slow["timed_out"], "1", "{runtime}: {slow:?}");
    assert_eq!(
        slow["signal"], "9",
        "{runtime}: killed at its wall time: {slow:?}"
    );
    let wall_ms = num(slow, "wall_us") / 1000.0;
    assert!(
        (300.0..3000.0).contains(&wall_ms),
        "{runtime}: 300 ms limit, {wall_ms:.0} ms wall"
    );

    let peek = get("peek");
    assert_eq!(
        peek["exit"], "1",
        "{runtime}: the program cannot read the helper's memory: {peek:?}"
    );

    let flood = get("flood");
    assert_eq!(
        flood["stdout_bytes"], "11",
        "{runtime}: cap + 1 bytes kept: {flood:?}"
    );
    assert_eq!(
        flood["signal"], "25",
        "{runtime}: SIGXFSZ at the cap: {flood:?}"
    );
}

const RUNS: [(&str, &str); 6] = [
    ("touch", "-- /tmp/touch 100"),
    ("spin", "-- /tmp/spin"),
    ("sleep", "-- sleep 1"),
    ("slow", "--wall-ms 300 -- sleep 5"),
    ("flood", "--output-bytes 10 --stdout /tmp/out -- yes"),
    // The helper is the shell's parent: not dumpable, so its memory is out of reach.
    (
        "peek",
        "-- sh -c 'head -c 1 /proc/$PPID/mem >/dev/null 2>&1'",
    ),
];

#[test]
fn runc_measures_cpu_memory_and_enforces_limits_per_run() {
    let mut runs = RUNS.to_vec();
    // The cgroup's OOM counter (v1 memory.oom_control here, v2 memory.events elsewhere).
    runs.push(("oom", "-- /tmp/touch 400"));
    // A descendant that leaves the process group is still killed and reaped at once: a
    // leftover would hold the helper for its 2 s grace and report orphans=1.
    runs.push(("escape", "-- sh -c 'setsid sleep 100 & exit 3'"));
    let reports = run("runc", &script(&runs));
    assert_measures("runc", &reports);

    let oom = &reports["oom"];
    assert_eq!(
        (oom["oom_kills"].as_str(), oom["signal"].as_str()),
        ("1", "9"),
        "{oom:?}"
    );
    let escape = &reports["escape"];
    assert_eq!(
        (escape["exit"].as_str(), escape["orphans"].as_str()),
        ("3", "0"),
        "{escape:?}"
    );
    assert!(num(escape, "wall_us") < 1_000_000.0, "{escape:?}");
}

/// gVisor: the same measures. Two known differences the design accounts for (and so not run
/// here): an OOM kill ends the whole sandbox rather than one process, and
/// `PR_SET_CHILD_SUBREAPER` is refused, so a descendant that leaves the group is not reaped by
/// the helper (the report says `subreaper=0`).
#[test]
fn gvisor_measures_cpu_memory_and_enforces_limits_per_run() {
    let reports = run("runsc", &script(&RUNS));
    assert_measures("runsc", &reports);
    assert_eq!(
        reports["touch"]["oom_kills"], "-",
        "no cgroup file in gVisor"
    );
}
