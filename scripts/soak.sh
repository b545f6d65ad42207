#!/usr/bin/env bash
# Long soaks (not part of scripts/test.sh): scripts/soak.sh model|fleet|all
#   model   the randomized model test (tests/tests/model.rs) for MODEL_STEPS (1000000) steps
#           from a random seed (MODEL_SEED replays one; printed first), release build, on a
#           private redis-server (AOF always) the test starts, SIGKILLs and restarts itself.
#   fleet   the fleet-level fault run (tests/tests/fleet_fault_run.rs) at full size: FLEET_JOBS
#           (1000) real Docker jobs in one batch through three quayside-worker processes, one
#           SIGKILLed and restarted every 3 s, Redis (AOF always) SIGKILLed and restarted once,
#           the Docker engine stopped for at least 5 s and started again once; then the ledger
#           (one terminal result per job with the status its program deserves, nothing
#           pending, no container left) and the workers' RSS over time. The engine is a private
#           dockerd and Redis a private redis-server: the shared engine is never restarted.
#           Needs quayside/runner-python:<deploy/images/VERSION> on the shared engine (built
#           offline by scripts/build-images.sh if missing). Setup and builds print one line per
#           step (--verbose: everything); the soak's own output is printed as is.
#   all     every soak above, one after the other.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
parse_flags "$@"
what=${ARGS[0]:-all}
ensure_rust
ensure_packages redis-server:redis-server redis-cli:redis-tools docker:docker.io dockerd:docker.io

soak_model() {
  local steps=${MODEL_STEPS:-1000000}
  local seed=${MODEL_SEED:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}
  step "cargo build --release model test" cargo test --release --no-run -p quayside-e2e --test model
  log "model test: $steps steps, seed $seed (replay: MODEL_SEED=$seed MODEL_STEPS=$steps scripts/soak.sh model)"
  MODEL_SEED=$seed MODEL_STEPS=$steps cargo test --release -q -p quayside-e2e --test model -- --nocapture
}

soak_fleet() {
  ensure_dockerd
  scripts/build-images.sh python
  step "cargo build --workspace --bins" cargo build --workspace --bins
  log "fleet fault run: ${FLEET_JOBS:-1000} jobs"
  FLEET_JOBS=${FLEET_JOBS:-1000} cargo test -p quayside-e2e --test fleet_fault_run -- --nocapture
}

case $what in
  model) soak_model ;;
  fleet) soak_fleet ;;
  all)
    soak_model
    soak_fleet
    ;;
  *)
    echo "usage: scripts/soak.sh model|fleet|all" >&2
    exit 2
    ;;
esac
