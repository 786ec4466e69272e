"""Supply-chain refusals, each with its message: digest pin, size limit, symlinks, ONNX external
data, URI schemes, and the digest of a published version (after publishing and on cache hits)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lms_operator.api.spec import SpecError, parse_spec
from lms_operator.compression import supply_chain as sc
from lms_operator.compression.digest import check_external_location, file_sha256, path_sha256
from lms_operator.compression.errors import CompressionError, InputError
from lms_operator.compression.source import locate_model
from lms_operator.modelrepo.layout import REPORT_FILE, model_file


def model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "model.safetensors").write_bytes(b"\0" * 1000)
    return folder


# ---- digest pin and size limit (checked before anything is loaded) --------------------------------

def test_digest_mismatch_is_refused_before_loading(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    good = path_sha256(folder)
    assert locate_model(f"file://{folder}", good, None, None) == folder
    with pytest.raises(InputError, match=r"spec\.model\.sha256: digest mismatch .* expected 0{64}, got " + good):
        locate_model(f"file://{folder}", "0" * 64, None, None)


def test_a_changed_file_changes_the_folder_digest(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    before = path_sha256(folder)
    (folder / "model.safetensors").write_bytes(b"\1" + b"\0" * 999)
    with pytest.raises(InputError, match="digest mismatch"):
        locate_model(f"file://{folder}", before, None, None)


def test_model_above_the_size_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = model_folder(tmp_path)
    monkeypatch.setenv("LMS_MAX_MODEL_BYTES", "500")
    with pytest.raises(InputError, match=r"above the limit of 500 \(LMS_MAX_MODEL_BYTES\)"):
        locate_model(f"file://{folder}", None, None, None)
    monkeypatch.setenv("LMS_MAX_MODEL_BYTES", "lots")
    with pytest.raises(InputError, match="LMS_MAX_MODEL_BYTES: not an integer"):
        locate_model(f"file://{folder}", None, None, None)


# ---- symlinks ---------------------------------------------------------------------------------------

def test_symlink_out_of_the_model_folder_is_refused(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    pinned = path_sha256(folder)
    secret = tmp_path / "elsewhere.bin"
    secret.write_bytes(b"x" * 10)
    (folder / "extra.bin").symlink_to(secret)
    # The folder digest skips links, so the pin alone would not cover extra.bin: the check must.
    assert path_sha256(folder) == pinned
    with pytest.raises(InputError, match=r"extra\.bin is a symlink out of the model folder"):
        sc.check_links(folder)


def test_relative_symlink_escaping_with_dotdot_is_refused(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    (tmp_path / "up.txt").write_text("x")
    (folder / "sub").mkdir()
    (folder / "sub" / "vocab.txt").symlink_to("../../up.txt")
    with pytest.raises(InputError, match="symlink out of the model folder"):
        sc.check_links(folder)


def test_dangling_links_links_to_folders_and_special_files_are_refused(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    (folder / "gone.bin").symlink_to(folder / "missing")
    with pytest.raises(InputError, match="dangling symlink"):
        sc.check_links(folder)
    (folder / "gone.bin").unlink()
    (folder / "inner").mkdir()
    (folder / "loop").symlink_to(folder / "inner")
    with pytest.raises(InputError, match="symlink to a folder"):
        sc.check_links(folder)
    (folder / "loop").unlink()
    os.mkfifo(folder / "pipe")
    with pytest.raises(InputError, match="not a regular file"):
        sc.check_links(folder)


def test_links_inside_the_folder_and_hub_cache_blobs_are_accepted(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    (folder / "alias.safetensors").symlink_to("model.safetensors")
    sc.check_links(folder)
    repo = tmp_path / "hub" / "models--org--name"
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "blobs" / "f00d").write_text("{}")
    (snap / "config.json").symlink_to("../../blobs/f00d")
    assert sc.link_root(snap) == repo
    sc.check_links(snap)
    (tmp_path / "other").write_text("x")
    (snap / "evil.json").symlink_to(tmp_path / "other")
    with pytest.raises(InputError, match="symlink out of the model folder"):
        sc.check_links(snap)


def test_size_limit_counts_linked_content(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    (folder / "alias.safetensors").symlink_to("model.safetensors")
    assert sc.linked_bytes(folder) == 2000 + len('{"model_type": "bert"}')
    sc.check_source_tree(folder, 10_000)
    with pytest.raises(InputError, match="above the limit of 1500"):
        sc.check_source_tree(folder, 1500)


# ---- ONNX external data -------------------------------------------------------------------------

def tiny_onnx_with_external(folder: Path, location: str) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 2), dtype=np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "32")):
        entry = weight.external_data.add()
        entry.key, entry.value = k, v
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 2])], [weight])
    path = folder / "model.onnx"
    onnx.save_model(helper.make_model(graph), str(path))
    return path


@pytest.mark.parametrize("location, message", [
    ("../outside.bin", "leaves the model folder"),
    ("/etc/passwd", "must be a relative path inside the model folder"),
    ("sub/../../outside.bin", "leaves the model folder"),
])
def test_onnx_external_data_outside_the_folder_is_refused(tmp_path: Path, location: str, message: str) -> None:
    from lms_operator.compression.loader import load_onnx

    folder = tmp_path / "m"
    folder.mkdir()
    (tmp_path / "outside.bin").write_bytes(b"\0" * 32)
    tiny_onnx_with_external(folder, location)
    with pytest.raises(InputError, match=f"tensor 'w': .*{message}"):
        load_onnx(folder, "tabular-classification")


def test_onnx_external_data_through_a_symlink_out_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (tmp_path / "outside.bin").write_bytes(b"\0" * 32)
    (folder / "weights.bin").symlink_to(tmp_path / "outside.bin")
    with pytest.raises(ValueError, match="leaves the model folder"):
        check_external_location(folder, "weights.bin")


def test_symlinked_onnx_file_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    from lms_operator.compression.loader import load_onnx

    real = tmp_path / "real"
    real.mkdir()
    tiny_onnx_with_external(real, "w.bin")
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.onnx").symlink_to(real / "model.onnx")
    with pytest.raises(InputError, match="symlink out of the model folder"):
        load_onnx(folder, "tabular-classification")


# ---- URI schemes --------------------------------------------------------------------------------

@pytest.mark.parametrize("uri", ["http://example.com/model", "https://evil/x", "ftp://h/m", "gs://b/k", "/abs/path",
                                 "data:,abc"])
def test_schemes_outside_the_allow_list_are_refused(minilm_manifest: dict, uri: str) -> None:
    with pytest.raises(InputError, match="is not allowed"):
        sc.check_scheme(uri)
    minilm_manifest["spec"]["model"]["uri"] = uri
    with pytest.raises(SpecError) as err:
        parse_spec(minilm_manifest)
    assert any(p.path == "spec.model.uri" for p in err.value.problems), str(err.value)


def test_allowed_schemes_pass() -> None:
    for uri in ("file:///m", "file:models/x", "hf://org/name", "pvc://claim/path", "s3://bucket/key"):
        sc.check_scheme(uri)


# ---- the published version ------------------------------------------------------------------------

def published(tmp_path: Path) -> Path:
    version = tmp_path / "ns" / "m" / "0123456789abcdef"
    model = model_file(version, "m")
    model.parent.mkdir(parents=True)
    model.write_bytes(b"onnx-bytes")
    (version / REPORT_FILE).write_text(json.dumps({"sha256": file_sha256(model)}))
    return version


def test_published_digest_is_checked_against_the_report(tmp_path: Path) -> None:
    version = published(tmp_path)
    digest = sc.verify_published(version, "m")
    assert digest == file_sha256(model_file(version, "m"))
    assert sc.verify_published(version, "m", digest.upper()) == digest
    model_file(version, "m").write_bytes(b"tampered")
    with pytest.raises(CompressionError, match="does not match the recorded " + digest):
        sc.verify_published(version, "m")


def test_published_version_without_digest_or_with_a_linked_model_is_refused(tmp_path: Path) -> None:
    version = published(tmp_path)
    (version / REPORT_FILE).write_text("{}")
    with pytest.raises(CompressionError, match="has no sha256"):
        sc.verify_published(version, "m")
    model = model_file(version, "m")
    (tmp_path / "x.onnx").write_bytes(model.read_bytes())
    model.unlink()
    model.symlink_to(tmp_path / "x.onnx")
    with pytest.raises(CompressionError, match="not a regular file"):
        sc.verify_published(version, "m", "0" * 64)
