"""Object storage against a real S3 server (versitygw from `make tools`, posix backend).

Publishing writes the manifest last and a version counts only with a matching manifest; a
corrupted manifest or a missing file does not count; retention keeps the newest and the
protected versions; an s3:// model source is downloaded (ONNX external data included) and
checked against its sha256 pin; wrong keys and missing objects give their reasons; and a
local Triton loads a published version straight from s3://host:port/bucket/prefix.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lms_operator.compression.digest import path_sha256
from lms_operator.compression.errors import InputError
from lms_operator.compression.source import resolve_model
from lms_operator.storage import s3
from lms_operator.storage.errors import StorageAccessDenied
from lms_operator.storage.manifest import MANIFEST_FILE
from lms_operator.storage.repository import (apply_retention, counted_version, delete_version, publish,
                                             published_versions, verify_digests, version_location)
from lms_operator.storage.uri import S3Location, triton_repository
from lms_harness.cluster import tools_bin
from lms_harness.s3server import start_s3, stop_s3

pytestmark = [pytest.mark.timeout(600), pytest.mark.tools]  # versitygw
MODEL = "tiny"


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    folder = tmp_path_factory.mktemp("s3")
    env = start_s3(folder, tools_bin(), ("lms", "models"))
    try:
        yield env
    finally:
        stop_s3(folder)


@pytest.fixture
def cli(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    return s3.client()


def tiny_onnx(path: Path, external: bool = False) -> Path:
    """A 4 -> 3 linear classifier (input "input", output "logits"), optionally with external data."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, name="w")
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["logits"])], "tiny",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, location=path.name + ".data", size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return path


def tiny_version(root: Path, key: str, empty_folder: bool = False) -> Path:
    """A Triton repository for the tiny model, laid out as the pipeline publishes it (with an empty
    folder, like an ensemble's version folder, when asked)."""
    from lms_operator.api.spec import parse_spec
    from lms_operator.modelrepo.config import TensorSpec, build_model_config, render_config

    lms = parse_spec({"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService", "metadata": {"name": MODEL},
                      "spec": {"model": {"uri": "file:///tiny.onnx", "format": "onnx", "task": "tabular-classification"},
                               "compression": {"qualityGate": {"metric": "agreement"}},
                               "serving": {"resources": {"cpu": "1", "memory": "1Gi"}, "maxBatchSize": 8}}})
    version = root / key
    tiny_onnx(version / MODEL / "1" / "model.onnx")
    config = build_model_config(MODEL, [TensorSpec("input", "TYPE_FP32", [4])], [TensorSpec("logits", "TYPE_FP32", [3])],
                                lms.spec.serving)
    (version / MODEL / "config.pbtxt").write_text(render_config(config))
    (version / "report.json").write_text('{"sha256": "x"}\n')
    (version / ".complete").touch()
    if empty_folder:
        (version / f"{MODEL}-text" / "1").mkdir(parents=True)
    return version


REPO = S3Location("lms", "repo")


def test_publish_writes_a_version_that_counts_and_verifies(cli: Any, tmp_path: Path) -> None:
    loc = version_location(REPO, "ns", "pub", "k1")
    assert counted_version(cli, loc, "k1") == (None, "no manifest")
    manifest = publish(cli, tiny_version(tmp_path, "k1", empty_folder=True), loc, "k1", {"variant": "int8"})
    keys = sorted(o.key for o in s3.list_objects(cli, loc))
    assert keys == sorted(f"repo/ns/pub/k1/{p}" for p in (MANIFEST_FILE, f"{MODEL}/1/model.onnx",
                                                          f"{MODEL}/config.pbtxt", "report.json", f"{MODEL}-text/1/"))
    delimited = cli.list_objects_v2(Bucket="lms", Prefix=f"repo/ns/pub/k1/{MODEL}-text/", Delimiter="/")
    assert [p["Prefix"] for p in delimited.get("CommonPrefixes", [])] == [f"repo/ns/pub/k1/{MODEL}-text/1/"]
    found, why = counted_version(cli, loc, "k1")
    assert found == manifest and why == ""
    assert found.summary == {"variant": "int8"}
    verify_digests(cli, loc, found)
    assert counted_version(cli, loc, "other-key")[0] is None  # a manifest for another version does not count


