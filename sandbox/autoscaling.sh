#!/usr/bin/env bash
# Autoscaling for the sandbox, as host processes against its API server (built by tools/build.sh):
#   - Prometheus, finding Triton pods through the API server (Kubernetes service discovery,
#     role pod) and scraping the metrics port the pod runner recorded for each pod;
#   - KEDA's operator (reconciles ScaledObjects into HPAs, scales to and from zero);
#   - KEDA's metrics API server, registered through the aggregation layer as
#     external.metrics.k8s.io, so the controller-manager's HPA controller reads it. The
#     APIService points at an ExternalName Service (localhost), the route kwokctl takes for
#     its own metrics-server.
#   - optionally metrics-server (component metrics-server, not started by default), registered as
#     metrics.k8s.io the same way, for the CPU HorizontalPodAutoscaler: it scrapes the kubelet
#     /metrics/resource the pod runner serves for each CPU-pool node (lms_harness.kubeletmetrics;
#     the pod runner points each node's InternalIP and kubelet port at it).
#
#   autoscaling.sh up DIR KUBECONFIG [prometheus] [keda] [metrics-server]
#                                 start (or reuse) them, prometheus and keda by default;
#                                 writes DIR/autoscaling.env (LMS_PROMETHEUS_ADDRESS=...), prints its path
#   autoscaling.sh down DIR KUBECONFIG [prometheus] [keda]  stop them; for keda also remove the
#                                 APIService and KEDA's CRDs (what uninstalling KEDA does)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
. "$here/lib.sh"
python="${LMS_PYTHON:-$root/.venv/bin/python}"

