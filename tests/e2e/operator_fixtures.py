"""The operator under test: CRDs, its ServiceAccount's RBAC only, a repository claim, and the process.

The operator runs as a subprocess (`lms operator --namespace NS`) with a
kubeconfig holding a TokenRequest token of the `lms-operator` ServiceAccount
bound to deploy/rbac/clusterrole.yaml, so a missing permission fails a test.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import Cluster, K8s, Kubectl, to_json, wait_for

ROOT = Path(__file__).resolve().parents[2]
RBAC = ROOT / "deploy" / "rbac"
CLAIM = "lms-models"
LMS_API = ("serving.lms.dev", "v1alpha1", "largemodelservices")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    current = admin.get("current-context") or admin["contexts"][0]["name"]
    context = next(c for c in admin["contexts"] if c["name"] == current)["context"]
    admin_cluster = next(c for c in admin["clusters"] if c["name"] == context["cluster"])["cluster"]
    server_cfg: dict[str, Any] = {"server": admin_cluster["server"]}
    if "certificate-authority-data" in admin_cluster:
        server_cfg["certificate-authority-data"] = admin_cluster["certificate-authority-data"]
    elif "certificate-authority" in admin_cluster:
        ca = Path(admin_cluster["certificate-authority"])
        if not ca.is_absolute():
            ca = cluster.kubeconfig.parent / ca
        server_cfg["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    else:
        server_cfg["insecure-skip-tls-verify"] = True
    token = k8s.core.create_namespaced_service_account_token(
        "lms-operator", namespace, {"spec": {"expirationSeconds": 7200}}).status.token
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "operator",
              "clusters": [{"name": "e2e", "cluster": server_cfg}],
              "users": [{"name": "lms-operator", "user": {"token": token}}],
              "contexts": [{"name": "operator", "context": {"cluster": "e2e", "user": "lms-operator",
                                                            "namespace": namespace}}]}
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


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


@dataclass
class Operator:
    """One `lms operator` process watching one namespace, restartable."""

    namespace: str
    kubeconfig: Path
    repository_root: Path
    log_path: Path
    metrics_port: int = field(default_factory=free_port)
    liveness_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "lms"), "operator", "--namespace", self.namespace,
             "--repository-root", str(self.repository_root), "--metrics-port", str(self.metrics_port),
             "--liveness-port", str(self.liveness_port), "--resync-seconds", "20"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        log.close()
        wait_for(lambda: self._healthy(), 90, "the operator's liveness endpoint")

    def _healthy(self) -> bool:
        import urllib.request

        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"operator exited with {self.proc.returncode}:\n{self.logs()[-3000:]}", pytrace=False)
        with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as resp:
            return bool(resp.status == 200)

    def kill(self) -> None:
        """SIGKILL, as a crashed pod would end."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return resp.read().decode()


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