def test_corrupted_manifest_or_missing_file_does_not_count(cli: Any, tmp_path: Path) -> None:
    loc = version_location(REPO, "ns", "bad", "k1")
    publish(cli, tiny_version(tmp_path, "k1"), loc, "k1", {})
    model_key = loc.child(MODEL, "1", "model.onnx").key
    manifest_key = loc.child(MANIFEST_FILE).key
    good = s3.get_bytes(cli, "lms", manifest_key)
    assert good is not None
    s3.put_bytes(cli, "lms", manifest_key, good[: len(good) // 2])  # truncated, as by a killed writer
    manifest, why = counted_version(cli, loc, "k1")
    assert manifest is None and "not valid JSON" in why
    s3.put_bytes(cli, "lms", manifest_key, good)
    s3.delete_keys(cli, "lms", [model_key])
    manifest, why = counted_version(cli, loc, "k1")
    assert manifest is None and "model.onnx is missing" in why
    # Same size, other bytes: the listing passes, the digest check (the Job's) does not.
    original = (tmp_path / "k1" / MODEL / "1" / "model.onnx").read_bytes()
    s3.put_bytes(cli, "lms", model_key, bytes(reversed(original)), "application/octet-stream")
    manifest, _ = counted_version(cli, loc, "k1")
    assert manifest is not None
    with pytest.raises(Exception, match="does not match the manifest"):
        verify_digests(cli, loc, manifest)
    # A new publish over the leftovers replaces them and counts again.
    publish(cli, tiny_version(tmp_path / "again", "k1"), loc, "k1", {})
    verify_digests(cli, loc, counted_version(cli, loc, "k1")[0])


def test_retention_keeps_newest_and_protected_versions(cli: Any, tmp_path: Path) -> None:
    resource = REPO.child("ns", "keep")
    for key in ("v1", "v2", "v3", "v4"):
        publish(cli, tiny_version(tmp_path / key, key), resource.child(key), key, {})
        time.sleep(1.1)  # distinct LastModified seconds
    assert sorted(published_versions(cli, resource)) == ["v1", "v2", "v3", "v4"]
    assert apply_retention(cli, resource, 2, protected=["v1"]) == ["v2"]
    assert sorted(published_versions(cli, resource)) == ["v1", "v3", "v4"]
    assert s3.list_objects(cli, resource.child("v2")) == []
    delete_version(cli, resource.child("v1"))
    assert sorted(published_versions(cli, resource)) == ["v3", "v4"]


def test_s3_model_sources_with_sha256_pin(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          s3_env: dict[str, str]) -> None:
    single = tiny_onnx(tmp_path / "single" / "model.onnx", external=True)
    folder = tmp_path / "folder"
    tiny_onnx(folder / "model.onnx")
    (folder / "config.json").write_text("{}")
    for path in (single, single.with_name("model.onnx.data")):
        s3.upload(cli, path, "models", f"tiny/{path.name}")
    for path in sorted(folder.iterdir()):
        s3.upload(cli, path, "models", f"folder/{path.name}")
    s3.upload(cli, single, "models", "folder-other/model.onnx")  # shares the prefix text, not the folder

    pin = path_sha256(single)
    assert pin != hashlib.sha256(single.read_bytes()).hexdigest()  # the external data file is covered too
    got = resolve_model("s3://models/tiny/model.onnx", pin, None, None)
    assert sorted(p.name for p in got.path.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
    got = resolve_model("s3://models/folder", path_sha256(folder), None, None)
    assert sorted(p.name for p in got.path.iterdir()) == ["config.json", "model.onnx"]

    with pytest.raises(InputError, match="^spec.model.sha256"):
        resolve_model("s3://models/tiny/model.onnx", "0" * 64, None, None)
    with pytest.raises(InputError, match="s3://models/nothing"):
        resolve_model("s3://models/nothing", None, None, None)
    # The source's own Secret (LMS_SOURCE_ prefix), here with wrong keys.
    monkeypatch.setenv("LMS_SOURCE_AWS_ACCESS_KEY_ID", "wrong")
    monkeypatch.setenv("LMS_SOURCE_AWS_SECRET_ACCESS_KEY", "wrong")
    monkeypatch.setenv("LMS_SOURCE_AWS_ENDPOINT_URL", s3_env["AWS_ENDPOINT_URL"])
    with pytest.raises(InputError, match="bucket 'models'") as err:
        resolve_model("s3://models/tiny/model.onnx", pin, None, None)
    assert err.value.exit_code == 2


def test_wrong_repository_keys_are_access_denied(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    bad = s3.client("X_", {"X_AWS_ACCESS_KEY_ID": "nobody", "X_AWS_SECRET_ACCESS_KEY": "nothing",
                           "X_AWS_ENDPOINT_URL": s3_env["AWS_ENDPOINT_URL"]})
    with pytest.raises(StorageAccessDenied, match="bucket 'lms', key 'repo/ns/x/k/manifest.json'"):
        counted_version(bad, version_location(REPO, "ns", "x", "k"), "k")
    down = s3.client("X_", {"X_AWS_ACCESS_KEY_ID": "a", "X_AWS_SECRET_ACCESS_KEY": "b",
                            "X_AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    with pytest.raises(Exception) as err:
        s3.list_objects(down, REPO)
    assert not getattr(err.value, "deterministic", True)  # an unreachable server is retried, not failed


@pytest.mark.slow
def test_local_triton_loads_a_version_from_s3(cli: Any, s3_env: dict[str, str], tmp_path: Path) -> None:
    import onnxruntime as ort

    from lms_operator.serving.client import Client
    from lms_operator.serving.triton import TritonProcess, free_port, server_args

    loc = version_location(REPO, "ns", "served", "k1")
    version = tiny_version(tmp_path, "k1")
    publish(cli, version, loc, "k1", {})
    repository = triton_repository(s3_env["AWS_ENDPOINT_URL"], loc)
    assert repository.startswith("s3://http://127.0.0.1:")
    env_before = dict(os.environ)
    os.environ.update(s3_env)  # Triton takes the keys from its environment, as from the Secret in a pod
    try:
        process = TritonProcess(server_args(Path("/unused"), free_port(), free_port(), free_port()),
                                log_path=tmp_path / "triton.log")
        process.triton_args[0] = f"--model-repository={repository}"
        process.start()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    try:
        process.wait_ready(MODEL, timeout=180)
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        with Client("http", f"127.0.0.1:{process.http_port}") as client:
            served = client.infer(MODEL, {"input": x})["logits"]
        session = ort.InferenceSession(str(version / MODEL / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        assert np.allclose(served, session.run(["logits"], {"input": x})[0], atol=1e-5)
    finally:
        process.stop()


def test_operator_reader_finds_versions_by_manifest_only_with_its_own_keys(cli: Any, s3_env: dict[str, str],
                                                                          tmp_path: Path) -> None:
    import asyncio

    from lms_operator.api.spec import parse_spec
    from lms_operator.reconcile.objectstore import ObjectStoreReader

    lms = parse_spec({"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService",
                      "metadata": {"name": "op", "namespace": "ns"},
                      "spec": {"model": {"uri": "s3://models/tiny/model.onnx"}, "repository": {"uri": "s3://lms/repo"}}})
    reader = ObjectStoreReader(environ=dict(s3_env))
    check = asyncio.run(reader.check(lms, "k1"))
    assert check.known and check.problem is not None and "no manifest" in check.problem
    publish(cli, tiny_version(tmp_path, "k1"), version_location(REPO, "ns", "op", "k1"), "k1",
            {"version": "k1", "variant": "int8", "size_ratio": 3.9})
    check = asyncio.run(reader.check(lms, "k1"))
    assert check.known and check.problem is None and check.where == "s3://lms/repo/ns/op/k1"
    assert check.summary is not None and check.summary.variant == "int8" and check.summary.size_ratio == 3.9
    assert asyncio.run(ObjectStoreReader(environ={}).check(lms, "k1")).known is False  # no keys: the Job decides
    wrong = ObjectStoreReader(environ={**s3_env, "AWS_SECRET_ACCESS_KEY": "wrong"})
    refused = asyncio.run(wrong.check(lms, "k1"))
    assert refused.known is False and "access denied" in (refused.problem or "")


def _fake_pipeline(monkeypatch: pytest.MonkeyPatch, calls: list[str]) -> None:
    """The Job's flow around a stand-in for the (minutes-long) compression pipeline: it publishes a
    tiny version where the real one would, and reports a summary."""
    from lms_operator.api.contract import CompressionSummary
    from lms_operator.compression import remote
    from lms_operator.modelrepo.layout import version_dir

    def compress(lms: Any, root: Path, spec_dir: Any, model_dir: Any, requested: str | None,
                 templates: Any = None) -> CompressionSummary:
        assert requested is not None
        calls.append(requested)
        folder = version_dir(root, lms.namespace, lms.name, requested)
        tiny_version(folder.parent, requested)
        return CompressionSummary(version=requested, model=lms.name, variant="int8-per-channel", sha256="0" * 64)

    monkeypatch.setattr(remote, "compress", compress)
    monkeypatch.setattr(remote, "check_requested_key", lambda lms, requested, templates: requested)


def test_job_flow_publishes_hits_the_cache_and_keeps_three_versions_and_the_serving_one(
        cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from lms_operator.api.spec import parse_spec
    from lms_operator.compression.remote import compress_to

    calls: list[str] = []
    _fake_pipeline(monkeypatch, calls)
    lms = parse_spec({"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService",
                      "metadata": {"name": "ret", "namespace": "ns"},
                      "spec": {"model": {"uri": "s3://models/tiny/model.onnx"},
                               "repository": {"uri": "s3://lms/jobs", "keepVersions": 3}}})
    resource = S3Location("lms", "jobs/ns/ret")
    serving = None
    for key in ("v1", "v2", "v3", "v4"):
        summary = compress_to(lms, "s3://lms/jobs", None, None, key, [serving] if serving else [])
        assert summary.version == key and not summary.cache_hit
        serving = key if key != "v4" else serving  # v4 is rolling out while v3 serves
        time.sleep(1.1)  # distinct LastModified seconds
    assert calls == ["v1", "v2", "v3", "v4"]
    assert sorted(published_versions(cli, resource)) == ["v2", "v3", "v4"]
    again = compress_to(lms, "s3://lms/jobs", None, None, "v4", ["v3"])
    assert again.cache_hit and again.variant == "int8-per-channel" and calls == ["v1", "v2", "v3", "v4"]
    # An old version serving again (a rollback) is never deleted, whatever its age.
    compress_to(lms, "s3://lms/jobs", None, None, "v5", ["v2"])
    assert sorted(published_versions(cli, resource)) == ["v2", "v3", "v4", "v5"]
    time.sleep(1.1)
    compress_to(lms, "s3://lms/jobs", None, None, "v6", ["v2"])
    assert sorted(published_versions(cli, resource)) == ["v2", "v4", "v5", "v6"]


def test_a_serving_change_on_s3_copies_the_compressed_model_with_new_configs(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Triton reads config.pbtxt from the bucket, so instances 1 -> 2 is a new version there; its
    Job copies the model of the version it shares the artifact with and compresses nothing."""
    from lms_operator.api.contract import CompressionSummary
    from lms_operator.api.spec import parse_spec
    from lms_operator.api.version import artifact_key
    from lms_operator.compression import remote
    from lms_operator.modelrepo.assemble import default_version_key
    from lms_operator.modelrepo.config import parse_config
    from lms_operator.modelrepo.layout import version_dir

    calls: list[str] = []

    def compress(lms: Any, root: Path, spec_dir: Any, model_dir: Any, requested: str | None,
                 templates: Any = None) -> CompressionSummary:
        assert requested is not None
        calls.append(requested)
        tiny_version(version_dir(root, lms.namespace, lms.name, requested).parent, requested)
        return CompressionSummary(version=requested, model=lms.name, variant="int8-per-channel", sha256="0" * 64,
                                  artifact=artifact_key(lms))

    monkeypatch.setattr(remote, "compress", compress)
    manifest = {"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService",
                "metadata": {"name": MODEL, "namespace": "ns"},
                "spec": {"model": {"uri": "s3://models/tiny/model.onnx", "format": "onnx", "task": "tabular-classification"},
                         "compression": {"qualityGate": {"metric": "agreement"}},
                         "serving": {"resources": {"cpu": "1", "memory": "1Gi"}, "maxBatchSize": 8},
                         "repository": {"uri": "s3://lms/reuse"}}}
    first = parse_spec(manifest)
    k1 = default_version_key(first)
    one = remote.compress_to(first, "s3://lms/reuse", None, None, k1)
    manifest["spec"]["serving"]["instances"] = 2
    second = parse_spec(manifest)
    k2 = default_version_key(second)
    assert k2 != k1 and artifact_key(second) == artifact_key(first)
    two = remote.compress_to(second, "s3://lms/reuse", None, None, k2)
    assert calls == [k1], "nothing compressed for the serving change"
    assert two.version == k2 and two.artifact == one.artifact and not two.cache_hit
    old, new = (S3Location("lms", f"reuse/ns/{MODEL}/{key}") for key in (k1, k2))
    assert counted_version(cli, new, k2)[0] is not None
    configs = [parse_config((s3.get_bytes(cli, "lms", loc.child(MODEL, "config.pbtxt").key) or b"").decode())
               for loc in (old, new)]
    assert [c.instance_group[0].count for c in configs] == [1, 2]
    assert s3.object_sha256(cli, "lms", new.child(MODEL, "1", "model.onnx").key) == \
        s3.object_sha256(cli, "lms", old.child(MODEL, "1", "model.onnx").key)
    manifest["spec"]["compression"]["qualityGate"]["min"] = 0.5  # the artifact changes: compressed again
    third = parse_spec(manifest)
    remote.compress_to(third, "s3://lms/reuse", None, None, default_version_key(third))
    assert len(calls) == 2