usage() { echo "usage: autoscaling.sh up|down DIR KUBECONFIG [prometheus] [keda] [metrics-server]" >&2; exit 2; }
[[ $# -ge 3 ]] || usage
cmd=$1 dir=$2 kubeconfig=$3
shift 3
components=("$@")
(( ${#components[@]} )) || components=(prometheus keda)
mkdir -p "$dir/autoscaling"
dir="$(cd "$dir/autoscaling" && pwd)"
kubeconfig="$(cd "$(dirname "$kubeconfig")" && pwd)/$(basename "$kubeconfig")"
bin="${LMS_TOOLS_BIN:-$("$root/tools/build.sh" | tail -n 1)}"
kubectl=("$bin/kubectl" --kubeconfig "$kubeconfig")
APISERVICE=v1beta1.external.metrics.k8s.io
MS_APISERVICE=v1beta1.metrics.k8s.io

free_port() { "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wait_http URL SECONDS NAME LOG
wait_http() {
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    if (( SECONDS >= deadline )); then
      echo "autoscaling: $3 did not answer $1 within $2 s; its log:" >&2
      tail -n 20 "$4" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
}

# One CA and one key pair for KEDA: the operator's gRPC metrics service and the metrics API
# server's client both use mutual TLS from the same folder (ca.crt, tls.crt, tls.key), and the
# APIService trusts the CA.
certs() {
  local c="$dir/certs"
  [[ -f "$c/tls.crt" ]] && return 0
  mkdir -p "$c"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=lms-sandbox-keda-ca" \
    -keyout "$c/ca.key" -out "$c/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=keda" -keyout "$c/tls.key" -out "$c/tls.csr" 2>/dev/null
  printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:keda-operator.keda.svc,DNS:keda-metrics-apiserver.keda.svc" \
    "extendedKeyUsage=serverAuth,clientAuth" > "$c/ext.cnf"
  openssl x509 -req -in "$c/tls.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" -CAcreateserial -days 3650 \
    -extfile "$c/ext.cnf" -out "$c/tls.crt" 2>/dev/null
  chmod 0600 "$c"/*.key
}

prometheus_up() {
  local log="$dir/prometheus.log" port
  if [[ -f "$dir/prometheus.pid" ]] && kill -0 "$(cat "$dir/prometheus.pid")" 2>/dev/null; then
    return 0
  fi
  port="$(free_port)"
  cat > "$dir/prometheus.yml" <<YAML
# Triton's metrics from every pod that asks to be scraped (prometheus.io/scrape), found through
# the API server. In a cluster the address is the pod IP and prometheus.io/port; here the pod
# runner records each pod's local metrics address as annotation sandbox.lms.dev/metrics.
global:
  scrape_interval: 5s
  evaluation_interval: 5s
scrape_configs:
- job_name: triton
  kubernetes_sd_configs:
  - role: pod
    kubeconfig_file: $kubeconfig
  relabel_configs:
  - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
    regex: "true"
    action: keep
  - source_labels: [__meta_kubernetes_pod_container_port_name]
    regex: metrics
    action: keep
  - source_labels: [__meta_kubernetes_pod_annotation_sandbox_lms_dev_metrics]
    regex: (.+)
    target_label: __address__
  - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
    regex: (.+)
    target_label: __metrics_path__
  - source_labels: [__meta_kubernetes_namespace]
    target_label: namespace
  - source_labels: [__meta_kubernetes_pod_name]
    target_label: pod
YAML
  start_bg prometheus "$dir/prometheus.pid" "$log" \
    "$bin/prometheus" --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/prometheus-data" \
    --storage.tsdb.retention.time=6h --web.listen-address="127.0.0.1:$port"
  echo "LMS_PROMETHEUS_ADDRESS=http://127.0.0.1:$port" > "$dir/prometheus.env"
  wait_http "http://127.0.0.1:$port/-/ready" 60 prometheus "$log"
}

# Serve API group GROUP (v1beta1) from a host process on PORT through the aggregation layer: an
# ExternalName Service pointing at localhost and an APIService trusting the sandbox CA.
register_apiservice() {
  local name="$1" group="$2" service="$3" namespace="$4" port="$5" log="$6"
  "${kubectl[@]}" apply --server-side --force-conflicts -f - >&2 <<YAML
apiVersion: v1
kind: Service
metadata:
  name: $service
  namespace: $namespace
spec:
  type: ExternalName
  externalName: localhost
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: $name
spec:
  group: $group
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  caBundle: $(base64 -w0 < "$dir/certs/ca.crt")
  service:
    name: $service
    namespace: $namespace
    port: $port
YAML
  if ! "${kubectl[@]}" wait --for=condition=Available "apiservice/$name" --timeout=120s >&2; then
    echo "autoscaling: $name is not Available; log $log:" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
}

keda_up() {
  certs
  "${kubectl[@]}" create namespace keda --dry-run=client -o yaml | "${kubectl[@]}" apply --server-side -f - >&2
  "${kubectl[@]}" apply --server-side --force-conflicts -f "$bin/keda-crds/" >&2
  local deadline=$((SECONDS + 60))
  until [[ "$("${kubectl[@]}" get crd scaledobjects.keda.sh -o jsonpath='{.status.conditions[?(@.type=="Established")].status}' 2>/dev/null)" == True ]]; do
    (( SECONDS < deadline )) || { echo "autoscaling: KEDA's CRDs not established" >&2; exit 1; }
    sleep 0.5
  done

  local grpc_port probe_port api_port
  if ! [[ -f "$dir/keda-operator.pid" ]] || ! kill -0 "$(cat "$dir/keda-operator.pid")" 2>/dev/null; then
    grpc_port="$(free_port)" probe_port="$(free_port)"
    echo "$grpc_port" > "$dir/keda-grpc.port"
    ( export KUBECONFIG="$kubeconfig" KEDA_CLUSTER_OBJECT_NAMESPACE=keda POD_NAMESPACE=keda WATCH_NAMESPACE=""
      start_bg keda-operator "$dir/keda-operator.pid" "$dir/keda-operator.log" \
        "$bin/keda-operator" --leader-elect=false --metrics-bind-address=0 \
        --health-probe-bind-address="127.0.0.1:$probe_port" --metrics-service-bind-address="127.0.0.1:$grpc_port" \
        --cert-dir="$dir/certs" --enable-cert-rotation=false --enable-webhook-patching=false \
        --enable-apiservice-patching=false --ca-dir="$dir/certs" --zap-log-level=info )
    wait_http "http://127.0.0.1:$probe_port/readyz" 90 keda-operator "$dir/keda-operator.log"
  fi
  grpc_port="$(cat "$dir/keda-grpc.port")"

  if ! [[ -f "$dir/keda-adapter.pid" ]] || ! kill -0 "$(cat "$dir/keda-adapter.pid")" 2>/dev/null; then
    api_port="$(free_port)"
    echo "$api_port" > "$dir/keda-adapter.port"
    ( export KUBECONFIG="$kubeconfig" KEDA_CLUSTER_OBJECT_NAMESPACE=keda POD_NAMESPACE=keda WATCH_NAMESPACE=""
      start_bg keda-adapter "$dir/keda-adapter.pid" "$dir/keda-adapter.log" \
        "$bin/keda-adapter" --secure-port="$api_port" --bind-address=127.0.0.1 --cert-dir="$dir/certs" \
        --tls-cert-file="$dir/certs/tls.crt" --tls-private-key-file="$dir/certs/tls.key" \
        --authentication-kubeconfig="$kubeconfig" --authorization-kubeconfig="$kubeconfig" \
        --lister-kubeconfig="$kubeconfig" --metrics-service-address="localhost:$grpc_port" \
        --port=0 --zap-log-level=info )
  fi
  api_port="$(cat "$dir/keda-adapter.port")"

  register_apiservice "$APISERVICE" external.metrics.k8s.io keda-metrics-apiserver keda "$api_port" \
    "$dir/keda-adapter.log"
}

# metrics-server's serving certificate, from the same CA, named for its Service (the aggregator
# checks the name <service>.<namespace>.svc).
ms_certs() {
  certs
  local c="$dir/certs"
  [[ -f "$c/metrics-server.crt" ]] && return 0
  openssl req -newkey rsa:2048 -nodes -subj "/CN=metrics-server" -keyout "$c/metrics-server.key" \
    -out "$c/metrics-server.csr" 2>/dev/null
  printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:metrics-server.kube-system.svc" \
    "extendedKeyUsage=serverAuth" > "$c/metrics-server.cnf"
  openssl x509 -req -in "$c/metrics-server.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" -CAcreateserial -days 3650 \
    -extfile "$c/metrics-server.cnf" -out "$c/metrics-server.crt" 2>/dev/null
  chmod 0600 "$c/metrics-server.key"
}

# metrics-server scrapes only the CPU-pool nodes (the pod runner's; kwok's other nodes serve no
# resource metrics), at each node's InternalIP and status port, with a self-signed kubelet cert.
metrics_server_up() {
  ms_certs
  local port
  if ! [[ -f "$dir/metrics-server.pid" ]] || ! kill -0 "$(cat "$dir/metrics-server.pid")" 2>/dev/null; then
    port="$(free_port)"
    echo "$port" > "$dir/metrics-server.port"
    start_bg metrics-server "$dir/metrics-server.pid" "$dir/metrics-server.log" \
      "$bin/metrics-server" --secure-port="$port" --bind-address=127.0.0.1 --cert-dir="$dir/certs" \
      --tls-cert-file="$dir/certs/metrics-server.crt" --tls-private-key-file="$dir/certs/metrics-server.key" \
      --kubeconfig="$kubeconfig" --authentication-kubeconfig="$kubeconfig" --authorization-kubeconfig="$kubeconfig" \
      --kubelet-insecure-tls --kubelet-preferred-address-types=InternalIP --kubelet-use-node-status-port \
      --kubelet-port=10250 --node-selector=lms.dev/pool=cpu --metric-resolution=10s --kubelet-request-timeout=5s
  fi
  port="$(cat "$dir/metrics-server.port")"
  register_apiservice "$MS_APISERVICE" metrics.k8s.io metrics-server kube-system "$port" "$dir/metrics-server.log"
}

metrics_server_down() {
  "${kubectl[@]}" delete apiservice "$MS_APISERVICE" --ignore-not-found >&2 || true
  stop_bg "$dir/metrics-server.pid"
}

keda_down() {
  "${kubectl[@]}" delete apiservice "$APISERVICE" --ignore-not-found >&2 || true
  "${kubectl[@]}" delete -f "$bin/keda-crds/" --ignore-not-found --wait=true --timeout=60s >&2 || true
  stop_bg "$dir/keda-adapter.pid"
  stop_bg "$dir/keda-operator.pid"
}

case "$cmd" in
  up)
    for c in "${components[@]}"; do
      case "$c" in prometheus) prometheus_up ;; keda) keda_up ;; metrics-server) metrics_server_up ;; *) usage ;; esac
    done
    cat "$dir"/prometheus.env > "$dir/autoscaling.env" 2>/dev/null || : > "$dir/autoscaling.env"
    echo "$dir/autoscaling.env"
    ;;
  down)
    for c in "${components[@]}"; do
      case "$c" in
        prometheus) stop_bg "$dir/prometheus.pid" ;; keda) keda_down ;; metrics-server) metrics_server_down ;;
        *) usage ;;
      esac
    done
    ;;
  *) usage ;;
esac
