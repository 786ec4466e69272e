#!/usr/bin/env bash
# Builds (or reuses) the pinned control-plane binaries and the S3 server the sandbox
# and the e2e tests need, from the wrapper Go modules next to this script. Binaries land in
# $LMS_TOOLS_DIR/<component>-<version>/ (outside the repository, so a clean
# clone reuses them) and are linked into $LMS_TOOLS_DIR/current/. The last
# line printed is that folder.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tools/env.sh
. "$here/env.sh"

KUBE_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
VERSITYGW_VERSION=v1.8.0
KEDA_VERSION=v2.21.0
PROMETHEUS_VERSION=v0.316.0  # the Go module version of Prometheus release 3.16.0
PROMETHEUS_RELEASE=3.16.0
METRICS_SERVER_VERSION=v0.8.0
# Fixed so that rebuilding the same version links the same binary.
BUILD_DATE=2026-01-01T00:00:00Z

TOOLS_DIR="${LMS_TOOLS_DIR:-$HOME/.cache/lms/bin}"
CURRENT="$TOOLS_DIR/current"
mkdir -p "$TOOLS_DIR" "$CURRENT" "$GOMODCACHE" "$GOCACHE"
# One build at a time per tools folder (concurrent `make tools` wait instead of racing).
if command -v flock >/dev/null; then
  exec 9>"$TOOLS_DIR/.lock"
  flock 9
fi

log() { echo "tools: $*" >&2; }

# [BUILD_TAGS=a,b] build COMPONENT VERSION MODULE_DIR LDFLAGS PKG[=NAME]...
# Builds every PKG (binary NAME, default its last path element) into
# TOOLS_DIR/COMPONENT-VERSION unless all binaries are already there.
build() {
  local component=$1 version=$2 moddir=$3 ldflags=$4
  shift 4
  local dest="$TOOLS_DIR/$component-$version" missing=0 spec pkgs=()
  for spec in "$@"; do
    pkgs+=("${spec%%=*}")
    [[ -x "$dest/$(bin_name "$spec")" ]] || missing=1
  done
  if (( missing )); then
    log "building $component $version (cold builds take tens of minutes on 2 cores)"
    local start=$SECONDS partial="$dest/.partial"
    rm -rf "$partial"
    mkdir -p "$partial"
    (cd "$here/$moddir" && go build -trimpath -p 2 ${BUILD_TAGS:+-tags "$BUILD_TAGS"} -ldflags "$ldflags" -o "$partial/" "${pkgs[@]}")
    for spec in "$@"; do
      mv -f "$partial/$(go_out_name "${spec%%=*}")" "$dest/$(bin_name "$spec")"
    done
    rmdir "$partial"
    log "built $component $version in $((SECONDS - start))s"
  fi
  for spec in "$@"; do
    ln -sfn "$dest/$(bin_name "$spec")" "$CURRENT/$(bin_name "$spec")"
  done
}

# The file name `go build` gives a main package: its last path element, skipping a
# major-version suffix (go.etcd.io/etcd/server/v3 -> server).
go_out_name() {
  local base
  base="$(basename "$1")"
  if [[ $base =~ ^v[0-9]+$ ]]; then basename "$(dirname "$1")"; else echo "$base"; fi
}

bin_name() {
  if [[ $1 == *=* ]]; then echo "${1#*=}"; else basename "$1"; fi
}

kube_ldflags="-s -w"
minor="${KUBE_VERSION#v1.}"
minor="${minor%%.*}"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
  kube_ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$BUILD_DATE"
done

build kubernetes "$KUBE_VERSION" kubernetes "$kube_ldflags" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl

build etcd "$ETCD_VERSION" etcd "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=release-$ETCD_VERSION" \
  go.etcd.io/etcd/server/v3=etcd

build kwok "$KWOK_VERSION" kwok "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${KUBE_VERSION#v}" \
  sigs.k8s.io/kwok/cmd/kwok \
  sigs.k8s.io/kwok/cmd/kwokctl

build helm "$HELM_VERSION" helm "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
  helm.sh/helm/v3/cmd/helm

# The sandbox's S3-compatible object store (posix backend), a host process like the control plane.
build versitygw "$VERSITYGW_VERSION" versitygw "-s -w -X main.Version=$VERSITYGW_VERSION -X main.Build=release -X main.BuildTime=$BUILD_DATE" \
  github.com/versity/versitygw/cmd/versitygw

# Autoscaling in the sandbox (`make sandbox AUTOSCALING=1`, the autoscaling e2e tests): KEDA's
# operator and metrics API server, and Prometheus with only Kubernetes service discovery
# compiled in. KEDA's CRDs come from the same module version, next to the binaries.
build keda "$KEDA_VERSION" keda "-s -w -X github.com/kedacore/keda/v2/version.Version=$KEDA_VERSION -X github.com/kedacore/keda/v2/version.GitCommit=release" \
  github.com/kedacore/keda/v2/cmd/operator=keda-operator \
  github.com/kedacore/keda/v2/cmd/adapter=keda-adapter
keda_crds="$TOOLS_DIR/keda-$KEDA_VERSION/crds"
if [[ ! -f "$keda_crds/eventing.keda.sh_cloudeventsources.yaml" ]]; then
  keda_src="$(cd "$here/keda" && go list -m -f '{{.Dir}}' github.com/kedacore/keda/v2)"
  mkdir -p "$keda_crds"
  cp "$keda_src"/config/crd/bases/*.yaml "$keda_crds/"
  chmod 0644 "$keda_crds"/*.yaml
fi
ln -sfn "$keda_crds" "$CURRENT/keda-crds"

BUILD_TAGS=remove_all_sd,enable_kubernetes_sd \
build prometheus "$PROMETHEUS_VERSION" prometheus "-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_RELEASE -X github.com/prometheus/common/version.Branch=release -X github.com/prometheus/common/version.BuildDate=$BUILD_DATE" \
  github.com/prometheus/prometheus/cmd/prometheus

# Resource metrics (metrics.k8s.io) for the CPU HorizontalPodAutoscaler in the sandbox
# (`sandbox/autoscaling.sh up DIR KUBECONFIG metrics-server`), built against the same Kubernetes
# libraries as KEDA (tools/metrics-server/go.mod).
build metrics-server "$METRICS_SERVER_VERSION" metrics-server "-s -w -X k8s.io/client-go/pkg/version.gitVersion=$METRICS_SERVER_VERSION -X k8s.io/client-go/pkg/version.gitCommit=release -X k8s.io/client-go/pkg/version.buildDate=$BUILD_DATE" \
  sigs.k8s.io/metrics-server/cmd/metrics-server

echo "$CURRENT"
