"""Serving templates and spec.serving.config on a real Triton, and serving changes without recompression.

The Triton pod's init container (`lms assemble`, the operator's image) links the published version
and writes each config.pbtxt from the templates and the spec of now; what Triton loaded is read back
from Triton itself (`/v2/models/NAME/config`). Changing `instances` then rolls the Deployment to a
new pod with the same version: no second compression Job.
"""
from __future__ import annotations

import copy
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .conftest import K8s, Kubectl, wait_for
from .operator_fixtures import Operator, operator, operator_crds, wait_phase  # noqa: F401
from .test_operator_digits import COMPRESS_TIMEOUT, apply, digits, digits_teacher, jobs  # noqa: F401

pytestmark = pytest.mark.e2e

SERVING_CONFIG = "serving.lms.dev/serving-config"
OVERRIDE = {"response_cache": {"enable": True},
            "model_warmup": [{"name": "ones", "batch_size": 2, "count": 3, "inputs": {
                "input": {"data_type": "TYPE_FP32", "dims": [64], "random_data": True}}}]}


def triton_config(http: str, model: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{http}/v2/models/{model}/config", timeout=10) as answer:
        return dict(json.loads(answer.read()))


def infer(http: str, model: str, vector: list[float]) -> dict[str, Any]:
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, len(vector)], "datatype": "FP32", "data": vector}]})
    request = urllib.request.Request(f"http://{http}/v2/models/{model}/infer", body.encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return dict(json.loads(answer.read()))


def current_pod_http(k8s: K8s, namespace: str, name: str) -> str | None:
    """host:port of a ready Triton pod of the Deployment's current template (None while rolling)."""
    deployment = k8s.apps.read_namespaced_deployment(f"{name}-triton", namespace)
    wanted = deployment.spec.template.metadata.annotations[SERVING_CONFIG]
    pods = k8s.core.list_namespaced_pod(
        namespace, label_selector=f"app.kubernetes.io/instance={name},app.kubernetes.io/component=server").items
    if any((p.metadata.annotations or {}).get(SERVING_CONFIG) != wanted for p in pods):
        return None  # the old pod is still there
    for pod in pods:
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        if ready and (pod.metadata.annotations or {}).get("sandbox.lms.dev/http"):
            return str(pod.metadata.annotations["sandbox.lms.dev/http"])
    return None


def test_serving_config_loads_on_triton_and_an_instances_change_rolls_out_without_a_job(
        k8s: K8s, kubectl: Kubectl, namespace: str, operator: Operator, digits_teacher: Path) -> None:
    manifest = digits("digits", digits_teacher)
    manifest["spec"]["serving"]["config"] = OVERRIDE
    apply(kubectl, namespace, manifest)
    status = wait_phase(k8s, namespace, "digits", {"Ready"}, COMPRESS_TIMEOUT, operator)
    version = status["modelVersion"]
    assert status["compression"]["threads"] >= 1, "the thread count the variant search timed with"
    first = status["servingConfig"]
    assert first["template"] == "onnx-cpu" and len(first["templateDigest"]) == 64
    http = wait_for(lambda: current_pod_http(k8s, namespace, "digits"), 120, "a ready Triton pod")
    loaded = triton_config(http, "digits")
    assert loaded["response_cache"] == {"enable": True}
    assert [w["name"] for w in loaded["model_warmup"]] == ["ones"] and loaded["model_warmup"][0]["count"] == 3
    assert loaded["instance_group"][0]["count"] == 1 and loaded["instance_group"][0]["kind"] == "KIND_CPU"
    assert loaded["parameters"]["inter_op_thread_count"]["string_value"] == "1", "the template's own setting"
    assert len(jobs(k8s, namespace, "digits")) == 1
    for _ in range(3):  # the same request again: answered from Triton's response cache
        infer(http, "digits", [0.25] * 64)
    stats = json.loads(urllib.request.urlopen(f"http://{http}/v2/models/digits/stats", timeout=10).read())
    assert stats["model_stats"][0]["inference_stats"]["cache_hit"]["count"] >= 2, stats

    changed = copy.deepcopy(manifest)
    changed["spec"]["serving"]["instances"] = 2
    started = time.monotonic()
    apply(kubectl, namespace, changed)

    def rolled_out() -> str | None:
        http = current_pod_http(k8s, namespace, "digits")
        return http if http and triton_config(http, "digits")["instance_group"][0]["count"] == 2 else None

    http = wait_for(rolled_out, 300, "a Triton pod with 2 instances")
    status = wait_phase(k8s, namespace, "digits", {"Ready"}, 120, operator)
    took = time.monotonic() - started
    sys.stderr.write(f"instances 1 -> 2: Ready with the new pod after {took:.1f}s\n")
    assert status["modelVersion"] == version, "the same compressed version"
    assert status["servingConfig"]["digest"] != first["digest"]
    template = k8s.apps.read_namespaced_deployment("digits-triton", namespace).spec.template
    assert template.metadata.annotations[SERVING_CONFIG] == status["servingConfig"]["digest"]
    assert len(jobs(k8s, namespace, "digits")) == 1, "no compression Job for a serving change"
    assert triton_config(http, "digits")["response_cache"] == {"enable": True}


ADMISSION = [
    ({"model_warmpu": []}, "model_warmpu"),
    ({"input": [{"name": "x"}]}, "input is set by the operator"),
    ({"backend": "openvino"}, "backend is set by the operator"),
    ({"instance_group": [{"kind": "KIND_XPU"}]}, "KIND_XPU"),
    ({"response_cache": {"enable": "yes"}}, "response_cache.enable"),
]


@pytest.mark.parametrize(("override", "message"), ADMISSION, ids=[m for _, m in ADMISSION])
def test_the_api_server_refuses_a_bad_serving_config_naming_the_field(
        kubectl: Kubectl, namespace: str, operator_crds: None, digits_teacher: Path, override: dict[str, Any],
        message: str) -> None:
    manifest = digits("digits", digits_teacher)
    manifest["spec"]["serving"]["config"] = override
    done = kubectl("create", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-",
                   input=json.dumps(manifest), check=False)
    assert done.returncode != 0 and "spec.serving.config" in done.stderr and message in done.stderr, done.stderr
    manifest["spec"]["serving"]["config"] = OVERRIDE
    admitted = kubectl("create", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-",
                       input=json.dumps(manifest), check=False)
    assert admitted.returncode == 0, admitted.stderr
