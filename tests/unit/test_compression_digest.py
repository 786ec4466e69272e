"""Digest manifests, path safety and model-source resolution (no heavy imports)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from lms_operator.compression.digest import (check_external_location, file_sha256, folder_sha256, is_within,
                                             manifest_text, path_sha256, regular_files)
from lms_operator.compression.errors import InputError
from lms_operator.compression.source import find_in_hf_cache, locate_model, max_model_bytes, resolve_uri


def test_file_digest_is_plain_sha256(tmp_path: Path) -> None:
    f = tmp_path / "m.bin"
    f.write_bytes(b"weights")
    assert file_sha256(f) == hashlib.sha256(b"weights").hexdigest()
    assert path_sha256(f) == file_sha256(f)


def test_folder_digest_is_sha256_of_sorted_manifest(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.txt").write_text("x")
    (tmp_path / "a.txt").write_text("a")
    expected = (f"{hashlib.sha256(b'a').hexdigest()}  a.txt\n"
                f"{hashlib.sha256(b'x').hexdigest()}  b/x.txt\n")
    assert folder_sha256(tmp_path) == hashlib.sha256(expected.encode()).hexdigest()


def test_manifest_sorts_by_path() -> None:
    assert manifest_text([("z", "1"), ("a", "2")]) == "2  a\n1  z\n"


def test_folder_digest_changes_with_content_and_ignores_symlinks(tmp_path: Path) -> None:
    (tmp_path / "w").write_text("1")
    before = folder_sha256(tmp_path)
    os.symlink("/etc/hostname", tmp_path / "link")
    assert [p.name for p in regular_files(tmp_path)] == ["w"]
    assert folder_sha256(tmp_path) == before
    (tmp_path / "w").write_text("2")
    assert folder_sha256(tmp_path) != before


def test_external_data_location_must_stay_inside(tmp_path: Path) -> None:
    assert check_external_location(tmp_path, "weights.bin") == tmp_path / "weights.bin"
    for bad in ("../outside.bin", "/etc/passwd", "sub/../../x", ""):
        with pytest.raises(ValueError):
            check_external_location(tmp_path, bad)


def test_symlink_out_of_folder_is_not_within(tmp_path: Path) -> None:
    inner = tmp_path / "model"
    inner.mkdir()
    os.symlink(tmp_path, inner / "up")
    assert not is_within(inner, inner / "up" / "secret")
    assert is_within(inner, inner / "file")


def test_file_uri_forms(tmp_path: Path) -> None:
    assert resolve_uri("file:///abs/model.pt", None, None) == Path("/abs/model.pt")
    assert resolve_uri("file:models/t/model.pt", tmp_path, None) == tmp_path / "models/t/model.pt"
    with pytest.raises(InputError, match="absolute"):
        resolve_uri("file://relative/model.pt", None, None)


def test_pvc_needs_model_dir_and_model_dir_overrides(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--model-dir"):
        resolve_uri("pvc://claim/path", None, None)
    assert resolve_uri("pvc://claim/path", None, tmp_path) == tmp_path


def test_unsupported_scheme_names_the_field() -> None:
    with pytest.raises(InputError, match="spec.model.uri: unsupported scheme 'ftp'"):
        resolve_uri("ftp://host/model", None, None)


def test_hf_cache_snapshot_lookup(tmp_path: Path) -> None:
    snap = tmp_path / "models--org--name" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (tmp_path / "models--org--name" / "refs").mkdir()
    (tmp_path / "models--org--name" / "refs" / "main").write_text("abc\n")
    assert find_in_hf_cache("org/name", [tmp_path]) == snap
    assert find_in_hf_cache("org/other", [tmp_path]) is None


def test_digest_mismatch_and_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "model.pt"
    f.write_bytes(b"0123456789")
    good = hashlib.sha256(b"0123456789").hexdigest()
    assert locate_model(f"file://{f}", good, None, None) == f
    with pytest.raises(InputError, match="digest mismatch"):
        locate_model(f"file://{f}", "0" * 64, None, None)
    monkeypatch.setenv("LMS_MAX_MODEL_BYTES", "5")
    assert max_model_bytes() == 5
    with pytest.raises(InputError, match="above the limit"):
        locate_model(f"file://{f}", good, None, None)
    with pytest.raises(InputError, match="not found"):
        locate_model(f"file://{tmp_path}/missing.pt", None, None, None)
