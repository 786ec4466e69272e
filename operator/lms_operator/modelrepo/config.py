"""Triton `config.pbtxt` built from Triton's own ModelConfig protobuf.

Using the generated message (not a text template) means a misspelt field is an
error here rather than a model that fails to load inside a pod. Everything that is not the
model's or the spec's comes from a serving template (modelrepo/templates.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from lms_operator.api.spec import ServingSpec
from lms_operator.modelrepo.templates import load_templates, overlay


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


def set_io(config: pb.ModelConfig, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
    for field, tensors in (("input", inputs), ("output", outputs)):
        config.ClearField(field)
        for tensor in tensors:
            getattr(config, field).add(name=tensor.name, data_type=pb.DataType.Value(tensor.data_type),
                                       dims=list(tensor.dims))


def _fill_warmup(config: pb.ModelConfig, inputs: Sequence[TensorSpec], sequence_length: int) -> None:
    """A warm-up entry that names no inputs gets a zero-filled sample of every model input
    (a variable dimension takes the spec's sequence length)."""
    for warmup in config.model_warmup:
        if warmup.inputs:
            continue
        for tensor in inputs:
            sample = warmup.inputs[tensor.name]
            sample.data_type = pb.DataType.Value(tensor.data_type)
            sample.dims.extend(sequence_length if d < 0 else d for d in tensor.dims)
            sample.zero_data = True


def build_model_config(model_name: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                       serving: ServingSpec, template: pb.ModelConfig | None = None) -> pb.ModelConfig:
    """The served model's config: the template (default: the package's for the spec), then
    spec.serving.config over it, then the spec's own fields and what comes from the model (name,
    inputs, outputs)."""
    if template is None:
        template = load_templates()[serving.template_name].config()
    config = overlay(template, serving.config)
    config.name = model_name
    config.max_batch_size = serving.max_batch_size
    set_io(config, inputs, outputs)
    if serving.dynamic_batching is not None:
        config.dynamic_batching.max_queue_delay_microseconds = serving.dynamic_batching.max_queue_delay_microseconds
        if serving.dynamic_batching.preferred_batch_sizes:
            config.dynamic_batching.ClearField("preferred_batch_size")
            config.dynamic_batching.preferred_batch_size.extend(serving.dynamic_batching.preferred_batch_sizes)
    else:
        config.ClearField("dynamic_batching")
    if not config.instance_group:
        config.instance_group.add()
    for group in config.instance_group:
        group.count = serving.instances
    if serving.device == "cpu":
        _parameter(config, "intra_op_thread_count", str(serving.threads))
    _fill_warmup(config, inputs, serving.sequence_length)
    return config


def render_config(config: pb.ModelConfig) -> str:
    return text_format.MessageToString(config)


def parse_config(text: str) -> pb.ModelConfig:
    """Parse config.pbtxt; unknown fields raise text_format.ParseError."""
    return text_format.Parse(text, pb.ModelConfig())
