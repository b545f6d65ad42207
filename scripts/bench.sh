#!/usr/bin/env bash
# Benchmarks (not tests): scripts/bench.sh queue|docker|idle
#   queue   enqueue and processing rates, latency at 500 jobs/s, Redis commands per job, with a
#           runner that returns at once, against a private redis-server (AOF everysec, as in
#           production) on 127.0.0.1. BENCH_METRICS=0 runs it without metrics (no recorder, no
#           sampling, no listener), to measure what metrics cost.
#   docker  the real worker with the Docker runner (in the benchmark's process), end to end:
#           latency of a C `run` job printing one line (submit to result, one at a time) and
#           jobs/s for a batch with 2 and 4 slots, next to the same compile+run done directly
#           (`docker run --rm` loop, bare Engine API create+start+wait+remove). Needs the
#           Docker engine (started if it does not answer) and quayside/runner-c:1 (built
#           offline if missing). Sizes: BENCH_SEQ (30), BENCH_BATCH (200), BENCH_PARALLEL (2,4).
#   idle    the real quayside-worker (Docker runner) idle: memory (VmRSS) and CPU over 30 s,
#           scraped twice like Prometheus would, against a private Redis.
# The binary is built with cargo into $CARGO_TARGET_DIR (default target/).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
what=${1:-queue}
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
    fi
    cargo build --release -q -p quayside-e2e --bin quayside-bench
    work=$(mktemp -d /tmp/quayside-bench.XXXXXX)
    start_redis "$work/redis"
    trap 'kill "$REDIS_PID" 2>/dev/null || true; [ "$what" != docker ] || remove_bench_containers; rm -rf "$work"' EXIT
    E2E_REDIS_URL=$REDIS_URL RUST_LOG=warn "$target/release/quayside-bench" "$what"
    ;;
  idle)
    ensure_packages docker:docker.io dockerd:docker.io debootstrap:debootstrap
    ensure_dockerd
    scripts/build-images.sh
    cargo build --release -q --bin quayside-worker
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
  *)
    echo "usage: scripts/bench.sh queue|docker|idle" >&2
    exit 2
    ;;
esac
