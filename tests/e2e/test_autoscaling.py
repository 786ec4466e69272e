"""Autoscaling on Triton's own metrics, end to end: a real Prometheus scraping the Triton pods the
pod runner runs, real KEDA (operator + metrics API server behind the aggregation layer) and the
real controller-manager's HPA controller, under load from `lms bench`'s generator through the
sandbox's Service proxy.

- examples/minilm-autoscale.yaml (queue time per request, min 1, max 3) scales to 2+ ready
  replicas under load, the new replica answers requests, it returns to 1 when the load stops and
  to 0 with minReplicas 0, and no request fails on the way;
- KEDA leaving and arriving while the operator runs switches the autoscaler kind each way, and
  the old object is deleted.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lms_harness.autoscaling import AutoscalingError, prometheus_query, start_autoscaling, stop_autoscaling
from lms_harness.cluster import tools_bin
from lms_harness.processes import WaitTimeout, wait_until
from lms_harness.timeline import BackgroundLoad, Sample, Timeline

from .conftest import Cluster, K8s, Kubectl, to_json, wait_for
from .operator_fixtures import Operator, condition, operator, operator_crds, wait_phase  # noqa: F401
from .test_operator_digits import digits, digits_teacher  # noqa: F401

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "minilm-autoscale.yaml"


@pytest.fixture(scope="module")
def autoscaling(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    """Prometheus and KEDA for the session's cluster: (folder, tools bin, Prometheus URL)."""
    if not cluster.local:
        pytest.fail("the autoscaling e2e tests start Prometheus and KEDA next to a local kwok cluster", pytrace=False)
    folder = tmp_path_factory.mktemp("autoscaling")
    bin_dir = tools_bin()
    try:
        url = start_autoscaling(folder, cluster.kubeconfig, bin_dir)
    except AutoscalingError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield folder, bin_dir, url
    finally:
        stop_autoscaling(folder, cluster.kubeconfig, bin_dir)


