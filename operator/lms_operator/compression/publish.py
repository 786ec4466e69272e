"""Atomic publication of a version folder, the run summary and the termination log."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lms_operator.modelrepo.layout import COMPLETE_MARKER, MODEL_FILE, MODEL_VERSION, REPORT_FILE, TOKENIZER_DIR

SUMMARY_LIMIT = 4096
DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")


def publish_version(root: Path, final: Path, model_name: str, onnx_path: Path, tokenizer_files: list[Path],
                    config_text: str, report: dict[str, Any]) -> Path:
    """Write everything into a temp folder under ROOT, rename it into place, then write `.complete`."""
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


def compact_summary(summary: dict[str, Any]) -> str:
    """One-line JSON, trimmed to 4 KiB by shortening the error text if needed."""
    text = json.dumps(summary, separators=(",", ":"), sort_keys=True)
    if len(text.encode()) > SUMMARY_LIMIT and summary.get("error"):
        s = dict(summary)
        over = len(text.encode()) - SUMMARY_LIMIT
        s["error"] = str(s["error"])[: max(0, len(str(s["error"])) - over - 8)] + "..."
        text = json.dumps(s, separators=(",", ":"), sort_keys=True)
    return text


def termination_log_path() -> Path | None:
    """$LMS_TERMINATION_LOG when set, else /dev/termination-log when it exists."""
    env = os.environ.get("LMS_TERMINATION_LOG")
    if env:
        return Path(env)
    return DEFAULT_TERMINATION_LOG if DEFAULT_TERMINATION_LOG.exists() else None


def emit_summary(summary: dict[str, Any]) -> str:
    """Print the summary to stdout and write it to the termination log."""
    text = compact_summary(summary)
    print(text, flush=True)
    path = termination_log_path()
    if path is not None:
        try:
            path.write_text(text)
        except OSError:
            pass
    return text
