#!/usr/bin/env bash
# Optional second wall: registers gVisor's runsc (Debian package `runsc`) with the Docker engine
# as runtime "runsc", with networking off inside the sandbox kernel (a running engine reloads
# its runtimes, no restart). Then set `runner.docker.runtime = "runsc"`. [--verbose]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
parse_flags "$@"

ensure_packages runsc:runsc docker:docker.io dockerd:docker.io python3:python3
register_runtime runsc '{"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}'
log "runsc registered: set runner.docker.runtime = \"runsc\" (QUAYSIDE_RUNNER__DOCKER__RUNTIME=runsc)"
