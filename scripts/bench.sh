#!/usr/bin/env bash
# Benchmarks (not tests): scripts/bench.sh queue
#   queue  enqueue and processing rates, latency at 500 jobs/s, Redis commands per job, with a
#          runner that returns at once, against a private redis-server (AOF everysec, as in
#          production) on 127.0.0.1. BENCH_METRICS=0 runs it without metrics (no recorder, no
#          sampling, no listener), to measure what metrics cost.
#   idle   an idle worker's memory (VmRSS) and CPU over 30 s, scraped twice like Prometheus
#          would; the real worker with the test-only script runner, against a private Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
what=${1:-queue}
ensure_rust
ensure_packages redis-server:redis-server redis-cli:redis-tools python3:python3 curl:curl

case "$what" in
  queue)
    cargo build --release -q -p quayside-e2e --bin quayside-bench
    work=$(mktemp -d /tmp/quayside-bench.XXXXXX)
    start_redis "$work/redis"
    trap 'kill "$REDIS_PID" 2>/dev/null || true; rm -rf "$work"' EXIT
    E2E_REDIS_URL=$REDIS_URL RUST_LOG=warn target/release/quayside-bench
    ;;
  idle)
    cargo build --release -q -p quayside-e2e --bin quayside-test-worker
    work=$(mktemp -d /tmp/quayside-bench.XXXXXX)
    start_redis "$work/redis"
    port=$(free_port)
    printf '[redis]\nurl = "%s"\n[queue]\nname = "idle"\n[metrics]\nlisten_addr = "127.0.0.1:%s"\n[languages.script]\nimage = "none"\n' \
      "$REDIS_URL" "$port" >"$work/worker.toml"
    target/release/quayside-test-worker "$work/worker.toml" 2>"$work/worker.log" &
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
    echo "usage: scripts/bench.sh queue|idle" >&2
    exit 2
    ;;
esac
