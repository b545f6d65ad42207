#!/usr/bin/env bash
# Benchmarks (not tests): scripts/bench.sh queue|docker|idle|batch|tests
#   queue   enqueue and processing rates, latency at 500 jobs/s, Redis commands per job, with a
#           runner that returns at once, against a private redis-server (AOF everysec, as in
#           production) on 127.0.0.1. BENCH_METRICS=0 runs it without metrics (no recorder, no
#           sampling, no listener), to measure what metrics cost. Phase `logs`: live-log appends
#           through the fenced log.lua next to a plain XADD (the path before the fence), one job
#           and 64 at once, as a ratio. Phase `tenants`: processing at 8 slots with every job the
#           default tenant's, one named tenant's, or two tenants' interleaved (fair share), rate
#           and commands per job as ratios to the default tenant's.
#           BENCH_PHASES=enqueue,process,tenants,latency,logs picks phases.
#   docker  the real worker with the Docker runner (in the benchmark's process), end to end:
#           latency of a C `run` job printing one line (submit to result, one at a time) and
#           jobs/s for a batch with 2 and 4 slots, each with the warm pool on (the default) and
#           off (runner.docker.warm.enabled = false), next to the same compile+run done
#           directly (`docker run --rm` loop, bare Engine API create+start+wait+remove). The
#           last line is `warm/bare p50 ratio: X.XX` (warm pool p50 over the bare cycle with the
#           worker's sandbox options). Needs the
#           Docker engine (started if it does not answer) and quayside/runner-c:<VERSION> (built
#           offline if missing). Sizes: BENCH_SEQ (30), BENCH_BATCH (200), BENCH_PARALLEL (2,4).
#           BENCH_COMPARE=hardening measures instead what the seccomp profile and per-attempt
#           uids cost: two workers, hardened (defaults) and baseline (engine's default profile,
#           one uid), side by side in one run; latency p50 and 4-slot jobs/s as ratios (target:
#           within 5%), plus the wrapper prelude both run, as bare cycles with and without it.
#           BENCH_COMPARE=runtime measures runc against crun (scripts/setup-crun.sh) under job
#           containers: cold Engine API cycle p50/p99 of `true` and of the C compile+run,
#           containers/s 4 in parallel, and the real worker's submit-to-result, ABBA-ordered.
#   batch   `quayside batch --wait` of BENCH_BATCH_JOBS (1000) C hello-world compile-and-run jobs
#           (a folder, one file per job) through 2 quayside-worker processes with
#           BENCH_BATCH_SLOTS (2) slots each (2 x 2 = 4 jobs at once: on 2 cores each job's gcc
#           and container start are CPU-bound, so more only queues inside dockerd), wall time
#           from submit to summary; then the same work as `xargs -P <2 x slots>` over
#           `docker run -i --rm` with the runner's own hardening flags (printed from its
#           host config by `quayside-bench docker-run-argv`), the source on stdin. Each side
#           gets one warm-up job first and is bounded by BENCH_BATCH_TIMEOUT_S (1800).
#   tests   compile once, run many (issue 13): one C submission (reads two numbers, prints
#           their sum) with BENCH_TESTS (100) tests as one job (`quayside batch --tests`), next
#           to the same runs as BENCH_TESTS plain jobs (one per test input, a manifest) and a
#           one-test job, in one run, through one quayside-worker with BENCH_TESTS_SLOTS (2)
#           slots; wall time from submit to summary for each, the ratio, and the per-test
#           overhead ((N-test job - 1-test job) / (N - 1)).
#   idle    the real quayside-worker (Docker runner) idle: memory (VmRSS) and CPU over 30 s,
#           scraped twice like Prometheus would, against a private Redis.
# The binary is built with cargo into $CARGO_TARGET_DIR (default target/). Setup and builds
# print one line per step (--verbose: everything); the benchmark's own output is printed as is.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
parse_flags "$@"
what=${ARGS[0]:-queue}
ensure_rust
ensure_packages redis-server:redis-server redis-cli:redis-tools python3:python3 curl:curl
target=${CARGO_TARGET_DIR:-target}

