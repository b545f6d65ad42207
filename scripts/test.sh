#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine (README command 2; .ci/run calls it):
# installs what is missing, starts a throwaway redis-server (unless E2E_REDIS_URL is set) and
# the Docker engine, builds the runner images offline, then fmt, clippy and every test.
#
#   scripts/test.sh [--verbose]
#
# Quiet: one line per step with its time, each step's output in the log folder named on the
# first line; a failing step prints its log's tail, a failing test step every line of cargo's
# output but the passing tests (so the failing tests' output is in CI logs). --verbose (or
# QUAYSIDE_VERBOSE=1) prints everything.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
parse_flags "$@"
[ ${#ARGS[@]} -eq 0 ] || die "unknown argument: ${ARGS[0]} (see --help)"

ensure_log_dir
ensure_rust
ensure_packages redis-server:redis-server redis-cli:redis-tools redis-sentinel:redis-sentinel \
  docker:docker.io dockerd:docker.io debootstrap:debootstrap python3:python3 prometheus:prometheus promtool:prometheus openssl:openssl \
  chromium:chromium
# The compose-file test parses YAML with Python (docker compose itself may not be installed).
if ! python3 -c 'import yaml' 2>/dev/null; then ensure_packages python3-yaml; fi
ensure_dockerd
# gVisor as the optional second wall: registered so the hostile suite also runs under it.
scripts/setup-runsc.sh
# crun, the faster OCI runtime scripts/run.sh uses: the runner contract suite runs under it too.
scripts/setup-crun.sh
scripts/build-images.sh
# Python venv and node_modules for the client examples that tests/tests/clients.rs runs.
scripts/setup-clients.sh
# schemathesis for the gateway's OpenAPI test (tests/tests/gateway_schema.rs).
scripts/setup-schemathesis.sh

if [ -z "${E2E_REDIS_URL:-}" ]; then
  start_redis "$SCRIPT_LOG_DIR/redis"
  trap 'kill "$REDIS_PID" 2>/dev/null || true' EXIT
  export E2E_REDIS_URL=$REDIS_URL
fi
log "redis at $E2E_REDIS_URL"

step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
# The CLI tests run the real `quayside` binary, which cargo test does not build by itself.
step "cargo build --workspace --bins" cargo build --workspace --bins
step --tests "cargo test --workspace" cargo test --workspace --no-fail-fast
# Kubernetes manifests and runner objects against the OpenAPI schemas.
scripts/validate-k8s.sh
# One test at a time: each gVisor sandbox costs a core for its start, and two tests at once (one
# of them starting six language sandboxes) pushed hello-world runs past their wall budget.
step --tests "runner suite again under gVisor (runsc)" \
  env E2E_DOCKER_RUNTIME=runsc cargo test -p quayside-e2e --test docker_runner -- --test-threads=1
# The runner suite (verdicts, hostile programs, cancel, sweep) under crun, which scripts/run.sh
# sets up by default; the workspace tests above run under the engine's default, runc.
step --tests "runner suite again under crun" \
  env E2E_DOCKER_RUNTIME=crun cargo test -p quayside-e2e --test docker_runner -- --test-threads=2
