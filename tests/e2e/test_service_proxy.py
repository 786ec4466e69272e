"""A Service of the project reaches every ready replica, and replicas leave without a failed request.

The pod runner plays the node's kubelet and kube-proxy: Triton pods of a Deployment run as local
processes, the real controller-manager lists them in EndpointSlices (by the runner's fake pod
IPs), and the runner's service proxy listens for the Service (annotation sandbox.lms.dev/grpc)
and sends each new connection to the next ready pod. Under reconnecting load the Deployment
goes 1 -> 2 -> 1 replicas: the second pod gets requests, and the pod removed on the way down
sleeps in preStop (out of the rotation, still serving what it has) before SIGTERM, so no
request fails.
"""
from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from typing import Any

import pytest

from lms_operator.serving.loadgen import RequestRecord, run_load

from .conftest import Cluster, K8s, Kubectl, to_json, wait_for
from .test_cluster import PAUSE, identity_model_on_claim

pytestmark = pytest.mark.e2e

APP = {"app.kubernetes.io/part-of": "lms", "app.kubernetes.io/name": "e2e-proxy"}
PRESTOP_S = 5
RECONNECT_S = 2.0


def deployment(namespace: str, replicas: int) -> dict[str, Any]:
    triton = {
        "name": "triton", "image": PAUSE, "command": ["tritonserver"],
        "args": [f"--model-repository=/models/{namespace}/identity/k1", "--http-port=8000", "--grpc-port=8001",
                 "--metrics-port=8002", "--strict-readiness=true", "--exit-timeout-secs=10"],
        "ports": [{"name": "http", "containerPort": 8000}, {"name": "grpc", "containerPort": 8001},
                  {"name": "metrics", "containerPort": 8002}],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 1},
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_S}}},
        "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}],
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "proxied", "labels": APP},
        "spec": {"replicas": replicas, "selector": {"matchLabels": APP},
                 "template": {"metadata": {"labels": APP}, "spec": {
                     "nodeSelector": {"lms.dev/pool": "cpu"}, "terminationGracePeriodSeconds": 30,
                     "containers": [triton],
                     "volumes": [{"name": "models",
                                  "persistentVolumeClaim": {"claimName": "lms-models", "readOnly": True}}]}}},
    }


SERVICE = {
    "apiVersion": "v1", "kind": "Service", "metadata": {"name": "proxied", "labels": APP},
    "spec": {"selector": APP, "ports": [{"name": "http", "port": 8000, "targetPort": "http"},
                                        {"name": "grpc", "port": 8001, "targetPort": "grpc"},
                                        {"name": "metrics", "port": 8002, "targetPort": "metrics"}]},
}


def ready_pods(k8s: K8s, ns: str) -> list[Any]:
    pods = k8s.core.list_namespaced_pod(ns, label_selector="app.kubernetes.io/name=e2e-proxy").items
    return [p for p in pods if not p.metadata.deletion_timestamp
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]


def slice_ready_pods(k8s: K8s, ns: str) -> set[str]:
    """Pods the controller-manager lists as ready endpoints of the Service."""
    from kubernetes import client

    slices = client.DiscoveryV1Api(k8s.client).list_namespaced_endpoint_slice(
        ns, label_selector="kubernetes.io/service-name=proxied").items
    return {ep.target_ref.name for sl in slices for ep in sl.endpoints or []
            if ep.conditions and ep.conditions.ready and ep.target_ref}


def served(pod: Any) -> int:
    http = pod.metadata.annotations["sandbox.lms.dev/http"]
    with urllib.request.urlopen(f"http://{http}/v2/models/identity/stats", timeout=5) as resp:
        return int(json.loads(resp.read())["model_stats"][0]["inference_stats"]["success"]["count"])


