"""Training, calibration and held-out data, built offline and deterministically.

Text: the spec's dataset file (one sentence per line) or a corpus of sentences taken from the
docstrings of the installed Python standard library. Tabular: `sklearn:digits` or an .npz
file with X and y; a model folder may name its dataset in `lms-dataset.json`.
"""
from __future__ import annotations

import ast
import hashlib
import json
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lms_operator.compression.errors import InputError

_WS = re.compile(r"\s+")
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_OK = re.compile(r"^[A-Za-z][A-Za-z0-9 ,;:'()\-./%]*[.!?]$")


def docstring_sentences(source: str) -> list[str]:
    """Plain-prose sentences from the docstrings in one Python source text."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if not doc:
                continue
            for para in doc.split("\n\n"):
                text = _WS.sub(" ", para).strip()
                for sent in _SENT.split(text):
                    words = sent.split()
                    if 6 <= len(words) <= 40 and _OK.match(sent) and ">>>" not in sent:
                        out.append(sent)
    return out


def python_doc_corpus(limit: int = 6000) -> list[str]:
    """Deterministic sentences from stdlib docstrings (sorted files, first occurrence kept)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    seen: set[str] = set()
    sentences: list[str] = []
    files = sorted(p for p in stdlib.glob("*.py")) + sorted(p for p in stdlib.glob("*/*.py") if "test" not in p.parts[-2])
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for sent in docstring_sentences(text):
            if sent not in seen:
                seen.add(sent)
                sentences.append(sent)
                if len(sentences) >= limit:
                    return sentences
    return sentences


def load_text_lines(path: Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file."""
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"spec.compression.distillation.dataset: cannot read {path}: {exc}") from None
    lines = [ln for ln in lines if ln]
    if len(lines) < 16:
        raise InputError(f"spec.compression.distillation.dataset: {path} has {len(lines)} lines, need at least 16")
    return lines


def is_heldout(text: str, modulus: int = 5) -> bool:
    """Stable held-out membership by content hash (one in `modulus`)."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) % modulus == 0


@dataclass
class TextData:
    train: list[str]
    heldout: list[str]
    source: str


def text_data(dataset: str | None, base_dir: Path) -> TextData:
    """Split sentences into train and held-out parts by content hash."""
    if dataset:
        path = Path(dataset[len("file:"):] if dataset.startswith("file:") else dataset)
        path = path if path.is_absolute() else base_dir / path
        lines, source = load_text_lines(path), str(path)
    else:
        lines, source = python_doc_corpus(), "python-stdlib-docstrings"
    train = [s for s in lines if not is_heldout(s)]
    held = [s for s in lines if is_heldout(s)]
    return TextData(train=train, heldout=held, source=source)


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
        raise InputError("spec.compression.distillation.dataset: classifiers need a labelled dataset (sklearn:digits or an .npz with X and y)")
    if ref == "sklearn:digits":
        return digits_split()
    path = Path(ref[len("file:"):] if ref.startswith("file:") else ref)
    path = path if path.is_absolute() else base_dir / path
    try:
        with np.load(path, allow_pickle=False) as z:
            x, y = z["X"].astype(np.float32), z["y"].astype(np.int64)
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"spec.compression.distillation.dataset: cannot read X and y from {path}: {exc}") from None
    order = np.random.default_rng(0).permutation(len(x))
    n_test = max(1, len(x) // 4)
    return TabularData(x[order[n_test:]], y[order[n_test:]], x[order[:n_test]], y[order[:n_test]], str(path))