# Containers the docker benchmark started, should it be interrupted (it sweeps them itself
# before and after a run): baselines carry quayside.bench, job containers a bench worker id.
remove_bench_containers() {
  command -v docker >/dev/null 2>&1 || return 0
  {
    docker ps -aq --filter label=quayside.bench 2>/dev/null || true
    docker ps -a --filter label=quayside.worker --format '{{.ID}} {{.Label "quayside.worker"}}' \
      2>/dev/null | awk '$2 ~ /^quayside-bench-docker-/ { print $1 }' || true
  } | xargs -r docker rm -f -v >/dev/null 2>&1 || true
}

case "$what" in
  queue|docker)
    if [ "$what" = docker ]; then
      ensure_packages docker:docker.io dockerd:docker.io debootstrap:debootstrap
      ensure_dockerd
      scripts/build-images.sh c
      [ "${BENCH_COMPARE:-}" != runtime ] || scripts/setup-crun.sh
    fi
    step "cargo build --release (quayside-bench)" cargo build --release -p quayside-e2e --bin quayside-bench
    work=$(mktemp -d /tmp/quayside-bench.XXXXXX)
    start_redis "$work/redis"
    trap 'kill "$REDIS_PID" 2>/dev/null || true; [ "$what" != docker ] || remove_bench_containers; rm -rf "$work"' EXIT
    E2E_REDIS_URL=$REDIS_URL RUST_LOG=warn "$target/release/quayside-bench" "$what"
    ;;
  idle)
    ensure_packages docker:docker.io dockerd:docker.io debootstrap:debootstrap
    ensure_dockerd
    scripts/build-images.sh
    step "cargo build --release (quayside-worker)" cargo build --release --bin quayside-worker
    work=$(mktemp -d /tmp/quayside-bench.XXXXXX)
    start_redis "$work/redis"
    port=$(free_port)
    printf '[redis]\nurl = "%s"\n[queue]\nname = "idle"\n[metrics]\nlisten_addr = "127.0.0.1:%s"\n[runner]\nbackend = "docker"\n' \
      "$REDIS_URL" "$port" >"$work/worker.toml"
    "$target/release/quayside-worker" --config "$work/worker.toml" 2>"$work/worker.log" &
    WORKER_PID=$!
    trap 'kill "$WORKER_PID" "$REDIS_PID" 2>/dev/null || true; rm -rf "$work"' EXIT
    sleep 5
    ticks() { awk '{print $14 + $15}' "/proc/$WORKER_PID/stat"; }
    c0=$(ticks); t0=$(date +%s.%N)
    for _ in 1 2; do curl -s "127.0.0.1:$port/metrics" >/dev/null || true; sleep 15; done
    c1=$(ticks); t1=$(date +%s.%N)
    grep -E 'VmRSS|VmHWM' "/proc/$WORKER_PID/status"
    python3 -c "import sys; c, s, hz = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]); print(f'cpu: {c:.0f} ticks in {s:.1f} s = {100 * c / hz / s:.3f}% of one core')" \
      "$((c1 - c0))" "$(python3 -c "print($t1 - $t0)")" "$(getconf CLK_TCK)"
    ;;
  batch)
    ensure_packages docker:docker.io dockerd:docker.io debootstrap:debootstrap
    ensure_dockerd
    scripts/build-images.sh c
    step "cargo build --release (quayside, quayside-worker)" \
      cargo build --release --bin quayside --bin quayside-worker
    step "cargo build --release (quayside-bench)" cargo build --release -p quayside-e2e --bin quayside-bench
    jobs=${BENCH_BATCH_JOBS:-1000}
    slots=${BENCH_BATCH_SLOTS:-2}
    limit=${BENCH_BATCH_TIMEOUT_S:-1800}
    parallel=$((2 * slots))
    work=$(mktemp -d /tmp/quayside-bench.XXXXXX)
    start_redis "$work/redis"
    WORKER_PIDS=()
    trap 'kill "${WORKER_PIDS[@]}" "$REDIS_PID" 2>/dev/null || true; remove_bench_containers; rm -rf "$work"' EXIT
    remove_bench_containers
    quayside() { "$target/release/quayside" --redis-url "$REDIS_URL" --queue bench "$@"; }
    for w in 1 2; do
      printf '[redis]\nurl = "%s"\n[queue]\nname = "bench"\n[worker]\nid = "quayside-bench-docker-batch-%s"\nslots = %s\n[metrics]\nlisten_addr = ""\n[runner]\nbackend = "docker"\n' \
        "$REDIS_URL" "$w" "$slots" >"$work/worker$w.toml"
      RUST_LOG=warn "$target/release/quayside-worker" --config "$work/worker$w.toml" 2>"$work/worker$w.log" &
      WORKER_PIDS+=($!)
    done
    mkdir -p "$work/jobs" "$work/out"
    for i in $(seq -w 1 "$jobs"); do
      printf '#include <stdio.h>\nint main(void) { printf("hello %%s\\n", "%s"); return 0; }\n' "$i" >"$work/jobs/hello-$i.c"
    done
    echo "batch benchmark: $jobs C compile+run jobs; 2 workers x $slots slots vs xargs -P $parallel docker run"
    # Warm-up (not counted): image layers and the engine's caches, for both sides.
    first="$work/jobs/hello-$(seq -w 1 "$jobs" | head -1).c"
    quayside submit --language c --wait --timeout 120 "$first" >/dev/null
    t0=$(date +%s.%N)
    set +e
    quayside batch "$work/jobs" --batch-id bench --wait --timeout "$limit" --failures 3 >"$work/summary.txt" 2>"$work/progress.txt"
    rc=$?
    set -e
    t1=$(date +%s.%N)
    head -12 "$work/summary.txt"
    [ "$rc" -eq 0 ] || { echo "quayside batch exited $rc (1 = some job failed, 4 = timeout); see above" >&2; tail -5 "$work/progress.txt" >&2; exit 1; }

    mapfile -d '' -t argv < <("$target/release/quayside-bench" docker-run-argv "quayside.bench=batch-$$")
    # one SRC: compile and run SRC in the sandbox, its output next to the other outputs.
    printf '#!/bin/sh\nsrc=$1; shift\nexec docker "$@" <"$src" >"%s/out/${src##*/}.out" 2>&1\n' "$work" >"$work/one.sh"
    chmod +x "$work/one.sh"
    "$work/one.sh" "$first" "${argv[@]}"
    rm -f "$work"/out/*
    t2=$(date +%s.%N)
    set +e
    find "$work/jobs" -name '*.c' | sort | timeout "$limit" xargs -P "$parallel" -I{} "$work/one.sh" {} "${argv[@]}"
    xrc=$?
    set -e
    t3=$(date +%s.%N)
    ok=$(grep -l '^hello ' "$work"/out/*.out 2>/dev/null | wc -l)
    [ "$xrc" -eq 0 ] && [ "$ok" -eq "$jobs" ] || { echo "xargs baseline: exit $xrc, $ok/$jobs printed hello" >&2; exit 1; }
    python3 - "$jobs" "$t0" "$t1" "$t2" "$t3" "$parallel" "$slots" <<'PY'
import sys
n, t0, t1, t2, t3, p, s = int(sys.argv[1]), *map(float, sys.argv[2:6]), sys.argv[6], sys.argv[7]
q, x = t1 - t0, t3 - t2
print(f"quayside batch --wait (2 workers x {s} slots): {q:8.1f} s  {n / q:6.1f} jobs/s  (submit to summary)")
print(f"xargs -P {p} docker run --rm (hardened):      {x:8.1f} s  {n / x:6.1f} jobs/s")
print(f"quayside / xargs wall time: {q / x:.2f}")
PY
    ;;
  tests)
    ensure_packages docker:docker.io dockerd:docker.io debootstrap:debootstrap
    ensure_dockerd
    scripts/build-images.sh c
    step "cargo build --release (quayside, quayside-worker)" \
      cargo build --release --bin quayside --bin quayside-worker
    n=${BENCH_TESTS:-100}
    slots=${BENCH_TESTS_SLOTS:-2}
    work=$(mktemp -d /tmp/quayside-bench.XXXXXX)
    start_redis "$work/redis"
    WORKER_PIDS=()
    trap 'kill "${WORKER_PIDS[@]}" "$REDIS_PID" 2>/dev/null || true; remove_bench_containers; rm -rf "$work"' EXIT
    remove_bench_containers
    quayside() { "$target/release/quayside" --redis-url "$REDIS_URL" --queue bench "$@"; }
    printf '[redis]\nurl = "%s"\n[queue]\nname = "bench"\n[worker]\nid = "quayside-bench-docker-tests"\nslots = %s\n[metrics]\nlisten_addr = ""\n[runner]\nbackend = "docker"\n' \
      "$REDIS_URL" "$slots" >"$work/worker.toml"
    RUST_LOG=warn "$target/release/quayside-worker" --config "$work/worker.toml" 2>"$work/worker.log" &
    WORKER_PIDS+=($!)
    mkdir -p "$work/sub" "$work/tests" "$work/one"
    printf '#include <stdio.h>\nint main(void) { long a, b; if (scanf("%%ld %%ld", &a, &b) != 2) return 2; printf("%%ld\\n", a + b); return 0; }\n' >"$work/sub/sum.c"
    for i in $(seq 1 "$n"); do
      echo "$i $((i * 7))" >"$work/tests/$i.in"
      echo "$((i * 8))" >"$work/tests/$i.out"
    done
    cp "$work/tests/1.in" "$work/tests/1.out" "$work/one/"
    # The same runs as plain jobs: one per test input, the program reading it on stdin.
    python3 - "$work/sub/sum.c" "$work/tests" "$n" >"$work/jobs.jsonl" <<'PY'
import json, sys
src = open(sys.argv[1]).read()
for i in range(1, int(sys.argv[3]) + 1):
    stdin = open(f"{sys.argv[2]}/{i}.in").read()
    print(json.dumps({"kind": "run", "language": "c", "files": {"sum.c": src}, "stdin": stdin,
                      "labels": {"name": f"run-{i}"}}))
PY
    echo "tests benchmark: one C submission, $n tests as one job vs $n jobs; 1 worker x $slots slots"
    # Warm-up (not counted): image layers and the engine's caches.
    quayside submit --language c --stdin '1 2' --wait --timeout 120 "$work/sub/sum.c" >/dev/null
    timed() { # LABEL CMD...: runs the CMD, prints its wall seconds, fails loudly
      local t0 t1 rc
      t0=$(date +%s.%N)
      set +e
      "${@:2}" >"$work/$1.txt" 2>"$work/$1.err"
      rc=$?
      set -e
      t1=$(date +%s.%N)
      if [ "$rc" -ne 0 ]; then
        echo "$1: quayside batch exited $rc (1 = a job did not succeed, 4 = timeout); its summary:" >&2
        head -30 "$work/$1.txt" "$work/$1.err" >&2
        exit 1
      fi
      python3 -c "print($t1 - $t0)"
    }
    one=$(timed one quayside batch --batch-id "one-$$" --tests "$work/one" --wait --timeout 600 "$work/sub")
    many=$(timed many quayside batch --batch-id "many-$$" --tests "$work/tests" --wait --timeout 600 "$work/sub")
    jobs=$(timed jobs quayside batch --batch-id "jobs-$$" --manifest "$work/jobs.jsonl" --wait --timeout 600)
    grep -q "$n/$n" "$work/many.txt" || { echo "the $n-test job did not pass every test:" >&2; cat "$work/many.txt" >&2; exit 1; }
    python3 - "$n" "$one" "$many" "$jobs" "$slots" <<'PY'
import sys
n, one, many, jobs, slots = int(sys.argv[1]), *map(float, sys.argv[2:5]), sys.argv[5]
print(f"1 job, {n} tests (--tests):          {many:8.2f} s")
print(f"{n} jobs, one run each ({slots} slots):   {jobs:8.2f} s")
print(f"1 job, 1 test:                      {one:8.2f} s")
print(f"{n} jobs / 1 job of {n} tests, wall time: {jobs / many:.1f}x")
print(f"per-test overhead: {(many - one) / (n - 1) * 1000:.1f} ms  (({n}-test job - 1-test job) / {n - 1})")
PY
    ;;
  *)
    echo "usage: scripts/bench.sh queue|docker|idle|batch|tests" >&2
    exit 2
    ;;
esac
