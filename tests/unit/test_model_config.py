"""config.pbtxt is Triton's ModelConfig message; it parses back and carries the pool's settings."""
from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from lms_operator.api.spec import parse_spec
from lms_operator.modelrepo.config import TensorSpec, build_model_config, parse_config, render_config
from lms_operator.modelrepo.templates import load_templates
from tests.unit.conftest import load_example

INPUTS = [TensorSpec("input_ids", "TYPE_INT64", [-1]), TensorSpec("attention_mask", "TYPE_INT64", [-1])]
OUTPUTS = [TensorSpec("embedding", "TYPE_FP32", [384])]


TEMPLATES = load_templates()


def _config(example: str) -> pb.ModelConfig:
    lms = parse_spec(load_example(example))
    template = TEMPLATES[lms.spec.serving.template_name].config()
    return parse_config(render_config(build_model_config(lms.name, INPUTS, OUTPUTS, lms.spec.serving, template)))


def test_cpu_config() -> None:
    config = _config("minilm-cpu.yaml")
    assert config.platform == "onnxruntime_onnx" and config.backend == "onnxruntime"
    assert config.max_batch_size == 32
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [g.kind for g in config.instance_group] == [pb.ModelInstanceGroup.KIND_CPU]
    assert config.parameters["intra_op_thread_count"].string_value == "2"
    assert [i.name for i in config.input] == ["input_ids", "attention_mask"]
    assert list(config.output[0].dims) == [384] and config.output[0].data_type == pb.TYPE_FP32
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator


def test_gpu_config_uses_tensorrt_fp16() -> None:
    config = _config("minilm-gpu.yaml")
    assert [g.kind for g in config.instance_group] == [pb.ModelInstanceGroup.KIND_GPU]
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    assert list(config.dynamic_batching.preferred_batch_size) == [16, 32, 64]


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(text_format.ParseError):
        parse_config('name: "m"\nmax_batch: 4\n')


def test_unknown_data_type_is_rejected() -> None:
    lms = parse_spec(load_example("minilm-cpu.yaml"))
    with pytest.raises(ValueError):
        build_model_config("m", [TensorSpec("x", "TYPE_FLOAT", [1])], OUTPUTS, lms.spec.serving,
                           TEMPLATES["onnx-cpu"].config())
