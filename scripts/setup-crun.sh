#!/usr/bin/env bash
# Registers crun (Debian package `crun`), a C implementation of the OCI runtime that starts
# containers faster than runc (`BENCH_COMPARE=runtime scripts/bench.sh docker` measures it),
# with the Docker engine as runtime "crun" (a running engine reloads its runtimes, no restart).
# Then set `runner.docker.runtime = "crun"`. [--verbose]
#
# crun refuses a "hybrid" cgroup host (cgroup v1 hierarchies plus a cgroup2 mount that still
# holds controllers). On such a host this mounts each controller left in the cgroup2 mount as
# its own v1 hierarchy under /sys/fs/cgroup (only controllers no cgroup2 group has enabled),
# which is what a v1 host would have had anyway. Pure v1 and pure v2 hosts are left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
parse_flags "$@"

ensure_packages crun:crun docker:docker.io dockerd:docker.io python3:python3

unified=/sys/fs/cgroup/unified
if [ "$(stat -f -c %T /sys/fs/cgroup)" != cgroup2fs ] && [ -r "$unified/cgroup.controllers" ]; then
  for c in $(cat "$unified/cgroup.controllers"); do
    grep -qw "$c" "$unified/cgroup.subtree_control" && die "controller $c is in use in cgroup2 ($unified): crun cannot run on this hybrid host"
    mount_v1() { as_root mkdir -p "/sys/fs/cgroup/$1" && as_root mount -t cgroup -o "$1" cgroup "/sys/fs/cgroup/$1"; }
    step "mount cgroup controller $c as v1 (crun refuses hybrid hosts)" mount_v1 "$c"
  done
fi
register_runtime crun '{"path": "/usr/bin/crun"}'
log "crun registered: set runner.docker.runtime = \"crun\" (QUAYSIDE_RUNNER__DOCKER__RUNTIME=crun)"
