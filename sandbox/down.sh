#!/usr/bin/env bash
# `make sandbox-down`: stop the operator, the pod runner (whole process groups, so no Triton
# or compression process is left) and the S3 server, delete the cluster, remove .sandbox/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
. "$here/lib.sh"

dir="$root/.sandbox"
name="${LMS_SANDBOX_NAME:-$(cat "$dir/cluster-name" 2>/dev/null || echo lms-sandbox)}"
stop_bg "$dir/operator.pid"
stop_bg "$dir/podrunner.pid"
"$here/s3.sh" down "$dir"
"$here/cluster.sh" down "$name"
rm -rf "$dir"
echo "sandbox: down" >&2
