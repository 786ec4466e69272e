"""The smallest model a real Triton serves: ONNX Identity on a float vector, batched.

Tests of the pod runner, the Service proxy and load through them need a Triton that answers in
microseconds, so what they measure is the plumbing, not the model.
"""
from __future__ import annotations

from pathlib import Path

MODEL = "identity"
CONFIG = """name: "identity"
platform: "onnxruntime_onnx"
backend: "onnxruntime"
max_batch_size: 8
input [{ name: "input" data_type: TYPE_FP32 dims: [4] }]
output [{ name: "output" data_type: TYPE_FP32 dims: [4] }]
instance_group [{ kind: KIND_CPU count: 1 }]
"""


def write_identity_repository(repo: Path) -> Path:
    """A one-model Triton repository (version 1 of `identity`) under repo, as a Job would publish it."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])], MODEL,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (repo / MODEL / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(repo / MODEL / "1" / "model.onnx"))
    (repo / MODEL / "config.pbtxt").write_text(CONFIG)
    return repo
