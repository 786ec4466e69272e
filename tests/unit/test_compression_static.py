"""Static int8's pure parts: fake quantization, per-node error, which nodes stay fp32, and the
node finder on a small real ONNX graph."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lms_operator.compression import quantize as q


def test_activation_fake_quant_is_exact_on_the_grid_and_clips_outside_the_range() -> None:
    x = np.array([0.0, 1.0, 2.55, 3.0, -1.0])
    out = q.fake_quant_activation(x, 0.0, 2.55)
    assert np.allclose(out[:3], [0.0, 1.0, 2.55], atol=1e-9)
    assert out[3] == 2.55 and out[4] == 0.0  # saturates at the calibrated range


def test_per_channel_weight_quant_keeps_small_columns_that_per_tensor_flattens() -> None:
    w = np.array([[100.0, 0.01], [-50.0, 0.02]])
    per_channel = q.fake_quant_weight(w, 1)
    per_tensor = q.fake_quant_weight(w, None)
    assert np.allclose(per_channel[:, 1], [0.01, 0.02], rtol=0.01)
    assert np.allclose(per_tensor[:, 1], 0.0)  # one scale of 100/127 rounds the small column away
    assert np.abs(per_channel).max() == 100.0


def test_matmul_error_grows_with_an_outlier_in_the_calibrated_range() -> None:
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(256, 16)), rng.normal(size=(16, 8))
    tight = q.matmul_error(x, w, float(x.min()), float(x.max()), per_channel=True)
    wide = q.matmul_error(x, w, -100.0, 100.0, per_channel=True)  # one outlier stretched the range
    assert 0 < tight < 0.02 < wide
    assert q.relative_error(np.ones(3), np.ones(3)) == 0.0 and q.relative_error(np.zeros(3), np.ones(3)) == 0.0


def test_exclusions_take_the_worst_nodes_above_the_limit_up_to_the_share() -> None:
    errors = {f"n{i}": e for i, e in enumerate([0.01, 0.2, 0.06, 0.09, 0.02, 0.03, 0.04, 0.07])}
    out = q.choose_exclusions(errors, {"attn": "activation x activation"}, limit=0.05, share=0.25)
    # four nodes exceed 0.05; a quarter of eight is two: the two worst
    assert set(out) == {"attn", "n1", "n3"} and out["n1"].startswith("int8 output error 0.200")
    assert q.choose_exclusions({"a": 0.01}, {}, limit=0.05) == {}


def tiny_encoder() -> onnx.ModelProto:
    """Embedding Gather -> MatMul (weight) -> attention-like activation x activation MatMuls ->
    MatMul (weight) -> GELU (erf form, as torch exports it) -> MatMul (weight)."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.normal(size=(10, 4)).astype(np.float32), "table"),
             numpy_helper.from_array(rng.normal(size=(4, 4)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(4, 6)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.normal(size=(6, 3)).astype(np.float32), "w3"),
             numpy_helper.from_array(np.array(1.4142135, dtype=np.float32), "sqrt2"),
             numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"], name="embed"),
             helper.make_node("MatMul", ["emb", "w1"], ["h"], name="proj"),
             helper.make_node("Transpose", ["h"], ["ht"], name="t", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["h", "ht"], ["scores"], name="scores"),
             helper.make_node("MatMul", ["scores", "h"], ["ctx"], name="context"),
             helper.make_node("MatMul", ["ctx", "w2"], ["mid"], name="up"),
             helper.make_node("Div", ["mid", "sqrt2"], ["d"], name="gelu/div"),
             helper.make_node("Erf", ["d"], ["e"], name="gelu/erf"),
             helper.make_node("Add", ["e", "one"], ["e1"], name="gelu/add"),
             helper.make_node("Mul", ["mid", "e1"], ["g"], name="gelu/mul"),
             helper.make_node("MatMul", ["g", "w3"], ["out"], name="down")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("ids", TensorProto.INT64, [None, None])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, None, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_weight_nodes_the_softmax_path_and_the_gelu_path_are_told_apart() -> None:
    weights, structural = q._weight_nodes(tiny_encoder())
    assert weights == {"embed": ("", "table"), "proj": ("emb", "w1"), "up": ("ctx", "w2")}
    assert set(structural) == {"scores", "context", "down"} and "GELU" in structural["down"]


def test_plan_measures_every_weight_node_and_keeps_the_sensitive_paths_fp32(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "tiny.onnx"
    onnx.save_model(tiny_encoder(), str(path))
    feeds = [{"ids": np.array([[1, 2, 3, 4]], dtype=np.int64)}, {"ids": np.array([[5, 6, 7, 8, 9]], dtype=np.int64)}]
    plan = q.plan_static(path, feeds, per_channel=True)
    assert set(plan.errors) == {"embed", "proj", "up"} and all(0 <= e < 1 for e in plan.errors.values())
    assert {"scores", "context", "down"} <= set(plan.excluded)
    d = plan.to_dict()
    assert d["excluded_nodes"] == sorted(plan.excluded) and "activation x activation" in d["rule"]
    assert d["quantized_weight_nodes"] == len(set(plan.errors) - set(plan.excluded))
    assert list(d["node_errors"].values()) == sorted(d["node_errors"].values(), reverse=True)
