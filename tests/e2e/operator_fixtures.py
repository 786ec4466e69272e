"""The operator under test: CRDs, its ServiceAccount's RBAC only, a repository claim, and the process.

The operator runs as a subprocess (`lms operator --namespace NS`) with a
kubeconfig holding a TokenRequest token of the `lms-operator` ServiceAccount
bound to deploy/rbac/clusterrole.yaml, so a missing permission fails a test.
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lms_harness.cluster import token_kubeconfig
from lms_harness.operator import OperatorExited, OperatorProcess
from lms_harness.ports import free_port

from .conftest import Cluster, K8s, Kubectl, to_json, wait_for

ROOT = Path(__file__).resolve().parents[2]
RBAC = ROOT / "deploy" / "rbac"
CLAIM = "lms-models"
LMS_API = ("serving.lms.dev", "v1alpha1", "largemodelservices")


@pytest.fixture(scope="session")
def operator_crds(kubectl: Kubectl) -> None:
    """The LargeModelService CRD and kopf's peering CRDs, established."""
    for crd in ("largemodelservices.yaml", "kopf-peering.yaml"):
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / crd))
    kubectl("wait", "--for=condition=Established", "crd/largemodelservices.serving.lms.dev",
            "crd/kopfpeerings.kopf.dev", "crd/clusterkopfpeerings.kopf.dev", "--timeout=60s")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(RBAC / "clusterrole.yaml"))


def service_account_kubeconfig(cluster: Cluster, k8s: K8s, namespace: str, path: Path) -> Path:
    """A kubeconfig authenticating as system:serviceaccount:<ns>:lms-operator with a fresh token."""
    token = k8s.core.create_namespaced_service_account_token(
        "lms-operator", namespace, {"spec": {"expirationSeconds": 7200}}).status.token
    return token_kubeconfig(cluster.kubeconfig, token, namespace, path)


def bind_operator(kubectl: Kubectl, namespace: str) -> None:
    """ServiceAccount in the test namespace + a ClusterRoleBinding to the shared ClusterRole."""
    sa = yaml.safe_load((RBAC / "serviceaccount.yaml").read_text())
    sa["metadata"]["namespace"] = namespace
    binding = yaml.safe_load((RBAC / "clusterrolebinding.yaml").read_text())
    binding["metadata"]["name"] = f"lms-operator-{namespace}"
    binding["subjects"][0]["namespace"] = namespace
    kubectl("apply", "-f", "-", input=to_json({"apiVersion": "v1", "kind": "List", "items": [sa, binding]}))


def repository_claim(kubectl: Kubectl, namespace: str, host_path: Path) -> None:
    """A PV pre-bound to PVC lms-models (claimRef + volumeName), so no provisioner is involved."""
    pv_name = f"lms-models-{namespace}"
    host_path.mkdir(parents=True, exist_ok=True)
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
          "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                   "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(host_path)},
                   "claimRef": {"namespace": namespace, "name": CLAIM}}}
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": CLAIM, "namespace": namespace},
           "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv_name,
                    "resources": {"requests": {"storage": "10Gi"}}}}
    kubectl("apply", "-f", "-", input=to_json({"apiVersion": "v1", "kind": "List", "items": [pv, pvc]}))


class Operator(OperatorProcess):
    """One `lms operator` process watching one namespace, restartable; a test fails when it exits."""

    def __init__(self, namespace: str, kubeconfig: Path, repository_root: Path, log_path: Path) -> None:
        super().__init__(kubeconfig, log_path, (namespace,), repository_root, liveness_port=free_port(),
                         resync_seconds=20)
        self.namespace = namespace

    def check_running(self) -> None:
        try:
            super().check_running()
        except OperatorExited as exc:
            pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def operator(cluster: Cluster, k8s: K8s, kubectl: Kubectl, namespace: str, operator_crds: None,
             tmp_path: Path) -> Iterator[Operator]:
    """A running operator for the test's namespace, with only its own RBAC and a bound claim."""
    if not cluster.local:
        pytest.fail("the operator e2e tests read the repository through the pod runner's folders "
                    "(local kwok cluster only)", pytrace=False)
    assert cluster.state_dir is not None
    bind_operator(kubectl, namespace)
    repository_claim(kubectl, namespace, cluster.pvc_dir(namespace, CLAIM))
    kubectl("apply", "-n", namespace, "-f", "-", input=to_json(
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "lms-operator"}}))
    wait_for(lambda: k8s.core.read_namespaced_persistent_volume_claim(CLAIM, namespace).status.phase == "Bound",
             60, f"PVC {CLAIM} to bind")
    kubeconfig = service_account_kubeconfig(cluster, k8s, namespace, tmp_path / "operator.kubeconfig")
    op = Operator(namespace, kubeconfig, cluster.state_dir / "pvc", tmp_path / "operator.log")
    op.start()
    try:
        yield op
    finally:
        op.stop()
        # Captured output is shown only when the test fails.
        sys.stderr.write(f"\n--- operator log ({namespace}) ---\n{op.logs()[-6000:]}\n")
        kubectl("delete", "clusterrolebinding", f"lms-operator-{namespace}", "--ignore-not-found", check=False)
        kubectl("delete", "pv", f"lms-models-{namespace}", "--ignore-not-found", "--wait=false", check=False)


