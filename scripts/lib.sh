# Shared helpers for scripts/run.sh and scripts/test.sh (sourced, not run).
# They make a fresh Debian 12 machine ready: packages, redis-server, dockerd, runner images.

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# ensure_packages CMD:PACKAGE ...: installs PACKAGE when CMD is not on PATH.
ensure_packages() {
  local missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  as_root apt-get update -q >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# ensure_debs PACKAGE ...: installs the Debian packages dpkg does not know as installed (for
# packages without a command of their own, e.g. python3-yaml).
ensure_debs() {
  local missing=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  as_root apt-get update -q >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_redis DIR: a throwaway redis-server on a free loopback port; sets REDIS_URL and REDIS_PID.
start_redis() {
  local dir=$1 port
  port=$(free_port)
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' --appendonly yes \
    --appendfsync everysec --maxmemory-policy noeviction --daemonize no >"$dir/redis.log" 2>&1 &
  REDIS_PID=$!
  REDIS_URL="redis://127.0.0.1:$port"
  for _ in $(seq 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "redis-server did not start; see $dir/redis.log" >&2
  exit 1
}

# ensure_dockerd: starts the Docker engine if it does not answer (no systemd on CI machines).
ensure_dockerd() {
  docker info >/dev/null 2>&1 && return 0
  log "starting dockerd"
  as_root sh -c 'nohup dockerd >/var/log/quayside-dockerd.log 2>&1 &'
  for _ in $(seq 120); do
    docker info >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "dockerd did not start; see /var/log/quayside-dockerd.log" >&2
  exit 1
}
