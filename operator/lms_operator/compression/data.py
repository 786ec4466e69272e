"""Evaluation, calibration and training data, read offline and split deterministically.

Text: `spec.compression.data.{evaluation,calibration,distillation}` entries (plain text lines or
JSONL with a named text field and an optional label field) or the built-in corpus, WordNet 3.0
glosses and example sentences (corpus/README.md says where it comes from and under which
licence). Evaluation text is never trained on: a given evaluation file is removed from the
training text, and without one, one line in five is held apart by a hash of its text.
Tabular: `sklearn:digits` or an .npz file with X and y; a model folder may name its dataset in
`lms-dataset.json`.
"""
from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lms_operator.api.contract import INVALID_DATA, CompressionSummary
from lms_operator.compression.errors import InputError
from lms_operator.compression.source import inside

CORPUS = Path(__file__).with_name("corpus") / "wordnet.txt.gz"
CORPUS_NAME = "builtin:wordnet-3.0"
MIN_EVAL_SAMPLES = 8
HELDOUT_MODULUS = 5
SPLIT_RULE = f"sha1(text) % {HELDOUT_MODULUS} == 0 is held out for evaluation, the rest trains"
FIELD = "spec.compression.data"


class DataError(InputError):
    """Data that cannot serve the gate (exit 2; the resource's Failed reason is InvalidData)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, CompressionSummary(reason=INVALID_DATA))


class DataEntryLike(Protocol):
    uri: str
    format: str
    field: str
    label_field: str | None


@dataclass(frozen=True)
class Samples:
    """Texts (and labels) read from one source, with the digest of the bytes they came from."""

    texts: list[str]
    labels: list[Any] | None
    source: str
    sha256: str

    def describe(self, n: int | None = None) -> dict[str, Any]:
        return {"source": self.source, "sha256": self.sha256, "samples": len(self.texts) if n is None else n}


def data_path(uri: str, where: str, base_dir: Path) -> Path:
    """A data URI as a local path: file: URIs and plain paths (relative to the spec's folder)."""
    if uri.startswith(("pvc://", "hf://")):
        raise DataError(f"{where}.uri: {uri}: data can come from s3://, file: URIs and local paths so far; "
                        "copy the file next to the spec, into the image or into a bucket")
    raw = uri[len("file://"):] if uri.startswith("file://") else uri[len("file:"):] if uri.startswith("file:") else uri
    path = Path(raw)
    return path if path.is_absolute() else inside(base_dir, raw, f"{where}.uri")


def read_samples(entry: DataEntryLike, where: str, base_dir: Path) -> Samples:
    """Read one data entry; every problem names the field path, the file and the line."""
    path: Path | str
    if entry.uri.startswith("s3://"):
        path, raw = entry.uri, s3_bytes(entry.uri, where)
    else:
        path = data_path(entry.uri, where, base_dir)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise DataError(f"{where}.uri: cannot read {path}: {exc.strerror or exc}") from None
    digest = hashlib.sha256(raw).hexdigest()
    texts: list[str] = []
    labels: list[Any] = []
    for number, line_bytes in enumerate(raw.splitlines(), start=1):
        try:
            line = line_bytes.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise DataError(f"{where}: {path} line {number}: not UTF-8 text") from None
        if not line:
            continue
        if entry.format == "text":
            texts.append(line)
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise DataError(f"{where}: {path} line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{where}: {path} line {number}: not a JSON object")
        text = record.get(entry.field)
        if not isinstance(text, str) or not text.strip():
            what = "missing" if entry.field not in record else "not a non-empty string"
            raise DataError(f"{where}.field: {path} line {number}: field {entry.field!r} is {what}")
        texts.append(text.strip())
        if entry.label_field:
            if entry.label_field not in record:
                raise DataError(f"{where}.labelField: {path} line {number}: field {entry.label_field!r} is missing")
            labels.append(record[entry.label_field])
    if not texts:
        raise DataError(f"{where}.uri: {path} holds no samples")
    return Samples(texts, labels if entry.label_field else None, str(path), digest)


def s3_bytes(uri: str, where: str, limit: int = 1 << 30) -> bytes:
    """One object's bytes, read with the model source's credentials (spec.model.secretRef), else the default."""
    from lms_operator.storage import s3
    from lms_operator.storage.errors import StorageError
    from lms_operator.storage.uri import UriError, parse_s3

    try:
        loc = parse_s3(uri, f"{where}.uri")
        if not loc.key or loc.key.endswith("/"):
            raise DataError(f"{where}.uri: {uri} names a prefix; name one object")
        data = s3.get_bytes(s3.source_client(), loc.bucket, loc.key, missing_ok=True)
    except (UriError, StorageError) as exc:
        raise DataError(f"{where}.uri: cannot read {uri}: {exc}") from None
    if data is None:
        raise DataError(f"{where}.uri: cannot read {uri}: no such object")
    if len(data) > limit:
        raise DataError(f"{where}.uri: {uri} is larger than {limit} bytes")
    return data


def default_corpus() -> Samples:
    """The built-in WordNet 3.0 sentences (corpus/README.md), read from the installed package."""
    raw = CORPUS.read_bytes()
    lines = [ln.strip() for ln in gzip.decompress(raw).decode("utf-8").splitlines()]
    return Samples([ln for ln in lines if ln], None, CORPUS_NAME, hashlib.sha256(raw).hexdigest())


def is_heldout(text: str, modulus: int = HELDOUT_MODULUS) -> bool:
    """Stable held-out membership by content hash (one in `modulus`)."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) % modulus == 0


@dataclass
class TextData:
    train: list[str]
    heldout: list[str]
    calibration: list[str]
    source: str
    heldout_labels: list[Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    """What the report and status record: per role its source, sha256, samples; the split rule."""


def text_data(data: Any, base_dir: Path, eval_limit: int) -> TextData:
    """Evaluation, calibration and training text for the spec's `data` (a DataSpec)."""
    dist = read_samples(data.distillation, f"{FIELD}.distillation", base_dir) if data.distillation else default_corpus()
    info: dict[str, Any] = {}
    if data.evaluation is not None:
        where = f"{FIELD}.evaluation"
        ev = read_samples(data.evaluation, where, base_dir)
        held, held_labels = ev.texts[:eval_limit], (ev.labels[:eval_limit] if ev.labels is not None else None)
        if len(held) < MIN_EVAL_SAMPLES:
            raise DataError(f"{where}: {ev.source} has {len(held)} samples, the gate needs at least {MIN_EVAL_SAMPLES}")
        banned = set(ev.texts)
        train = [t for t in dist.texts if t not in banned]
        info["evaluation"] = ev.describe(len(held))
        info["split"] = (f"evaluation is {ev.source} (first {len(held)} samples); "
                         f"{len(dist.texts) - len(train)} training lines equal to an evaluation sample were dropped")
    else:
        if data.distillation is not None:
            where = f"{FIELD}.distillation"
        else:
            where = "built-in corpus"
        train = [t for t in dist.texts if not is_heldout(t)]
        all_held = [t for t in dist.texts if is_heldout(t)]
        held, held_labels = all_held[:eval_limit], None
        if len(held) < MIN_EVAL_SAMPLES:
            raise DataError(f"{where}: only {len(held)} held-out samples in {dist.source} "
                             f"(need {MIN_EVAL_SAMPLES}; one line in {HELDOUT_MODULUS} is held out)")
        info["evaluation"] = {"source": dist.source, "sha256": dist.sha256, "samples": len(held),
                              "held_out": len(all_held), "lines": len(dist.texts)}
        info["split"] = SPLIT_RULE
    info["distillation"] = {**dist.describe(len(train))}
    if data.calibration is not None:
        cal = read_samples(data.calibration, f"{FIELD}.calibration", base_dir)
        banned = set(held)
        calibration = [t for t in cal.texts if t not in banned]
        info["calibration"] = cal.describe(len(calibration))
    else:
        calibration = train
        info["calibration"] = {"source": dist.source, "samples": len(train), "note": "the training side of the split"}
    if not train:
        raise DataError(f"{FIELD}.distillation: no training text left after holding out the evaluation samples")
    return TextData(train=train, heldout=held, calibration=calibration, source=dist.source,
                    heldout_labels=held_labels, info=info)


@dataclass
class TabularData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


def digits_split(seed: int = 0, test_fraction: float = 0.25) -> TabularData:
    """scikit-learn's bundled digits, pixels scaled to [0, 1], fixed permutation split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return TabularData(x[train], y[train], x[test], y[test], "sklearn:digits")


def tabular_data(dataset: str | None, model_path: Path, base_dir: Path) -> TabularData:
    """Labelled features for classifiers: the spec's dataset or the one the model folder names."""
    ref = dataset
    folder = model_path if model_path.is_dir() else model_path.parent
    meta = folder / "lms-dataset.json"
    if not ref and meta.is_file():
        ref = str(json.loads(meta.read_text()).get("dataset", "")) or None
    if not ref:
        raise DataError("spec.compression.distillation.dataset: classifiers need a labelled dataset (sklearn:digits or an .npz with X and y)")
    if ref == "sklearn:digits":
        return digits_split()
    path = Path(ref[len("file:"):] if ref.startswith("file:") else ref)
    path = path if path.is_absolute() else base_dir / path
    try:
        with np.load(path, allow_pickle=False) as z:
            x, y = z["X"].astype(np.float32), z["y"].astype(np.int64)
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"spec.compression.distillation.dataset: cannot read X and y from {path}: {exc}") from None
    order = np.random.default_rng(0).permutation(len(x))
    n_test = max(1, len(x) // 4)
    return TabularData(x[order[n_test:]], y[order[n_test:]], x[order[:n_test]], y[order[:n_test]], str(path))
