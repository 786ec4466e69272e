"""Pure storage logic: URI parsing (the same shapes admission accepts), manifests, retention."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from lms_operator.api import schema
from lms_operator.storage.manifest import (Manifest, ManifestError, build_manifest, digest_problems, listing_problems,
                                           parse_manifest)
from lms_operator.storage.retention import choose_deletions, delete_local, local_versions
from lms_operator.storage.uri import (FileLocation, HfLocation, PvcLocation, S3Location, UriError, parse_model_uri,
                                      parse_repository, triton_repository)


@pytest.mark.parametrize("uri, expected", [
    ("s3://lms/models/minilm", S3Location("lms", "models/minilm")),
    ("s3://lms/models/minilm/", S3Location("lms", "models/minilm/")),
    ("s3://my.bucket-1/model.onnx", S3Location("my.bucket-1", "model.onnx")),
    ("s3://lms", S3Location("lms", "")),
    ("hf://sentence-transformers/all-MiniLM-L6-v2", HfLocation("sentence-transformers/all-MiniLM-L6-v2", None)),
    ("hf://org/name@v1.0", HfLocation("org/name", "v1.0")),
    ("hf://org/name@0123456789abcdef0123456789abcdef01234567", HfLocation("org/name", "0123456789abcdef0123456789abcdef01234567")),
    ("pvc://models/minilm", PvcLocation("models", "minilm")),
    ("pvc://models", PvcLocation("models", "")),
    ("file:///abs/model.pt", FileLocation("file:///abs/model.pt")),
])
def test_model_uris_parse_and_pass_admission(uri: str, expected: object) -> None:
    assert parse_model_uri(uri) == expected
    assert re.search(schema.MODEL_URI_PATTERN, uri)


@pytest.mark.parametrize("uri, words", [
    ("s3://UPPER/model", "not a valid bucket name"),
    ("s3://ab/model", "not a valid bucket name"),
    ("s3://lms/../etc/passwd", "'..'"),
    ("hf://just-a-name", "expected hf://org/name"),
    ("hf://org/name@", "expected hf://org/name"),
    ("pvc://Bad_Claim/x", "DNS-1123"),
    ("ftp://host/model", "unsupported scheme 'ftp'"),
    ("model.onnx", "no scheme"),
])
def test_bad_model_uris_name_the_field(uri: str, words: str) -> None:
    with pytest.raises(UriError, match=re.escape(words)) as err:
        parse_model_uri(uri)
    assert str(err.value).startswith("spec.model.uri: ")


@pytest.mark.parametrize("uri", ["s3://UPPER/model", "s3://ab/model", "hf://just-a-name", "pvc://Bad_Claim/x",
                                 "ftp://host/model", "model.onnx"])
def test_admission_refuses_what_parsing_refuses(uri: str) -> None:
    assert not re.search(schema.MODEL_URI_PATTERN, uri)


def test_repository_uris() -> None:
    assert parse_repository("s3://lms/repo") == S3Location("lms", "repo")
    assert parse_repository("s3://lms/a/b_c.d-e/") == S3Location("lms", "a/b_c.d-e")
    assert parse_repository("s3://lms") == S3Location("lms", "")
    for bad in ("s3://lms/with space", "s3://lms/a+b", "s3://lms//x"):
        assert not re.search(schema.S3_REPOSITORY_PATTERN, bad)
        with pytest.raises(UriError, match="^spec.repository.uri: "):
            parse_repository(bad)


def test_location_children_and_triton_form() -> None:
    repo = S3Location("lms", "repo")
    version = repo.child("default", "minilm", "0123456789abcdef")
    assert version == S3Location("lms", "repo/default/minilm/0123456789abcdef")
    assert version.prefix == "repo/default/minilm/0123456789abcdef/"
    assert S3Location("lms", "").child("a") == S3Location("lms", "a")
    assert S3Location("lms", "").prefix == ""
    assert triton_repository("http://127.0.0.1:9000/", version) == "s3://http://127.0.0.1:9000/lms/repo/default/minilm/0123456789abcdef"
    assert triton_repository("$(AWS_ENDPOINT_URL)", repo) == "s3://$(AWS_ENDPOINT_URL)/lms/repo"


def _version(tmp_path: Path) -> Path:
    v = tmp_path / "v"
    (v / "m" / "1").mkdir(parents=True)
    (v / "m" / "1" / "model.onnx").write_bytes(b"onnx" * 100)
    (v / "m" / "config.pbtxt").write_text('name: "m"\n')
    (v / "report.json").write_text("{}")
    (v / ".complete").touch()
    return v


def test_manifest_round_trip_lists_every_file_but_the_marker(tmp_path: Path) -> None:
    version = _version(tmp_path)
    (version / "m-text" / "1").mkdir(parents=True)  # an ensemble's empty version folder
    m = build_manifest("k1", version, {"variant": "int8"})
    assert [f.path for f in m.files] == ["m-text/1/", "m/1/model.onnx", "m/config.pbtxt", "report.json"]
    assert m.files[0].size == 0 and m.files[1].size == 400
    (version / "m-text" / "1").rmdir()
    (version / "m-text").rmdir()
    m = build_manifest("k1", version, {"variant": "int8"})
    again = parse_manifest(m.to_bytes(), "k1")
    assert again == m
    sizes = {f.path: f.size for f in m.files}
    assert listing_problems(m, sizes) == []
    assert listing_problems(m, {**sizes, "m/1/model.onnx": 3}) == ["m/1/model.onnx has 3 bytes, the manifest says 400"]
    assert listing_problems(m, {k: v for k, v in sizes.items() if k != "report.json"}) == ["report.json is missing"]
    digests = {f.path: f.sha256 for f in m.files}
    assert digest_problems(m, digests) == []
    assert len(digest_problems(m, {**digests, "m/config.pbtxt": "0" * 64})) == 1


@pytest.mark.parametrize("data, words", [
    (b"not json", "not valid JSON"),
    (b'{"format": "other"}', "format"),
    (b'{"format": "lms.dev/version-manifest/v1", "version": "k2", "files": []}', "names version 'k2'"),
    (b'{"format": "lms.dev/version-manifest/v1", "version": "k1", "files": []}', "lists no files"),
    (b'{"format": "lms.dev/version-manifest/v1", "version": "k1", "files": [{"path": "../x", "sha256": "'
     + b"0" * 64 + b'", "size": 1}]}', "bad file entry"),
])
def test_a_corrupt_manifest_does_not_count(data: bytes, words: str) -> None:
    with pytest.raises(ManifestError, match=re.escape(words)):
        parse_manifest(data, "k1")


def test_retention_keeps_the_newest_and_every_protected_version() -> None:
    published = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
    assert choose_deletions(published, 3, []) == ["a"]
    assert choose_deletions(published, 3, ["a"]) == []
    assert choose_deletions(published, 1, ["b"]) == ["a", "c"]
    assert choose_deletions(published, 5, []) == []
    assert choose_deletions({"x": 1.0, "y": 1.0}, 1, []) == ["x"]  # ties: by key, deterministic
    with pytest.raises(ValueError):
        choose_deletions(published, 0, [])


def test_local_retention_sees_only_complete_versions(tmp_path: Path) -> None:
    folder = tmp_path / "ns" / "name"
    for key in ("k1", "k2"):
        (folder / key).mkdir(parents=True)
        (folder / key / ".complete").touch()
    (folder / "k3").mkdir()  # interrupted: no marker
    (folder / ".staging-x").mkdir()
    assert sorted(local_versions(folder)) == ["k1", "k2"]
    delete_local(folder / "k1")
    assert not (folder / "k1").exists()
    assert sorted(local_versions(folder)) == ["k2"]


def test_manifest_type_is_frozen() -> None:
    m = Manifest("k", ())
    with pytest.raises(AttributeError):
        m.version = "x"  # type: ignore[misc]


@pytest.mark.parametrize("reason", ["StorageAccessDenied", "ModelNotFound", "DigestMismatch"])
def test_a_storage_verdict_of_the_job_is_the_failed_reason(reason: str) -> None:
    from lms_operator.api import status as st
    from lms_operator.api.contract import CompressionSummary

    message = CompressionSummary(model="m", reason=reason, error="access denied to s3://lms/x").to_message()
    job = {"status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    pod = {"metadata": {"creationTimestamp": "t"}, "status": {"containerStatuses": [
        {"state": {"terminated": {"exitCode": 2, "message": message, "finishedAt": "t"}}}]}}
    outcome = st.job_outcome(job, [pod])
    assert (outcome.state, outcome.reason) == ("failed", reason)
    assert "s3://lms/x" in outcome.message


def test_storage_failures_become_job_errors_with_their_reason() -> None:
    from lms_operator.compression.errors import InputError
    from lms_operator.compression.source import storage_failure
    from lms_operator.storage.errors import StorageAccessDenied, StorageUnavailable

    denied = storage_failure(StorageAccessDenied("access denied to s3://lms/k (bucket 'lms', key 'k')"))
    assert isinstance(denied, InputError) and denied.exit_code == 2
    assert str(denied).startswith("access denied to s3://lms/k") and denied.summary.reason == "StorageAccessDenied"
    down = storage_failure(StorageUnavailable("s3://lms/k: connection refused"))
    assert not isinstance(down, InputError) and down.exit_code == 1  # retried by the Job


def test_hf_cache_lookup_by_revision(tmp_path: Path) -> None:
    from lms_operator.compression.source import find_in_hf_cache

    repo = tmp_path / "models--org--name"
    for commit in ("aaa111", "bbb222"):
        (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("bbb222")
    (repo / "refs" / "v1").write_text("aaa111")
    assert find_in_hf_cache("org/name", [tmp_path]) == repo / "snapshots" / "bbb222"
    assert find_in_hf_cache("org/name", [tmp_path], "v1") == repo / "snapshots" / "aaa111"  # a tag
    assert find_in_hf_cache("org/name", [tmp_path], "aaa111") == repo / "snapshots" / "aaa111"  # a commit
    assert find_in_hf_cache("org/name", [tmp_path], "v2") is None  # unknown here: downloaded instead


def test_claim_retention_after_publishing_keeps_the_protected_version(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The Job's flow on a claim, around a stand-in for the (minutes-long) pipeline."""
    import os

    from lms_operator.api.contract import CompressionSummary
    from lms_operator.api.spec import parse_spec
    from lms_operator.compression import remote

    published = iter(range(1, 5))

    def compress(lms: object, root: Path, *_: object) -> CompressionSummary:
        n = next(published)
        folder = root / "ns" / "r" / f"v{n}"
        folder.mkdir(parents=True)
        (folder / ".complete").touch()
        os.utime(folder / ".complete", (1000 + n, 1000 + n))  # v1 oldest ... v4 newest
        return CompressionSummary(version=f"v{n}")

    monkeypatch.setattr(remote, "compress", compress)
    lms = parse_spec({"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService",
                      "metadata": {"name": "r", "namespace": "ns"},
                      "spec": {"model": {"uri": "file:///m.onnx", "format": "onnx", "task": "tabular-classification"},
                               "compression": {"qualityGate": {"metric": "agreement"}},
                               "repository": {"pvc": "lms-models", "keepVersions": 2}}})
    for _ in range(4):
        remote.compress_to(lms, str(tmp_path), None, None, None, ["v1"])
    assert sorted(p.name for p in (tmp_path / "ns" / "r").iterdir()) == ["v1", "v3", "v4"]