@pytest.fixture
def operator_env(autoscaling: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator (started after this fixture) points KEDA at the session's Prometheus and
    looks for KEDA arriving or leaving every 3 s."""
    monkeypatch.setenv("LMS_PROMETHEUS_ADDRESS", autoscaling[2])
    monkeypatch.setenv("LMS_KEDA_CHECK_SECONDS", "3")


def deployment_replicas(k8s: K8s, namespace: str, name: str) -> tuple[int, int]:
    dep = k8s.apps.read_namespaced_deployment(f"{name}-triton", namespace)
    return int(dep.spec.replicas or 0), int(dep.status.ready_replicas or 0)


def service_grpc(k8s: K8s, namespace: str, name: str) -> str:
    """Where the sandbox's Service proxy listens for the Service's grpc port."""
    return str(wait_for(lambda: (k8s.core.read_namespaced_service(f"{name}-triton", namespace).metadata.annotations
                                 or {}).get("sandbox.lms.dev/grpc"), 60, "the Service proxy's grpc address"))


def patch_autoscaling(kubectl: Kubectl, namespace: str, name: str, **fields: Any) -> None:
    kubectl("patch", "lms", name, "-n", namespace, "--type=merge", "-p", to_json({"spec": {"autoscaling": fields}}))


def served_by_pod(prometheus: str, namespace: str, name: str) -> dict[str, float]:
    """Successful inferences per pod, as Prometheus scraped them from each Triton."""
    rows = prometheus_query(prometheus, f'sum by (pod) (nv_inference_request_success{{namespace="{namespace}",'
                                        f'model="{name}"}})')
    return {str(r["metric"]["pod"]): float(r["value"][1]) for r in rows}  # type: ignore[index]


def under_load(load: BackgroundLoad, timeline: Timeline, timeout: float, what: str,
               seen: Callable[[Sample], bool]) -> None:
    """Wait until a timeline sample shows one signal while the load runs; on timeout, fail
    naming the signal, with the last samples."""
    def arrived() -> bool:
        if not load.alive():
            pytest.fail(f"the load generator ended while waiting for {what}: {load.stop()}", pytrace=False)
        return timeline.first(seen) is not None

    try:
        wait_until(arrived, timeout, what, interval=1.0)
    except WaitTimeout as exc:
        pytest.fail(f"{exc}\n{timeline.describe()}", pytrace=False)


def test_queue_time_scales_out_under_load_back_in_and_to_zero_without_a_failed_request(
        cluster: Cluster, k8s: K8s, kubectl: Kubectl, namespace: str, autoscaling: tuple[Path, str, str],
        operator_env: None, operator: Operator) -> None:
    from kubernetes import client

    prometheus = autoscaling[2]
    name = yaml.safe_load(EXAMPLE.read_text())["metadata"]["name"]
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    status = wait_phase(k8s, namespace, name, {"Ready"}, 900, operator)
    assert condition(status, "Autoscaling")["status"] == "True", status
    scaled = k8s.custom.get_namespaced_custom_object("keda.sh", "v1alpha1", namespace, "scaledobjects", f"{name}-triton")
    assert scaled["spec"]["minReplicaCount"] == 1 and scaled["spec"]["maxReplicaCount"] == 3
    hpa_name = f"keda-hpa-{name}-triton"
    hpas = client.AutoscalingV2Api(k8s.client)
    # The controller-manager reads the queue time through external.metrics.k8s.io (KEDA's server).
    wait_for(lambda: any(m.external and m.external.current for m in
                         hpas.read_namespaced_horizontal_pod_autoscaler(hpa_name, namespace).status.current_metrics or []),
             120, "the HPA reading KEDA's external metric")
    assert not k8s.custom.list_namespaced_custom_object("keda.sh", "v1alpha1", namespace, "scaledobjects")["items"][1:]

    trigger = scaled["spec"]["triggers"][0]["metadata"]
    target = float(trigger["threshold"])
    timeline = Timeline(k8s.apps, hpas, namespace, f"{name}-triton", hpa_name, prometheus, trigger["query"])
    with timeline:
        # 128 tokens a request: Triton's work per request is then large beside the load generator's
        # and the Service proxy's, so requests queue past the target on a busy machine too (at 32
        # tokens, beside two CPU burners, the client and proxy slowed as much as Triton and the
        # queue time stayed at 13-18 ms: no scale-out).
        load = BackgroundLoad(service_grpc(k8s, namespace, name), name, concurrency=16, sequence_length=128).start()
        try:
            # The chain from load to a second replica, one signal at a time (seen in any sample so
            # far), so that a run that does not scale out says which link did not happen.
            under_load(load, timeline, 180, f"Prometheus's queue time per request above the {target:.0f} us target",
                       lambda s: (s.queue_us or 0) > target)
            under_load(load, timeline, 120, "the HPA reading the queue time above the target (through KEDA)",
                       lambda s: (s.hpa_metric or 0) > target)
            under_load(load, timeline, 120, "the HPA asking for a second replica",
                       lambda s: (s.desired or 0) >= 2 and s.replicas >= 2)
            under_load(load, timeline, 300, "a second ready replica (the pod runner starting Triton)",
                       lambda s: s.ready >= 2)
            # every ready replica answers: each Triton's own counters, scraped by Prometheus
            wait_for(lambda: sum(1 for v in served_by_pod(prometheus, namespace, name).values() if v > 0) >= 2, 60,
                     "requests answered by a second replica", interval=2.0)
        finally:
            run = load.stop()
        stopped = timeline.now()
        wait_for(lambda: deployment_replicas(k8s, namespace, name) == (1, 1), 300,
                 "back to one replica after the load", interval=2.0)
        back_in = timeline.now() - stopped

        patch_autoscaling(kubectl, namespace, name, minReplicas=0)
        wait_for(lambda: deployment_replicas(k8s, namespace, name)[0] == 0, 300, "scaled to zero", interval=2.0)
    assert run.level.errors == 0, dict(run.errors)
    assert run.level.requests > 100, run.level
    assert max(s.ready for s in timeline.samples) >= 2
    assert back_in < 300
    status = wait_for(lambda: (lambda st: st if condition(st, "Ready").get("reason") == "ScaledToZero" else None)(
        wait_phase(k8s, namespace, name, {"Ready"}, 60, operator)), 90, "Ready with reason ScaledToZero")
    assert condition(status, "Ready")["status"] == "True"

    # what brings it back: minReplicas 1 again, and the first request is answered
    patch_autoscaling(kubectl, namespace, name, minReplicas=1)
    wait_for(lambda: deployment_replicas(k8s, namespace, name)[1] == 1, 180, "back from zero", interval=1.0)
    again = BackgroundLoad(service_grpc(k8s, namespace, name), name, concurrency=1, sequence_length=32).start()
    wait_for(lambda: served_by_pod(prometheus, namespace, name) or None, 30, "an answer after zero")
    assert again.stop().level.errors == 0


def test_keda_leaving_and_arriving_switches_the_autoscaler_and_deletes_the_old_one(
        cluster: Cluster, k8s: K8s, kubectl: Kubectl, namespace: str, autoscaling: tuple[Path, str, str],
        operator_env: None, operator: Operator, digits_teacher: Path) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    folder, bin_dir, _ = autoscaling
    name = "digits"
    doc = digits(name, digits_teacher)
    doc["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 2, "metric": "queueLatency", "target": 50000}
    kubectl("apply", "-n", namespace, "-f", "-", input=to_json(doc))
    wait_phase(k8s, namespace, name, {"Ready"}, 600, operator)
    hpas = client.AutoscalingV2Api(k8s.client)
    server = f"{name}-triton"

    def scaled_object() -> dict[str, Any] | None:
        try:
            return dict(k8s.custom.get_namespaced_custom_object("keda.sh", "v1alpha1", namespace, "scaledobjects", server))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def our_hpa() -> Any:
        try:
            return hpas.read_namespaced_horizontal_pod_autoscaler(server, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    assert scaled_object() is not None and our_hpa() is None

    stop_autoscaling(folder, cluster.kubeconfig, bin_dir, ("keda",))   # KEDA uninstalled: CRDs and APIService go
    try:
        hpa = wait_for(our_hpa, 120, "the operator's CPU HPA once KEDA left")
        assert hpa.spec.metrics[0].resource.name == "cpu"
        status = wait_for(lambda: (lambda st: st if condition(st, "Autoscaling").get("reason") == "KEDANotInstalled"
                                   else None)(wait_phase(k8s, namespace, name, {"Ready"}, 60, operator)),
                          60, "the Autoscaling condition saying KEDA is missing")
        assert condition(status, "Autoscaling")["status"] == "False"
    finally:
        start_autoscaling(folder, cluster.kubeconfig, bin_dir, ("keda",))  # KEDA installed again
    wait_for(scaled_object, 120, "the ScaledObject once KEDA is back")
    wait_for(lambda: our_hpa() is None, 60, "the CPU HPA deleted once KEDA is back")
    wait_for(lambda: hpas.read_namespaced_horizontal_pod_autoscaler(f"keda-hpa-{server}", namespace), 60,
             "KEDA's own HPA for the ScaledObject")
    time.sleep(5)  # a pass later nothing flips back
    assert our_hpa() is None and scaled_object() is not None
