"""The served configs of a published version, and the model repository Triton is started on.

The Job publishes a version with the configs of the moment. In the Triton pod an init container
(`lms assemble`) builds the repository Triton reads: every published file linked in place, every
config.pbtxt built afresh from the templates and the spec of now. So a change to how the model
is served (instances, threads, batch size, template, spec.serving.config) is a rolling update of
the Deployment, with nothing recompressed and nothing written to the repository.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Mapping, Sequence

from tritonclient.grpc import model_config_pb2 as pb

from lms_operator.api.spec import LargeModelService, ServingSpec
from lms_operator.api.version import version_key
from lms_operator.modelrepo.config import TensorSpec, build_model_config, parse_config, render_config
from lms_operator.modelrepo.templates import TEXT_TEMPLATES, Template, TemplateError, checked, load_templates, pick
from lms_operator.modelrepo.text import TEXT_TASKS, text_configs, text_model_name

CONFIG_FILE = "config.pbtxt"


def used_template_names(serving: ServingSpec, task: str) -> tuple[str, ...]:
    """The templates a resource's models are built from."""
    return (serving.template_name, *(TEXT_TEMPLATES if task in TEXT_TASKS else ()))


def resource_templates(templates: Mapping[str, Template], lms: LargeModelService) -> dict[str, Template]:
    return pick(templates, used_template_names(lms.spec.serving, lms.spec.model.task))


def job_templates(lms: LargeModelService, given: Mapping[str, Template] | None) -> dict[str, Template]:
    """The templates a compression run builds configs from: the operator's, else the package's."""
    return resource_templates(load_templates() if given is None else given, lms)


def template_digests(templates: Mapping[str, Template]) -> dict[str, str]:
    return {name: template.digest for name, template in sorted(templates.items())}


def templates_json(templates: Mapping[str, Template]) -> str:
    """The form the Job and the init container receive the operator's templates in."""
    return json.dumps({name: t.text for name, t in sorted(templates.items())}, sort_keys=True, separators=(",", ":"))


def templates_from_json(text: str) -> dict[str, Template]:
    try:
        texts = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TemplateError(f"--templates-json: not valid JSON: {exc.msg}") from None
    if not isinstance(texts, dict) or not all(isinstance(v, str) for v in texts.values()):
        raise TemplateError("--templates-json: must be an object of template name -> config.pbtxt text")
    return checked(texts)


def served_configs(model_name: str, task: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                   serving: ServingSpec, templates: Mapping[str, Template], text: bool) -> list[pb.ModelConfig]:
    """The ONNX model's config, then the text-in models' (when `text`)."""
    parsed = {name: t.config() for name, t in templates.items()}
    main = build_model_config(model_name, inputs, outputs, serving, parsed[serving.template_name])
    return [main, *(text_configs(model_name, task, outputs[0], serving, parsed) if text else [])]


def _tensors(tensors: Sequence[pb.ModelInput] | Sequence[pb.ModelOutput]) -> list[TensorSpec]:
    return [TensorSpec(t.name, pb.DataType.Name(t.data_type), list(t.dims)) for t in tensors]


def configs_for(version: Path, lms: LargeModelService, templates: Mapping[str, Template]) -> list[pb.ModelConfig]:
    """The served configs of a published version's models, built from the templates and the spec of now."""
    published = parse_config((version / lms.name / CONFIG_FILE).read_text())
    text = (version / text_model_name(lms.name)).is_dir()
    return served_configs(lms.name, lms.spec.model.task, _tensors(published.input), _tensors(published.output),
                          lms.spec.serving, templates, text)


def rewrite_configs(version: Path, lms: LargeModelService, templates: Mapping[str, Template]) -> None:
    """Build every config.pbtxt of a copied version anew (another serving config, the same model)."""
    for config in configs_for(version, lms, templates):
        (version / config.name / CONFIG_FILE).write_text(render_config(config))


def assemble_repository(version: Path, out: Path, lms: LargeModelService, templates: Mapping[str, Template]) -> list[str]:
    """Fill `out` (emptied first: an init container may run again) with a model folder per published
    model: its files linked from `version`, its config.pbtxt built now. Returns the model names."""
    configs = configs_for(version, lms, templates)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.iterdir():
        shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink()
    for config in configs:
        source, target = version / config.name, out / config.name
        target.mkdir()
        for entry in sorted(source.iterdir()):
            if entry.name != CONFIG_FILE:
                (target / entry.name).symlink_to(entry.resolve())
        (target / CONFIG_FILE).write_text(render_config(config))
    return [config.name for config in configs]


def default_version_key(lms: LargeModelService) -> str:
    """The version key with the package's own templates: what `lms compress` computes without --templates-json."""
    return version_key(lms, template_digests(job_templates(lms, None)))


def preview_configs(lms: LargeModelService, templates: Mapping[str, Template]) -> list[pb.ModelConfig]:
    """The configs a resource would be served with, before any compression: the inputs and outputs
    are the task's, with -1 where only the exported model knows a dimension."""
    text = lms.spec.model.task in TEXT_TASKS
    inputs = ([TensorSpec("input_ids", "TYPE_INT64", [-1]), TensorSpec("attention_mask", "TYPE_INT64", [-1])] if text
              else [TensorSpec("input", "TYPE_FP32", [-1])])
    output = TensorSpec("embedding" if lms.spec.model.task == "feature-extraction" else "logits", "TYPE_FP32", [-1])
    return served_configs(lms.name, lms.spec.model.task, inputs, [output], lms.spec.serving,
                          resource_templates(templates, lms), text)
