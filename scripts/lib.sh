# shellcheck shell=bash disable=SC2034 # (REDIS_URL and friends are set for the sourcing script)
# Shared helpers for every script in scripts/ (sourced, not run): one way to print, to run a
# step quietly with its time and a log file, to install Debian packages, to make a Python venv,
# and to start redis-server and dockerd on a fresh Debian 12 machine.
#
# Quiet by default: each step's output goes to a log file in the run's log folder (named once,
# shared with the scripts this one calls) and the terminal gets one line per step with its
# time; a failing step prints its log's path and last lines. `--verbose` (or
# QUAYSIDE_VERBOSE=1) prints every command's output as it comes.

: "${QUAYSIDE_VERBOSE:=0}"
export QUAYSIDE_VERBOSE
# The log folder of this run (SCRIPT_LOG_DIR, not QUAYSIDE_*: the worker reads those as config).
: "${SCRIPT_LOG_DIR:=}"
export SCRIPT_LOG_DIR
SCRIPT_NAME=$(basename "$0" .sh)
STEP_COUNT=0
# Lines of a failed step's log shown on the terminal.
readonly STEP_TAIL_LINES=40

verbose() { [ "$QUAYSIDE_VERBOSE" = 1 ]; }

# log MESSAGE: one progress line on stderr (bold on a terminal).
log() {
  if [ -t 2 ]; then printf '\033[1m==> %s\033[0m\n' "$*" >&2; else printf '==> %s\n' "$*" >&2; fi
}

die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# usage: the calling script's header comment (after the shebang, up to `set -euo pipefail`).
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

# parse_flags "$@": takes --verbose/-v (and --help/-h, which prints usage and exits) out of the
# arguments; the rest are left, in order, in ARGS.
parse_flags() {
  ARGS=()
  local arg
  for arg in "$@"; do
    case $arg in
      -v | --verbose) QUAYSIDE_VERBOSE=1 ;;
      -h | --help) usage; exit 0 ;;
      *) ARGS+=("$arg") ;;
    esac
  done
}

# ensure_log_dir: makes this run's log folder unless a calling script already did, and says
# where it is (once per run).
ensure_log_dir() {
  [ -n "$SCRIPT_LOG_DIR" ] && return 0
  SCRIPT_LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/quayside-$SCRIPT_NAME.XXXXXX")
  log "logs: $SCRIPT_LOG_DIR$(verbose || printf ' (--verbose prints everything)')"
}

# Wall clock in microseconds; EPOCHREALTIME is bash 5's, its separator follows the locale.
now_us() { printf '%s' "${EPOCHREALTIME//[!0-9]/}"; }

# seconds_since START_US: "12.3s".
seconds_since() {
  local d=$(($(now_us) - $1))
  printf '%d.%ds' $((d / 1000000)) $((d / 100000 % 10))
}

# step [--tests] NAME CMD...: runs CMD as one named step and prints one line with NAME and
# its time when it ends.
#   quiet:   CMD's output goes to $SCRIPT_LOG_DIR/<script>-<n>-<name>.log (on a terminal, a live
#            line shows what runs); on failure the log's path and its last $STEP_TAIL_LINES
#            lines, or with --tests (cargo test) every line but the passing tests, so each
#            failing test's output reaches the terminal and CI logs.
#   verbose: CMD's output as it comes, after a line naming the step.
# CMD runs in a background subshell with errexit on, so a function's failing command stops it;
# hence it cannot set the caller's variables, and step must be called as a plain command: in a
# condition (`if step ...`, `step ... || x`) bash ignores errexit inside CMD as well.
# Returns CMD's status.
step() {
  local filter=tail
  if [ "$1" = --tests ]; then filter=tests; shift; fi
  local name=$1 start rc=0 logf=''
  shift
  start=$(now_us)
  if verbose; then
    log "$name ..."
    ("$@") &
    wait $! || rc=$?
  else
    ensure_log_dir
    STEP_COUNT=$((STEP_COUNT + 1))
    local slug
    slug=$(printf '%s' "$name" | tr -cs 'A-Za-z0-9._-' '-' | cut -c1-60)
    logf=$(printf '%s/%s-%02d-%s.log' "$SCRIPT_LOG_DIR" "$SCRIPT_NAME" "$STEP_COUNT" "${slug%-}")
    if [ -t 2 ]; then printf '    %s ...' "$name" >&2; fi
    ("$@") >"$logf" 2>&1 </dev/null &
    wait $! || rc=$?
    if [ -t 2 ]; then printf '\r\033[K' >&2; fi
  fi
  if [ "$rc" -eq 0 ]; then
    log "$(printf '%-52s %7s' "$name" "$(seconds_since "$start")")"
    return 0
  fi
  printf '!! %s failed after %s (exit %d)%s\n' "$name" "$(seconds_since "$start")" "$rc" \
    "${logf:+; log: $logf}" >&2
  [ -z "$logf" ] || show_failure "$filter" "$logf" >&2
  return "$rc"
}

