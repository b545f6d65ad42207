#!/usr/bin/env bash
# Validates every Kubernetes object Quayside ships or creates against the official OpenAPI
# schemas (kubernetes-validate, strict: unknown fields are errors):
#   - deploy/k8s base and overlays, rendered with `kubectl kustomize`;
#   - the ConfigMap and Job the Kubernetes runner creates per attempt, dumped as JSON by the
#     worker's unit test `dump_objects_for_schema_validation` into target/k8s-objects/.
# CRDs (ServiceMonitor, ScaledObject) have no built-in schema and are reported, not failed.
# Idempotent; installs kubectl (Debian kubernetes-client) and kubernetes-validate if missing.
# [--verbose]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

parse_flags "$@"

K8S_VERSION=${K8S_VERSION:-1.33.0}
ensure_packages kubectl:kubernetes-client python3:python3
venv=target/k8s-validate-venv
ensure_venv "$venv" 'kubernetes-validate>=1.33,<2'
validate() { "$venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$@"; }

out=target/k8s-rendered
render() {
  rm -rf "$out" target/k8s-objects
  mkdir -p "$out"
  local dir
  for dir in base overlays/dev overlays/production; do
    kubectl kustomize "deploy/k8s/$dir" >"$out/${dir//\//-}.yaml"
  done
  # The ConfigMap and Job the runner creates, dumped as JSON by a worker unit test.
  cargo test -p quayside-worker --lib dump_objects_for_schema_validation
}
step "render deploy/k8s and dump the runner's objects" render

check() {
  # The validator must bite: a Job with a misspelt field has to fail.
  printf 'apiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\nspec: {backofLimit: 0, template: {spec: {containers: []}}}\n' \
    >"$out/should-fail.yaml.bad"
  if validate "$out/should-fail.yaml.bad"; then
    echo "kubernetes-validate accepted an invalid Job: validation is not working" >&2
    return 1
  fi
  validate "$out"/*.yaml target/k8s-objects/*.json 2>&1 | tee "$out/report.txt"
}
step "kubernetes-validate against the Kubernetes $K8S_VERSION schemas" check
# Warnings other than the two CRDs' missing schemas are news: show them.
grep -v "Couldn't find schema for kind \(ScaledObject\|ServiceMonitor\)" "$out/report.txt" | grep . >&2 || true
count=$(grep -c '^kind:' "$out"/*.yaml | awk -F: '{s+=$2} END {print s}')
objects=$(find target/k8s-objects -name '*.json' | wc -l)
log "ok: $count rendered manifests and $objects runner objects valid (CRDs ScaledObject and ServiceMonitor have no schema: not checked)"
