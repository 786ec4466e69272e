"""ONNX Runtime quantization: dynamic int8 (per tensor / per channel), static QDQ, fp16."""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np


def preprocess(src: Path, dst: Path) -> Path:
    """Shape inference + ORT graph optimisation before quantization (what ORT recommends)."""
    from contextlib import chdir

    from onnxruntime.quantization.shape_inference import quant_pre_process

    # symbolic shape inference drops a debug file into the working directory when it gives up
    with chdir(dst.parent):
        try:
            quant_pre_process(str(src.resolve()), str(dst.resolve()), skip_symbolic_shape=False)
        except Exception:  # symbolic shape inference is not available for every graph
            quant_pre_process(str(src.resolve()), str(dst.resolve()), skip_symbolic_shape=True)
    return dst


def quantize_dynamic_int8(src: Path, dst: Path, per_channel: bool) -> Path:
    """Weights int8 ahead of time, activations quantized at run time (MatMulInteger)."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Attention: a fused graph's attention runs as QAttention (an unfused graph has none)
    # DefaultTensorType: ONNX shape inference cannot type the outputs of fused contrib ops
    quantize_dynamic(str(src), str(dst), per_channel=per_channel, weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Gemm", "Gather", "Attention"],
                     extra_options={"DefaultTensorType": TensorProto.FLOAT})
    return dst


class _Feed:
    """CalibrationDataReader over a list of input dicts."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(list(feeds))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


STATIC_OPS = ["MatMul", "Gemm", "Gather"]
ERROR_LIMIT = 0.05
"""A weight node whose int8 output error alone (relative to fp32, on the calibration data) exceeds
5% (about 26 dB SQNR) stays fp32; on MiniLM-L6 that is the per-tensor position-embedding table
(17%) and one FFN up-projection, the other weight nodes measure 1-5%."""
MAX_EXCLUDED_SHARE = 0.25
"""At most a quarter of the weight nodes stay fp32 (the worst first), or static int8 is not int8."""
ERROR_ROWS = 4096
"""Activation rows kept per node for its error (ranges still come from every row)."""


@dataclass
class StaticPlan:
    """Which nodes static int8 leaves in fp32, and why: what the report records."""

    excluded: dict[str, str] = field(default_factory=dict)
    """node name -> reason"""
    errors: dict[str, float] = field(default_factory=dict)
    """weight node name -> relative output error of that node alone quantized, on the calibration data"""

    def to_dict(self) -> dict[str, Any]:
        return {"rule": f"activation x activation MatMuls (attention scores and context) and MatMuls fed by a GELU "
                        f"(FFN down-projections) stay fp32; of the other weight nodes, one "
                        f"whose int8 output error on the calibration data exceeds {ERROR_LIMIT:.0%} stays fp32, the "
                        f"worst first, at most {MAX_EXCLUDED_SHARE:.0%} of the weight nodes",
                "excluded_nodes": sorted(self.excluded), "reasons": dict(sorted(self.excluded.items())),
                "quantized_weight_nodes": sum(1 for n in self.errors if n not in self.excluded),
                "node_errors": {k: round(v, 5) for k, v in sorted(self.errors.items(), key=lambda kv: -kv[1])}}


