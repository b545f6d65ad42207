#!/usr/bin/env bash
# Validates every Kubernetes object Quayside ships or creates against the official OpenAPI
# schemas (kubernetes-validate, strict: unknown fields are errors):
#   - deploy/k8s base and overlays, and the seccomp installer deploy/seccomp, rendered with
#     `kubectl kustomize`;
#   - the ConfigMap and Job the Kubernetes runner creates per attempt, dumped as JSON by the
#     worker's unit test `dump_objects_for_schema_validation` into target/k8s-objects/.
# CRDs (ServiceMonitor, ScaledObject) have no built-in schema and are reported, not failed.
# Idempotent; installs kubectl (Debian kubernetes-client) and kubernetes-validate if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

K8S_VERSION=${K8S_VERSION:-1.33.0}
ensure_packages kubectl:kubernetes-client python3:python3
venv=target/k8s-validate-venv
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  log "installing kubernetes-validate into $venv"
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    # Debian's python3 needs python3-venv for ensurepip.
    rm -rf "$venv"
    as_root apt-get update -q >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet 'kubernetes-validate>=1.33,<2'
fi
validate() { "$venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$@"; }

out=target/k8s-rendered
rm -rf "$out" target/k8s-objects
mkdir -p "$out"
for dir in base overlays/dev overlays/production; do
  name=${dir//\//-}
  kubectl kustomize "deploy/k8s/$dir" >"$out/$name.yaml"
done
kubectl kustomize deploy/seccomp >"$out/seccomp-installer.yaml"

log "dumping the objects the runner creates"
cargo test -q -p quayside-worker --lib dump_objects_for_schema_validation >/dev/null

# The validator must bite: a Job with a misspelt field has to fail.
printf 'apiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\nspec: {backofLimit: 0, template: {spec: {containers: []}}}\n' \
  >"$out/should-fail.yaml.bad"
if validate "$out/should-fail.yaml.bad" >/dev/null 2>&1; then
  echo "kubernetes-validate accepted an invalid Job: validation is not working" >&2
  exit 1
fi

log "validating against Kubernetes $K8S_VERSION schemas (CRDs skipped)"
report=$(validate "$out"/*.yaml target/k8s-objects/*.json 2>&1) || { echo "$report" >&2; exit 1; }
echo "$report" | grep -v "Couldn't find schema for kind \(ScaledObject\|ServiceMonitor\)" | grep . >&2 || true
count=$(grep -c '^kind:' "$out"/*.yaml | awk -F: '{s+=$2} END {print s}')
log "ok: $count rendered manifests and $(ls target/k8s-objects | wc -l) runner objects"
