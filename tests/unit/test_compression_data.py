"""The user's data and the built-in corpus: formats, a fixed split, and one clear error per bad file."""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from lms_operator.api.contract import INVALID_DATA, CompressionSummary, ExitCode, Quality
from lms_operator.api.spec import DataEntry, DataSpec
from lms_operator.compression import data
from lms_operator.compression import evaluate as ev
from lms_operator.compression.errors import InputError

LINES = [f"sentence number {i} about a {w} thing" for i, w in enumerate(["red", "blue", "green", "old", "new"] * 8)]


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_text_and_jsonl_entries(tmp_path: Path) -> None:
    txt = write(tmp_path / "a.txt", "\n".join(LINES) + "\n\n")
    got = data.read_samples(DataEntry("file://" + str(txt)), "w", tmp_path)
    assert got.texts == LINES and got.labels is None
    assert got.sha256 == hashlib.sha256(txt.read_bytes()).hexdigest()
    jl = write(tmp_path / "b.jsonl", "\n".join(json.dumps({"q": s, "y": i % 2}) for i, s in enumerate(LINES)))
    got = data.read_samples(DataEntry("b.jsonl", "jsonl", "q", "y"), "w", tmp_path)  # relative to the spec folder
    assert got.texts == LINES and got.labels == [i % 2 for i in range(len(LINES))]


@pytest.mark.parametrize(("name", "content", "entry", "expected"), [
    ("missing file", None, DataEntry("nope.txt"), "spec.compression.data.evaluation.uri: cannot read"),
    ("empty file", b"\n  \n", DataEntry("f"), "spec.compression.data.evaluation.uri: {path} holds no samples"),
    ("bad JSON line", b'{"text": "a"}\n{"text": \n', DataEntry("f", "jsonl"),
     "spec.compression.data.evaluation: {path} line 2: not valid JSON"),
    ("not an object", b'{"text": "a"}\n["x"]\n', DataEntry("f", "jsonl"),
     "spec.compression.data.evaluation: {path} line 2: not a JSON object"),
    ("missing field", b'{"text": "a"}\n{"body": "b"}\n', DataEntry("f", "jsonl"),
     "spec.compression.data.evaluation.field: {path} line 2: field 'text' is missing"),
    ("missing label", b'{"text": "a", "y": 1}\n{"text": "b"}\n', DataEntry("f", "jsonl", "text", "y"),
     "spec.compression.data.evaluation.labelField: {path} line 2: field 'y' is missing"),
    ("not UTF-8", b"fine\n\xff\xfe broken\n", DataEntry("f"), "spec.compression.data.evaluation: {path} line 2: not UTF-8"),
    ("unsupported scheme", None, DataEntry("pvc://claim/eval.txt"), "data can come from s3://, file: URIs and local paths"),
])
def test_bad_data_names_field_file_and_line(tmp_path: Path, name: str, content: bytes | None, entry: DataEntry,
                                            expected: str) -> None:
    path = tmp_path / "f"
    if content is not None:
        write(path, content)
    with pytest.raises(InputError) as caught:
        data.read_samples(entry, "spec.compression.data.evaluation", tmp_path)
    assert expected.format(path=path) in str(caught.value)
    assert caught.value.exit_code == ExitCode.BAD_INPUT and caught.value.summary.reason == INVALID_DATA


def test_evaluation_file_is_never_trained_on(tmp_path: Path) -> None:
    write(tmp_path / "eval.txt", "\n".join(LINES[:12]))
    write(tmp_path / "train.txt", "\n".join(LINES))
    spec = DataSpec(evaluation=DataEntry("eval.txt"), distillation=DataEntry("train.txt"))
    text = data.text_data(spec, tmp_path, eval_limit=10)
    assert text.heldout == LINES[:10]
    assert not set(LINES[:12]) & set(text.train) and text.train == LINES[12:]
    assert text.calibration == text.train
    assert text.info["evaluation"]["samples"] == 10
    assert text.info["evaluation"]["sha256"] == hashlib.sha256((tmp_path / "eval.txt").read_bytes()).hexdigest()
    assert "12 training lines equal to an evaluation sample were dropped" in text.info["split"]


