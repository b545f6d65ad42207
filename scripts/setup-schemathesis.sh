#!/usr/bin/env bash
# Installs schemathesis (from PyPI) into target/schemathesis-venv, if it is not there yet. The
# gateway test (tests/tests/gateway_schema.rs) runs it against the live gateway's /openapi.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

SCHEMATHESIS_VERSION=4.32.5
venv=target/schemathesis-venv
if [ -x "$venv/bin/schemathesis" ] &&
  "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  exit 0
fi
log "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
rm -rf "$venv"
mkdir -p target
if ! python3 -m venv "$venv" >/dev/null 2>&1; then
  # Debian's python3 needs python3-venv for ensurepip.
  rm -rf "$venv"
  as_root apt-get update -q >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv >/dev/null
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
"$venv/bin/schemathesis" --version
