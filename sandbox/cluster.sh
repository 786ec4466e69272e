#!/usr/bin/env bash
# Starts or stops a local control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kwok) from the binaries that
# `make tools` built, with the CPU and GPU node pools from sandbox/nodes.yaml.
#
#   sandbox/cluster.sh up NAME KUBECONFIG_OUT   create (or reuse) cluster NAME
#   sandbox/cluster.sh down NAME                delete cluster NAME
#
# Nothing is downloaded: every binary is given by absolute path.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

usage() { echo "usage: $0 up NAME KUBECONFIG_OUT | down NAME" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
action=$1 name=$2

bin="${LMS_TOOLS_BIN:-}"
if [[ -z "$bin" && $action == down && -x "${LMS_TOOLS_DIR:-$HOME/.cache/lms/bin}/current/kwokctl" ]]; then
  bin="${LMS_TOOLS_DIR:-$HOME/.cache/lms/bin}/current"  # stopping never needs a build
fi
if [[ -z "$bin" ]]; then
  bin="$("$root/tools/build.sh" | tail -n 1)"
fi
export PATH="$bin:$PATH"
export KWOK_WORKDIR="${KWOK_WORKDIR:-$HOME/.cache/lms/kwok}"
export KWOK_KUBECTL_BINARY="$bin/kubectl"

# exists NAME (the list is read whole first: `grep -q` closing the pipe early would fail it)
exists() {
  local clusters
  clusters="$(kwokctl get clusters 2>/dev/null || true)"
  grep -qx "$1" <<<"$clusters"
}

# create NAME: one kwokctl create with every binary given by path.
create() {
  kwokctl create cluster --name "$1" \
    --config "$here/kwok.yaml" \
    --runtime binary \
    --kube-apiserver-binary "$bin/kube-apiserver" \
    --kube-controller-manager-binary "$bin/kube-controller-manager" \
    --kube-scheduler-binary "$bin/kube-scheduler" \
    --kwok-controller-binary "$bin/kwok" \
    --etcd-binary "$bin/etcd" \
    --kube-authorization=true \
    --kube-admission=true \
    --kubeconfig "" \
    --wait 120s >&2
}

# nodes_up NAME KUBECONFIG TIMEOUT: kubeconfig written, fake nodes applied and Ready.
nodes_up() {
  kwokctl get kubeconfig --name "$1" > "$2.tmp" && mv "$2.tmp" "$2" &&
    kubectl --kubeconfig "$2" apply -f "$here/nodes.yaml" -f "$here/storageclass.yaml" >&2 &&
    kubectl --kubeconfig "$2" wait --for=condition=Ready node --all --timeout="$3" >&2 &&
    controllers_up "$2"
}

# The controller-manager and scheduler can fail to bind a port while the API server is fine;
# their leader-election leases show that they really run.
controllers_up() {
  local lease deadline=$((SECONDS + 30))
  for lease in kube-controller-manager kube-scheduler; do
    until [[ -n "$(kubectl --kubeconfig "$1" -n kube-system get lease "$lease" \
                   -o jsonpath='{.spec.holderIdentity}' 2>/dev/null)" ]]; do
      if (( SECONDS >= deadline )); then
        echo "cluster: $lease did not start (no leader lease)" >&2
        return 1
      fi
      sleep 1
    done
  done
}

case "$action" in
  up)
    [[ $# -eq 3 ]] || usage
    out=$3
    mkdir -p "$(dirname "$out")"
    if exists "$name"; then
      kwokctl get kubeconfig --name "$name" > "$out.tmp"
      if kubectl --kubeconfig "$out.tmp" get --raw /readyz >/dev/null 2>&1; then
        echo "cluster: $name already running" >&2
      else
        echo "cluster: $name exists but is stopped, starting it" >&2
        kwokctl start cluster --name "$name" >&2
      fi
      nodes_up "$name" "$out" 90s
    else
      # kwokctl picks free ports when it creates a cluster; another cluster starting at the
      # same moment can take one first (the component then fails to bind). Start afresh then.
      for attempt in 1 2 3; do
        echo "cluster: creating $name (attempt $attempt)" >&2
        if create "$name" && nodes_up "$name" "$out" 45s; then
          break
        fi
        echo "cluster: $name did not come up; kwok controller log:" >&2
        tail -n 5 "$KWOK_WORKDIR/clusters/$name/logs/kwok-controller.log" >&2 || true
        kwokctl delete cluster --name "$name" >&2 || true
        if (( attempt == 3 )); then
          echo "cluster: giving up on $name" >&2
          exit 1
        fi
      done
    fi
    echo "cluster: $name ready, kubeconfig $out" >&2
    ;;
  down)
    if exists "$name"; then
      kwokctl delete cluster --name "$name" >&2
    else
      echo "cluster: $name not found, nothing to delete" >&2
    fi
    ;;
  *) usage ;;
esac
