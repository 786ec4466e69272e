"""Invalid specs are refused with the field path of each problem; valid ones get defaults."""
from __future__ import annotations

import copy
from typing import Any

import pytest

from lms_operator.api.spec import SpecError, load_spec_file, parse_spec
from tests.unit.conftest import EXAMPLES

BASE: dict[str, Any] = {
    "apiVersion": "serving.lms.dev/v1alpha1",
    "kind": "LargeModelService",
    "metadata": {"name": "m"},
    "spec": {"model": {"uri": "hf://org/model"}},
}


def with_spec(**sections: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(BASE)
    manifest["spec"].update(sections)
    return manifest


def gpu(**extra: Any) -> dict[str, Any]:
    return {"device": "gpu", "resources": {"gpu": 1}, **extra}


INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("wrong apiVersion", {**BASE, "apiVersion": "v1"}, "apiVersion", "must be serving.lms.dev/v1alpha1"),
    ("wrong kind", {**BASE, "kind": "Pod"}, "kind", "must be LargeModelService"),
    ("no name", {**BASE, "metadata": {}}, "metadata.name", "is required"),
    ("long name", {**BASE, "metadata": {"name": "a" * 46}}, "metadata.name", "at most 45"),
    ("uppercase name", {**BASE, "metadata": {"name": "MiniLM"}}, "metadata.name", "DNS-1123"),
    ("no spec", {k: v for k, v in BASE.items() if k != "spec"}, "spec", "is required"),
    ("no model", {**BASE, "spec": {}}, "spec.model", "is required"),
    ("no uri", with_spec(model={"format": "onnx"}), "spec.model.uri", "is required"),
    ("unknown objective", with_spec(model={"uri": "hf://org/model"}, compression={"variantSearch": {"objective": "speed"}}),
     "spec.compression.variantSearch.objective", "latency"),
    ("bad scheme", with_spec(model={"uri": "http://x/y"}), "spec.model.uri",
     "must be one of hf://org/name[@revision], s3://bucket/key, pvc://claim/path, file:///path (for example"),
    ("uri too long", with_spec(model={"uri": "hf://" + "a" * 2050}), "spec.model.uri", "at most 2048"),
    ("bad format", with_spec(model={"uri": "hf://a/b", "format": "pickle"}), "spec.model.format", "one of"),
    ("bad task", with_spec(model={"uri": "hf://a/b", "task": "chat"}), "spec.model.task", "one of"),
    ("bad digest", with_spec(model={"uri": "hf://a/b", "sha256": "xyz"}), "spec.model.sha256",
     "64 lowercase hexadecimal digits"),
    ("unknown model field", with_spec(model={"uri": "hf://a/b", "url": "x"}), "spec.model.url", "unknown field"),
    ("sparsity too high", with_spec(compression={"pruning": {"sparsity": 1.5}}),
     "spec.compression.pruning.sparsity", "must be < 0.95, got 1.5"),
    ("sparsity at bound", with_spec(compression={"pruning": {"sparsity": 0.95}}),
     "spec.compression.pruning.sparsity", "must be < 0.95"),
    ("negative sparsity", with_spec(compression={"pruning": {"sparsity": -0.1}}),
     "spec.compression.pruning.sparsity", "must be >= 0.0"),
    ("threshold without value", with_spec(compression={"pruning": {"method": "threshold"}}),
     "spec.compression.pruning.threshold", "threshold is required"),
    ("sparsity as string", with_spec(compression={"pruning": {"sparsity": "high"}}),
     "spec.compression.pruning.sparsity", "must be a number, got string"),
    ("bad quantization mode", with_spec(compression={"quantization": {"mode": "int4"}}),
     "spec.compression.quantization.mode", "one of"),
    ("fp16 on cpu", with_spec(compression={"quantization": {"mode": "fp16"}}),
     "spec.compression.quantization.mode", "fp16 quantization is only for device gpu"),
    ("calibration zero", with_spec(compression={"quantization": {"calibrationSamples": 0}}),
     "spec.compression.quantization.calibrationSamples", "must be >= 1"),
    ("student layers missing", with_spec(compression={"distillation": {"epochs": 1}}),
     "spec.compression.distillation.studentLayers", "is required"),
    ("temperature zero", with_spec(compression={"distillation": {"studentLayers": 3, "temperature": 0}}),
     "spec.compression.distillation.temperature", "must be > 0.0"),
    ("alpha above one", with_spec(compression={"distillation": {"studentLayers": 3, "alpha": 2}}),
     "spec.compression.distillation.alpha", "must be <= 1.0"),
    ("distil an onnx source", with_spec(model={"uri": "hf://a/b", "format": "onnx"},
                                        compression={"distillation": {"studentLayers": 2}}),
     "spec.compression.distillation", "trainable source"),
    ("prune an onnx source", with_spec(model={"uri": "hf://a/b", "format": "onnx"},
                                       compression={"pruning": {"sparsity": 0.2}}),
     "spec.compression.pruning", "trainable source"),
    ("gate above one", with_spec(compression={"qualityGate": {"min": 1.2}}),
     "spec.compression.qualityGate.min", "must be <= 1.0"),
    ("accuracy for embeddings", with_spec(compression={"qualityGate": {"metric": "accuracy"}}),
     "spec.compression.qualityGate.metric", "must be cosine or similarity for feature-extraction"),
    ("cosine for a classifier", with_spec(model={"uri": "hf://a/b", "task": "text-classification"}),
     "spec.compression.qualityGate.metric", "must be cosine or similarity for feature-extraction"),
    ("similarity for a classifier", with_spec(model={"uri": "hf://a/b", "task": "text-classification"},
                                              compression={"qualityGate": {"metric": "similarity"}}),
     "spec.compression.qualityGate.metric", "accuracy or agreement for classifiers"),
    ("dataset and data.distillation", with_spec(compression={"distillation": {"studentLayers": 3, "dataset": "a.txt"},
                                                             "data": {"distillation": {"uri": "b.txt"}}}),
     "spec.compression.distillation.dataset", "alias of data.distillation"),
    ("data without uri", with_spec(compression={"data": {"evaluation": {"format": "text"}}}),
     "spec.compression.data.evaluation.uri", "is required"),
    ("data bad format", with_spec(compression={"data": {"evaluation": {"uri": "e.csv", "format": "csv"}}}),
     "spec.compression.data.evaluation.format", "one of"),
    ("data http uri", with_spec(compression={"data": {"calibration": {"uri": "http://x/c.txt"}}}),
     "spec.compression.data.calibration.uri", "must be one of s3://bucket/key, file:///path"),
    ("labelField on text", with_spec(compression={"data": {"evaluation": {"uri": "e.txt", "labelField": "y"}}}),
     "spec.compression.data.evaluation.labelField", "labelField needs format jsonl"),
    ("compression gpu negative", with_spec(compression={"resources": {"gpu": -1}}),
     "spec.compression.resources.gpu", "must be >= 0"),
    ("too few gate samples", with_spec(compression={"qualityGate": {"samples": 2}}),
     "spec.compression.qualityGate.samples", "must be >= 8"),
    ("gpu without gpus", with_spec(serving={"device": "gpu"}), "spec.serving.resources.gpu", "needs resources.gpu"),
    ("cpu with gpus", with_spec(serving={"resources": {"gpu": 1}}), "spec.serving.resources.gpu",
     "must not request GPUs"),
    ("bad device", with_spec(serving={"device": "tpu"}), "spec.serving.device", "one of"),
    ("bad cpu quantity", with_spec(serving={"resources": {"cpu": "two"}}), "spec.serving.resources.cpu",
     "must be a Kubernetes quantity"),
    ("batch too large", with_spec(serving={"maxBatchSize": 4096}), "spec.serving.maxBatchSize", "must be <= 1024"),
    ("instances zero", with_spec(serving={"instances": 0}), "spec.serving.instances", "must be >= 1"),
    ("too many tolerations", with_spec(serving={"nodePool": {"tolerations": [{"key": "k"}] * 17}}),
     "spec.serving.nodePool.tolerations", "at most 16 items"),
    ("bad toleration effect", with_spec(serving={"nodePool": {"tolerations": [{"key": "k", "effect": "Evict"}]}}),
     "spec.serving.nodePool.tolerations[0].effect", "one of"),
    ("selector value not string", with_spec(serving={"nodePool": {"nodeSelector": {"pool": 3}}}),
     "spec.serving.nodePool.nodeSelector.pool", "must be a string"),
    ("queue delay negative", with_spec(serving={"dynamicBatching": {"maxQueueDelayMicroseconds": -1}}),
     "spec.serving.dynamicBatching.maxQueueDelayMicroseconds", "must be >= 0"),
    ("min above max", with_spec(autoscaling={"minReplicas": 5, "maxReplicas": 2}),
     "spec.autoscaling.minReplicas", "minReplicas must be <= maxReplicas"),
    ("cpu target above 100", with_spec(autoscaling={"target": 150}), "spec.autoscaling.target", "percentage"),
    ("bad metric", with_spec(autoscaling={"metric": "memory"}), "spec.autoscaling.metric", "one of"),
    ("replicas as string", with_spec(autoscaling={"maxReplicas": "3"}), "spec.autoscaling.maxReplicas",
     "must be an integer, got string"),
    ("scale to zero on cpu", with_spec(autoscaling={"minReplicas": 0, "maxReplicas": 2}),
     "spec.autoscaling.minReplicas", "needs metric queueLatency or inferenceRate"),
    ("negative minReplicas", with_spec(autoscaling={"minReplicas": -1, "metric": "queueLatency"}),
     "spec.autoscaling.minReplicas", "must be >= 0"),
    ("window not a duration", with_spec(autoscaling={"window": "30 seconds"}), "spec.autoscaling.window",
     "must be a Prometheus duration"),
    ("window without unit", with_spec(autoscaling={"window": "30"}), "spec.autoscaling.window",
     "must be a Prometheus duration"),
    ("polling every 0 s", with_spec(autoscaling={"pollingSeconds": 0}), "spec.autoscaling.pollingSeconds",
     "must be >= 1"),
    ("stabilization above an hour", with_spec(autoscaling={"scaleDownStabilizationSeconds": 3601}),
     "spec.autoscaling.scaleDownStabilizationSeconds", "must be <= 3600"),
    ("negative cooldown", with_spec(autoscaling={"cooldownSeconds": -5}), "spec.autoscaling.cooldownSeconds",
     "must be >= 0"),
    ("drain too long", with_spec(serving={"drainSeconds": 301}), "spec.serving.drainSeconds", "must be <= 300"),
    ("two repositories", with_spec(repository={"pvc": "models", "uri": "s3://lms/p"}), "spec.repository",
     "exactly one of pvc or uri"),
    ("no repository kind", with_spec(repository={}), "spec.repository", "exactly one of pvc or uri"),
    ("bad pvc name", with_spec(repository={"pvc": "Models_1"}), "spec.repository.pvc", "must be a DNS-1123 label"),
    ("unknown section", with_spec(scaling={"x": 1}), "spec.scaling", "unknown field"),
    ("spec not an object", {**BASE, "spec": []}, "spec", "must be an object, got array"),
]


