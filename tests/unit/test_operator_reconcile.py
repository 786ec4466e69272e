"""The reconcile pass step by step, against an in-memory API server double.

The double stores objects and answers get/list/create/apply/patch-status the
way the API server does for these calls (409 on create, generation bump on a
changed spec); the e2e suite runs the same pass against a real control plane.
"""
from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from lms_operator.api import status as st
from lms_operator.api.spec import parse_spec
from lms_operator.modelrepo.assemble import default_version_key
from lms_operator.k8s import errors
from lms_operator.reconcile.context import Context
from lms_operator.reconcile.run import reconcile
from lms_operator.resources import meta
from lms_operator.resources.settings import BuildSettings

ROOT = Path(__file__).resolve().parents[2]
GATE_OK = {"metric": "cosine", "score": 0.9931, "threshold": 0.99, "passed": True}
GATE_BAD = {"metric": "cosine", "score": 0.9612, "threshold": 0.99, "passed": False}


def summary(quality: dict[str, Any]) -> dict[str, Any]:
    return {"original_bytes": 90_000_000, "compressed_bytes": 23_000_000, "size_ratio": 3.91,
            "latency_ms": {"baseline": 290.0, "compressed": 170.0}, "speedup": 1.7, "variant": "int8",
            "quality": quality, "sha256": "b" * 64, "cache_hit": False}


