"""The Helm chart installed into a real control plane, and the operator running under exactly its RBAC.

`helm install` puts the CRDs, ServiceAccount, Roles and peering object in place (namespaced mode:
a Role only in the watched namespace). The operator image cannot run here, so the chart's
Deployment is scaled to zero and the operator process runs locally with the chart's own command
line and a TokenRequest token of the chart's ServiceAccount: every API call it makes is
authorised by the chart's rules alone, so a missing permission fails this test.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lms_harness.operator import OperatorExited, OperatorProcess
from lms_harness.ports import free_port

from .conftest import Cluster, K8s, Kubectl, to_json, wait_for
from .operator_fixtures import CLAIM, condition, lms_status, repository_claim, server_http, wait_phase

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "lms-operator"
TEACHER = ROOT / "examples" / "models" / "digits-teacher" / "model.pt"
READY_TIMEOUT = 600


def helm_path() -> str:
    """helm from the tool cache `make tools` fills, else PATH."""
    for folder in (os.environ.get("LMS_TOOLS_BIN"), str(Path.home() / ".cache" / "lms" / "bin" / "current")):
        if folder and (Path(folder) / "helm").is_file():
            return str(Path(folder) / "helm")
    found = shutil.which("helm")
    if found is None:
        pytest.fail("helm is not built: run `make tools`", pytrace=False)
    return found


def helm(cluster: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HELM_CACHE_HOME": "/tmp/lms-helm-cache", "HELM_CONFIG_HOME": "/tmp/lms-helm-config",
           "HELM_DATA_HOME": "/tmp/lms-helm-data"}
    done = subprocess.run([helm_path(), "--kubeconfig", str(cluster.kubeconfig), *args], capture_output=True,
                          text=True, timeout=300, env=env)
    if check and done.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed: {done.stderr.strip()}", pytrace=False)
    return done


class Release:
    def __init__(self, name: str, namespace: str, watched: str, notes: str) -> None:
        self.name, self.namespace, self.watched, self.notes = name, namespace, watched, notes


@pytest.fixture
def release(cluster: Cluster, k8s: K8s, kubectl: Kubectl, namespace: str) -> Iterator[Release]:
    """The chart installed in its own namespace, watching the test's namespace only."""
    suffix = uuid.uuid4().hex[:6]
    name, release_ns = f"lms-operator-{suffix}", f"lms-system-{suffix}"
    done = helm(cluster, "install", name, str(CHART), "-n", release_ns, "--create-namespace",
                "--set", f"watchNamespaces={{{namespace}}}", "--set", "replicaCount=0", "--wait", "--timeout", "120s")
    try:
        yield Release(name, release_ns, namespace, done.stdout)
    finally:
        helm(cluster, "uninstall", name, "-n", release_ns, "--wait", "--timeout", "120s", check=False)
        kubectl("delete", "namespace", release_ns, "--wait=false", "--ignore-not-found", check=False)


def can_i(kubectl: Kubectl, kubeconfig: Path, *args: str) -> bool:
    done = kubectl("--kubeconfig", str(kubeconfig), "auth", "can-i", *args, check=False)
    return done.stdout.strip() == "yes"


def sa_kubeconfig(cluster: Cluster, k8s: K8s, release: Release, path: Path) -> Path:
    """A kubeconfig with a token of the chart's ServiceAccount (named after the release)."""
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    token = k8s.core.create_namespaced_service_account_token(
        release.name, release.namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    current = admin.get("current-context") or admin["contexts"][0]["name"]
    context = next(c for c in admin["contexts"] if c["name"] == current)["context"]
    cluster_cfg = dict(next(c for c in admin["clusters"] if c["name"] == context["cluster"])["cluster"])
    ca = cluster_cfg.pop("certificate-authority", None)
    if ca is not None:
        import base64

        ca_path = Path(ca) if Path(ca).is_absolute() else cluster.kubeconfig.parent / ca
        cluster_cfg["certificate-authority-data"] = base64.b64encode(ca_path.read_bytes()).decode()
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "chart",
              "clusters": [{"name": "e2e", "cluster": cluster_cfg}],
              "users": [{"name": release.name, "user": {"token": token}}],
              "contexts": [{"name": "chart", "context": {"cluster": "e2e", "user": release.name,
                                                         "namespace": release.watched}}]}
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def digits_service(name: str) -> dict[str, Any]:
    return {"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService", "metadata": {"name": name},
            "spec": {"model": {"uri": f"file://{TEACHER}", "format": "torchscript", "task": "tabular-classification"},
                     "compression": {"quantization": {"mode": "dynamic", "perChannel": True},
                                     "qualityGate": {"metric": "accuracy", "min": 0.9, "samples": 256}},
                     "serving": {"device": "cpu", "nodePool": {"nodeSelector": {"lms.dev/pool": "cpu"}},
                                 "resources": {"cpu": "1", "memory": "1Gi"}, "maxBatchSize": 64},
                     "autoscaling": {"minReplicas": 1, "maxReplicas": 2}, "repository": {"pvc": CLAIM}}}


