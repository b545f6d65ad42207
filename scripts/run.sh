#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine (README command 1): installs and starts what is
# needed (Redis, the Docker engine, the runner images), starts a worker, submits the examples/
# jobs and prints their results. Uses QUAYSIDE_REDIS__URL if set, else a private redis-server.
#
#   scripts/run.sh [--verbose]
#
# Quiet: one line per step with its time; each step's output is in the log folder named on
# the first line. --verbose (or QUAYSIDE_VERBOSE=1) prints everything.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
parse_flags "$@"
[ ${#ARGS[@]} -eq 0 ] || die "unknown argument: ${ARGS[0]} (see --help)"

ensure_log_dir
ensure_rust
ensure_packages redis-server:redis-server redis-cli:redis-tools docker:docker.io dockerd:docker.io \
  debootstrap:debootstrap python3:python3
ensure_dockerd
# crun starts job containers faster than runc (BENCH_COMPARE=runtime scripts/bench.sh docker);
# where it cannot be set up, jobs run under the engine's default runtime.
if [ -z "${QUAYSIDE_RUNNER__DOCKER__RUNTIME:-}" ]; then
  if scripts/setup-crun.sh; then
    export QUAYSIDE_RUNNER__DOCKER__RUNTIME=crun
  else
    log "crun could not be set up: jobs run under the engine's default runtime (runc)"
  fi
fi
scripts/build-images.sh

step "cargo build --release (quayside, quayside-worker)" \
  cargo build --release --bin quayside --bin quayside-worker
bin=target/release

cleanup() {
  [ -n "${WORKER_PID:-}" ] && kill -TERM "$WORKER_PID" 2>/dev/null && wait "$WORKER_PID" 2>/dev/null
  [ -n "${REDIS_PID:-}" ] && kill "$REDIS_PID" 2>/dev/null
  true
}
trap cleanup EXIT
if [ -z "${QUAYSIDE_REDIS__URL:-}" ]; then
  start_redis "$SCRIPT_LOG_DIR/redis"
  export QUAYSIDE_REDIS__URL=$REDIS_URL
fi
log "redis at $QUAYSIDE_REDIS__URL"

"$bin/quayside-worker" --log-format pretty >"$SCRIPT_LOG_DIR/worker.log" 2>&1 &
WORKER_PID=$!
log "worker started, runtime ${QUAYSIDE_RUNNER__DOCKER__RUNTIME:-runc} (log: $SCRIPT_LOG_DIR/worker.log)"

unexpected=0
# submit TITLE EXPECTED_EXIT ARGS...: the CLI exits 0 when the job succeeded, 1 when it ended
# otherwise (the C++ example is meant to end as compile_error).
submit() {
  local title=$1 expected=$2 code=0
  shift 2
  printf '\n\033[1m### %s\033[0m\n' "$title"
  "$bin/quayside" submit --wait --timeout 120 "$@" || code=$?
  [ "$code" -eq "$expected" ] || { echo "!! expected exit $expected, got $code" >&2; unexpected=1; }
}
submit "C program reading stdin" 0 --language c --stdin-file examples/c-stdin.input examples/c-stdin/main.c
submit "C++ compile error (expected: compile_error)" 1 --language cpp examples/cpp-compile-error
submit "Python script" 0 --language python --stdin-file examples/python.input examples/python/main.py
submit "Multi-file C project" 0 --language c examples/c-multifile
echo
"$bin/quayside" stats
exit "$unexpected"
