"""Where published versions live inside a repository root.

ROOT/<namespace>/<name>/<key>/ is itself a Triton model repository holding one
model named after the resource; `.complete` is written last, so a folder
without it is an interrupted publish and never served.
"""
from __future__ import annotations

from pathlib import Path

COMPLETE_MARKER = ".complete"
REPORT_FILE = "report.json"
MODEL_FILE = "model.onnx"
MODEL_VERSION = "1"
TOKENIZER_DIR = "tokenizer"


def version_dir(root: str | Path, namespace: str, name: str, key: str) -> Path:
    return Path(root) / namespace / name / key


def relative_version_path(namespace: str, name: str, key: str) -> str:
    """The same location relative to ROOT, as used inside pods (/models/<this>)."""
    return f"{namespace}/{name}/{key}"


def model_dir(version: Path, model_name: str) -> Path:
    return version / model_name


def model_file(version: Path, model_name: str) -> Path:
    return version / model_name / MODEL_VERSION / MODEL_FILE


def tokenizer_dir(version: Path, model_name: str) -> Path:
    return version / model_name / MODEL_VERSION / TOKENIZER_DIR


def is_complete(version: Path) -> bool:
    return (version / COMPLETE_MARKER).is_file()