@pytest.mark.parametrize(("manifest", "path", "message"), [case[1:] for case in INVALID],
                         ids=[case[0] for case in INVALID])
def test_invalid_spec_names_the_field(manifest: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(manifest)
    matching = [p for p in caught.value.problems if p.path == path]
    assert matching, f"no problem at {path}; got {[str(p) for p in caught.value.problems]}"
    assert any(message in p.message for p in matching), [str(p) for p in matching]


def test_at_least_thirty_distinct_paths() -> None:
    assert len({case[2] for case in INVALID}) >= 30


def test_defaults_are_applied() -> None:
    lms = parse_spec(BASE)
    assert lms.namespace == "default"
    assert lms.spec.model.format == "huggingface"
    assert lms.spec.compression.quantization.mode == "dynamic"
    assert lms.spec.compression.quality_gate.min == 0.99
    assert lms.spec.serving.device == "cpu"
    assert lms.spec.serving.dynamic_batching is not None
    assert lms.spec.serving.dynamic_batching.max_queue_delay_microseconds == 2000
    assert lms.spec.repository.pvc == "lms-models"
    assert lms.spec.autoscaling.min_replicas == 1


def test_autoscaling_defaults_and_scale_to_zero() -> None:
    auto = parse_spec(BASE).spec.autoscaling
    assert (auto.window, auto.scale_down_stabilization_seconds, auto.cooldown_seconds, auto.polling_seconds) == \
        ("1m", 300, 300, 15)
    assert parse_spec(BASE).spec.serving.drain_seconds == 10
    zero = parse_spec(with_spec(autoscaling={"minReplicas": 0, "maxReplicas": 3, "metric": "queueLatency",
                                             "target": 50000, "window": "30s", "cooldownSeconds": 30,
                                             "pollingSeconds": 5, "scaleDownStabilizationSeconds": 30}))
    auto = zero.spec.autoscaling
    assert (auto.min_replicas, auto.window, auto.cooldown_seconds, auto.polling_seconds) == (0, "30s", 30, 5)
    assert auto.scale_down_stabilization_seconds == 30
    for window in ("30s", "1m30s", "500ms", "2h"):
        assert parse_spec(with_spec(autoscaling={"window": window})).spec.autoscaling.window == window


def test_data_entries_and_the_dataset_alias() -> None:
    lms = parse_spec(with_spec(compression={
        "data": {"evaluation": {"uri": "file:///data/eval.jsonl", "format": "jsonl", "field": "q", "labelField": "y"}},
        "distillation": {"studentLayers": 3, "dataset": "train.txt"},
        "qualityGate": {"metric": "similarity"}}))
    data = lms.spec.compression.data
    assert data.evaluation is not None and (data.evaluation.format, data.evaluation.field) == ("jsonl", "q")
    assert data.evaluation.label_field == "y" and data.calibration is None
    assert data.distillation is not None and (data.distillation.uri, data.distillation.format) == ("train.txt", "text")
    assert lms.spec.compression.gpu == 0 and lms.spec.compression.quality_gate.metric == "similarity"
    plain = parse_spec(BASE).spec.compression
    assert plain.data.evaluation is None and plain.data.distillation is None


def test_disabling_dynamic_batching() -> None:
    lms = parse_spec(with_spec(serving={"dynamicBatching": {"enabled": False}}))
    assert lms.spec.serving.dynamic_batching is None


def test_gpu_spec_is_valid() -> None:
    lms = parse_spec(with_spec(serving=gpu(), compression={"quantization": {"mode": "fp16"}}))
    assert lms.spec.serving.resources.gpu == 1


def test_threads_follow_cpu_request() -> None:
    assert parse_spec(with_spec(serving={"resources": {"cpu": "4"}, "instances": 2})).spec.serving.threads == 2
    assert parse_spec(with_spec(serving={"resources": {"cpu": "500m"}})).spec.serving.threads == 1


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_examples_are_valid(name: str) -> None:
    load_spec_file(EXAMPLES / name)


def test_unreadable_and_malformed_files(tmp_path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_spec_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec_file(bad)
