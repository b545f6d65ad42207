#!/usr/bin/env bash
# Installs schemathesis (from PyPI) into target/schemathesis-venv, if it is not there yet. The
# gateway test (tests/tests/gateway_schema.rs) runs it against the live gateway's /openapi.json.
# [--verbose]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
parse_flags "$@"

SCHEMATHESIS_VERSION=4.32.5
ensure_venv target/schemathesis-venv "schemathesis==$SCHEMATHESIS_VERSION"
