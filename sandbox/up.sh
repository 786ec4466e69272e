#!/usr/bin/env bash
# `make sandbox`: a local control plane with CPU and GPU node pools, an S3 server, the CRD, the
# operator and the pod runner, all in the background. With AUTOSCALING=1 also Prometheus and
# KEDA (sandbox/autoscaling.sh), and the operator renders KEDA ScaledObjects on Triton's metrics.
# Idempotent: running it again reuses what is already up.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
. "$here/lib.sh"
cd "$root"

name="${LMS_SANDBOX_NAME:-lms-sandbox}"
dir="$root/.sandbox"
kubeconfig="$dir/kubeconfig"
venv="$root/.venv/bin"
mkdir -p "$dir/state/pvc"

bin="$("$root/tools/build.sh" | tail -n 1)"
export PATH="$bin:$PATH"
LMS_TOOLS_BIN="$bin" "$here/cluster.sh" up "$name" "$kubeconfig"
echo "$name" > "$dir/cluster-name"

shopt -s nullglob
crds=("$root"/crds/*.yaml)
if (( ${#crds[@]} )); then
  for crd in "${crds[@]}"; do
    kubectl --kubeconfig "$kubeconfig" apply --server-side --force-conflicts -f "$crd" >&2
  done
  kubectl --kubeconfig "$kubeconfig" wait --for=condition=Established crd --all --timeout=60s >&2
else
  echo "sandbox: no CRD under crds/ yet, skipping" >&2
fi

kubectl --kubeconfig "$kubeconfig" apply --server-side -f "$here/repository-claim.yaml" -f "$root/deploy/peering.yaml" >&2

# The S3 server (versitygw over .sandbox/s3/), bucket lms, and the Secret lms-s3 in default
# holding its keys; .sandbox/s3.env has the same four lines for tools outside the cluster.
LMS_TOOLS_BIN="$bin" "$here/s3.sh" up "$dir" lms >/dev/null
kubectl --kubeconfig "$kubeconfig" create secret generic lms-s3 -n default --from-env-file="$dir/s3.env" \
  --dry-run=client -o yaml | kubectl --kubeconfig "$kubeconfig" apply --server-side --force-conflicts -f - >&2

# Prometheus and KEDA before the operator, so it starts with the Prometheus address (it notices
# KEDA arriving or leaving later on its own).
autoscaling_env=/dev/null
if [[ "${AUTOSCALING:-0}" == 1 ]]; then
  autoscaling_env="$(LMS_TOOLS_BIN="$bin" "$here/autoscaling.sh" up "$dir" "$kubeconfig" | tail -n 1)"
elif [[ -f "$dir/autoscaling/autoscaling.env" ]]; then
  autoscaling_env="$dir/autoscaling/autoscaling.env"  # started by an earlier AUTOSCALING=1 run
fi

# The operator reads published versions where the pod runner keeps each claim's files,
# so a version that is already there is a cache hit without a Job. It also gets the S3 keys
# as its own environment (the chart's s3.operatorSecret), never the pod runner: pods get
# them from the Secret, by reference.
( set -a; . "$dir/s3.env"; . "$autoscaling_env"; set +a
start_bg operator "$dir/operator.pid" "$dir/operator.log" \
  "$venv/python" -m lms_harness.operator --kubeconfig "$kubeconfig" --all-namespaces --repository-root "$dir/state/pvc"
)

start_bg podrunner "$dir/podrunner.pid" "$dir/podrunner.out" \
  "$venv/python" -m lms_harness.podrunner --kubeconfig "$kubeconfig" --state-dir "$dir/state"

echo "sandbox: ready; export KUBECONFIG=$kubeconfig; kubectl is $bin/kubectl" >&2
echo "$kubeconfig"
