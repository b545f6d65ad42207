#!/usr/bin/env bash
# Installs what the client examples in examples/clients/ need, if missing: Python 3 with a venv
# at target/clients-venv (examples/clients/python/requirements.txt), and Node with npm (Debian's
# nodejs, 18 on Debian 12) plus examples/clients/node/node_modules from its package-lock.json.
# Idempotent: reinstalls only when a requirements or lock file changed. [--verbose]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
parse_flags "$@"

ensure_packages python3:python3 node:nodejs npm:npm
ensure_venv target/clients-venv -r examples/clients/python/requirements.txt

node=examples/clients/node
npm_ci() {
  (cd "$node" && npm ci --no-audit --no-fund)
  cp "$node/package-lock.json" "$node/node_modules/.installed-lock.json"
}
if ! cmp -s "$node/package-lock.json" "$node/node_modules/.installed-lock.json" 2>/dev/null; then
  step "npm ci ($node)" npm_ci
fi