def test_install_prints_next_steps_and_creates_least_privilege_rbac(cluster: Cluster, k8s: K8s, kubectl: Kubectl,
                                                                   release: Release, tmp_path: Path) -> None:
    assert "kubectl apply -f examples/minilm-cpu.yaml" in release.notes and "kubectl get lms" in release.notes
    kubectl("wait", "--for=condition=Established", "crd/largemodelservices.serving.lms.dev",
            "crd/kopfpeerings.kopf.dev", "--timeout=60s")
    kubeconfig = sa_kubeconfig(cluster, k8s, release, tmp_path / "sa.kubeconfig")
    ns = release.watched
    allowed = [("create", "jobs.batch"), ("delete", "jobs.batch"), ("patch", "deployments.apps"), ("watch", "largemodelservices.serving.lms.dev"),
               ("list", "pods"), ("create", "events")]
    for verb, resource in allowed:
        assert can_i(kubectl, kubeconfig, verb, resource, "-n", ns), (verb, resource)
    assert can_i(kubectl, kubeconfig, "patch", "largemodelservices.serving.lms.dev", "--subresource=status", "-n", ns)
    denied = [("patch", "largemodelservices.serving.lms.dev", ns),
              ("get", "secrets", ns), ("list", "secrets", ns), ("create", "pods", ns), ("delete", "jobs.batch", "default"),
              ("create", "jobs.batch", "default"), ("patch", "deployments.apps", release.namespace),
              ("create", "rolebindings.rbac.authorization.k8s.io", ns), ("create", "persistentvolumeclaims", ns)]
    for verb, resource, where in denied:
        assert not can_i(kubectl, kubeconfig, verb, resource, "-n", where), (verb, resource, where)
    assert not can_i(kubectl, kubeconfig, "list", "largemodelservices.serving.lms.dev", "--all-namespaces")
    assert can_i(kubectl, kubeconfig, "list", "customresourcedefinitions.apiextensions.k8s.io")
    assert not can_i(kubectl, kubeconfig, "create", "customresourcedefinitions.apiextensions.k8s.io")


def test_crd_from_the_chart_refuses_uri_schemes_outside_the_allow_list(kubectl: Kubectl, release: Release) -> None:
    for uri in ("http://example.com/model.onnx", "https://evil.example/m", "ftp://h/m", "/plain/path"):
        bad = digits_service("bad-scheme")
        bad["spec"]["model"]["uri"] = uri
        done = kubectl("apply", "-n", release.watched, "-f", "-", input=to_json(bad), check=False)
        assert done.returncode != 0, f"{uri} was admitted"
        assert "spec.model.uri" in done.stderr, done.stderr
    ok = digits_service("good-scheme")
    kubectl("apply", "--dry-run=server", "-n", release.watched, "-f", "-", input=to_json(ok))


