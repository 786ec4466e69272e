"""Every pod the operator creates is admitted under Pod Security "restricted" by the real API server.

The namespace enforces and warns at "restricted". For each example (CPU int8, GPU fp16, the
distilled digits classifier) the builders' compression Job and Triton Deployment are sent to the
API server: the workloads must raise no PodSecurity warning, their pod templates must be admitted
as Pods (server-side dry run: the full admission chain, nothing left running), and the GPU
Deployment is created for real so the ReplicaSet controller's own pod creation is admitted too.
The operator's own pod from the Helm chart is checked the same way. A weakened pod is rejected,
which shows the namespace really enforces.
"""
from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lms_operator.api.spec import parse_spec
from lms_operator.modelrepo.assemble import default_version_key
from lms_operator.resources.render import all_objects
from lms_operator.resources.settings import BuildSettings

from .conftest import K8s, Kubectl, to_json, wait_for
from .test_chart import helm_path

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.namespace_labels({"pod-security.kubernetes.io/enforce": "restricted",
                                  "pod-security.kubernetes.io/enforce-version": "latest",
                                  "pod-security.kubernetes.io/warn": "restricted",
                                  "pod-security.kubernetes.io/warn-version": "latest"}),
]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ("minilm-cpu.yaml", "minilm-gpu.yaml", "digits-distill.yaml")
CHART = ROOT / "charts" / "lms-operator"


def built(example: str, namespace: str) -> list[dict[str, Any]]:
    manifest = yaml.safe_load((ROOT / "examples" / example).read_text())
    manifest["metadata"]["namespace"] = namespace
    lms = parse_spec(manifest, example)
    assert default_version_key(lms)
    return all_objects(lms, BuildSettings())


def pod_from_template(owner: dict[str, Any], suffix: str) -> dict[str, Any]:
    template = owner["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{owner['metadata']['name']}-{suffix}"[:63], "namespace": owner["metadata"]["namespace"],
                         "labels": dict(template["metadata"].get("labels") or {})},
            "spec": copy.deepcopy(template["spec"])}


def dry_run_create(kubectl: Kubectl, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kubectl("create", "--dry-run=server", "-f", "-", input=to_json(obj), check=False)


def assert_admitted_without_warnings(kubectl: Kubectl, obj: dict[str, Any]) -> None:
    done = dry_run_create(kubectl, obj)
    what = f"{obj['kind']} {obj['metadata']['name']}"
    assert done.returncode == 0, f"{what} refused: {done.stderr.strip()}"
    assert "PodSecurity" not in done.stderr, f"{what}: {done.stderr.strip()}"


@pytest.mark.parametrize("example", EXAMPLES)
def test_operator_workloads_and_their_pods_are_admitted(kubectl: Kubectl, namespace: str, example: str) -> None:
    objects = built(example, namespace)
    workloads = [o for o in objects if o["kind"] in ("Job", "Deployment")]
    assert sorted(o["kind"] for o in workloads) == ["Deployment", "Job"]
    for obj in workloads:
        assert_admitted_without_warnings(kubectl, obj)
        assert_admitted_without_warnings(kubectl, pod_from_template(obj, "probe"))


def test_controller_created_gpu_pods_are_admitted(kubectl: Kubectl, k8s: K8s, namespace: str) -> None:
    (deployment,) = [o for o in built("minilm-gpu.yaml", namespace) if o["kind"] == "Deployment"]
    deployment["spec"]["replicas"] = 1
    kubectl("create", "-f", "-", input=to_json(deployment))
    name = deployment["metadata"]["name"]
    selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())

    def pods() -> list[Any]:
        return k8s.core.list_namespaced_pod(namespace, label_selector=selector).items

    def refused() -> list[str]:
        return [e.message for e in k8s.core.list_namespaced_event(namespace).items
                if e.reason == "FailedCreate" and "PodSecurity" in (e.message or "")]

    found = wait_for(lambda: pods() or (pytest.fail(f"pods refused: {refused()}", pytrace=False) if refused() else None),
                     90, f"the ReplicaSet controller to create a pod for {name}")
    assert found[0].spec.security_context.run_as_non_root is True
    assert refused() == []


def test_operator_pod_from_the_chart_is_admitted(kubectl: Kubectl, namespace: str) -> None:
    out = subprocess.run([helm_path(), "template", "lms-operator", str(CHART), "-n", namespace], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    (deployment,) = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment"]
    pod = pod_from_template(deployment, "probe")
    pod["spec"]["serviceAccountName"] = "default"  # the chart's account is not installed in this namespace
    assert_admitted_without_warnings(kubectl, pod)


@pytest.mark.parametrize("weaken", ["runAsNonRoot", "capabilities", "seccomp", "escalation"])
def test_a_weakened_operator_pod_is_rejected(kubectl: Kubectl, namespace: str, weaken: str) -> None:
    (job,) = [o for o in built("minilm-cpu.yaml", namespace) if o["kind"] == "Job"]
    pod = pod_from_template(job, weaken.lower())
    ctx = pod["spec"]["containers"][0]["securityContext"]
    if weaken == "runAsNonRoot":
        pod["spec"]["securityContext"].pop("runAsNonRoot")
        ctx.pop("runAsNonRoot")
    elif weaken == "capabilities":
        ctx["capabilities"] = {"drop": ["NET_RAW"]}
    elif weaken == "seccomp":
        pod["spec"]["securityContext"].pop("seccompProfile")
        ctx.pop("seccompProfile")
    else:
        ctx["allowPrivilegeEscalation"] = True
    done = dry_run_create(kubectl, pod)
    assert done.returncode != 0, json.dumps(pod)[:2000]
    assert "violates PodSecurity" in done.stderr and "restricted" in done.stderr, done.stderr
