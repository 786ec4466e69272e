"""Triton Python backend named `onnxruntime`: serves an unchanged onnxruntime_onnx repository.

Triton treats a backend folder holding only `model.py` as a Python-based backend, so this
file lets the pip-installed Triton (Python backend only) serve the very repository the
Triton image serves with its native ONNX Runtime backend. Every dynamic batch runs as one
InferenceSession.run: requests are concatenated (padded to the longest sequence when the
model takes an attention_mask, grouped by shape otherwise) and outputs are split back as
numpy views, so batching buys what it buys in-process.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

TRITON_TO_NUMPY: dict[str, Any] = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
}

ORT_TO_NUMPY: dict[str, Any] = {
    "tensor(bool)": np.bool_,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(float16)": np.float16,
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
}

MASK_INPUT = "attention_mask"


class RequestError(ValueError):
    """A request that cannot be served; it fails alone, the batch goes on."""


@dataclass(frozen=True)
class Tensor:
    """One input or output of the model config."""

    name: str
    dtype: Any
    dims: tuple[int, ...]

    @property
    def variable_axes(self) -> tuple[int, ...]:
        return tuple(i for i, d in enumerate(self.dims) if d < 0)


def _tensors(entries: list[dict[str, Any]]) -> list[Tensor]:
    out = []
    for entry in entries:
        dtype = TRITON_TO_NUMPY.get(entry["data_type"])
        if dtype is None:
            raise pb_utils.TritonModelException(f"{entry['name']}: data type {entry['data_type']} is not supported")
        out.append(Tensor(entry["name"], dtype, tuple(int(d) for d in entry.get("dims", []))))
    return out


def _parameter(config: dict[str, Any], key: str) -> str | None:
    value = config.get("parameters", {}).get(key)
    if isinstance(value, dict):
        value = value.get("string_value")
    return None if value in (None, "") else str(value)


def _session_options(config: dict[str, Any]) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    intra = _parameter(config, "intra_op_thread_count")
    inter = _parameter(config, "inter_op_thread_count")
    if intra is not None and int(intra) > 0:
        options.intra_op_num_threads = int(intra)
    if inter is not None and int(inter) > 0:
        options.inter_op_num_threads = int(inter)
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning_allowed(config) else "0")
    return options


def spinning_allowed(config: dict[str, Any]) -> bool:
    """Busy-waiting intra-op threads; off unless the config's `allow_spinning` parameter says so.

    ORT spins by default, which starves Triton's own threads (and neighbouring pods) on a
    CPU node: measured on 2 shared cores, batch-1 throughput was 4x lower with spinning.
    """
    value = _parameter(config, "allow_spinning")
    return value is not None and value.lower() in ("1", "true", "yes")


def _providers(kind: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if kind == "GPU" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class TritonPythonModel:
    """One model instance: one InferenceSession, reused for every batch."""

    def initialize(self, args: dict[str, str]) -> None:
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        self.model_name: str = config.get("name", args.get("model_name", "model"))
        self.max_batch_size: int = int(config.get("max_batch_size", 0))
        self.inputs = _tensors(config.get("input", []))
        self.outputs = _tensors(config.get("output", []))
        filename = config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(f"{self.model_name}: model file {path} not found")
        self.session = ort.InferenceSession(path, _session_options(config), providers=_providers(args.get("model_instance_kind", "CPU")))
        session_inputs = {i.name: i for i in self.session.get_inputs()}
        session_outputs = {o.name for o in self.session.get_outputs()}
        for tensor in self.inputs:
            if tensor.name not in session_inputs:
                raise pb_utils.TritonModelException(f"{self.model_name}: config input {tensor.name} is not an input of {filename}")
        for tensor in self.outputs:
            if tensor.name not in session_outputs:
                raise pb_utils.TritonModelException(f"{self.model_name}: config output {tensor.name} is not an output of {filename}")
        self.feed_dtypes = {name: ORT_TO_NUMPY.get(i.type) for name, i in session_inputs.items()}
        self.output_names = [t.name for t in self.outputs]
        self.pad = any(t.name == MASK_INPUT for t in self.inputs)
        self.batched = self.max_batch_size > 0

    # ---- request handling -------------------------------------------------

    def _read(self, request: Any) -> dict[str, np.ndarray]:
        """The request's inputs as numpy arrays (with a batch axis), checked against the config."""
        arrays: dict[str, np.ndarray] = {}
        rows: int | None = None
        for tensor in self.inputs:
            pb_tensor = pb_utils.get_input_tensor_by_name(request, tensor.name)
            if pb_tensor is None:
                raise RequestError(f"input {tensor.name} is missing")
            array = pb_tensor.as_numpy()
            if array.dtype != np.dtype(tensor.dtype):
                raise RequestError(f"input {tensor.name}: expected {np.dtype(tensor.dtype).name}, got {array.dtype.name}")
            if not self.batched:
                array = array[np.newaxis, ...]
            if array.ndim != len(tensor.dims) + 1:
                raise RequestError(f"input {tensor.name}: expected {len(tensor.dims)} dims after the batch dim, got shape {list(array.shape)}")
            for axis, dim in enumerate(tensor.dims):
                if dim >= 0 and array.shape[axis + 1] != dim:
                    raise RequestError(f"input {tensor.name}: dim {axis + 1} must be {dim}, got shape {list(array.shape)}")
            if array.shape[0] == 0 or any(s == 0 for s in array.shape[1:]):
                raise RequestError(f"input {tensor.name}: empty tensor, shape {list(array.shape)}")
            if self.batched and array.shape[0] > self.max_batch_size:
                raise RequestError(f"input {tensor.name}: batch {array.shape[0]} exceeds max_batch_size {self.max_batch_size}")
            if rows is not None and array.shape[0] != rows:
                raise RequestError(f"input {tensor.name}: batch {array.shape[0]} differs from other inputs ({rows})")
            rows = array.shape[0]
            arrays[tensor.name] = array
        if self.pad and MASK_INPUT in arrays:
            shape = arrays[MASK_INPUT].shape
            for tensor in self.inputs:
                if tensor.variable_axes and arrays[tensor.name].shape != shape:
                    raise RequestError(f"input {tensor.name}: shape {list(arrays[tensor.name].shape)} differs from {MASK_INPUT} {list(shape)}")
        return arrays

    def _group_key(self, arrays: dict[str, np.ndarray]) -> tuple[Any, ...]:
        if self.pad:
            return ()
        return tuple(arrays[t.name].shape[1:] for t in self.inputs)

    def _feed(self, group: list[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], list[int]]:
        """Concatenate a group's inputs along the batch axis; pad sequences to the longest."""
        feed: dict[str, np.ndarray] = {}
        lengths = [a[MASK_INPUT].shape[1] for a in group] if self.pad else []
        for tensor in self.inputs:
            parts = [a[tensor.name] for a in group]
            target = self.feed_dtypes.get(tensor.name) or tensor.dtype
            if len(parts) == 1:
                array = parts[0]
            elif self.pad and tensor.variable_axes:
                longest = max(p.shape[1] for p in parts)
                total = sum(p.shape[0] for p in parts)
                array = np.zeros((total, longest, *parts[0].shape[2:]), dtype=parts[0].dtype)
                row = 0
                for part in parts:
                    array[row : row + part.shape[0], : part.shape[1]] = part
                    row += part.shape[0]
            else:
                array = np.concatenate(parts, axis=0)
            if array.dtype != np.dtype(target):
                array = array.astype(target)
            feed[tensor.name] = array if self.batched else array[0]
        return feed, lengths

    def _run(self, group: list[dict[str, np.ndarray]]) -> list[list[Any]]:
        """One session.run for the group; the output tensors of each request, in order."""
        feed, lengths = self._feed(group)
        results = self.session.run(self.output_names, feed)
        per_request: list[list[Any]] = [[] for _ in group]
        for tensor, result in zip(self.outputs, results):
            result = np.asarray(result)
            if not self.batched:
                result = result[np.newaxis, ...]
            if result.dtype != np.dtype(tensor.dtype):
                result = result.astype(tensor.dtype)
            row = 0
            for index, arrays in enumerate(group):
                count = next(iter(arrays.values())).shape[0]
                piece = result[row : row + count]
                row += count
                if self.pad and len(group) > 1 and 0 in tensor.variable_axes and piece.ndim > 1:
                    piece = piece[:, : lengths[index]]
                if not self.batched:
                    piece = piece[0]
                per_request[index].append(pb_utils.Tensor(tensor.name, np.ascontiguousarray(piece)))
        return per_request

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        groups: dict[tuple[Any, ...], list[int]] = {}
        parsed: dict[int, dict[str, np.ndarray]] = {}
        for index, request in enumerate(requests):
            try:
                parsed[index] = self._read(request)
            except (RequestError, pb_utils.TritonModelException) as exc:
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.model_name}: {exc}"))
                continue
            key = self._group_key(parsed[index]) if self.batched else (index,)  # no batch axis: one run each
            groups.setdefault(key, []).append(index)
        for indices in groups.values():
            try:
                outputs = self._run([parsed[i] for i in indices])
            except Exception:  # noqa: BLE001 - one bad request must not fail its neighbours
                outputs = None
            if outputs is not None:
                for i, tensors in zip(indices, outputs):
                    responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                continue
            for i in indices:
                try:
                    responses[i] = pb_utils.InferenceResponse(output_tensors=self._run([parsed[i]])[0])
                except Exception as exc:  # noqa: BLE001 - reported to the client, server stays up
                    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.model_name}: inference failed: {message}"))
        return responses

    def finalize(self) -> None:
        self.session = None
