"""The control plane the operator relies on, exercised for real.

CRD storage with a status subresource, GPU-pool scheduling by the real scheduler, pods of
the project run by the pod runner, garbage collection by ownerReferences, and PodSecurity
admission. These hold on the local kwok cluster and on a kind cluster alike.
"""
from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.rest import ApiException

from lms_harness.identity_model import write_identity_repository
from lms_harness.ports import free_port
from lms_harness.status import fake_pod_ip

from .conftest import Cluster, K8s, Kubectl, to_json, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "largemodelservices.yaml"
SAMPLE = ROOT / "examples" / "minilm-cpu.yaml"
PROJECT = {"app.kubernetes.io/part-of": "lms", "app.kubernetes.io/name": "e2e"}
IMAGE = "python:3.11-slim"   # what a real node runs; the pod runner uses its own python
PAUSE = "registry.k8s.io/pause:3.10"


def apply_crd(kubectl: Kubectl) -> None:
    assert CRD.is_file(), f"{CRD} is missing"
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kubectl("wait", "--for=condition=Established", "crd/largemodelservices.serving.lms.dev", "--timeout=60s")


def pod_phase(k8s: K8s, ns: str, name: str) -> str:
    return k8s.core.read_namespaced_pod(name, ns).status.phase or ""


def condition(obj: Any, kind: str) -> Any:
    for cond in obj.status.conditions or []:
        if cond.type == kind:
            return cond
    return None


def project_pod(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    """A pod of the project on the CPU pool (run for real by the pod runner or a kubelet)."""
    container: dict[str, Any] = {"name": "main", "image": IMAGE, "command": command}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": dict(PROJECT)},
        "spec": {"nodeSelector": {"lms.dev/pool": "cpu"}, "terminationGracePeriodSeconds": 5,
                 "containers": [container], **spec},
    }


# -- the custom resource ----------------------------------------------------------------------

def test_crd_stores_resource_with_status_subresource(kubectl: Kubectl, k8s: K8s, namespace: str) -> None:
    apply_crd(kubectl)
    kubectl("apply", "-n", namespace, "-f", str(SAMPLE))
    name = yaml.safe_load(SAMPLE.read_text())["metadata"]["name"]
    stored = json.loads(kubectl("get", "lms", name, "-n", namespace, "-o", "json").stdout)
    assert stored["kind"] == "LargeModelService"
    assert stored["spec"]["serving"]["device"] == "cpu"

    kubectl("patch", "lms", name, "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"phase": "Compressing", "message": "e2e", "observedGeneration": 1}}))
    status = k8s.custom.get_namespaced_custom_object_status("serving.lms.dev", "v1alpha1", namespace,
                                                            "largemodelservices", name)["status"]
    assert status["phase"] == "Compressing" and status["observedGeneration"] == 1

    # With a status subresource, status written through the main resource is ignored.
    kubectl("patch", "lms", name, "-n", namespace, "--type=merge", "-p", json.dumps({"status": {"phase": "Failed"}}))
    again = json.loads(kubectl("get", "lms", name, "-n", namespace, "-o", "json").stdout)
    assert again["status"]["phase"] == "Compressing"
    assert again["metadata"]["generation"] == stored["metadata"]["generation"]

    # The printer columns come from the CRD.
    table = kubectl("get", "lms", "-n", namespace).stdout
    assert "PHASE" in table and "Compressing" in table


# -- scheduling onto the node pools -------------------------------------------------------------

def gpu_deployment(name: str, tolerate: bool, labels: dict[str, str]) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {
        "containers": [{"name": "server", "image": PAUSE,
                        "resources": {"limits": {"nvidia.com/gpu": 1}, "requests": {"cpu": "1"}}}],
    }
    if tolerate:
        pod_spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"e2e": name}},
                 "template": {"metadata": {"labels": {"e2e": name, **labels}}, "spec": pod_spec}},
    }


def pods_of(k8s: K8s, ns: str, name: str) -> list[Any]:
    return k8s.core.list_namespaced_pod(ns, label_selector=f"e2e={name}").items


