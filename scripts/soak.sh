#!/usr/bin/env bash
# Long runs that do not belong in CI: scripts/soak.sh model|fleet|all
#   model  the randomized model test (tests/tests/model.rs) for a million steps (MODEL_STEPS,
#          default 1000000) from a random seed (MODEL_SEED to replay one), on a private
#          redis-server the test starts itself, release build. Prints the seed first.
#   fleet  the fleet-level fault run (1,000 real Docker jobs, SIGKILLed workers, Redis and
#          engine restarts): added by the worker/runner side (branch `fleet`); not here yet.
#   all    model, then fleet.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
what=${1:-all}
ensure_rust
ensure_packages redis-server:redis-server

soak_model() {
  local steps=${MODEL_STEPS:-1000000}
  local seed=${MODEL_SEED:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}
  log "model test: $steps steps, seed $seed (replay: MODEL_SEED=$seed MODEL_STEPS=$steps scripts/soak.sh model)"
  MODEL_SEED=$seed MODEL_STEPS=$steps cargo test --release -q -p quayside-e2e --test model -- --nocapture
}

soak_fleet() {
  echo "scripts/soak.sh fleet: the fleet fault run is added by the worker/runner side (branch fleet); nothing to run here yet" >&2
  return 2
}

case "$what" in
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