class FakeKube:
    """Objects by (apiVersion, kind, namespace, name); records every write."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str, str]] = []
        self.calls: list[tuple[str, str]] = []

    @staticmethod
    def _key(obj: dict[str, Any]) -> tuple[str, str, str, str]:
        return obj["apiVersion"], obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", kind))
        found = self.objects.get((api_version, kind, namespace, name))
        return copy.deepcopy(found) if found else None

    async def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        label, _, value = selector.partition("=")
        return [copy.deepcopy(o) for (av, k, ns, _), o in self.objects.items()
                if (av, k, ns) == (api_version, kind, namespace) and o["metadata"].get("labels", {}).get(label) == value]

    async def create(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        if self._key(obj) in self.objects:
            return copy.deepcopy(self.objects[self._key(obj)]), False
        stored = copy.deepcopy(obj)
        stored["metadata"].update(generation=1, uid=f"uid-{obj['kind']}-{len(self.writes)}")
        self.objects[self._key(obj)] = stored
        self.writes.append(("create", obj["kind"], obj["metadata"]["name"]))
        return copy.deepcopy(stored), True

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("apply", obj["kind"]))
        old = self.objects.get(self._key(obj))
        stored = copy.deepcopy(obj)
        stored["metadata"]["generation"] = (old["metadata"]["generation"] + (old.get("spec") != obj.get("spec"))
                                            if old else 1)
        stored["metadata"]["uid"] = old["metadata"].get("uid") if old else f"uid-{obj['kind']}-{len(self.writes)}"
        if old is not None:
            stored["status"] = old.get("status", {})
            if old.get("spec") != obj.get("spec"):
                self.writes.append(("update", obj["kind"], obj["metadata"]["name"]))
        else:
            self.writes.append(("create", obj["kind"], obj["metadata"]["name"]))
        self.objects[self._key(obj)] = stored
        return copy.deepcopy(stored)

    async def delete(self, api_version: str, kind: str, namespace: str, name: str, uid: str) -> None:
        self.calls.append(("delete", kind))
        if self.objects.pop((api_version, kind, namespace, name), None) is not None:
            self.writes.append(("delete", kind, name))

    async def patch(self, api_version: str, kind: str, namespace: str, name: str,
                    patch: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch", kind))
        obj = self.objects[(api_version, kind, namespace, name)]
        merged = merge(obj, patch)
        merged["metadata"]["generation"] = obj["metadata"]["generation"] + (merged.get("spec") != obj.get("spec"))
        self.objects[(api_version, kind, namespace, name)] = merged
        self.writes.append(("patch", kind, name))
        return copy.deepcopy(merged)

    async def patch_status(self, api_version: str, kind: str, namespace: str, name: str,
                           status: dict[str, Any]) -> dict[str, Any]:
        obj = self.objects[(api_version, kind, namespace, name)]
        obj["status"] = merge(obj.get("status") or {}, status)
        return copy.deepcopy(obj)


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


NS = "team"


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


def add_lms(kube: FakeKube, manifest: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(manifest)
    body["metadata"].update(namespace=NS, uid="uid-1", generation=body["metadata"].get("generation", 1))
    kube.objects[(body["apiVersion"], body["kind"], NS, body["metadata"]["name"])] = body
    return body


def add_claim(kube: FakeKube) -> None:
    kube.objects[("v1", "PersistentVolumeClaim", NS, "lms-models")] = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "lms-models", "namespace": NS},
        "status": {"phase": "Bound"}}


def run(kube: FakeKube, name: str = "minilm", root: Path | None = None) -> tuple[Any, dict[str, Any]]:
    ctx = Context(kube=kube, settings=BuildSettings(), repository_root=root)  # type: ignore[arg-type]
    body = kube.objects[("serving.lms.dev/v1alpha1", "LargeModelService", NS, name)]
    result = asyncio.run(reconcile(ctx, copy.deepcopy(body)))
    return result, kube.objects[("serving.lms.dev/v1alpha1", "LargeModelService", NS, name)].get("status", {})


def finish_job(kube: FakeKube, key: str, lms_name: str, exit_code: int, quality: dict[str, Any]) -> None:
    job_name = meta.child_name(lms_name, f"compress-{key[:10]}")
    job = kube.objects[("batch/v1", "Job", NS, job_name)]
    job["status"] = {"conditions": [{"type": "Complete" if exit_code == 0 else "Failed", "status": "True"}]}
    kube.objects[("v1", "Pod", NS, job_name + "-x")] = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": job_name + "-x", "namespace": NS,
                                                        "labels": {"job-name": job_name}},
        "status": {"containerStatuses": [{"state": {"terminated": {
            "exitCode": exit_code, "message": json.dumps(summary(quality)), "finishedAt": "2026-01-01T00:00:00Z"}}}]}}


def ready_deployment(kube: FakeKube, name: str = "minilm-triton") -> None:
    dep = kube.objects[("apps/v1", "Deployment", NS, name)]
    dep["status"] = {"observedGeneration": dep["metadata"]["generation"], "replicas": 1, "updatedReplicas": 1,
                     "readyReplicas": 1, "availableReplicas": 1}


def publish(root: Path, key: str, name: str = "minilm", model: bytes = b"onnx bytes") -> Path:
    """A published version folder as `lms compress` leaves it: model, report with its digest, marker."""
    version = root / NS / "lms-models" / NS / name / key
    (version / name / "1").mkdir(parents=True)
    (version / name / "1" / "model.onnx").write_bytes(model)
    (version / "report.json").write_text(json.dumps({**summary(GATE_OK), "sha256": hashlib.sha256(model).hexdigest()}))
    (version / ".complete").write_text("")
    return version


def key_of(manifest: dict[str, Any]) -> str:
    m = copy.deepcopy(manifest)
    m["metadata"]["namespace"] = NS
    return default_version_key(parse_spec(m))


def kinds(kube: FakeKube) -> set[str]:
    return {k for (_, k, _, _) in kube.objects}


def test_missing_claim_waits_without_creating_anything(kube: FakeKube, minilm_manifest: dict[str, Any]) -> None:
    add_lms(kube, minilm_manifest)
    result, status = run(kube)
    assert result.requeue_after and not result.permanent
    assert status["phase"] == st.PENDING
    repo = next(c for c in status["conditions"] if c["type"] == st.REPOSITORY_READY)
    assert (repo["status"], repo["reason"]) == ("False", st.CLAIM_NOT_FOUND)
    assert kube.writes == []


def test_full_path_job_then_serving_then_ready(kube: FakeKube, minilm_manifest: dict[str, Any]) -> None:
    add_lms(kube, minilm_manifest)
    add_claim(kube)
    key = key_of(minilm_manifest)
    result, status = run(kube)
    assert status["phase"] == st.COMPRESSING and result.requeue_after
    assert kube.writes == [("create", "Job", meta.child_name("minilm", f"compress-{key[:10]}"))]
    job = next(o for (_, k, _, _), o in kube.objects.items() if k == "Job")
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    run(kube)
    assert len(kube.writes) == 1  # no duplicate Job on the next pass

    finish_job(kube, key, "minilm", 0, GATE_OK)
    result, status = run(kube)
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds(kube)
    assert status["phase"] == st.DEPLOYING
    assert status["compression"]["ratio"] == 3.91 and status["compression"]["score"] == 0.9931
    assert status["compression"]["version"] == key

    ready_deployment(kube)
    result, status = run(kube)
    assert status["phase"] == st.READY and result.requeue_after is None and not result.permanent
    assert status["modelVersion"] == key and status["readyReplicas"] == 1
    assert status["endpoint"]["http"] == f"http://minilm-triton.{NS}.svc:8000"
    writes = len(kube.writes)
    run(kube)
    assert len(kube.writes) == writes  # unchanged spec: nothing changes


def test_gate_failure_on_update_keeps_the_old_version(kube: FakeKube, minilm_manifest: dict[str, Any]) -> None:
    body = add_lms(kube, minilm_manifest)
    add_claim(kube)
    k1 = key_of(minilm_manifest)
    run(kube)
    finish_job(kube, k1, "minilm", 0, GATE_OK)
    run(kube)
    ready_deployment(kube)
    run(kube)
    deployment_before = copy.deepcopy(kube.objects[("apps/v1", "Deployment", NS, "minilm-triton")]["spec"])

    body["spec"]["compression"]["quantization"]["perChannel"] = False
    body["metadata"]["generation"] = 2
    k2 = key_of(body)
    assert k2 != k1
    run(kube)
    finish_job(kube, k2, "minilm", 3, GATE_BAD)
    result, status = run(kube)
    assert result.permanent
    assert status["phase"] == st.DEGRADED and status["modelVersion"] == k1
    by_type = {c["type"]: c for c in status["conditions"]}
    assert by_type[st.READY]["status"] == "True"
    assert by_type[st.QUALITY_GATE_PASSED]["status"] == "False"
    assert "0.9612" in by_type[st.QUALITY_GATE_PASSED]["message"]
    assert kube.objects[("apps/v1", "Deployment", NS, "minilm-triton")]["spec"] == deployment_before


def test_first_gate_failure_serves_nothing(kube: FakeKube, minilm_manifest: dict[str, Any]) -> None:
    add_lms(kube, minilm_manifest)
    add_claim(kube)
    run(kube)
    finish_job(kube, key_of(minilm_manifest), "minilm", 3, GATE_BAD)
    result, status = run(kube)
    assert result.permanent and status["phase"] == st.FAILED
    assert "Deployment" not in kinds(kube)
    assert status["compression"]["passed"] is False and status["compression"]["score"] == 0.9612


def test_cache_hit_in_repository_needs_no_job(kube: FakeKube, minilm_manifest: dict[str, Any],
                                              tmp_path: Path) -> None:
    add_lms(kube, minilm_manifest)
    add_claim(kube)
    publish(tmp_path, key_of(minilm_manifest))
    _, status = run(kube, root=tmp_path)
    assert "Job" not in kinds(kube) and "Deployment" in kinds(kube)
    assert status["compression"]["ratio"] == 3.91
    compressed = next(c for c in status["conditions"] if c["type"] == st.COMPRESSED)
    assert compressed["reason"] == st.CACHE_HIT


def test_incomplete_version_is_not_a_cache_hit(kube: FakeKube, minilm_manifest: dict[str, Any],
                                               tmp_path: Path) -> None:
    add_lms(kube, minilm_manifest)
    add_claim(kube)
    (tmp_path / NS / "lms-models" / NS / "minilm" / key_of(minilm_manifest)).mkdir(parents=True)
    run(kube, root=tmp_path)
    assert "Job" in kinds(kube)


def test_invalid_spec_is_permanent_and_names_the_field(kube: FakeKube, minilm_manifest: dict[str, Any]) -> None:
    minilm_manifest["spec"]["serving"]["device"] = "gpu"
    add_lms(kube, minilm_manifest)
    result, status = run(kube)
    assert result.permanent and status["phase"] == st.FAILED
    assert "spec.serving.resources.gpu" in status["message"]
    assert kube.writes == []


def test_api_errors_map_to_types() -> None:
    body = json.dumps({"kind": "Status", "reason": "AlreadyExists", "message": "jobs.batch \"x\" already exists"})
    err = errors.from_response(409, body.encode())
    assert isinstance(err, errors.Conflict) and err.reason == "AlreadyExists"
    assert isinstance(errors.from_response(429, b"slow down"), errors.TooManyRequests)
    assert type(errors.from_response(500, b"oops")) is errors.ApiError


def serve_ready(kube: FakeKube, manifest: dict[str, Any], ctx: Context) -> None:
    """Take minilm to Ready with one context (one operator process)."""
    add_lms(kube, manifest)
    add_claim(kube)
    body = lambda: copy.deepcopy(kube.objects[("serving.lms.dev/v1alpha1", "LargeModelService", NS, "minilm")])
    asyncio.run(reconcile(ctx, body()))
    finish_job(kube, key_of(manifest), "minilm", 0, GATE_OK)
    asyncio.run(reconcile(ctx, body()))
    ready_deployment(kube)
    asyncio.run(reconcile(ctx, body()))


def pass_calls(kube: FakeKube, ctx: Context) -> list[tuple[str, str]]:
    kube.calls.clear()
    asyncio.run(reconcile(ctx, copy.deepcopy(kube.objects[("serving.lms.dev/v1alpha1", "LargeModelService", NS,
                                                            "minilm")])))
    return list(kube.calls)


def test_settled_pass_only_reads_the_deployment(kube: FakeKube, minilm_manifest: dict[str, Any]) -> None:
    ctx = Context(kube=kube, settings=BuildSettings())  # type: ignore[arg-type]
    serve_ready(kube, minilm_manifest, ctx)
    # no apply, claim remembered; without repository access the finished Job is the version's evidence
    assert pass_calls(kube, ctx) == [("get", "Job"), ("get", "Deployment")]
    fresh = Context(kube=kube, settings=BuildSettings())  # type: ignore[arg-type]
    calls = pass_calls(kube, fresh)  # a restarted process trusts the stamped Deployment
    assert not [c for c in calls if c[0] == "apply"] and ("get", "PersistentVolumeClaim") in calls


def test_deleted_or_edited_deployment_is_applied_again(kube: FakeKube, minilm_manifest: dict[str, Any]) -> None:
    ctx = Context(kube=kube, settings=BuildSettings())  # type: ignore[arg-type]
    serve_ready(kube, minilm_manifest, ctx)
    dep_key = ("apps/v1", "Deployment", NS, "minilm-triton")
    rendered = copy.deepcopy(kube.objects[dep_key]["spec"])
    kube.objects[dep_key]["spec"]["template"]["spec"]["containers"][0]["image"] = "edited:1"
    kube.objects[dep_key]["metadata"]["generation"] += 1
    calls = pass_calls(kube, ctx)
    assert [k for v, k in calls if v == "apply"] == ["Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                                                     "Deployment"]
    assert kube.objects[dep_key]["spec"] == rendered
    del kube.objects[dep_key]
    pass_calls(kube, ctx)
    assert kube.objects[dep_key]["spec"] == rendered


def test_spec_change_applies_the_new_bodies(kube: FakeKube, minilm_manifest: dict[str, Any]) -> None:
    ctx = Context(kube=kube, settings=BuildSettings())  # type: ignore[arg-type]
    serve_ready(kube, minilm_manifest, ctx)
    body = kube.objects[("serving.lms.dev/v1alpha1", "LargeModelService", NS, "minilm")]
    body["spec"]["compression"]["quantization"]["perChannel"] = False
    body["metadata"]["generation"] = 2
    calls = pass_calls(kube, ctx)
    # the new key needs a new compression Job first; the Deployment keeps the old version untouched
    assert ("apply", "Deployment") not in calls
    finish_job(kube, key_of(body), "minilm", 0, GATE_OK)
    calls = pass_calls(kube, ctx)
    assert ("apply", "Deployment") in calls
    labels = kube.objects[("apps/v1", "Deployment", NS, "minilm-triton")]["spec"]["template"]["metadata"]["labels"]
    assert labels[meta.VERSION_LABEL] == key_of(body)


def test_deploying_waits_for_the_deployment_watch_not_a_timer(kube: FakeKube,
                                                             minilm_manifest: dict[str, Any]) -> None:
    add_lms(kube, minilm_manifest)
    add_claim(kube)
    run(kube)
    finish_job(kube, key_of(minilm_manifest), "minilm", 0, GATE_OK)
    result, status = run(kube)
    assert status["phase"] == st.DEPLOYING
    assert result.requeue_after is None and not result.permanent


def test_result_carries_the_patched_body_only_when_status_was_written(kube: FakeKube,
                                                                      minilm_manifest: dict[str, Any]) -> None:
    add_lms(kube, minilm_manifest)
    add_claim(kube)
    result, status = run(kube)
    assert result.body is not None and result.body["status"] == status
    result, _ = run(kube)
    assert result.body is None  # nothing changed, nothing written


def test_settled_pass_with_a_watched_deployment_makes_no_request(kube: FakeKube, minilm_manifest: dict[str, Any]) -> None:
    ctx = Context(kube=kube, settings=BuildSettings())  # type: ignore[arg-type]
    serve_ready(kube, minilm_manifest, ctx)
    deployment = kube.objects[("apps/v1", "Deployment", NS, meta.server_name(parse_spec(minilm_manifest)))]
    ctx.watched["Deployment"].offer(f"{NS}/{deployment['metadata']['name']}", deployment)
    job = next(o for (_, k, _, _), o in kube.objects.items() if k == "Job")
    ctx.watched["Job"].offer(f"{NS}/{job['metadata']['name']}", job)
    assert pass_calls(kube, ctx) == []
    ctx.watched["Deployment"].drop(f"{NS}/{deployment['metadata']['name']}", deployment)
    assert pass_calls(kube, ctx) == [("get", "Deployment")]  # deleted on the watch: the API decides


def test_cache_hit_reads_no_job_and_a_watched_job_is_not_read_again(kube: FakeKube, minilm_manifest: dict[str, Any],
                                                                   tmp_path: Path) -> None:
    add_lms(kube, minilm_manifest)
    add_claim(kube)
    key = key_of(minilm_manifest)
    ctx = Context(kube=kube, settings=BuildSettings(), repository_root=tmp_path)  # type: ignore[arg-type]
    calls = pass_calls(kube, ctx)
    assert ("get", "Job") in calls and kube.writes[0][:2] == ("create", "Job")  # nothing published: a Job
    job_name = meta.child_name("minilm", f"compress-{key[:10]}")
    ctx.watched["Job"].offer(f"{NS}/{job_name}", kube.objects[("batch/v1", "Job", NS, job_name)])
    assert ("get", "Job") not in pass_calls(kube, ctx)
    publish(tmp_path, key)
    ctx.watched["Job"].drop(f"{NS}/{job_name}")
    assert ("get", "Job") not in pass_calls(kube, ctx)  # published: the repository answers


def test_a_spec_is_validated_once_per_generation(minilm_manifest: dict[str, Any]) -> None:
    from lms_operator.api.spec import SpecError
    from lms_operator.reconcile.run import parsed_spec

    ctx = Context(kube=None, settings=BuildSettings())  # type: ignore[arg-type]
    body = copy.deepcopy(minilm_manifest)
    body["metadata"].update(namespace=NS, uid="uid-1", generation=1)
    first = parsed_spec(ctx, body)
    assert parsed_spec(ctx, copy.deepcopy(body)) is first and len(ctx.specs) == 1
    body["metadata"]["generation"] = 2
    body["spec"]["serving"]["maxBatchSize"] = 7
    assert parsed_spec(ctx, body).spec.serving.max_batch_size == 7
    body["metadata"]["generation"] = 3
    body["spec"]["serving"]["device"] = "gpu"  # invalid without resources.gpu: raised on every pass, never kept
    for _ in range(2):
        with pytest.raises(SpecError):
            parsed_spec(ctx, body)
    assert set(ctx.specs) == {("uid-1", 1), ("uid-1", 2)}


def test_a_wiped_or_altered_version_is_rebuilt_by_a_new_job(kube: FakeKube, minilm_manifest: dict[str, Any],
                                                             tmp_path: Path) -> None:
    add_lms(kube, minilm_manifest)
    add_claim(kube)
    key = key_of(minilm_manifest)
    job_name = meta.child_name("minilm", f"compress-{key[:10]}")
    ctx = Context(kube=kube, settings=BuildSettings(), repository_root=tmp_path)  # type: ignore[arg-type]
    pass_calls(kube, ctx)
    finish_job(kube, key, "minilm", 0, GATE_OK)
    version = publish(tmp_path, key)
    assert ("apply", "Deployment") in pass_calls(kube, ctx)
    ready_deployment(kube)
    pass_calls(kube, ctx)
    assert kube.objects[("serving.lms.dev/v1alpha1", "LargeModelService", NS, "minilm")]["status"]["phase"] == st.READY

    for damage in ("wipe", "alter"):
        if damage == "wipe":
            shutil.rmtree(version)
        else:
            (version / "minilm" / "1" / "model.onnx").write_bytes(b"tampered")
        kube.writes.clear()
        pass_calls(kube, ctx)
        assert kube.writes[:2] == [("delete", "Job", job_name), ("create", "Job", job_name)], damage
        status = kube.objects[("serving.lms.dev/v1alpha1", "LargeModelService", NS, "minilm")]["status"]
        compressed = next(c for c in status["conditions"] if c["type"] == st.COMPRESSED)
        assert compressed["reason"] == st.REBUILDING and status["phase"] == st.COMPRESSING, damage
        ready = next(c for c in status["conditions"] if c["type"] == st.READY)
        assert ready["status"] == "True", damage  # the running pods keep serving meanwhile
        if version.exists():
            shutil.rmtree(version)
        finish_job(kube, key, "minilm", 0, GATE_OK)
        version = publish(tmp_path, key)
        pass_calls(kube, ctx)
        assert kube.objects[("serving.lms.dev/v1alpha1", "LargeModelService", NS, "minilm")]["status"]["phase"] == st.READY


def test_an_operator_upgrade_keeps_every_version_key(minilm_manifest: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The package version is not part of the key or of any rendered body: upgrading recompresses nothing."""
    import lms_operator
    from lms_operator.resources.render import serving_objects

    lms = parse_spec(minilm_manifest)
    key = default_version_key(lms)
    before = serving_objects(lms, key, BuildSettings())
    monkeypatch.setattr(lms_operator, "__version__", "99.0.0")
    assert default_version_key(parse_spec(minilm_manifest)) == key
    assert serving_objects(lms, key, BuildSettings()) == before