def test_operator_reconciles_under_exactly_the_charts_rbac(cluster: Cluster, k8s: K8s, kubectl: Kubectl,
                                                          release: Release, tmp_path: Path) -> None:
    if not cluster.local:
        pytest.fail("this test reads the repository through the pod runner's folders (local kwok cluster only)",
                    pytrace=False)
    assert cluster.state_dir is not None
    ns = release.watched
    repository_claim(kubectl, ns, cluster.pvc_dir(ns, CLAIM))
    wait_for(lambda: k8s.core.read_namespaced_persistent_volume_claim(CLAIM, ns).status.phase == "Bound",
             60, f"PVC {CLAIM} to bind")
    deployment = k8s.apps.read_namespaced_deployment(release.name, release.namespace)
    (container,) = deployment.spec.template.spec.containers
    assert container.command == ["lms"] and f"--namespace={ns}" in container.args
    # The chart's command line, with local ports (several operators may share this machine) and the
    # pod runner's claim folders as the repository root.
    # A cluster admin's serving template, given as a chart value: the operator reads the chart's
    # ConfigMap (here written out as the kubelet would mount it) and every new Triton loads it.
    mine = tmp_path / "my-onnx-cpu.pbtxt"
    mine.write_text((ROOT / "model-repo-templates" / "onnx-cpu.pbtxt").read_text().replace(
        'model_warmup { name: "warmup" batch_size: 1 count: 1 }', 'model_warmup { name: "chart" batch_size: 1 count: 2 }'))
    helm(cluster, "upgrade", release.name, str(CHART), "-n", release.namespace, "--reuse-values",
         "--set-file", f"modelRepoTemplates.onnx-cpu={mine}", "--wait", "--timeout", "120s")
    templates = tmp_path / "model-repo-templates"
    templates.mkdir()
    for key, text in k8s.core.read_namespaced_config_map(f"{release.name}-model-repo-templates", release.namespace).data.items():
        (templates / key).write_text(text)
    args = [a for a in container.args if not a.startswith(("--metrics-port=", "--liveness-port=", "--templates-dir="))]
    assert "--templates-dir=/etc/lms/model-repo-templates" in container.args
    liveness = free_port()
    args += [f"--metrics-port={free_port()}", f"--liveness-port={liveness}", "--resync-seconds=20",
             f"--repository-root={cluster.state_dir / 'pvc'}", f"--templates-dir={templates}"]
    kubeconfig = sa_kubeconfig(cluster, k8s, release, tmp_path / "operator.kubeconfig")
    log_path = tmp_path / "operator.log"
    extra_env = {e.name: e.value for e in container.env or [] if e.name.startswith("LMS_COMPRESSION_")}
    op = OperatorProcess(kubeconfig, log_path, liveness_port=liveness, extra_env=extra_env, args=tuple(args))
    try:
        try:
            op.start(ready_timeout=90)
        except (OperatorExited, TimeoutError) as exc:
            pytest.fail(str(exc), pytrace=False)
        kubectl("apply", "-n", ns, "-f", "-", input=to_json(digits_service("digits")))
        status = wait_phase(k8s, ns, "digits", {"Ready", "Failed"}, READY_TIMEOUT)
        assert status["phase"] == "Ready", status.get("message")
        assert condition(status, "QualityGatePassed")["status"] == "True"
        assert len(status.get("compression", {}).get("sha256", "")) == 64
        with urllib.request.urlopen(f"http://{server_http(k8s, ns, 'digits')}/v2/models/digits/config", timeout=10) as got:
            loaded = json.loads(got.read())
        assert [(w["name"], w["count"]) for w in loaded["model_warmup"]] == [("chart", 2)], loaded.get("model_warmup")
        log_text = log_path.read_text(errors="replace")
        assert "Forbidden" not in log_text and " 403" not in log_text, log_text[-3000:]
    except BaseException:
        sys.stderr.write(f"\n--- operator log ---\n{log_path.read_text(errors='replace')[-6000:]}\n")
        try:
            sys.stderr.write(f"status: {lms_status(k8s, ns, 'digits')}\n")
        except Exception:  # noqa: BLE001 - the resource may not exist
            pass
        raise
    finally:
        op.stop()
        kubectl("delete", "pv", f"lms-models-{ns}", "--ignore-not-found", "--wait=false", check=False)


def test_gitops_overlay_and_namespace_are_admitted(kubectl: Kubectl, release: Release) -> None:
    """The Kustomize production overlay, built by kubectl, passes the CRD's schema and CEL rules on the server."""
    gitops = ROOT / "examples" / "gitops"
    built = kubectl("kustomize", str(gitops / "kustomize" / "overlays" / "production")).stdout
    (doc,) = [d for d in yaml.safe_load_all(built) if d]
    namespace = yaml.safe_load((gitops / "namespace.yaml").read_text())
    kubectl("apply", "--dry-run=server", "-f", str(gitops / "namespace.yaml"))
    # The overlay's namespace may not exist here; the same object in the release's watched namespace.
    doc["metadata"]["namespace"] = release.watched
    done = kubectl("apply", "--dry-run=server", "-f", "-", input=to_json(doc))
    assert "created (server dry run)" in done.stdout, done.stdout
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
