"""The scale bench's cluster: a kwok control plane from the sandbox's scripts, the CRDs, the
operator's RBAC, room for N Services and N pods, and a fresh namespace with the claim."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from lms_harness.cluster import ROOT, cluster_up, tools_env
from lms_harness.scale.api import ClusterApi
from lms_harness.scale.objects import CLAIM, log, scale_node

PODS_PER_NODE = 250
SERVICE_CIDR = "10.112.0.0/16"


class Kubectl:
    """The pinned kubectl against one kubeconfig; a failure raises with the tail of its stderr."""

    def __init__(self, bin_dir: str, kubeconfig: Path) -> None:
        self.env = tools_env(bin_dir)
        self.base = [str(Path(bin_dir) / "kubectl"), "--kubeconfig", str(kubeconfig)]

    def __call__(self, *args: str, input: str | None = None, timeout: float = 600,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.base + list(args), env=self.env, input=input, capture_output=True, text=True,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:2])}... failed ({done.returncode}): {done.stderr[-2000:]}")
        return done


def strip_conflicting_defaults(node: Any, path: str = "") -> list[str]:
    """Drop `default` from objects that carry CEL rules (an empty default object fails their rules
    when the API server checks defaults against them). Returns the schema paths changed."""
    changed: list[str] = []
    if isinstance(node, dict):
        if "default" in node and node.get("x-kubernetes-validations") and node.get("type") == "object":
            del node["default"]
            changed.append(path or "/")
        for k, v in node.items():
            changed += strip_conflicting_defaults(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            changed += strip_conflicting_defaults(v, f"{path}/{i}")
    return changed


def apply_crd(kubectl: Kubectl, crd: Path, work: Path) -> list[str]:
    """Apply a CRD as committed; if the API server rejects its defaults against its CEL rules,
    apply a copy without those defaults (every scale object sets those fields) and say so."""
    import yaml

    done = kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd), timeout=120, check=False)
    if done.returncode == 0:
        return []
    if "no such key" not in done.stderr:
        raise RuntimeError(f"applying {crd.name} failed: {done.stderr[-1500:]}")
    doc = yaml.safe_load(crd.read_text())
    changed = strip_conflicting_defaults(doc)
    fixed = work / crd.name
    fixed.write_text(yaml.safe_dump(doc))
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(fixed))
    log(f"{crd.name} was rejected by the API server ({done.stderr.strip().splitlines()[0][:120]}); "
        f"applied it without the defaults at {changed}")
    return [f"{crd.name}: rejected as committed (default objects fail their CEL rules); applied without "
            f"defaults at {p}" for p in changed]


def prepare_cluster(name: str, kubeconfig: Path, bin_dir: str, work: Path, objects: int,
                    result: dict[str, Any]) -> Kubectl:
    """Cluster up with the CRDs, the operator's RBAC, a ServiceCIDR and CPU-pool nodes for `objects` pods."""
    log(f"cluster {name} up (sandbox/cluster.sh)")
    cluster_up(name, kubeconfig, bin_dir)
    kubectl = Kubectl(bin_dir, kubeconfig)
    for crd in sorted((ROOT / "crds").glob("*.yaml")):
        workaround = apply_crd(kubectl, crd, work)
        if workaround:
            result.setdefault("crd_workaround", []).extend(workaround)
    kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    # the operator runs under its own ServiceAccount's RBAC (the proxy impersonates it)
    kubectl("create", "namespace", "lms-system", check=False)
    for manifest_file in sorted((ROOT / "deploy" / "rbac").glob("*.yaml")):
        kubectl("apply", "-f", str(manifest_file))
    # kube-apiserver's default Service range is a /24 (254 ClusterIPs): add a ServiceCIDR so that
    # N Services fit (without it every Service past ~250 fails with "range is full")
    service_cidr = {"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
                    "metadata": {"name": "lms-scale"}, "spec": {"cidrs": [SERVICE_CIDR]}}
    kubectl("apply", "-f", "-", input=json.dumps(service_cidr))
    kubectl("wait", "--for=condition=Ready", "servicecidr/lms-scale", "--timeout=60s")
    result["service_cidr_added"] = service_cidr["spec"]["cidrs"]
    extra = max(0, -(-(objects + 50) // PODS_PER_NODE))
    nodes = "\n---\n".join(json.dumps(scale_node(i, PODS_PER_NODE)) for i in range(extra))
    if nodes:
        kubectl("apply", "-f", "-", input=nodes)
        kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=120s")
    return kubectl


def fresh_namespace(api: ClusterApi, kubectl: Kubectl, namespace: str) -> None:
    """The bench's namespace, empty, with the repository claim."""
    if kubectl("get", "namespace", namespace, "--ignore-not-found", "-o", "name").stdout.strip():
        log(f"namespace {namespace} exists: deleting it first")
        kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=600s", timeout=700)
    api.create_namespace(namespace)
    api.create_claim(namespace, CLAIM)