def test_gpu_pod_lands_on_gpu_pool_only_with_toleration(kubectl: Kubectl, k8s: K8s, namespace: str) -> None:
    # The project's label: on the GPU pool such pods are scheduled for real but only faked by kwok.
    kubectl("apply", "-n", namespace, "-f", "-", input=to_json(gpu_deployment("gpu", True, PROJECT)))
    kubectl("apply", "-n", namespace, "-f", "-", input=to_json(gpu_deployment("no-toleration", False, {})))

    pod = wait_for(lambda: next((p for p in pods_of(k8s, namespace, "gpu") if p.spec.node_name), None), 60,
                   "the tolerating GPU pod to be bound")
    node = k8s.core.read_node(pod.spec.node_name)
    assert node.metadata.labels["lms.dev/pool"] == "gpu"
    # Locally kwok plays the GPU node: the pod becomes Ready without any GPU on this machine.
    wait_for(lambda: k8s.apps.read_namespaced_deployment("gpu", namespace).status.ready_replicas == 1, 120,
             "the GPU deployment to report one ready replica")

    def unschedulable() -> Any:
        pods = pods_of(k8s, namespace, "no-toleration")
        if not pods:
            return None
        cond = condition(pods[0], "PodScheduled")
        return pods[0] if cond is not None and cond.status == "False" and cond.reason == "Unschedulable" else None

    stuck = wait_for(unschedulable, 60, "the pod without toleration to be marked Unschedulable")
    assert "nvidia.com/gpu" in (condition(stuck, "PodScheduled").message or "")
    # The scheduler retries; the pod must still not be bound a little later.
    wait_for(lambda: k8s.apps.read_namespaced_deployment("no-toleration", namespace).status.observed_generation, 30,
             "the deployment controller to observe the deployment")
    again = k8s.core.read_namespaced_pod(stuck.metadata.name, namespace)
    assert not again.spec.node_name
    assert again.status.phase == "Pending"


def test_plain_pods_on_cpu_pool_become_ready(kubectl: Kubectl, k8s: K8s, namespace: str) -> None:
    """Pods outside the project are faked by kwok locally (a kubelet runs them on kind)."""
    dep = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"e2e": "web"}},
                 "template": {"metadata": {"labels": {"e2e": "web"}},
                              "spec": {"nodeSelector": {"lms.dev/pool": "cpu"},
                                       "containers": [{"name": "web", "image": PAUSE}]}}},
    }
    kubectl("apply", "-n", namespace, "-f", "-", input=to_json(dep))
    wait_for(lambda: k8s.apps.read_namespaced_deployment("web", namespace).status.ready_replicas == 2, 180,
             "both unlabelled pods to become Ready")


# -- pods run by the pod runner ----------------------------------------------------------------

MESSAGE = '{"ok": true}'
WRITE_AND_EXIT = (
    "import sys, pathlib\n"
    "pathlib.Path('/dev/termination-log').write_text(sys.argv[1])\n"
    "pathlib.Path('/data/out.txt').write_text('written by the pod')\n"
    "print('hello from the pod')\n"
    "sys.exit(int(sys.argv[2]))\n"
)


