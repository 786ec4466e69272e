"""The operator end to end on the small digits classifier (fast): lifecycle, gate, restart, GPU pool.

Compression Jobs and CPU-pool Triton pods run for real through the pod runner;
GPU-pool pods are scheduled by the real scheduler and faked by kwok.
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import Cluster, K8s, Kubectl, to_json, wait_for
from .operator_fixtures import (CLAIM, Operator, condition, events_of, lms_object, lms_status, operator,  # noqa: F401
                                operator_crds, wait_phase)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
COMMITTED_TEACHER = ROOT / "examples" / "models" / "digits-teacher" / "model.pt"
MANAGED = "app.kubernetes.io/managed-by=lms-operator"
COMPRESS_TIMEOUT = 300


TEACHER_CACHE = Path.home() / ".cache" / "lms" / "e2e" / "digits-teacher"


@pytest.fixture(scope="session")
def digits_teacher() -> Path:
    """The digits teacher (TorchScript): the committed one, else trained once into a cache.

    The cache lives outside /tmp: the compression Job mounts an emptyDir at /tmp, so the pod
    runner maps /tmp paths into the pod's own scratch folder.
    """
    if COMMITTED_TEACHER.is_file():
        return COMMITTED_TEACHER
    model = TEACHER_CACHE / "model.pt"
    if not model.is_file():
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_digits_teacher.py"), "--out",
                               str(TEACHER_CACHE)], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    return model


def digits(name: str, teacher: Path, *, min_accuracy: float = 0.9, gpu: bool = False) -> dict[str, Any]:
    serving: dict[str, Any] = {"device": "cpu", "nodePool": {"nodeSelector": {"lms.dev/pool": "cpu"}},
                               "resources": {"cpu": "1", "memory": "1Gi"}, "maxBatchSize": 64}
    quantization = {"mode": "dynamic", "perChannel": True}
    if gpu:
        serving = {"device": "gpu", "nodePool": {"nodeSelector": {"lms.dev/pool": "gpu"}},
                   "resources": {"cpu": "1", "memory": "1Gi", "gpu": 1}, "maxBatchSize": 64}
        quantization = {"mode": "fp16"}
    return {"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService", "metadata": {"name": name},
            "spec": {"model": {"uri": f"file://{teacher}", "format": "torchscript", "task": "tabular-classification"},
                     "compression": {"quantization": quantization,
                                     "qualityGate": {"metric": "accuracy", "min": min_accuracy, "samples": 256}},
                     "serving": serving, "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
                     "repository": {"pvc": CLAIM}}}


def apply(kubectl: Kubectl, namespace: str, manifest: dict[str, Any]) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=to_json(manifest))


def jobs(k8s: K8s, namespace: str, name: str) -> list[Any]:
    return k8s.batch.list_namespaced_job(namespace, label_selector=f"app.kubernetes.io/instance={name}").items


def replica_sets(k8s: K8s, namespace: str, name: str) -> list[Any]:
    return k8s.apps.list_namespaced_replica_set(
        namespace, label_selector=f"app.kubernetes.io/instance={name},app.kubernetes.io/component=server").items


def children(k8s: K8s, namespace: str) -> dict[str, list[str]]:
    sel = MANAGED
    found = {
        "jobs": [j.metadata.name for j in k8s.batch.list_namespaced_job(namespace, label_selector=sel).items],
        "deployments": [d.metadata.name for d in k8s.apps.list_namespaced_deployment(namespace, label_selector=sel).items],
        "services": [s.metadata.name for s in k8s.core.list_namespaced_service(namespace, label_selector=sel).items],
        "pods": [p.metadata.name for p in k8s.core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/part-of=lms").items],
    }
    from kubernetes import client

    autoscaling = client.AutoscalingV2Api(k8s.client)
    policy = client.PolicyV1Api(k8s.client)
    found["hpas"] = [h.metadata.name for h in autoscaling.list_namespaced_horizontal_pod_autoscaler(
        namespace, label_selector=sel).items]
    found["pdbs"] = [p.metadata.name for p in policy.list_namespaced_pod_disruption_budget(
        namespace, label_selector=sel).items]
    return found


def metric_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    return [(s.name, dict(s.labels), s.value) for family in text_string_to_metric_families(text)
            for s in family.samples]


def get_lms_table(kubectl: Kubectl, namespace: str) -> str:
    return kubectl("get", "lms", "-n", namespace).stdout


def test_lifecycle_cache_rollout_and_delete(k8s: K8s, kubectl: Kubectl, namespace: str, operator: Operator,
                                            digits_teacher: Path) -> None:
    start = time.monotonic()
    manifest = digits("digits", digits_teacher)
    apply(kubectl, namespace, manifest)
    status = wait_phase(k8s, namespace, "digits", {"Ready"}, COMPRESS_TIMEOUT, operator)
    k1 = status["modelVersion"]
    assert status["desiredVersion"] == k1
    comp = status["compression"]
    assert comp["version"] == k1 and comp["passed"] is True
    assert comp["ratio"] > 1.5 and comp["score"] >= 0.9 and comp["metric"] == "accuracy"
    assert status["readyReplicas"] >= 1
    assert status["endpoint"]["http"] == f"http://digits-triton.{namespace}.svc:8000"
    for kind in ("Validated", "RepositoryReady", "Compressed", "QualityGatePassed", "ServingReady", "Ready"):
        assert condition(status, kind)["status"] == "True", (kind, status["conditions"])

    found = children(k8s, namespace)
    assert len(found["jobs"]) == 1 and found["deployments"] == ["digits-triton"]
    assert found["services"] == ["digits-triton"] and found["hpas"] == ["digits-triton"]
    assert found["pdbs"] == ["digits-triton"]
    deployment = k8s.apps.read_namespaced_deployment("digits-triton", namespace)
    owner = deployment.metadata.owner_references[0]
    assert owner.kind == "LargeModelService" and owner.controller is True
    assert deployment.metadata.labels["serving.lms.dev/version"] == k1
    assert "lms-operator" in {m.manager for m in deployment.metadata.managed_fields}
    table = get_lms_table(kubectl, namespace)
    assert "Ready" in table and str(comp["ratio"]) in table, table
    reasons = {e.reason for e in events_of(k8s, namespace, "digits")}
    assert {"JobCreated", "ServingCreated", "PhaseReady"} <= reasons, reasons
    samples = metric_samples(operator.metrics())
    assert sum(v for n, labels, v in samples if n == "lms_operator_reconciles_total" and labels["result"] == "ok") >= 1
    assert ("lms_operator_resources", {"phase": "Ready"}, 1.0) in samples

    # An unchanged re-apply: no new Job, no new ReplicaSet, no new Deployment generation.
    generation = deployment.metadata.generation
    rs_before = {r.metadata.name for r in replica_sets(k8s, namespace, "digits")}
    apply(kubectl, namespace, manifest)
    kubectl("annotate", "lms", "digits", "-n", namespace, "e2e/touched=1")  # a metadata event
    time.sleep(25)  # longer than the operator's resync sweep (20 s in these tests)
    assert len(jobs(k8s, namespace, "digits")) == 1
    assert {r.metadata.name for r in replica_sets(k8s, namespace, "digits")} == rs_before
    assert k8s.apps.read_namespaced_deployment("digits-triton", namespace).metadata.generation == generation

    # A spec change: a new version, a new Job, and a rolling update to it.
    changed = copy.deepcopy(manifest)
    changed["spec"]["compression"]["qualityGate"]["min"] = 0.85
    apply(kubectl, namespace, changed)
    status = wait_phase(k8s, namespace, "digits", {"Ready"}, COMPRESS_TIMEOUT, operator)
    k2 = status["modelVersion"]
    assert k2 != k1 and status["compression"]["version"] == k2
    assert len(jobs(k8s, namespace, "digits")) == 2
    deployment = k8s.apps.read_namespaced_deployment("digits-triton", namespace)
    assert deployment.spec.template.metadata.labels["serving.lms.dev/version"] == k2
    assert deployment.spec.strategy.rolling_update.max_unavailable == 0
    assert len(replica_sets(k8s, namespace, "digits")) == len(rs_before) + 1
    assert "RollingUpdate" in {e.reason for e in events_of(k8s, namespace, "digits")}

    # Delete: every child goes by garbage collection.
    kubectl("delete", "lms", "digits", "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for(lambda: not any(children(k8s, namespace).values()), 120, "every child of digits to be deleted")
    sys.stderr.write(f"lifecycle took {time.monotonic() - start:.0f}s\n")


def test_quality_gate_failure_serves_nothing_and_update_keeps_old_version(
        k8s: K8s, kubectl: Kubectl, namespace: str, operator: Operator, digits_teacher: Path) -> None:
    apply(kubectl, namespace, digits("strict", digits_teacher, min_accuracy=0.999))
    good = digits("digits", digits_teacher)
    apply(kubectl, namespace, good)

    status = wait_phase(k8s, namespace, "strict", {"Failed"}, COMPRESS_TIMEOUT, operator)
    gate = condition(status, "QualityGatePassed")
    assert gate["status"] == "False" and gate["reason"] == "QualityGateFailed"
    assert "accuracy" in gate["message"] and "0.999" in gate["message"], gate
    assert condition(status, "Ready")["reason"] == "QualityGateFailed"
    assert status["compression"]["passed"] is False and status["compression"]["score"] < 0.999
    assert "modelVersion" not in status
    assert k8s.apps.list_namespaced_deployment(namespace, label_selector="app.kubernetes.io/instance=strict").items == []

    status = wait_phase(k8s, namespace, "digits", {"Ready"}, COMPRESS_TIMEOUT, operator)
    k1 = status["modelVersion"]
    before = k8s.apps.read_namespaced_deployment("digits-triton", namespace)
    failing = copy.deepcopy(good)
    failing["spec"]["compression"]["qualityGate"]["min"] = 0.999
    apply(kubectl, namespace, failing)
    status = wait_phase(k8s, namespace, "digits", {"Degraded"}, COMPRESS_TIMEOUT, operator)
    assert status["modelVersion"] == k1 and status["desiredVersion"] != k1
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Ready")["reason"] == "ServingPreviousVersion"
    assert condition(status, "QualityGatePassed")["status"] == "False"
    assert f"still serving {k1}" in status["message"]
    after = k8s.apps.read_namespaced_deployment("digits-triton", namespace)
    assert after.metadata.generation == before.metadata.generation
    assert after.spec.template.metadata.labels["serving.lms.dev/version"] == k1
    assert after.status.ready_replicas >= 1


def test_operator_killed_during_compression_resumes_without_duplicate_job(
        k8s: K8s, kubectl: Kubectl, namespace: str, operator: Operator, digits_teacher: Path) -> None:
    apply(kubectl, namespace, digits("digits", digits_teacher))
    wait_for(lambda: jobs(k8s, namespace, "digits"), 60, "the compression Job")
    wait_phase(k8s, namespace, "digits", {"Compressing"}, 60, operator)
    operator.kill()
    time.sleep(2)
    operator.start()
    status = wait_phase(k8s, namespace, "digits", {"Ready"}, COMPRESS_TIMEOUT, operator)
    assert len(jobs(k8s, namespace, "digits")) == 1
    assert status["compression"]["passed"] is True


def test_gpu_resource_lands_on_gpu_pool_with_kind_gpu_config(
        cluster: Cluster, k8s: K8s, kubectl: Kubectl, namespace: str, operator: Operator,
        digits_teacher: Path) -> None:
    apply(kubectl, namespace, digits("digits-gpu", digits_teacher, gpu=True))
    status = wait_phase(k8s, namespace, "digits-gpu", {"Ready", "Failed"}, COMPRESS_TIMEOUT, operator)
    assert status["phase"] == "Ready", status.get("message")
    pods = k8s.core.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/instance=digits-gpu,app.kubernetes.io/component=server").items
    assert pods
    for pod in pods:
        node = k8s.core.read_node(pod.spec.node_name)
        assert node.metadata.labels["lms.dev/pool"] == "gpu"
        limits = pod.spec.containers[0].resources.limits
        assert limits["nvidia.com/gpu"] == "1"
    assert cluster.state_dir is not None
    config = (cluster.pvc_dir(namespace, CLAIM) / namespace / "digits-gpu" / status["modelVersion"] / "digits-gpu"
              / "config.pbtxt").read_text()
    assert "KIND_GPU" in config


INVALID = [
    ({"serving": {"device": "gpu", "resources": {"gpu": 0}}}, "spec.serving.resources.gpu"),
    ({"compression": {"pruning": {"method": "threshold"}}}, "spec.compression.pruning.threshold"),
    ({"serving": {"device": "tpu"}}, "spec.serving.device"),
    ({"compression": {"quantization": {"mode": "fp16"}}}, "spec.compression.quantization.mode"),
    ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "spec.autoscaling.minReplicas"),
]


@pytest.mark.parametrize("patch, path", INVALID)
def test_invalid_specs_are_refused_with_the_field_path(kubectl: Kubectl, namespace: str, operator_crds: None,
                                                       patch: dict[str, Any], path: str) -> None:
    manifest = digits("bad", Path("/models/digits/model.pt"))
    for section, value in patch.items():
        merged = manifest["spec"].setdefault(section, {})
        for k, v in value.items():
            merged[k] = {**merged.get(k, {}), **v} if isinstance(v, dict) else v
    done = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=False)
    assert done.returncode != 0
    assert path in done.stderr, done.stderr


def test_operator_runs_with_only_its_service_account(kubectl: Kubectl, namespace: str, operator: Operator) -> None:
    def can_i(*args: str) -> str:
        done = kubectl("--kubeconfig", str(operator.kubeconfig), "auth", "can-i", *args, check=False)
        return done.stdout.strip()

    who = kubectl("--kubeconfig", str(operator.kubeconfig), "auth", "whoami", "-o", "json").stdout
    assert json.loads(who)["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:lms-operator"
    assert can_i("create", "jobs.batch", "-n", namespace) == "yes"
    assert can_i("patch", "largemodelservices.serving.lms.dev", "--subresource=status", "-n", namespace) == "yes"
    for forbidden in (("patch", "largemodelservices.serving.lms.dev", "-n", namespace),
                      ("get", "secrets", "-n", namespace), ("delete", "deployments.apps", "-n", namespace),
                      ("create", "pods", "-n", namespace), ("create", "persistentvolumeclaims", "-n", namespace)):
        assert can_i(*forbidden) == "no", forbidden
