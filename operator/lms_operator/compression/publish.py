"""Atomic publication of a version folder, the run summary and the termination log."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from lms_operator.api.contract import CompressionSummary
from lms_operator.modelrepo.layout import COMPLETE_MARKER, MODEL_FILE, MODEL_VERSION, REPORT_FILE, TOKENIZER_DIR
from lms_operator.modelrepo.text import TextModel

DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")


def publish_version(root: Path, final: Path, model_name: str, onnx_path: Path, tokenizer_files: list[Path],
                    config_text: str, report: dict[str, Any], text_models: Sequence[TextModel] = ()) -> Path:
    """Write everything into a temp folder under ROOT, rename it into place, then write `.complete`.

    `text_models` (modelrepo.text) are the text-in ensemble's models, written beside the ONNX model.
    """
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        staging.chmod(0o755)  # Triton may run as another user and must read the version
        mdir = staging / model_name
        vdir = mdir / MODEL_VERSION
        vdir.mkdir(parents=True)
        shutil.copyfile(onnx_path, vdir / MODEL_FILE)
        data = onnx_path.with_name(onnx_path.name + ".data")
        if data.is_file():
            shutil.copyfile(data, vdir / (MODEL_FILE + ".data"))
        if tokenizer_files:
            tdir = vdir / TOKENIZER_DIR
            tdir.mkdir()
            for f in tokenizer_files:
                shutil.copyfile(f, tdir / f.name)
        (mdir / "config.pbtxt").write_text(config_text)
        for text_model in text_models:
            write_text_model(staging, text_model)
        (staging / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # an interrupted earlier publish (no marker): replace it
            shutil.rmtree(final)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    (final / COMPLETE_MARKER).touch()
    return final


def write_text_model(version: Path, text_model: TextModel) -> None:
    """One model folder: config.pbtxt, its own files, and version 1 (an ensemble's is empty)."""
    mdir = version / text_model.name
    vdir = mdir / MODEL_VERSION
    vdir.mkdir(parents=True)
    (mdir / "config.pbtxt").write_text(text_model.config_text)
    for name, content in text_model.model_files.items():
        (mdir / name).write_text(content)
    for relative, source in text_model.version_files.items():
        target = vdir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def termination_log_path() -> Path | None:
    """$LMS_TERMINATION_LOG when set, else /dev/termination-log when it exists."""
    env = os.environ.get("LMS_TERMINATION_LOG")
    if env:
        return Path(env)
    return DEFAULT_TERMINATION_LOG if DEFAULT_TERMINATION_LOG.exists() else None


def emit_summary(summary: CompressionSummary) -> str:
    """Print the summary to stdout and write it to the termination log (the Job's answer)."""
    text = summary.to_message()
    print(text, flush=True)
    path = termination_log_path()
    if path is not None:
        try:
            path.write_text(text)
        except OSError:
            pass
    return text
