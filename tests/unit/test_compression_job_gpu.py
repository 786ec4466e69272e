"""spec.compression.resources.gpu: the compression Job asks for GPUs and lands on the GPU pool."""
from __future__ import annotations

from typing import Any

import kubernetes_validate

from lms_operator.api.contract import CompressionSummary, ExitCode, INVALID_DATA
from lms_operator.api.spec import parse_spec
from lms_operator.api.status import job_outcome
from lms_operator.modelrepo.assemble import default_version_key
from lms_operator.resources.job import build_compression_job
from lms_operator.resources.settings import BuildSettings

POOL = {"nodeSelector": {"pool": "gpu"}, "tolerations": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}


def job(compression: dict[str, Any], serving: dict[str, Any] | None = None) -> dict[str, Any]:
    lms = parse_spec({"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService", "metadata": {"name": "m"},
                      "spec": {"model": {"uri": "hf://org/model"}, "compression": compression, **({"serving": serving} if serving else {})}})
    return build_compression_job(lms, default_version_key(lms), BuildSettings())


def test_no_gpu_by_default() -> None:
    pod = job({})["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in pod and "tolerations" not in pod


def test_gpu_job_on_the_serving_gpu_pool() -> None:
    built = job({"resources": {"gpu": 1}}, {"device": "gpu", "resources": {"gpu": 1}, "nodePool": POOL})
    kubernetes_validate.validate(built, "1.36.0", strict=True)
    pod = built["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in pod["tolerations"]


def test_gpu_job_for_a_cpu_service_tolerates_gpu_nodes_only() -> None:
    pod = job({"resources": {"gpu": 2}}, {"nodePool": {"nodeSelector": {"pool": "cpu"}}})["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert "nodeSelector" not in pod  # the CPU pool's selector would keep it off the GPUs
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def _failed_pod(code: int, summary: CompressionSummary) -> list[dict[str, Any]]:
    return [{"metadata": {"creationTimestamp": "2026-12-01T00:00:00Z"},
             "status": {"containerStatuses": [{"state": {"terminated": {"exitCode": code, "message": summary.to_message()}}}]}}]


def test_bad_data_fails_with_reason_invalid_data_and_a_note_reaches_the_message() -> None:
    bad = CompressionSummary(reason=INVALID_DATA, error="spec.compression.data.evaluation: /d/e.jsonl line 3: not valid JSON")
    out = job_outcome({"status": {"conditions": [{"type": "Failed", "status": "True"}]}}, _failed_pod(ExitCode.BAD_INPUT, bad))
    assert (out.state, out.reason) == ("failed", "InvalidData") and "line 3" in out.message
    ok = CompressionSummary(note="magnitude pruning zeroed 30% of the Linear weights ... latency does not improve")
    pods = _failed_pod(0, ok)
    out = job_outcome({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}, pods)
    assert out.state == "published" and "latency does not improve" in out.message
