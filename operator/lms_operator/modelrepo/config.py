"""Triton `config.pbtxt` built from Triton's own ModelConfig protobuf.

Using the generated message (not a text template) means a misspelt field is an
error here rather than a model that fails to load inside a pod.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from lms_operator.api.spec import ServingSpec

ONNX_PLATFORM = "onnxruntime_onnx"
ONNX_BACKEND = "onnxruntime"
TENSORRT_WORKSPACE_BYTES = 1 << 30


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output; dims exclude the batch dimension (-1 = variable)."""

    name: str
    data_type: str
    dims: tuple[int, ...]

    def __init__(self, name: str, data_type: str, dims: Sequence[int]) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "data_type", data_type)
        object.__setattr__(self, "dims", tuple(dims))


def _parameter(config: pb.ModelConfig, key: str, value: str) -> None:
    config.parameters[key].string_value = value


def build_model_config(model_name: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                       serving: ServingSpec) -> pb.ModelConfig:
    config = pb.ModelConfig(name=model_name, platform=ONNX_PLATFORM, backend=ONNX_BACKEND,
                            max_batch_size=serving.max_batch_size)
    config.version_policy.latest.num_versions = 1
    for spec, add in ((inputs, config.input.add), (outputs, config.output.add)):
        for tensor in spec:
            add(name=tensor.name, data_type=pb.DataType.Value(tensor.data_type), dims=list(tensor.dims))
    if serving.dynamic_batching is not None:
        config.dynamic_batching.max_queue_delay_microseconds = serving.dynamic_batching.max_queue_delay_microseconds
        config.dynamic_batching.preferred_batch_size.extend(serving.dynamic_batching.preferred_batch_sizes)
    group = config.instance_group.add(count=serving.instances)
    if serving.device == "gpu":
        group.kind = pb.ModelInstanceGroup.KIND_GPU
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        accelerator.parameters["precision_mode"] = "FP16"
        accelerator.parameters["max_workspace_size_bytes"] = str(TENSORRT_WORKSPACE_BYTES)
    else:
        group.kind = pb.ModelInstanceGroup.KIND_CPU
        _parameter(config, "intra_op_thread_count", str(serving.threads))
        _parameter(config, "inter_op_thread_count", "1")
    return config


def render_config(config: pb.ModelConfig) -> str:
    return text_format.MessageToString(config)


def parse_config(text: str) -> pb.ModelConfig:
    """Parse config.pbtxt; unknown fields raise text_format.ParseError."""
    return text_format.Parse(text, pb.ModelConfig())
