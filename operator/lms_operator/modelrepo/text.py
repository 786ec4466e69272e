"""The text-in models published next to a text task's ONNX model: a Triton ensemble.

For a resource `NAME` the version folder holds
- `NAME`: the token-level ONNX model (input_ids, attention_mask), unchanged;
- `NAME-tokenizer`: Python backend, `text` -> tokens, with its tokenizer files (and a copy
  of the abi3 `tokenizers` wheel, so a stock Triton image needs nothing installed);
- `NAME-labels` (text-classification): Python backend, logits -> `probabilities` (with a
  label file: Triton's classification extension) and `label`;
- `NAME-text`: the ensemble clients call with `text` BYTES [batch, 1].
The mechanism and why: see serving/backend/text_model.py. Every config is Triton's
ModelConfig message, like the ONNX model's.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from tritonclient.grpc import model_config_pb2 as pb

from lms_operator.api.spec import ServingSpec
from lms_operator.modelrepo.config import TensorSpec, render_config, set_io
from lms_operator.modelrepo.templates import ENSEMBLE, LABELS, TOKENIZER, load_templates

TEXT_TASKS = ("feature-extraction", "text-classification")
TEXT_SUFFIX = "-text"
TOKENIZER_SUFFIX = "-tokenizer"
LABELS_SUFFIX = "-labels"
TEXT_INPUT = "text"
TRUNCATED_OUTPUT = "truncated"
LABELS_FILE = "labels.txt"
MODEL_SOURCE = Path(__file__).resolve().parent.parent / "serving" / "backend" / "text_model.py"


def text_model_name(model_name: str) -> str:
    """The model a client sends text to."""
    return model_name + TEXT_SUFFIX


@dataclass(frozen=True)
class TextModel:
    """One model folder to publish: its config and the files of version 1 (relative path -> source)."""

    name: str
    config: pb.ModelConfig
    version_files: dict[str, Path] = field(default_factory=dict)
    model_files: dict[str, str] = field(default_factory=dict)  # written next to config.pbtxt

    @property
    def config_text(self) -> str:
        return render_config(self.config)


def _from_template(template: pb.ModelConfig, name: str, serving: ServingSpec, inputs: Sequence[TensorSpec],
                   outputs: Sequence[TensorSpec]) -> pb.ModelConfig:
    config = pb.ModelConfig()
    config.CopyFrom(template)
    config.name, config.max_batch_size = name, serving.max_batch_size
    set_io(config, inputs, outputs)
    return config


def _python_model(template: pb.ModelConfig, name: str, role: str, serving: ServingSpec, inputs: Sequence[TensorSpec],
                  outputs: Sequence[TensorSpec]) -> pb.ModelConfig:
    config = _from_template(template, name, serving, inputs, outputs)
    config.parameters["role"].string_value = role
    return config


def build_tokenizer_config(model_name: str, serving: ServingSpec, template: pb.ModelConfig) -> pb.ModelConfig:
    config = _python_model(template, model_name + TOKENIZER_SUFFIX, "tokenizer", serving,
                           [TensorSpec(TEXT_INPUT, "TYPE_STRING", [1])],
                           [TensorSpec("input_ids", "TYPE_INT64", [-1]), TensorSpec("attention_mask", "TYPE_INT64", [-1]),
                            TensorSpec(TRUNCATED_OUTPUT, "TYPE_BOOL", [1])])
    config.parameters["max_length"].string_value = str(serving.sequence_length)
    config.parameters["truncation"].string_value = "true" if serving.text_truncation else "false"
    return config


def build_labels_config(model_name: str, classes: int, serving: ServingSpec, template: pb.ModelConfig) -> pb.ModelConfig:
    config = _python_model(template, model_name + LABELS_SUFFIX, "labels", serving, [TensorSpec("logits", "TYPE_FP32", [classes])],
                           [TensorSpec("probabilities", "TYPE_FP32", [classes]), TensorSpec("label", "TYPE_STRING", [1])])
    config.output[0].label_filename = LABELS_FILE
    return config


def _step(config: pb.ModelConfig, model: str, inputs: Sequence[str], outputs: Sequence[str]) -> None:
    step = config.ensemble_scheduling.step.add(model_name=model, model_version=-1)
    for name in inputs:
        step.input_map[name] = name
    for name in outputs:
        step.output_map[name] = name


def build_ensemble_config(model_name: str, task: str, output: TensorSpec, serving: ServingSpec,
                          template: pb.ModelConfig) -> pb.ModelConfig:
    """text -> tokenizer -> ONNX model [-> labels]; the ONNX step keeps its own dynamic batcher."""
    truncated = TensorSpec(TRUNCATED_OUTPUT, "TYPE_BOOL", [1])
    if task == "text-classification":
        classes = output.dims[0]
        outputs = [TensorSpec("probabilities", "TYPE_FP32", [classes]), TensorSpec("label", "TYPE_STRING", [1]), truncated]
    else:
        outputs = [output, truncated]
    config = _from_template(template, text_model_name(model_name), serving, [TensorSpec(TEXT_INPUT, "TYPE_STRING", [1])],
                            outputs)
    config.ClearField("ensemble_scheduling")
    tokens = ["input_ids", "attention_mask"]
    _step(config, model_name + TOKENIZER_SUFFIX, [TEXT_INPUT], [*tokens, TRUNCATED_OUTPUT])
    _step(config, model_name, tokens, [output.name])
    if task == "text-classification":
        _step(config, model_name + LABELS_SUFFIX, [output.name], ["probabilities", "label"])
        config.output[0].label_filename = LABELS_FILE
    return config


def read_labels(source: Path | None, classes: int) -> list[str]:
    """Label names from the source's config.json `id2label` (Hugging Face), else LABEL_0, LABEL_1, ..."""
    names = [f"LABEL_{i}" for i in range(classes)]
    config = source / "config.json" if source is not None and source.is_dir() else None
    if config is not None and config.is_file():
        id2label = json.loads(config.read_text()).get("id2label") or {}
        for key, value in id2label.items():
            if str(key).isdigit() and int(key) < classes and str(value).strip():
                names[int(key)] = " ".join(str(value).split())  # one line per label in labels.txt
    return names


