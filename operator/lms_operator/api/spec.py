"""Typed, defaulted view of a LargeModelService manifest.

`parse_spec` validates against the same schema the CRD is generated from and
then builds frozen dataclasses, so the rest of the code reads attributes
instead of poking into nested dicts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lms_operator.api import schema as s
from lms_operator.api.model_config import parse_override
from lms_operator.api.validate import Problem, apply_defaults, validate


class SpecError(ValueError):
    """A manifest that is not a valid LargeModelService; one line per problem."""

    def __init__(self, problems: list[Problem], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class ModelSpec:
    uri: str
    format: str
    task: str
    sha256: str | None
    secret_ref: str | None = None


@dataclass(frozen=True)
class PruningSpec:
    method: str
    sparsity: float
    threshold: float | None
    structured: bool
    recovery_steps: int = 300


@dataclass(frozen=True)
class QuantizationSpec:
    mode: str
    per_channel: bool
    calibration_samples: int


@dataclass(frozen=True)
class DistillationSpec:
    student_layers: int
    temperature: float
    alpha: float
    epochs: int
    dataset: str | None
    student_uri: str | None
    seed: int
    steps: int | None = None


@dataclass(frozen=True)
class DataEntry:
    uri: str
    format: str = "text"
    field: str = "text"
    label_field: str | None = None


@dataclass(frozen=True)
class DataSpec:
    """The user's data; `distillation` also carries the `distillation.dataset` alias."""

    evaluation: DataEntry | None = None
    calibration: DataEntry | None = None
    distillation: DataEntry | None = None


@dataclass(frozen=True)
class QualityGateSpec:
    metric: str
    min: float
    samples: int


@dataclass(frozen=True)
class CompressionSpec:
    pruning: PruningSpec | None
    quantization: QuantizationSpec
    distillation: DistillationSpec | None
    quality_gate: QualityGateSpec
    variant_search: bool
    data: DataSpec = DataSpec()
    objective: str = "latency"
    gpu: int = 0


@dataclass(frozen=True)
class Toleration:
    key: str | None
    operator: str
    value: str | None
    effect: str | None
    toleration_seconds: int | None


@dataclass(frozen=True)
class ResourcesSpec:
    cpu: str
    memory: str
    gpu: int


@dataclass(frozen=True)
class DynamicBatchingSpec:
    max_queue_delay_microseconds: int
    preferred_batch_sizes: tuple[int, ...]


