#!/usr/bin/env bash
# `make sandbox-down`: stop the operator, the pod runner (whole process groups, so no Triton
# or compression process is left), the S3 server and Prometheus and KEDA when they run, delete the cluster, remove .sandbox/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
. "$here/lib.sh"

dir="$root/.sandbox"
name="${LMS_SANDBOX_NAME:-$(cat "$dir/cluster-name" 2>/dev/null || echo lms-sandbox)}"
stop_bg "$dir/operator.pid"
stop_bg "$dir/podrunner.pid"
for pidfile in "$dir"/autoscaling/*.pid; do  # Prometheus and KEDA (AUTOSCALING=1); the cluster goes below
  [[ -e $pidfile ]] && stop_bg "$pidfile"
done
"$here/s3.sh" down "$dir"
"$here/cluster.sh" down "$name"
rm -rf "$dir"
echo "sandbox: down" >&2