# show_failure tail|tests LOG: what a failed step's log says, for the terminal.
show_failure() {
  if [ "$1" = tests ]; then
    grep -Ev '^test .* \.\.\. (ok|ignored)$|^ *(Compiling|Checking|Fresh|Blocking) ' "$2" || true
  else
    printf -- '--- last %d lines of %s ---\n' "$STEP_TAIL_LINES" "$2"
    tail -n "$STEP_TAIL_LINES" "$2"
    printf -- '--- end of %s ---\n' "$2"
  fi
}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# ensure_packages ITEM...: installs, in one apt step, what is missing. ITEM is CMD:PACKAGE
# (PACKAGE is installed when CMD is not on PATH) or PACKAGE (installed unless dpkg has it, for
# packages without a command of their own, e.g. python3-yaml).
ensure_packages() {
  local missing=() item pkg
  for item in "$@"; do
    case $item in
      *:*) command -v "${item%%:*}" >/dev/null 2>&1 && continue; pkg=${item#*:} ;;
      *) dpkg-query -W -f='${Status}' "$item" 2>/dev/null | grep -q 'install ok installed' && continue
         pkg=$item ;;
    esac
    [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  step "apt-get install ${missing[*]}" apt_install "${missing[@]}"
}

apt_install() {
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

# ensure_venv DIR PIP_ARGS...: a Python venv at DIR in which `pip install PIP_ARGS` ran; made
# again only when PIP_ARGS, or the content of a file among them (`-r requirements.txt`), changed.
ensure_venv() {
  local dir=$1 want arg
  shift
  want=$(
    printf '%s\n' "$@"
    for arg in "$@"; do [ -f "$arg" ] && sha256sum "$arg"; done
    true
  )
  if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.quayside-venv" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  # Debian's python3 needs python3-venv for ensurepip.
  ensure_packages python3:python3 python3-venv
  step "python venv $dir: pip install $*" make_venv "$dir" "$want" "$@"
}

make_venv() {
  local dir=$1 stamp=$2
  shift 2
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --disable-pip-version-check "$@"
  printf '%s\n' "$stamp" >"$dir/.quayside-venv"
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (rustup) first"
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
  die "redis-server did not start; see $dir/redis.log"
}

# ensure_dockerd: starts the Docker engine if it does not answer (no systemd on CI machines).
ensure_dockerd() {
  docker info >/dev/null 2>&1 && return 0
  step "start dockerd (log: /var/log/quayside-dockerd.log)" start_dockerd
}

start_dockerd() {
  as_root sh -c 'nohup dockerd >/var/log/quayside-dockerd.log 2>&1 &'
  for _ in $(seq 120); do
    docker info >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "dockerd did not answer within 60 s; see /var/log/quayside-dockerd.log" >&2
  return 1
}

# register_runtime NAME JSON: adds the OCI runtime NAME (JSON: its daemon.json entry, e.g.
# {"path": "/usr/bin/crun"}) to /etc/docker/daemon.json and makes a running engine reload it
# (SIGHUP: the engine reloads `runtimes` without a restart, so running containers are not
# touched); starts the engine if it is down; fails unless the engine then lists NAME.
register_runtime() {
  local name=$1 want=$2 config=/etc/docker/daemon.json changed
  as_root mkdir -p /etc/docker
  changed=$(as_root python3 - "$config" "$name" "$want" <<'PY'
import json, os, sys
path, name, want = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
cfg = json.load(open(path)) if os.path.exists(path) and os.path.getsize(path) else {}
if cfg.get("runtimes", {}).get(name) == want:
    print("no")
else:
    cfg.setdefault("runtimes", {})[name] = want
    json.dump(cfg, open(path, "w"), indent=2)
    print("yes")
PY
)
  if [ "$changed" = yes ] && docker info >/dev/null 2>&1; then
    reload_runtimes() {
      as_root pkill -HUP -x dockerd
      for _ in $(seq 40); do
        docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q "\"$name\"" && return 0
        sleep 0.25
      done
      echo "dockerd did not list runtime $name after a reload" >&2
      return 1
    }
    step "reload dockerd's runtimes (adds $name)" reload_runtimes
  fi
  ensure_dockerd
  docker info --format '{{json .Runtimes}}' | grep -q "\"$name\"" || die "$name is not registered with dockerd"
}
