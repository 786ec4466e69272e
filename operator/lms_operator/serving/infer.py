"""`lms infer`: one request to a Triton endpoint, printed for humans (or as JSON).

`--text` goes to the server's text model (`<model>-text`), which tokenises with the
tokenizer published beside the model; `--tokens` tokenises here and calls the
token-level model, for versions published before the text model existed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from lms_operator.modelrepo.layout import MODEL_VERSION, TOKENIZER_DIR, is_complete

PREVIEW = 8


def find_tokenizer(model: str, tokenizer: Path | None, repository: Path | None) -> Path:
    """--tokenizer, else <repository>/<model>/1/tokenizer, else the newest complete version under a root."""
    if tokenizer is not None:
        return tokenizer
    if repository is None:
        raise ValueError("--tokenizer or --repository is required for --text")
    direct = repository / model / MODEL_VERSION / TOKENIZER_DIR
    if direct.is_dir():
        return direct
    candidates = [p for p in repository.glob(f"**/{model}/{MODEL_VERSION}/{TOKENIZER_DIR}") if is_complete(p.parents[2])]
    if not candidates:
        raise ValueError(f"--repository: no {model}/{MODEL_VERSION}/{TOKENIZER_DIR} under {repository}")
    return max(candidates, key=lambda p: p.stat().st_mtime)


def parse_vector(text: str) -> np.ndarray:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--vector: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise ValueError("--vector is empty")
    return np.asarray([values], dtype=np.float32)


def describe_embeddings(texts: list[str], embeddings: np.ndarray) -> str:
    lines = []
    for text, row in zip(texts, embeddings):
        preview = ", ".join(f"{v:+.4f}" for v in row[:PREVIEW])
        lines.append(f"{text[:60]!r}: {row.shape[0]} dims, norm {float(np.linalg.norm(row)):.4f}, [{preview}, ...]")
    return "\n".join(lines)


def text_model(model: str) -> str:
    """The text-in model for a resource name (unchanged when already given)."""
    from lms_operator.modelrepo.text import TEXT_SUFFIX, text_model_name

    return model if model.endswith(TEXT_SUFFIX) else text_model_name(model)


def text_tensor(texts: list[str]) -> np.ndarray:
    """BYTES [batch, 1]; empty texts are refused here with the flag's name (the server refuses them too)."""
    for index, text in enumerate(texts):
        if not text or not text.strip():
            raise ValueError(f"--text #{index + 1} is empty")
    return np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)


def describe_labels(texts: list[str], labels: np.ndarray, probabilities: np.ndarray) -> str:
    lines = []
    for text, label, row in zip(texts, labels[:, 0], probabilities):
        name = label.decode() if isinstance(label, bytes) else str(label)
        lines.append(f"{text[:60]!r}: {name} ({float(row.max()):.4f})")
    return "\n".join(lines)


def describe_logits(logits: np.ndarray) -> str:
    row = logits[0]
    values = ", ".join(f"{v:+.3f}" for v in row)
    return f"class {int(np.argmax(row))} (logits [{values}])"


def infer_command(args: argparse.Namespace) -> int:
    from lms_operator.serving.client import Client, split_endpoint
    from lms_operator.serving.triton import default_repository
    from lms_operator.serving.tokenize import encode, load_tokenizer

    if bool(args.text) == bool(args.vector):
        print("lms infer: give --text (one or more) or --vector", file=sys.stderr)
        return 2
    tokens = bool(args.text) and (getattr(args, "tokens", False) or args.tokenizer is not None)
    model = args.model
    try:
        protocol, url = split_endpoint(args.endpoint, args.protocol)
        if args.text and not tokens:
            model = text_model(args.model)
            inputs: dict[str, np.ndarray] = {"text": text_tensor(args.text)}
        elif args.text:
            repository = args.repository
            if repository is None and args.tokenizer is None and default_repository().is_dir():
                repository = default_repository()  # where `lms serve` publishes by default
            tokenizer = load_tokenizer(find_tokenizer(args.model, args.tokenizer, repository), args.max_length)
            ids, mask = encode(tokenizer, args.text, pad_to=args.pad_to)
            inputs = {"input_ids": ids, "attention_mask": mask}
        else:
            inputs = {"input": parse_vector(args.vector)}
    except (ValueError, FileNotFoundError) as exc:
        print(f"lms infer: {exc}", file=sys.stderr)
        return 2
    try:
        with Client(protocol, url) as client:
            outputs = client.infer(model, inputs)
    except Exception as exc:  # noqa: BLE001 - tritonclient raises its own error types per protocol
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if model != args.model and ("unknown model" in message or "not found" in message):
            message += f" (a version without a text model: add --tokens to tokenise here and call {args.model})"
        print(f"lms infer: {args.endpoint} ({protocol}): {message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({name: _jsonable(value) for name, value in outputs.items()}))
    elif "embedding" in outputs:
        print(describe_embeddings(args.text, outputs["embedding"]))
    elif "label" in outputs and "probabilities" in outputs:
        print(describe_labels(args.text, outputs["label"], outputs["probabilities"]))
    elif "logits" in outputs:
        print(describe_logits(outputs["logits"]))
    else:
        print(json.dumps({name: _short(value) for name, value in outputs.items()}))
    if "truncated" in outputs and bool(np.any(outputs["truncated"])):
        rows = [str(i + 1) for i, flag in enumerate(np.asarray(outputs["truncated"]).ravel()) if flag]
        print(f"lms infer: --text #{', #'.join(rows)} truncated to the model's sequenceLength", file=sys.stderr)
    return 0


def _jsonable(value: np.ndarray) -> Any:
    if value.dtype == np.object_:
        return [[v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in row] for row in value.tolist()]
    return value.tolist()


def _short(value: np.ndarray) -> Any:
    return {"shape": list(value.shape), "first": value.ravel()[:PREVIEW].tolist()}