def test_job_pod_is_run_and_reports_exit_code_and_message(kubectl: Kubectl, k8s: K8s, namespace: str,
                                                          cluster: Cluster) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=to_json({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
    template = project_pod("x", ["python", "-c", WRITE_AND_EXIT, MESSAGE, "0"],
                           volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
                           container={"volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                           restartPolicy="Never")
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "work", "labels": dict(PROJECT)},
           "spec": {"backoffLimit": 0, "template": {"metadata": template["metadata"], "spec": template["spec"]}}}
    job["spec"]["template"]["metadata"].pop("name")
    kubectl("apply", "-n", namespace, "-f", "-", input=to_json(job))

    def complete() -> bool:
        cond = condition(k8s.batch.read_namespaced_job("work", namespace), "Complete")
        return cond is not None and cond.status == "True"

    wait_for(complete, 120, "the Job to complete")
    pod = k8s.core.list_namespaced_pod(namespace, label_selector="job-name=work").items[0]
    assert pod.status.phase == "Succeeded"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0
    assert terminated.message == MESSAGE
    if cluster.local:
        assert pod.status.pod_ip == fake_pod_ip(pod.metadata.uid)  # unique per pod, so EndpointSlices list each
        assert (cluster.pvc_dir(namespace, "data") / "out.txt").read_text() == "written by the pod"
        log = cluster.state_dir / "pods" / f"{namespace}_{pod.metadata.name}.log"  # type: ignore[operator]
        assert "hello from the pod" in log.read_text()
        # kubectl logs goes API server -> the node's kubelet port, which the pod runner serves
        assert "hello from the pod" in kubectl("logs", "-n", namespace, "job/work", "--tail=5").stdout


def test_failing_pod_reports_its_exit_code(kubectl: Kubectl, k8s: K8s, namespace: str) -> None:
    pod = project_pod("fails", ["python", "-c", "import sys; print('bad input', file=sys.stderr); sys.exit(3)"],
                      restartPolicy="Never", container={"terminationMessagePolicy": "FallbackToLogsOnError"})
    kubectl("apply", "-n", namespace, "-f", "-", input=to_json(pod))
    wait_for(lambda: pod_phase(k8s, namespace, "fails") == "Failed", 90, "the pod to fail")
    terminated = k8s.core.read_namespaced_pod("fails", namespace).status.container_statuses[0].state.terminated
    assert terminated.exit_code == 3
    assert "bad input" in (terminated.message or "")


def test_server_pod_becomes_ready_and_is_killed_on_delete(kubectl: Kubectl, k8s: K8s, namespace: str,
                                                          cluster: Cluster) -> None:
    port = free_port()
    bind = "127.0.0.1" if cluster.local else "0.0.0.0"  # a kubelet probes the pod IP
    pod = project_pod("server", ["python", "-m", "http.server", str(port), "--bind", bind],
                      container={"ports": [{"name": "http", "containerPort": port}],
                                 "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}})
    kubectl("apply", "-n", namespace, "-f", "-", input=to_json(pod))

    def ready() -> bool:
        cond = condition(k8s.core.read_namespaced_pod("server", namespace), "Ready")
        return cond is not None and cond.status == "True"

    wait_for(ready, 90, "the server pod to become Ready through its readiness probe")
    assert pod_phase(k8s, namespace, "server") == "Running"
    if cluster.local:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert resp.status == 200

    k8s.core.delete_namespaced_pod("server", namespace)

    def gone() -> bool:
        try:
            k8s.core.read_namespaced_pod("server", namespace)
            return False
        except ApiException as exc:
            return exc.status == 404

    wait_for(gone, 60, "the deleted pod to disappear")
    if cluster.local:
        def port_closed() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) != 0

        wait_for(port_closed, 30, "the pod's process to be killed")


# -- garbage collection ------------------------------------------------------------------------

def test_deleting_owner_garbage_collects_children(kubectl: Kubectl, k8s: K8s, namespace: str) -> None:
    apply_crd(kubectl)
    kubectl("apply", "-n", namespace, "-f", str(SAMPLE))
    name = yaml.safe_load(SAMPLE.read_text())["metadata"]["name"]
    owner = k8s.custom.get_namespaced_custom_object("serving.lms.dev", "v1alpha1", namespace, "largemodelservices", name)
    ref = {"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService", "name": name,
           "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    k8s.core.create_namespaced_config_map(namespace, {"metadata": {"name": "child", "ownerReferences": [ref]},
                                                      "data": {"k": "v"}})
    dep = gpu_deployment("child-dep", True, {})
    dep["metadata"]["ownerReferences"] = [ref]
    kubectl("apply", "-n", namespace, "-f", "-", input=to_json(dep))
    wait_for(lambda: pods_of(k8s, namespace, "child-dep"), 60, "the owned deployment's pod to exist")

    kubectl("delete", "lms", name, "-n", namespace, "--wait=false")

    def collected() -> bool:
        cms = [c.metadata.name for c in k8s.core.list_namespaced_config_map(namespace).items]
        deps = k8s.apps.list_namespaced_deployment(namespace).items
        return "child" not in cms and not deps and not pods_of(k8s, namespace, "child-dep")

    wait_for(collected, 90, "the garbage collector to remove the owned ConfigMap, Deployment and pods")


# -- admission ---------------------------------------------------------------------------------

@pytest.mark.namespace_labels({"pod-security.kubernetes.io/enforce": "restricted",
                               "pod-security.kubernetes.io/enforce-version": "latest"})
def test_restricted_namespace_rejects_privileged_pod(kubectl: Kubectl, namespace: str) -> None:
    bad = project_pod("privileged", ["python", "-c", "pass"], container={"securityContext": {"privileged": True}})
    done = kubectl("apply", "-n", namespace, "-f", "-", input=to_json(bad), check=False)
    assert done.returncode != 0
    assert "violates PodSecurity" in done.stderr and "restricted" in done.stderr

    good = project_pod("compliant", ["python", "-c", "pass"], restartPolicy="Never",
                       securityContext={"runAsNonRoot": True, "runAsUser": 65532,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                       container={"securityContext": {"allowPrivilegeEscalation": False,
                                                      "capabilities": {"drop": ["ALL"]}}})
    kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=to_json(good))


# -- Triton run by the pod runner ---------------------------------------------------------------

def identity_model_on_claim(kubectl: Kubectl, cluster: Cluster, namespace: str) -> None:
    """The lms-models claim in `namespace`, holding the identity model's Triton repository at
    /models/<namespace>/identity/k1 (the pod runner's local folder for the claim)."""
    kubectl("apply", "-n", namespace, "-f", "-", input=to_json({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "lms-models"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
    write_identity_repository(cluster.pvc_dir(namespace, "lms-models") / namespace / "identity" / "k1")


def test_triton_pod_runs_locally_with_its_ports_annotated(kubectl: Kubectl, k8s: K8s, namespace: str,
                                                          cluster: Cluster) -> None:
    if not cluster.local:
        pytest.skip("needs the pod runner's local PVC folders (local cluster only)")
    identity_model_on_claim(kubectl, cluster, namespace)
    pod = project_pod("triton", [
        "tritonserver", f"--model-repository=/models/{namespace}/identity/k1", "--http-port=8000",
        "--grpc-port=8001", "--metrics-port=8002", "--strict-readiness=true", "--exit-timeout-secs=10"],
        volumes=[{"name": "models", "persistentVolumeClaim": {"claimName": "lms-models", "readOnly": True}}],
        container={"volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}],
                   "ports": [{"name": "http", "containerPort": 8000}],
                   "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}}})
    kubectl("apply", "-n", namespace, "-f", "-", input=to_json(pod))

    def ready() -> Any:
        obj = k8s.core.read_namespaced_pod("triton", namespace)
        cond = condition(obj, "Ready")
        return obj if cond is not None and cond.status == "True" else None

    obj = wait_for(ready, 180, "the local Triton pod to become Ready")
    annotations = obj.metadata.annotations or {}
    http = annotations["sandbox.lms.dev/http"]
    assert {"sandbox.lms.dev/grpc", "sandbox.lms.dev/metrics"} <= set(annotations)
    assert not http.endswith(":8000")
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                   "data": [1.0, 2.0, 3.0, 4.0]}]}).encode()
    req = urllib.request.Request(f"http://{http}/v2/models/identity/infer", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        out = json.loads(resp.read())
    assert out["outputs"][0]["data"] == [1.0, 2.0, 3.0, 4.0]

    k8s.core.delete_namespaced_pod("triton", namespace)
    host, port = http.split(":")

    def closed() -> bool:
        with socket.socket() as s:
            return s.connect_ex((host, int(port))) != 0

    wait_for(closed, 60, "the local Triton to stop after the pod was deleted")
