"""Atomic publish, the 4 KiB summary and the termination-log location."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lms_operator.api.contract import CompressionSummary
from lms_operator.compression.publish import emit_summary, publish_version, termination_log_path
from lms_operator.modelrepo.layout import is_complete


def sources(tmp_path: Path) -> tuple[Path, list[Path]]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "m.onnx").write_bytes(b"onnx")
    (src / "tokenizer.json").write_text("{}")
    return src / "m.onnx", [src / "tokenizer.json"]


def test_publish_writes_layout_then_marker(tmp_path: Path) -> None:
    onnx, tok = sources(tmp_path)
    root = tmp_path / "root"
    final = root / "ns" / "name" / "abc"
    publish_version(root, final, "name", onnx, tok, 'name: "name"\n', {"variant": "int8"})
    assert is_complete(final)
    assert (final / "name/1/model.onnx").read_bytes() == b"onnx"
    assert (final / "name/1/tokenizer/tokenizer.json").is_file()
    assert (final / "name/config.pbtxt").read_text() == 'name: "name"\n'
    assert json.loads((final / "report.json").read_text()) == {"variant": "int8"}
    assert final.stat().st_mode & 0o755 == 0o755
    assert [p.name for p in root.iterdir()] == ["ns"]  # no staging folder left behind


def test_failed_publish_leaves_nothing(tmp_path: Path) -> None:
    onnx, _ = sources(tmp_path)
    root = tmp_path / "root"
    final = root / "ns" / "name" / "abc"
    with pytest.raises(FileNotFoundError):
        publish_version(root, final, "name", onnx, [tmp_path / "missing.json"], "", {})
    assert not final.exists() and not any(root.iterdir())


def test_interrupted_version_without_marker_is_replaced(tmp_path: Path) -> None:
    onnx, tok = sources(tmp_path)
    root = tmp_path / "root"
    final = root / "ns" / "name" / "abc"
    (final / "leftover").mkdir(parents=True)
    publish_version(root, final, "name", onnx, tok, "", {})
    assert is_complete(final) and not (final / "leftover").exists()


def test_summary_fits_4k_by_trimming_the_error() -> None:
    text = CompressionSummary(model="m", error="x" * 10000).to_message()
    assert len(text.encode()) <= 4096 and json.loads(text)["error"].endswith("...")
    assert CompressionSummary(variant="b", model="a").to_message() == '{"cache_hit":false,"model":"a","variant":"b"}'


def test_termination_log_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "termination-log"
    monkeypatch.setenv("LMS_TERMINATION_LOG", str(log))
    assert termination_log_path() == log
    emit_summary(CompressionSummary(version="k", cache_hit=True))
    assert json.loads(log.read_text()) == {"version": "k", "cache_hit": True}
    assert json.loads(capsys.readouterr().out) == {"version": "k", "cache_hit": True}