def vendored_tokenizers() -> dict[str, Path]:
    """The installed `tokenizers` package as version-folder files under vendor/ (abi3 builds only).

    An abi3 build loads on any CPython >= its minimum, so the stock Triton image's Python
    can import it; a build for one Python version is not copied (the server must have it).
    """
    spec = importlib.util.find_spec("tokenizers")
    if spec is None or not spec.submodule_search_locations:
        return {}
    package = Path(list(spec.submodule_search_locations)[0])
    if not any(".abi3." in p.name for p in package.glob("*.so")):
        return {}
    return {f"vendor/tokenizers/{p.relative_to(package)}": p for p in sorted(package.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyi"}


def text_configs(model_name: str, task: str, output: TensorSpec, serving: ServingSpec,
                 templates: Mapping[str, pb.ModelConfig]) -> list[pb.ModelConfig]:
    """The configs of the text-in models (tokenizer, [labels,] ensemble) for a text task's model."""
    configs = [build_tokenizer_config(model_name, serving, templates[TOKENIZER])]
    if task == "text-classification":
        configs.append(build_labels_config(model_name, output.dims[0], serving, templates[LABELS]))
    configs.append(build_ensemble_config(model_name, task, output, serving, templates[ENSEMBLE]))
    return configs


def text_models(model_name: str, task: str, output: TensorSpec, serving: ServingSpec, tokenizer_files: Sequence[Path],
                source: Path | None = None, templates: Mapping[str, pb.ModelConfig] | None = None) -> list[TextModel]:
    """The models to publish next to the ONNX model; none for tasks that take no text.
    `templates`: name -> parsed template (default: the package's)."""
    if task not in TEXT_TASKS or not any(p.name == "tokenizer.json" for p in tokenizer_files):
        return []
    if templates is None:
        templates = {name: template.config() for name, template in load_templates().items()}
    files = {"model.py": MODEL_SOURCE, **{f"tokenizer/{p.name}": p for p in tokenizer_files}, **vendored_tokenizers()}
    labels = {LABELS_FILE: "\n".join(read_labels(source, output.dims[0])) + "\n"} if task == "text-classification" else {}
    own = {model_name + TOKENIZER_SUFFIX: (files, {}), model_name + LABELS_SUFFIX: ({"model.py": MODEL_SOURCE}, labels)}
    return [TextModel(config.name, config, *own.get(config.name, ({}, labels)))
            for config in text_configs(model_name, task, output, serving, templates)]