def test_the_format_version_is_part_of_the_key(minilm_manifest: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from lms_operator.api import version

    key = default_version_key(parse_spec(minilm_manifest))
    monkeypatch.setattr(version, "FORMAT_VERSION", 999)
    assert default_version_key(parse_spec(minilm_manifest)) != key


# ---- autoscaling: KEDA arriving and leaving, the other kind deleted, scale to zero -----------------

def queue_latency_lms(kube: FakeKube, manifest: dict[str, Any], min_replicas: int = 0) -> str:
    manifest["spec"]["autoscaling"] = {"minReplicas": min_replicas, "maxReplicas": 3, "metric": "queueLatency",
                                       "target": 50000, "cooldownSeconds": 30, "pollingSeconds": 5}
    add_lms(kube, manifest)
    add_claim(kube)
    return key_of(manifest)


def pass_with(kube: FakeKube, keda: bool) -> tuple[Any, dict[str, Any]]:
    ctx = Context(kube=kube, settings=BuildSettings(keda=keda))  # type: ignore[arg-type]
    body = kube.objects[("serving.lms.dev/v1alpha1", "LargeModelService", NS, "minilm")]
    result = asyncio.run(reconcile(ctx, copy.deepcopy(body)))
    return result, kube.objects[("serving.lms.dev/v1alpha1", "LargeModelService", NS, "minilm")].get("status", {})


def condition(status: dict[str, Any], kind: str) -> tuple[str, str]:
    found = next(c for c in status["conditions"] if c["type"] == kind)
    return found["status"], found["reason"]


HPA = ("autoscaling/v2", "HorizontalPodAutoscaler", NS, "minilm-triton")
SCALED = ("keda.sh/v1alpha1", "ScaledObject", NS, "minilm-triton")
DEPLOYMENT = ("apps/v1", "Deployment", NS, "minilm-triton")


def test_without_keda_a_triton_metric_scales_on_cpu_and_warns_once(kube: FakeKube,
                                                                      minilm_manifest: dict[str, Any]) -> None:
    key = queue_latency_lms(kube, minilm_manifest)
    result, status = pass_with(kube, keda=False)
    warnings = [e for e in result.events if e.type == "Warning" and e.reason == st.KEDA_NOT_INSTALLED]
    assert len(warnings) == 1 and "KEDA is not installed; scaling on CPU until it is" in warnings[0].message
    assert condition(status, st.AUTOSCALING) == ("False", st.KEDA_NOT_INSTALLED)
    finish_job(kube, key, "minilm", 0, GATE_OK)
    result, status = pass_with(kube, keda=False)
    assert not [e for e in result.events if e.reason == st.KEDA_NOT_INSTALLED]  # said once, not per pass
    hpa = kube.objects[HPA]
    assert hpa["spec"]["minReplicas"] == 1 and hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "replicas" not in kube.objects[DEPLOYMENT]["spec"]
    assert SCALED not in kube.objects


def test_keda_arriving_replaces_the_hpa_and_leaving_restores_it(kube: FakeKube,
                                                                 minilm_manifest: dict[str, Any]) -> None:
    key = queue_latency_lms(kube, minilm_manifest)
    pass_with(kube, keda=False)
    finish_job(kube, key, "minilm", 0, GATE_OK)
    pass_with(kube, keda=False)
    ready_deployment(kube)
    pass_with(kube, keda=False)
    assert HPA in kube.objects

    result, status = pass_with(kube, keda=True)  # KEDA installed
    assert HPA not in kube.objects and ("delete", "HorizontalPodAutoscaler", "minilm-triton") in kube.writes
    assert kube.objects[SCALED]["spec"]["minReplicaCount"] == 0
    assert condition(status, st.AUTOSCALING) == ("True", st.KEDA_SCALING)
    assert {"AutoscalerReplaced", "AutoscalerChanged"} <= {e.reason for e in result.events}
    assert kube.calls.index(("delete", "HorizontalPodAutoscaler")) < kube.calls.index(("apply", "ScaledObject"))

    # KEDA scales the idle model to zero: still Ready, not an outage.
    deployment = kube.objects[DEPLOYMENT]
    deployment["spec"]["replicas"] = 0
    deployment["status"] = {"observedGeneration": deployment["metadata"]["generation"], "replicas": 0}
    _, status = pass_with(kube, keda=True)
    assert status["phase"] == st.READY and condition(status, st.READY) == ("True", st.SCALED_TO_ZERO)
    assert status["readyReplicas"] == 0 and status["modelVersion"] == key

    # KEDA removed (its ScaledObjects go with its CRD): an HPA again, and the Deployment woken from zero.
    del kube.objects[SCALED]
    result, status = pass_with(kube, keda=False)
    assert HPA in kube.objects and ("patch", "Deployment", "minilm-triton") in kube.writes
    assert {e.reason for e in result.events} >= {st.KEDA_NOT_INSTALLED, "ScaledUpFromZero"}
    assert condition(status, st.AUTOSCALING) == ("False", st.KEDA_NOT_INSTALLED)


def test_switching_to_cpu_deletes_only_our_scaled_object(kube: FakeKube, minilm_manifest: dict[str, Any]) -> None:
    body = add_lms(kube, minilm_manifest)
    add_claim(kube)
    finish_job_key = key_of(minilm_manifest)
    pass_with(kube, keda=True)
    finish_job(kube, finish_job_key, "minilm", 0, GATE_OK)
    foreign = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
               "metadata": {"name": "minilm-triton", "namespace": NS, "uid": "someone-else"}, "spec": {}}
    kube.objects[SCALED] = foreign
    pass_with(kube, keda=True)
    assert kube.objects[SCALED] == foreign and HPA in kube.objects  # not ours: left alone

    # Ours: a queueLatency resource's ScaledObject goes when the spec switches to cpu.
    del kube.objects[SCALED]
    body["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 3, "metric": "queueLatency", "target": 50000}
    body["metadata"]["generation"] = 2
    pass_with(kube, keda=True)
    assert SCALED in kube.objects and HPA not in kube.objects
    keda_hpa = ("autoscaling/v2", "HorizontalPodAutoscaler", NS, "keda-hpa-minilm-triton")
    kube.objects[keda_hpa] = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                              "metadata": {"name": "keda-hpa-minilm-triton", "namespace": NS, "uid": "keda"}}
    body["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 3, "metric": "cpu", "target": 70}
    body["metadata"]["generation"] = 3
    pass_with(kube, keda=True)
    assert SCALED not in kube.objects and HPA in kube.objects
    assert keda_hpa in kube.objects  # KEDA's own HPA is KEDA's to remove
