#!/usr/bin/env bash
# Installs what the client examples in examples/clients/ need, if missing: Python 3 with a venv
# at target/clients-venv (examples/clients/python/requirements.txt), and Node with npm (Debian's
# nodejs, 18 on Debian 12) plus examples/clients/node/node_modules from its package-lock.json.
# Idempotent: reinstalls only when a requirements or lock file changed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_packages python3:python3 node:nodejs npm:npm

venv=target/clients-venv
req=examples/clients/python/requirements.txt
if ! cmp -s "$req" "$venv/requirements.txt" 2>/dev/null; then
  log "installing $req into $venv"
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    # Debian's python3 needs python3-venv for ensurepip.
    rm -rf "$venv"
    ensure_debs python3-venv
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$venv/requirements.txt"
fi

node=examples/clients/node
if ! cmp -s "$node/package-lock.json" "$node/node_modules/.installed-lock.json" 2>/dev/null; then
  log "installing $node/node_modules (npm ci)"
  (cd "$node" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  cp "$node/package-lock.json" "$node/node_modules/.installed-lock.json"
fi
