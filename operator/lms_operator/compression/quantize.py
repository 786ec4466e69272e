"""ONNX Runtime quantization: dynamic int8 (per tensor / per channel), static QDQ, fp16."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

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
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), per_channel=per_channel, weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Gemm", "Gather"])
    return dst


class _Feed:
    """CalibrationDataReader over a list of input dicts."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(list(feeds))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize_static_qdq(src: Path, dst: Path, per_channel: bool, feeds: list[dict[str, np.ndarray]]) -> Path:
    """Static QDQ int8 with activation ranges calibrated on `feeds`."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(str(src), str(dst), _Feed(feeds), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul", "Gemm", "Gather"], calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"CalibMovingAverage": True})
    return dst


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