def test_too_few_evaluation_samples(tmp_path: Path) -> None:
    write(tmp_path / "eval.txt", "\n".join(LINES[:5]))
    with pytest.raises(InputError, match=r"data.evaluation: .*eval.txt has 5 samples, the gate needs at least 8"):
        data.text_data(DataSpec(evaluation=DataEntry("eval.txt")), tmp_path, eval_limit=256)


def test_calibration_entry_drops_evaluation_text(tmp_path: Path) -> None:
    write(tmp_path / "cal.txt", "\n".join(LINES))
    text = data.text_data(DataSpec(calibration=DataEntry("cal.txt")), tmp_path, eval_limit=256)
    assert text.info["calibration"]["source"].endswith("cal.txt")
    assert not set(text.calibration) & set(text.heldout)


def test_builtin_corpus_split_is_fixed_and_disjoint() -> None:
    text = data.text_data(DataSpec(), Path("."), eval_limit=256)
    again = data.text_data(DataSpec(), Path("."), eval_limit=256)
    assert text.heldout == again.heldout and text.train == again.train
    assert len(text.heldout) == 256 and not set(text.heldout) & set(text.train)
    assert all(data.is_heldout(s) for s in text.heldout) and not any(data.is_heldout(s) for s in text.train)
    assert text.source == data.CORPUS_NAME and text.info["split"] == data.SPLIT_RULE
    raw = data.CORPUS.read_bytes()
    assert text.info["evaluation"]["sha256"] == hashlib.sha256(raw).hexdigest()
    lines = gzip.decompress(raw).decode().splitlines()
    held_out = text.info["evaluation"]["held_out"]
    assert len(lines) == text.info["evaluation"]["lines"] == 16000
    assert len(text.train) + held_out == 16000 and 0.15 < held_out / 16000 < 0.25
    readme = (data.CORPUS.parent / "README.md").read_text()
    assert "WordNet 3.0" in readme and "wordnet-base" in readme and "build.py" in readme
    assert "Princeton University" in (data.CORPUS.parent / "LICENSE.txt").read_text()
    assert not any("def " in s or ">>>" in s for s in lines[:500])  # English, not code docstrings


def test_similarity_is_rank_agreement_of_pairwise_cosines() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 16))
    assert ev.similarity(x, x) == pytest.approx(1.0)
    assert ev.similarity(x, 3.0 * x) == pytest.approx(1.0)  # scale does not change cosines
    noisy = ev.similarity(x, x + 0.3 * rng.normal(size=x.shape))
    assert 0.5 < noisy < 1.0
    assert abs(ev.similarity(x, rng.normal(size=x.shape))) < 0.3
    assert ev.score("similarity", x, x, None) == pytest.approx(1.0)
    from scipy import stats as scipy_stats

    a, b = rng.normal(size=40), rng.normal(size=40)
    a[3] = a[5]
    assert ev.spearman(a, b) == pytest.approx(scipy_stats.spearmanr(a, b).statistic)


def test_summary_carries_samples_data_digest_and_note() -> None:
    s = CompressionSummary(version="k", quality=Quality("similarity", 0.97, 0.95, True, 1.0, 256, "ab" * 32),
                           note="magnitude pruning ... latency does not improve")
    again = CompressionSummary.from_message(s.to_message())
    assert again == s
    block = s.status_block("k")
    assert block["samples"] == 256 and block["dataSha256"] == "ab" * 32 and "latency" in block["note"]


def test_text_labels_accept_indices_and_model_label_names() -> None:
    from types import SimpleNamespace

    from lms_operator.compression.workload import text_labels

    src = SimpleNamespace(module=SimpleNamespace(config=SimpleNamespace(label2id={"NEGATIVE": 0, "POSITIVE": 1})))
    assert text_labels(src, [1, "NEGATIVE", "POSITIVE", 0]).tolist() == [1, 0, 1, 0]  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"labelField: sample 2: label 'neutral' is neither a class index"):
        text_labels(src, [1, "neutral"])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="accuracy needs labelled evaluation data"):
        text_labels(src, None)  # type: ignore[arg-type]
