"""Pods for s3:// sources and repositories: credentials only by reference, no repository volume,
Triton pointed straight at the bucket."""
from __future__ import annotations

from typing import Any

import kubernetes_validate

from lms_operator.api.spec import parse_spec
from lms_operator.modelrepo.assemble import default_version_key
from lms_operator.resources import meta
from lms_operator.resources.job import build_compression_job
from lms_operator.resources.render import all_objects
from lms_operator.resources.server import build_deployment
from lms_operator.resources.settings import BuildSettings

SETTINGS = BuildSettings()
OWNER = meta.owner_reference("serving.lms.dev/v1alpha1", "LargeModelService", "minilm", "1234")


def lms(model: dict[str, Any] | None = None, repository: dict[str, Any] | None = None) -> Any:
    return parse_spec({"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService",
                       "metadata": {"name": "minilm", "namespace": "team"},
                       "spec": {"model": model or {"uri": "s3://models/minilm", "secretRef": {"name": "src"}},
                                "repository": repository or {"uri": "s3://lms/repo", "secretRef": {"name": "lms-s3"}}}})


def container(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]["containers"][0]


def refs(c: dict[str, Any]) -> dict[str, tuple[str, str, bool]]:
    out = {}
    for e in c.get("env", []):
        if "valueFrom" in e:
            r = e["valueFrom"]["secretKeyRef"]
            out[e["name"]] = (r["name"], r["key"], r["optional"])
    return out


def test_s3_job_gets_both_secrets_by_reference_and_no_repository_volume() -> None:
    spec = lms()
    key = default_version_key(spec)
    job = build_compression_job(spec, key, SETTINGS, OWNER, protect=("old1", key))
    c = container(job)
    env = refs(c)
    assert env["AWS_ACCESS_KEY_ID"] == ("lms-s3", "AWS_ACCESS_KEY_ID", True)
    assert env["AWS_ENDPOINT_URL"] == ("lms-s3", "AWS_ENDPOINT_URL", True)
    assert env["LMS_SOURCE_AWS_SECRET_ACCESS_KEY"] == ("src", "AWS_SECRET_ACCESS_KEY", True)
    assert not any("value" in e and "SECRET" in e["name"] for e in c["env"])
    assert "HF_HUB_OFFLINE" not in {e["name"] for e in c["env"]}
    args = c["args"]
    assert args[args.index("--out") + 1] == "s3://lms/repo"
    assert "--protect=old1" in args and f"--protect={key}" not in args
    assert all(v["name"] != "models" for v in job["spec"]["template"]["spec"]["volumes"])
    kubernetes_validate.validate(job, "1.36.0", strict=True)


def test_hf_source_gets_hf_token_and_claim_repository_keeps_its_volume() -> None:
    spec = lms(model={"uri": "hf://org/name@v1", "secretRef": {"name": "hf"}}, repository={"pvc": "lms-models"})
    job = build_compression_job(spec, default_version_key(spec), SETTINGS, OWNER)
    env = refs(container(job))
    assert env == {"HF_TOKEN": ("hf", "HF_TOKEN", True), "HF_ENDPOINT": ("hf", "HF_ENDPOINT", True)}
    assert any(v["name"] == "models" for v in job["spec"]["template"]["spec"]["volumes"])
    args = container(job)["args"]
    assert args[args.index("--out") + 1] == SETTINGS.repository_mount


def test_default_secret_fills_in_for_resources_that_name_none() -> None:
    spec = lms(model={"uri": "s3://models/minilm"}, repository={"uri": "s3://lms/repo"})
    settings = BuildSettings(default_s3_secret="platform-s3")
    env = refs(container(build_compression_job(spec, default_version_key(spec), settings, OWNER)))
    assert env["AWS_ACCESS_KEY_ID"][0] == "platform-s3" and env["LMS_SOURCE_AWS_ACCESS_KEY_ID"][0] == "platform-s3"
    assert refs(container(build_compression_job(spec, default_version_key(spec), SETTINGS, OWNER))) == {}


def test_triton_reads_the_bucket_with_the_endpoint_from_the_secret() -> None:
    spec = lms()
    key = default_version_key(spec)
    dep = build_deployment(spec, key, SETTINGS, OWNER)
    c = container(dep)
    assert f"--model-repository=s3://$(AWS_ENDPOINT_URL)/lms/repo/team/minilm/{key}" in c["args"]
    env = refs(c)
    assert env["AWS_ENDPOINT_URL"] == ("lms-s3", "AWS_ENDPOINT_URL", False)
    assert env["AWS_SECRET_ACCESS_KEY"] == ("lms-s3", "AWS_SECRET_ACCESS_KEY", False)
    assert env["AWS_REGION"] == ("lms-s3", "AWS_REGION", True)
    assert all(m["name"] != "models" for m in c["volumeMounts"])
    for obj in all_objects(spec, SETTINGS, OWNER):
        if not obj["apiVersion"].startswith("keda.sh"):
            kubernetes_validate.validate(obj, "1.36.0", strict=True)