def fake_quant_activation(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """x through asymmetric uint8 quantization over the calibrated range [lo, hi] (as MinMax QDQ)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 or 1.0
    zero = np.round(-lo / scale)
    return (np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale


def fake_quant_weight(w: np.ndarray, axis: int | None) -> np.ndarray:
    """w through symmetric int8 quantization, one scale per slice along `axis` (None: per tensor)."""
    amax = np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != axis), keepdims=True) if axis is not None \
        else np.abs(w).max()
    scale = np.where(amax > 0, amax / 127.0, 1.0)
    return np.clip(np.round(w / scale), -127, 127) * scale


def relative_error(ref: np.ndarray, out: np.ndarray) -> float:
    den = float(np.linalg.norm(ref))
    return float(np.linalg.norm(out - ref)) / den if den > 0 else 0.0


def matmul_error(x: np.ndarray, w: np.ndarray, lo: float, hi: float, per_channel: bool) -> float:
    """Relative output error of x @ w with x uint8 (range lo..hi) and w int8 (per output column)."""
    x2 = x.reshape(-1, w.shape[0]).astype(np.float64)
    w64 = w.astype(np.float64)
    return relative_error(x2 @ w64, fake_quant_activation(x2, lo, hi) @ fake_quant_weight(w64, 1 if per_channel else None))


def choose_exclusions(errors: dict[str, float], structural: dict[str, str], limit: float = ERROR_LIMIT,
                      share: float = MAX_EXCLUDED_SHARE) -> dict[str, str]:
    """Pure: the structural exclusions plus the weight nodes above `limit`, worst first, at most
    `share` of the weight nodes."""
    out = dict(structural)
    worst = sorted((n for n, e in errors.items() if e > limit), key=lambda n: -errors[n])
    for name in worst[: int(share * len(errors))]:
        out[name] = f"int8 output error {errors[name]:.3f} > {limit}"
    return out


GELU_OPS = {"Erf", "Gelu", "FastGelu", "BiasGelu", "QuickGelu"}
ELEMENTWISE = {"Mul", "Add", "Div", "Sub"}


def _gelu_fed(node: Any, producers: dict[str, Any], depth: int = 5) -> bool:
    """Whether the node's first input is a GELU's output (through the elementwise ops of an
    unfused GELU: x * 0.5 * (1 + erf(x / sqrt 2)))."""
    frontier, seen = [node.input[0]], set()
    for _ in range(depth):
        nxt = []
        for name in frontier:
            p = producers.get(name)
            if p is None or p.name in seen:
                continue
            seen.add(p.name)
            if p.op_type in GELU_OPS:
                return True
            if p.op_type in ELEMENTWISE:
                nxt.extend(p.input)
        frontier = nxt
    return False


def _weight_nodes(model: Any) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """(weight node -> (activation input, weight initializer), structurally sensitive node -> reason).

    Structurally sensitive, after the usual rule for transformer encoders: MatMuls of two
    activations (attention scores and context: the softmax path, nothing to scale per channel)
    and MatMuls fed by a GELU (the FFN down-projection, whose input carries the outliers that
    per-tensor activation ranges cannot hold; Bondarenko et al., 2021).
    """
    inits = {t.name for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    weights: dict[str, tuple[str, str]] = {}
    structural: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm"):
            consts = [i for i in node.input[:2] if i in inits]
            if not consts:
                structural[node.name] = "activation x activation MatMul (softmax path, no weight to scale per channel)"
            elif _gelu_fed(node, producers):
                structural[node.name] = "fed by GELU (FFN down-projection: outlier activations)"
            elif node.op_type == "MatMul" and node.input[1] in inits and node.input[0] not in inits:
                weights[node.name] = (node.input[0], node.input[1])
        elif node.op_type == "Gather" and node.input[0] in inits:
            weights[node.name] = ("", node.input[0])
    return weights, structural


def plan_static(src: Path, feeds: list[dict[str, np.ndarray]], per_channel: bool) -> StaticPlan:
    """Measure each weight node's int8 error alone on the calibration feeds (fp32 activations in,
    fake-quantized activation and weight) and decide what stays fp32."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(src))
    weights, structural = _weight_nodes(model)
    inits = {t.name: t for t in model.graph.initializer}
    acts = sorted({a for a, _ in weights.values() if a})
    known = {o.name for o in model.graph.output}
    for name in acts:
        if name not in known:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    ranges: dict[str, list[float]] = {a: [np.inf, -np.inf] for a in acts}
    rows: dict[str, list[np.ndarray]] = {a: [] for a in acts}
    for feed in feeds:
        got = dict(zip(names, sess.run(None, feed)))
        for a in acts:
            x = got[a]
            ranges[a] = [min(ranges[a][0], float(x.min())), max(ranges[a][1], float(x.max()))]
            if sum(r.shape[0] for r in rows[a]) < ERROR_ROWS:
                rows[a].append(x.reshape(-1, x.shape[-1]))
    errors: dict[str, float] = {}
    for node, (act, weight) in weights.items():
        w = numpy_helper.to_array(inits[weight]).astype(np.float32)
        if not act:  # an embedding table: the looked-up rows are the table's rows
            errors[node] = relative_error(w.astype(np.float64), fake_quant_weight(w.astype(np.float64), None))
        else:
            x = np.concatenate(rows[act])[:ERROR_ROWS]
            errors[node] = matmul_error(x, w, *ranges[act], per_channel=per_channel)
    return StaticPlan(excluded=choose_exclusions(errors, structural), errors=errors)


def quantize_static_qdq(src: Path, dst: Path, per_channel: bool,
                        feeds: list[dict[str, np.ndarray]]) -> tuple[Path, StaticPlan]:
    """Static QDQ int8 (uint8 activations, int8 weights) with activation ranges calibrated on
    `feeds`; the nodes plan_static finds sensitive stay fp32."""
    from onnx import TensorProto
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not feeds:
        raise ValueError("static int8 needs calibration samples (spec.compression.data.calibration)")
    plan = plan_static(src, feeds, per_channel)
    quantize_static(str(src), str(dst), _Feed(feeds), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=STATIC_OPS, nodes_to_exclude=sorted(plan.excluded),
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"CalibMovingAverage": True, "DefaultTensorType": TensorProto.FLOAT})
    return dst, plan


def convert_fp16(src: Path, dst: Path) -> Path:
    """fp16 weights and compute for GPU, keeping fp32 inputs and outputs."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    logging.getLogger("onnxruntime.transformers.float16").setLevel(logging.ERROR)
    model = onnx.load(str(src))
    half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    onnx.save_model(half, str(dst))
    return dst


def scratch_dir(parent: Path | None = None) -> Path:
    """A temp folder for intermediate models."""
    return Path(tempfile.mkdtemp(prefix="lms-q-", dir=str(parent) if parent else None))
