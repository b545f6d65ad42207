#!/usr/bin/env bash
# Optional second wall: registers gVisor's runsc (Debian package `runsc`) with the Docker engine
# as runtime "runsc", with networking off inside the sandbox kernel, and restarts the engine if
# the configuration changed. Then set `runner.docker.runtime = "runsc"`. [--verbose]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
parse_flags "$@"

ensure_packages runsc:runsc docker:docker.io dockerd:docker.io python3:python3
config=/etc/docker/daemon.json
as_root mkdir -p /etc/docker
changed=$(as_root python3 - "$config" <<'PY'
import json, os, sys
path = sys.argv[1]
cfg = json.load(open(path)) if os.path.exists(path) and os.path.getsize(path) else {}
want = {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}
if cfg.get("runtimes", {}).get("runsc") == want:
    print("no")
else:
    cfg.setdefault("runtimes", {})["runsc"] = want
    json.dump(cfg, open(path, "w"), indent=2)
    print("yes")
PY
)
restart_dockerd() {
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker 2>/dev/null; then
    as_root systemctl restart docker
  else
    as_root pkill -x dockerd || true
    for _ in $(seq 60); do pgrep -x dockerd >/dev/null || return 0; sleep 0.5; done
  fi
}
if [ "$changed" = yes ] && docker info >/dev/null 2>&1; then
  step "restart dockerd to load the runsc runtime" restart_dockerd
fi
ensure_dockerd
docker info --format '{{json .Runtimes}}' | grep -q runsc || die "runsc is not registered with dockerd"
log "runsc registered: set runner.docker.runtime = \"runsc\" (QUAYSIDE_RUNNER__DOCKER__RUNTIME=runsc)"
