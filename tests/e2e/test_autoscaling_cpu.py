"""The CPU HorizontalPodAutoscaler on real CPU usage, end to end: the pod runner serves each
CPU-pool node's kubelet /metrics/resource (CPU seconds of each container's process group from
/proc), the real metrics-server scrapes it and serves metrics.k8s.io through the aggregation layer,
and the real controller-manager's HPA controller scales the digits model's Triton Deployment on
it under load from `lms bench`'s generator through the sandbox's Service proxy.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lms_harness.autoscaling import AutoscalingError, start_autoscaling, stop_autoscaling
from lms_harness.cluster import tools_bin
from lms_harness.timeline import BackgroundLoad

from .conftest import Cluster, K8s, Kubectl, to_json, wait_for
from .operator_fixtures import Operator, condition, operator, operator_crds, wait_phase  # noqa: F401
from .test_autoscaling import deployment_replicas, service_grpc
from .test_operator_digits import digits, digits_teacher  # noqa: F401

pytestmark = pytest.mark.e2e

METRICS_SERVER = ("metrics-server",)


@pytest.fixture(scope="module")
def metrics_server(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """metrics-server for the session's cluster, registered as v1beta1.metrics.k8s.io."""
    if not cluster.local:
        pytest.fail("the CPU autoscaling e2e test scrapes the pod runner's kubelet endpoint (local kwok cluster)",
                    pytrace=False)
    folder = tmp_path_factory.mktemp("metrics-server")
    bin_dir = tools_bin()
    try:
        start_autoscaling(folder, cluster.kubeconfig, bin_dir, METRICS_SERVER)
    except AutoscalingError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield
    finally:
        stop_autoscaling(folder, cluster.kubeconfig, bin_dir, METRICS_SERVER)


def pod_cpu_cores(k8s: K8s, namespace: str, pod: str) -> float | None:
    """A pod's CPU usage in cores as `kubectl top pod` reads it (metrics.k8s.io PodMetrics)."""
    from kubernetes.client.rest import ApiException
    from kubernetes.utils import parse_quantity

    try:
        pm = k8s.custom.get_namespaced_custom_object("metrics.k8s.io", "v1beta1", namespace, "pods", pod)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return float(sum(parse_quantity(c["usage"]["cpu"]) for c in pm.get("containers") or []))


def server_pods(k8s: K8s, namespace: str, name: str) -> list[str]:
    sel = f"app.kubernetes.io/instance={name},app.kubernetes.io/component=server"
    return sorted(p.metadata.name for p in k8s.core.list_namespaced_pod(namespace, label_selector=sel).items
                  if not p.metadata.deletion_timestamp)


def test_cpu_hpa_scales_out_on_real_cpu_usage_and_back_in(
        cluster: Cluster, k8s: K8s, kubectl: Kubectl, namespace: str, metrics_server: None,
        operator: Operator, digits_teacher: Path) -> None:  # noqa: F811
    from kubernetes import client

    name = "digits"
    doc = digits(name, digits_teacher)
    doc["spec"]["autoscaling"] = {"metric": "cpu", "target": 30, "minReplicas": 1, "maxReplicas": 2,
                                  "scaleDownStabilizationSeconds": 30}
    kubectl("apply", "-n", namespace, "-f", "-", input=to_json(doc))
    status = wait_phase(k8s, namespace, name, {"Ready"}, 600, operator)
    assert condition(status, "Autoscaling")["status"] == "True", status
    hpas = client.AutoscalingV2Api(k8s.client)
    server = f"{name}-triton"
    hpa = hpas.read_namespaced_horizontal_pod_autoscaler(server, namespace)
    assert hpa.spec.metrics[0].resource.name == "cpu"
    assert hpa.spec.metrics[0].resource.target.average_utilization == 30
    (first,) = server_pods(k8s, namespace, name)

    # idle: metrics-server already reports the Triton pod (its process group's CPU since start)
    idle = wait_for(lambda: (lambda c: None if c is None else (c,))(pod_cpu_cores(k8s, namespace, first)), 90,
                    "PodMetrics for the Triton pod", interval=2.0)[0]

    def utilization() -> Any:
        current = hpas.read_namespaced_horizontal_pod_autoscaler(server, namespace).status.current_metrics or []
        return next((m.resource.current.average_utilization for m in current
                     if m.resource and m.resource.current.average_utilization is not None), None)

    wait_for(lambda: utilization() is not None, 90, "the HPA reading CPU utilisation from metrics.k8s.io",
             interval=2.0)

    load = BackgroundLoad(service_grpc(k8s, namespace, name), name, concurrency=16).start()
    peak_util = 0
    try:
        busy = wait_for(lambda: (lambda c: c if c is not None and c > 0.3 else None)(pod_cpu_cores(k8s, namespace, first)),
                        90, "the Triton pod's CPU above 0.3 cores under load", interval=2.0)

        def scaled() -> bool:
            nonlocal peak_util
            peak_util = max(peak_util, utilization() or 0)
            return deployment_replicas(k8s, namespace, name)[1] >= 2 or not load.alive()

        wait_for(scaled, 240, "a second ready replica on CPU utilisation", interval=2.0)
        assert load.alive(), load.stop()
        scaled_at = time.time() - load.started
        # the new replica is measured too
        second = next(p for p in server_pods(k8s, namespace, name) if p != first)
        wait_for(lambda: pod_cpu_cores(k8s, namespace, second) is not None, 90, "PodMetrics for the second replica",
                 interval=2.0)
    finally:
        run = load.stop()
    stopped = time.time()
    wait_for(lambda: deployment_replicas(k8s, namespace, name) == (1, 1), 300, "back to one replica once idle",
             interval=2.0)
    back_in = time.time() - stopped
    print(f"\nCPU HPA: idle {idle:.3f} cores, under load {busy:.3f} cores, peak utilisation {peak_util}% "
          f"(target 30%), 2 ready replicas {scaled_at:.1f} s after the load started, back to 1 {back_in:.1f} s "
          f"after it stopped; {run.level.requests} requests, {run.level.errors} failed")
    assert run.level.errors == 0, dict(run.errors)
    assert run.level.requests > 100, run.level
    assert peak_util > 30