@dataclass(frozen=True)
class ServingSpec:
    device: str
    image: str
    node_selector: dict[str, str]
    tolerations: tuple[Toleration, ...]
    resources: ResourcesSpec
    max_batch_size: int
    dynamic_batching: DynamicBatchingSpec | None
    instances: int
    sequence_length: int
    text_truncation: bool = True
    progress_deadline_seconds: int = 600
    drain_seconds: int = 10
    template: str | None = None
    config: dict[str, Any] | None = None
    """spec.serving.config: ModelConfig fields (JSON form) laid over the template."""

    @property
    def template_name(self) -> str:
        """The serving template of the model itself: the one named, else the device's."""
        return self.template or f"onnx-{self.device}"

    @property
    def threads(self) -> int:
        """Intra-op threads per model instance: the CPU request shared by the instances."""
        return max(1, cpu_cores(self.resources.cpu) // self.instances)


@dataclass(frozen=True)
class AutoscalingSpec:
    min_replicas: int
    max_replicas: int
    metric: str
    target: int
    window: str = "1m"
    scale_down_stabilization_seconds: int = 300
    cooldown_seconds: int = 300
    polling_seconds: int = 15


@dataclass(frozen=True)
class RepositorySpec:
    pvc: str | None
    uri: str | None
    secret_ref: str | None = None
    keep_versions: int = 3


@dataclass(frozen=True)
class Spec:
    model: ModelSpec
    compression: CompressionSpec
    serving: ServingSpec
    autoscaling: AutoscalingSpec
    repository: RepositorySpec


@dataclass(frozen=True)
class LargeModelService:
    name: str
    namespace: str
    spec: Spec
    raw_spec: dict[str, Any]
    uid: str | None = None
    generation: int | None = None


def cpu_cores(quantity: str) -> int:
    """Whole cores in a CPU quantity ("2", "1.5", "500m"), at least 1."""
    if quantity.endswith("m"):
        return max(1, int(quantity[:-1]) // 1000)
    return max(1, int(float(quantity)))


_NAME = re.compile(s.DNS1123_PATTERN)


def _metadata_problems(metadata: Any) -> list[Problem]:
    if not isinstance(metadata, dict):
        return [Problem("metadata", "must be an object with a name")]
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        return [Problem("metadata.name", "is required")]
    if len(name) > s.NAME_MAX_LENGTH:
        return [Problem("metadata.name", f"must be at most {s.NAME_MAX_LENGTH} characters, got {len(name)}")]
    if not _NAME.match(name):
        return [Problem("metadata.name", f"must be a DNS-1123 label (lowercase letters, digits, '-'), got {name!r}")]
    return []


def parse_spec(manifest: Any, source: str | None = None) -> LargeModelService:
    """Validate a whole manifest and return it typed and defaulted; raises SpecError."""
    if not isinstance(manifest, dict):
        raise SpecError([Problem("(document)", f"must be a {s.KIND} object, got {type(manifest).__name__}")], source)
    problems: list[Problem] = []
    if manifest.get("apiVersion") != s.API_VERSION:
        problems.append(Problem("apiVersion", f"must be {s.API_VERSION}, got {manifest.get('apiVersion')!r}"))
    if manifest.get("kind") != s.KIND:
        problems.append(Problem("kind", f"must be {s.KIND}, got {manifest.get('kind')!r}"))
    metadata = manifest.get("metadata")
    problems += _metadata_problems(metadata)
    if "spec" not in manifest:
        problems.append(Problem("spec", "is required"))
        raise SpecError(problems, source)
    spec = apply_defaults(s.SPEC, manifest["spec"])
    problems += validate(s.SPEC, spec, "spec")
    if not problems:
        problems += _override_problems(spec["serving"].get("config"))
    if problems:
        raise SpecError(problems, source)
    assert isinstance(metadata, dict)
    return LargeModelService(
        name=metadata["name"],
        namespace=metadata.get("namespace") or "default",
        spec=_build(spec),
        raw_spec=spec,
        uid=metadata.get("uid"),
        generation=metadata.get("generation"),
    )


def _override_problems(raw: dict[str, Any] | None) -> list[Problem]:
    """What protobuf's own parser refuses in spec.serving.config beyond the schema."""
    try:
        parse_override(raw)
    except ValueError as exc:
        return [Problem("spec.serving.config", str(exc).removeprefix("spec.serving.config: "))]
    return []


def load_spec_file(path: str | Path) -> LargeModelService:
    """Read one LargeModelService from a YAML file; unreadable files raise SpecError too."""
    path = Path(path)
    try:
        manifest = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError([Problem(str(path), f"cannot read: {exc.strerror}")], str(path)) from exc
    except yaml.YAMLError as exc:
        raise SpecError([Problem(str(path), f"is not valid YAML: {exc}".splitlines()[0])], str(path)) from exc
    return parse_spec(manifest, str(path))


def _data_entry(raw: dict[str, Any] | None) -> DataEntry | None:
    if raw is None:
        return None
    return DataEntry(raw["uri"], raw["format"], raw["field"], raw.get("labelField"))


def _data(comp: dict[str, Any]) -> DataSpec:
    raw = comp.get("data") or {}
    dist = _data_entry(raw.get("distillation"))
    alias = (comp.get("distillation") or {}).get("dataset")
    if dist is None and alias:
        dist = DataEntry(alias)
    return DataSpec(_data_entry(raw.get("evaluation")), _data_entry(raw.get("calibration")), dist)


def _build(d: dict[str, Any]) -> Spec:
    model, comp, serv, auto, repo = (d["model"], d["compression"], d["serving"], d["autoscaling"], d["repository"])
    pruning = comp.get("pruning")
    distillation = comp.get("distillation")
    batching = serv["dynamicBatching"]
    return Spec(
        model=ModelSpec(model["uri"], model["format"], model["task"], model.get("sha256"),
                        (model.get("secretRef") or {}).get("name")),
        compression=CompressionSpec(
            pruning=PruningSpec(pruning["method"], pruning["sparsity"], pruning.get("threshold"),
                                pruning["structured"], pruning["recoverySteps"]) if pruning is not None else None,
            quantization=QuantizationSpec(comp["quantization"]["mode"], comp["quantization"]["perChannel"],
                                          comp["quantization"]["calibrationSamples"]),
            distillation=DistillationSpec(
                distillation["studentLayers"], distillation["temperature"], distillation["alpha"],
                distillation["epochs"], distillation.get("dataset"), distillation.get("studentUri"),
                distillation["seed"], distillation.get("steps")) if distillation is not None else None,
            quality_gate=QualityGateSpec(comp["qualityGate"]["metric"], comp["qualityGate"]["min"],
                                         comp["qualityGate"]["samples"]),
            variant_search=comp["variantSearch"]["enabled"],
            objective=comp["variantSearch"]["objective"],
            data=_data(comp),
            gpu=comp["resources"]["gpu"],
        ),
        serving=ServingSpec(
            device=serv["device"],
            image=serv["image"],
            node_selector=dict(serv["nodePool"].get("nodeSelector", {})),
            tolerations=tuple(Toleration(t.get("key"), t["operator"], t.get("value"), t.get("effect"),
                                         t.get("tolerationSeconds"))
                              for t in serv["nodePool"].get("tolerations", [])),
            resources=ResourcesSpec(serv["resources"]["cpu"], serv["resources"]["memory"], serv["resources"]["gpu"]),
            max_batch_size=serv["maxBatchSize"],
            dynamic_batching=DynamicBatchingSpec(batching["maxQueueDelayMicroseconds"],
                                                 tuple(batching.get("preferredBatchSizes", [])))
            if batching["enabled"] else None,
            instances=serv["instances"],
            sequence_length=serv["sequenceLength"],
            text_truncation=serv["text"]["truncation"],
            progress_deadline_seconds=serv["progressDeadlineSeconds"],
            drain_seconds=serv["drainSeconds"],
            template=serv.get("template"),
            config=serv.get("config") or None,
        ),
        autoscaling=AutoscalingSpec(auto["minReplicas"], auto["maxReplicas"], auto["metric"], auto["target"],
                                    auto["window"], auto["scaleDownStabilizationSeconds"], auto["cooldownSeconds"],
                                    auto["pollingSeconds"]),
        repository=RepositorySpec(repo.get("pvc"), repo.get("uri"), (repo.get("secretRef") or {}).get("name"),
                                  repo["keepVersions"]),
    )