def test_service_spreads_over_replicas_and_scale_down_fails_no_request(kubectl: Kubectl, k8s: K8s, namespace: str,
                                                                       cluster: Cluster) -> None:
    if not cluster.local:
        pytest.skip("the service proxy and its annotations exist in the local sandbox only")
    identity_model_on_claim(kubectl, cluster, namespace)
    kubectl("apply", "-n", namespace, "-f", "-", input=to_json(SERVICE))
    kubectl("apply", "-n", namespace, "-f", "-", input=to_json(deployment(namespace, 1)))

    first = wait_for(lambda: ready_pods(k8s, namespace), 180, "the first Triton pod to become Ready")[0]
    assert first.status.pod_ip.startswith("10.")
    wait_for(lambda: slice_ready_pods(k8s, namespace) == {first.metadata.name}, 60,
             "the controller-manager to list the ready pod in the Service's EndpointSlice")
    annotations = wait_for(lambda: k8s.core.read_namespaced_service("proxied", namespace).metadata.annotations, 30,
                           "the service proxy to annotate the Service")
    assert {"sandbox.lms.dev/http", "sandbox.lms.dev/grpc", "sandbox.lms.dev/metrics"} <= set(annotations)
    endpoint = annotations["sandbox.lms.dev/grpc"]
    with urllib.request.urlopen(f"http://{annotations['sandbox.lms.dev/http']}/v2/health/ready", timeout=5) as resp:
        assert resp.status == 200   # HTTP through the Service too

    records: list[RequestRecord] = []
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def load() -> None:
        try:
            outcome["run"] = run_load(endpoint, "identity", 8, connections=4, reconnect_s=RECONNECT_S, stop=stop,
                                      on_result=records.append, keep_records=False)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(records) > 100, 60, "load through the Service")
        kubectl("scale", "-n", namespace, "deployment/proxied", "--replicas=2")
        pods = wait_for(lambda: (lambda p: p if len(p) == 2 else None)(ready_pods(k8s, namespace)), 180,
                        "the second replica to become Ready")
        second = next(p for p in pods if p.metadata.name != first.metadata.name)
        ready_at = time.monotonic()
        wait_for(lambda: served(second) > 50, 30, "the second replica to answer requests through the Service")
        spread_s = time.monotonic() - ready_at

        kubectl("scale", "-n", namespace, "deployment/proxied", "--replicas=1")
        gone = wait_for(lambda: (lambda p: p if len(p) == 1 else None)(ready_pods(k8s, namespace)), 60,
                        "one replica left")
        removed = next(p for p in pods if p.metadata.name != gone[0].metadata.name)
        port = int(removed.metadata.annotations["sandbox.lms.dev/grpc"].rsplit(":", 1)[1])
        scaled_down = time.monotonic()

        def closed() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) != 0

        time.sleep(PRESTOP_S - 1.5)
        assert not closed(), "the removed replica stopped before its preStop sleep ended"
        wait_for(closed, 40, "the removed replica to stop after its preStop sleep")
        drained_s = time.monotonic() - scaled_down
        time.sleep(2)
        count = len(records)
        wait_for(lambda: len(records) > count + 50, 30, "load going on with one replica")
    finally:
        stop.set()
        thread.join(60)

    assert "error" not in outcome, outcome.get("error")
    failed = [r for r in records if not r.ok]
    print(f"\nrequests {len(records)}, failed {len(failed)}, second replica serving {spread_s:.1f}s after Ready, "
          f"removed replica stopped {drained_s:.1f}s after the scale-down")
    assert not failed, f"{len(failed)} of {len(records)} requests failed, first: {failed[0]}"
    assert outcome["run"].level.errors == 0

    # no ready endpoint: a new connection is closed at once, like a Service without endpoints
    kubectl("scale", "-n", namespace, "deployment/proxied", "--replicas=0")
    wait_for(lambda: not slice_ready_pods(k8s, namespace), 60, "the EndpointSlice to empty")
    host, port_text = endpoint.rsplit(":", 1)

    def refused() -> bool:
        with socket.create_connection((host, int(port_text)), timeout=5) as s:
            s.settimeout(5)
            return s.recv(1) == b""

    wait_for(refused, 30, "a connection to the Service without endpoints to be closed at once")