# ---- reading the resource -----------------------------------------------------------------------------

def lms_object(k8s: K8s, namespace: str, name: str) -> dict[str, Any]:
    return dict(k8s.custom.get_namespaced_custom_object(*LMS_API[:2], namespace, LMS_API[2], name))


def lms_status(k8s: K8s, namespace: str, name: str) -> dict[str, Any]:
    return dict(lms_object(k8s, namespace, name).get("status") or {})


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def wait_phase(k8s: K8s, namespace: str, name: str, phases: set[str], timeout: float,
               operator: Operator | None = None) -> dict[str, Any]:
    """Wait until status.phase is one of phases (for the current generation); returns the status."""
    def check() -> dict[str, Any] | None:
        obj = lms_object(k8s, namespace, name)
        status = obj.get("status") or {}
        if operator is not None and operator.proc is not None and operator.proc.poll() is not None:
            pytest.fail(f"operator exited:\n{operator.logs()[-3000:]}", pytrace=False)
        current = status.get("observedGeneration") == obj["metadata"]["generation"]
        if current and status.get("phase") == "Failed" and "Failed" not in phases:
            pytest.fail(f"{namespace}/{name} is Failed: {status.get('message')}", pytrace=False)
        return status if current and status.get("phase") in phases else None

    try:
        return wait_for(check, timeout, f"{namespace}/{name} phase in {sorted(phases)}", interval=1.0)
    except BaseException:
        sys.stderr.write(f"\nlast status: {json.dumps(lms_status(k8s, namespace, name), indent=1)[:3000]}\n")
        raise


def events_of(k8s: K8s, namespace: str, name: str) -> list[Any]:
    return [e for e in k8s.core.list_namespaced_event(namespace).items
            if e.involved_object.kind == "LargeModelService" and e.involved_object.name == name]


def elapsed(start: float) -> str:
    return f"{time.monotonic() - start:.0f}s"


# ---- asking the deployed model ------------------------------------------------------------------------

def server_http(k8s: K8s, namespace: str, name: str) -> str:
    """host:port of a running Triton pod of the resource, as the pod runner recorded it."""
    pod = wait_for(lambda: next((p for p in k8s.core.list_namespaced_pod(
        namespace, label_selector=f"app.kubernetes.io/instance={name},app.kubernetes.io/component=server").items
        if (p.metadata.annotations or {}).get("sandbox.lms.dev/http")), None), 60, "the Triton pod's local ports")
    return str(pod.metadata.annotations["sandbox.lms.dev/http"])


def served_vs_local_cosine(http: str, name: str, model: Path, tokenizer_json: Path,
                           sentences: list[str]) -> tuple[Any, Any]:
    """(per-sentence cosine, ONNX Runtime's embeddings): the deployed token-level model's answers
    against ONNX Runtime's on the published model file, for the same tokens."""
    import numpy as np
    import onnxruntime as ort
    import tritonclient.http as triton
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.enable_padding(length=32)
    tokenizer.enable_truncation(max_length=32)
    encoded = tokenizer.encode_batch(sentences)
    feeds = {"input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
             "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64)}
    inputs = []
    for input_name, array in feeds.items():
        tensor = triton.InferInput(input_name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    served = triton.InferenceServerClient(http).infer(
        name, inputs, outputs=[triton.InferRequestedOutput("embedding")]).as_numpy("embedding")
    local = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(["embedding"], feeds)[0]
    assert served.shape == local.shape == (len(sentences), 384)
    return (served * local).sum(axis=1) / (np.linalg.norm(served, axis=1) * np.linalg.norm(local, axis=1)), local
