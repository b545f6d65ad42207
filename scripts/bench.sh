#!/usr/bin/env bash
# Benchmarks (not tests): scripts/bench.sh queue|docker
#   queue   enqueue and processing rates, latency at 500 jobs/s, Redis commands per job, with a
#           runner that returns at once, against a private redis-server (AOF everysec, as in
#           production) on 127.0.0.1.
#   docker  the real worker with the Docker runner (in the benchmark's process), end to end:
#           latency of a C `run` job printing one line (submit to result, one at a time) and
#           jobs/s for a batch with 2 and 4 slots, next to the same compile+run done directly
#           (`docker run --rm` loop, bare Engine API create+start+wait+remove). Needs the
#           Docker engine (started if it does not answer) and quayside/runner-c:1 (built
#           offline if missing). Sizes: BENCH_SEQ (30), BENCH_BATCH (200), BENCH_PARALLEL (2,4).
# The binary is built with cargo into $CARGO_TARGET_DIR (default target/).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
what=${1:-queue}
ensure_rust
ensure_packages redis-server:redis-server redis-cli:redis-tools python3:python3
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
  *)
    echo "usage: scripts/bench.sh queue|docker" >&2
    exit 2
    ;;
esac
