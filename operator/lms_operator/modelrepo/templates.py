"""Serving templates: the partial config.pbtxt each served model starts from.

The package carries a copy of the repository's `model-repo-templates/` folder; a cluster admin
replaces or adds templates through the Helm chart (a ConfigMap the operator reads with
--templates-dir), and the operator hands the texts it resolved to the Job and the Triton pod, so
both build the config from the same templates. Each template is parsed with Triton's ModelConfig
message: a misspelt field is refused with its file and line, not found by a pod that fails to load.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from lms_operator.api.model_config import parse_override

PACKAGE_TEMPLATES = Path(__file__).resolve().parent / "templates"
SUFFIX = ".pbtxt"
TOKENIZER, LABELS, ENSEMBLE = "text-tokenizer", "text-labels", "text-ensemble"
TEXT_TEMPLATES = (TOKENIZER, LABELS, ENSEMBLE)


class TemplateError(ValueError):
    """A template that is missing or not a valid ModelConfig; the message names the file and line."""


@dataclass(frozen=True)
class Template:
    name: str
    text: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def config(self) -> pb.ModelConfig:
        return parse_template(self.text, f"{self.name}{SUFFIX}")


def parse_template(text: str, source: str) -> pb.ModelConfig:
    try:
        return text_format.Parse(text, pb.ModelConfig())
    except text_format.ParseError as exc:
        line, column = exc.GetLine(), exc.GetColumn()
        message = str(exc).split(" : ", 1)[-1] if line else str(exc)
        where = f"{source}:{line}:{column}" if line else source
        raise TemplateError(f"{where}: {message}") from None


def read_folder(folder: Path) -> dict[str, str]:
    """name -> text of every *.pbtxt in a folder (a ConfigMap mount's `..data` links are followed)."""
    return {path.name.removesuffix(SUFFIX): path.read_text() for path in sorted(folder.glob(f"*{SUFFIX}"))
            if path.is_file()}


def load_templates(folder: str | Path | None = None) -> dict[str, Template]:
    """The package's templates, each replaced (or joined) by a folder's file of the same name; all parsed."""
    texts = read_folder(PACKAGE_TEMPLATES)
    if folder is not None:
        texts |= read_folder(Path(folder))
    return checked(texts)


def checked(texts: Mapping[str, str]) -> dict[str, Template]:
    """Templates from name -> text, each parsed once here so a bad one is refused before use."""
    templates = {name: Template(name, text) for name, text in texts.items()}
    for template in templates.values():
        template.config()
    return templates


def pick(templates: Mapping[str, Template], names: tuple[str, ...]) -> dict[str, Template]:
    """Only the named templates; a name with no template is refused with the ones there are."""
    missing = [name for name in names if name not in templates]
    if missing:
        raise TemplateError(f"spec.serving.template: no serving template named {missing[0]!r} "
                            f"(there are: {', '.join(sorted(templates))})")
    return {name: templates[name] for name in names}


def overlay(base: pb.ModelConfig, override: Mapping[str, Any] | None) -> pb.ModelConfig:
    """`base` with every top-level field that `override` (spec.serving.config, already validated)
    names replaced by the override's value; an empty value (`model_warmup: []`) removes the field."""
    merged = pb.ModelConfig()
    merged.CopyFrom(base)
    if override:
        for name in override:
            merged.ClearField(name)
        parsed = parse_override(dict(override))
        if parsed is not None:
            merged.MergeFrom(parsed)
    return merged
