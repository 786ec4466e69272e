"""`lms compress` with the user's data: the gate judges the evaluation file, training never sees it,
each technique runs through the real pipeline on a tiny budget, and bad data is refused.

MiniLM runs use a short sequence length and a few training steps: they check what the
pipeline does and reports, not the quality a full run reaches (bench/distill.py measures that).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TEACHER = REPO / "examples/models/digits-teacher/model.pt"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def compress(tmp: Path, name: str, spec: dict[str, Any]) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    doc = {"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService", "metadata": {"name": name}, "spec": spec}
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    proc = subprocess.run([sys.executable, "-m", "lms_operator.cli", "compress", str(tmp / f"{name}.yaml"), "--out",
                           str(tmp / "root")], capture_output=True, text=True, cwd=str(tmp), timeout=1800,
                          env={**os.environ, "LMS_COMPRESS_THREADS": "1"})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, proc.stdout + proc.stderr[-3000:]
    return proc, json.loads(lines[0])


def minilm(compression: dict[str, Any]) -> dict[str, Any]:
    return {"model": {"uri": "hf://sentence-transformers/all-MiniLM-L6-v2"}, "compression": compression,
            "serving": {"sequenceLength": 32}, "repository": {"pvc": "models"}}


def eval_file(tmp: Path) -> Path:
    texts = ["A cat sleeps on the warm windowsill.", "The stock market fell sharply on Monday.",
             "She plays the violin in an orchestra.", "Heavy rain flooded the village streets.",
             "The recipe needs two cups of flour.", "Our team won the football match.",
             "A kitten naps in the afternoon sun.", "Investors sold shares as prices dropped.",
             "He practises the cello every evening.", "The river burst its banks after the storm.",
             "Bake the cake for forty minutes.", "The players celebrated their victory.",
             "Solar panels convert light into electricity.", "The library opens at nine o'clock.",
             "A dog barked at the passing bicycle.", "The train to Paris was delayed."]
    path = tmp / "eval.jsonl"
    path.write_text("\n".join(json.dumps({"sentence": t, "topic": i % 4}) for i, t in enumerate(texts)) + "\n")
    return path


def test_evaluation_data_drives_the_gate_and_every_text_technique_runs(tmp_path: Path) -> None:
    path = eval_file(tmp_path)
    proc, s = compress(tmp_path, "techniques", minilm({
        "data": {"evaluation": {"uri": "eval.jsonl", "format": "jsonl", "field": "sentence"}},
        "pruning": {"structured": True, "sparsity": 0.25, "recoverySteps": 2},
        "distillation": {"studentLayers": 4, "steps": 2},
        "quantization": {"mode": "dynamic", "perChannel": True},
        "qualityGate": {"metric": "similarity", "min": 0.3},
        "variantSearch": {"enabled": False}}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    q = s["quality"]
    assert q["metric"] == "similarity" and q["samples"] == 16 and q["passed"] and 0.3 <= q["score"] <= 1.0
    assert q["data_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert s["variant"] in ("distilled+pruned+int8-per-channel", "distilled+pruned+int8-per-channel+fused")
    report = json.loads((tmp_path / "root" / s["path"] / "report.json").read_text())
    data = report["data"]
    assert data["evaluation"] == {"source": str(path), "sha256": q["data_sha256"], "samples": 16}
    assert data["distillation"]["source"] == "builtin:wordnet-3.0" and "split" in data
    dist = report["distillation"]
    assert dist["layers_kept"] == [0, 3, 4, 5] and dist["training"]["steps"] == 2 and dist["training"]["completed"]
    assert [p["step"] for p in dist["training"]["curve"]] == [1, 2]
    assert report["pruning"]["structured"] and report["pruning"]["recovery"]["steps"] == 2
    assert report["pruning"]["ranked_by"] == "contribution on 256 training sentences, out projections refitted"
    assert "distil: step 2/2 loss " in proc.stderr and "pruned: 2 steps" in proc.stderr
    assert not (tmp_path / "root" / ".lms-checkpoints").exists()  # removed once published


def test_similarity_gate_fails_for_its_stated_reason(tmp_path: Path) -> None:
    eval_file(tmp_path)
    proc, s = compress(tmp_path, "strict", minilm({
        "data": {"evaluation": {"uri": f"file://{tmp_path / 'eval.jsonl'}", "format": "jsonl", "field": "sentence"}},
        "quantization": {"mode": "dynamic", "perChannel": False},
        "qualityGate": {"metric": "similarity", "min": 0.99999}, "variantSearch": {"enabled": False}}))
    assert proc.returncode == 3
    assert "quality gate failed: best similarity" in s["error"] and "< 0.99999" in s["error"]
    assert s["quality"]["samples"] == 16 and s["quality"]["passed"] is False
    assert not [p for p in (tmp_path / "root").rglob("*") if p.is_file()]


@pytest.mark.parametrize(("content", "where"), [
    ('{"sentence": "fine"}\n{"sentence": "also fine"}\n{"sentence": \n', "line 3: not valid JSON"),
    ('{"sentence": "fine"}\n{"text": "wrong field"}\n', "data.evaluation.field: {path} line 2: field 'sentence' is missing"),
    ("", "data.evaluation.uri: {path} holds no samples"),
])
def test_bad_evaluation_data_is_refused(tmp_path: Path, content: str, where: str) -> None:
    path = tmp_path / "eval.jsonl"
    path.write_text(content)
    proc, s = compress(tmp_path, "bad", minilm({
        "data": {"evaluation": {"uri": "eval.jsonl", "format": "jsonl", "field": "sentence"}}}))
    assert proc.returncode == 2
    assert where.format(path=path) in s["error"] and s["reason"] == "InvalidData"
    assert not [p for p in (tmp_path / "root").rglob("*") if p.is_file()]


def test_magnitude_pruning_says_it_gains_no_latency(tmp_path: Path) -> None:
    proc, s = compress(tmp_path, "sparse", {
        "model": {"uri": f"file://{TEACHER}", "format": "torchscript", "task": "tabular-classification"},
        "compression": {"pruning": {"method": "magnitude", "sparsity": 0.3},
                        "data": {"distillation": {"uri": "sklearn:digits"}},
                        "quantization": {"mode": "none"}, "qualityGate": {"metric": "accuracy", "min": 0.8},
                        "variantSearch": {"enabled": False}},
        "serving": {"maxBatchSize": 64}, "repository": {"pvc": "models"}})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert s["variant"] == "pruned+fp32" and "latency does not improve" in s["note"] and "30%" in s["note"]
    report = json.loads((tmp_path / "root" / s["path"] / "report.json").read_text())
    assert report["pruning"]["note"] == s["note"] and report["pruning"]["sparsity"] == pytest.approx(0.3, abs=0.01)
