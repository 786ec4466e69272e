#!/usr/bin/env bash
# `make test-e2e-kind`: the e2e tests against a kind cluster (Docker required).
#   sandbox/kind-e2e.sh [KIND] [CLUSTER] [IMAGE]
# Builds the operator image, loads it into the cluster, advertises nvidia.com/gpu on
# the GPU-pool worker and runs tests/e2e with KUBECONFIG pointing at the cluster.
# The cluster is deleted afterwards unless KEEP_KIND=1.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
kind="${1:-kind}" cluster="${2:-lms-e2e}" image="${3:-lms-operator:dev}"
cd "$root"

command -v docker >/dev/null || { echo "kind-e2e: docker is required" >&2; exit 2; }
command -v "$kind" >/dev/null || { echo "kind-e2e: $kind is not installed" >&2; exit 2; }
if ! command -v kubectl >/dev/null; then
  export PATH="$("$root/tools/build.sh" | tail -n 1):$PATH"
fi

mkdir -p .sandbox
kubeconfig="$root/.sandbox/kind-$cluster.kubeconfig"
if ! grep -qx "$cluster" <<<"$("$kind" get clusters 2>/dev/null)"; then
  "$kind" create cluster --name "$cluster" --config "$here/kind-config.yaml" --kubeconfig "$kubeconfig" --wait 180s
else
  "$kind" get kubeconfig --name "$cluster" > "$kubeconfig"
fi
if [[ "${KEEP_KIND:-0}" != 1 ]]; then
  trap '"$kind" delete cluster --name "$cluster"' EXIT
fi

docker build -t "$image" "$root"
"$kind" load docker-image "$image" --name "$cluster"

for node in $(kubectl --kubeconfig "$kubeconfig" get nodes -l lms.dev/pool=gpu -o name); do
  kubectl --kubeconfig "$kubeconfig" patch "$node" --subresource=status --type=json \
    -p '[{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": "4"},
         {"op": "add", "path": "/status/allocatable/nvidia.com~1gpu", "value": "4"}]'
done

KUBECONFIG="$kubeconfig" LMS_IMAGE="$image" "$root/.venv/bin/python" -m pytest -p no:cacheprovider \
  --strict-markers -ra tests/e2e -m e2e
