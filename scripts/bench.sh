#!/usr/bin/env bash
# Benchmarks (not tests): scripts/bench.sh queue
#   queue  enqueue and processing rates, latency at 500 jobs/s, Redis commands per job, with a
#          runner that returns at once, against a private redis-server (AOF everysec, as in
#          production) on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
what=${1:-queue}
ensure_rust
ensure_packages redis-server:redis-server redis-cli:redis-tools python3:python3

case "$what" in
  queue)
    cargo build --release -q -p quayside-e2e --bin quayside-bench
    work=$(mktemp -d /tmp/quayside-bench.XXXXXX)
    start_redis "$work/redis"
    trap 'kill "$REDIS_PID" 2>/dev/null || true; rm -rf "$work"' EXIT
    E2E_REDIS_URL=$REDIS_URL RUST_LOG=warn target/release/quayside-bench
    ;;
  *)
    echo "usage: scripts/bench.sh queue" >&2
    exit 2
    ;;
esac
