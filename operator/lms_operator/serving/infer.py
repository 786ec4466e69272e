"""`lms infer`: one request to a Triton endpoint, printed for humans (or as JSON)."""
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
    try:
        protocol, url = split_endpoint(args.endpoint, args.protocol)
        if args.text:
            repository = args.repository
            if repository is None and args.tokenizer is None and default_repository().is_dir():
                repository = default_repository()  # where `lms serve` publishes by default
            tokenizer = load_tokenizer(find_tokenizer(args.model, args.tokenizer, repository), args.max_length)
            ids, mask = encode(tokenizer, args.text, pad_to=args.pad_to)
            inputs: dict[str, np.ndarray] = {"input_ids": ids, "attention_mask": mask}
        else:
            inputs = {"input": parse_vector(args.vector)}
    except (ValueError, FileNotFoundError) as exc:
        print(f"lms infer: {exc}", file=sys.stderr)
        return 2
    try:
        with Client(protocol, url) as client:
            outputs = client.infer(args.model, inputs)
    except Exception as exc:  # noqa: BLE001 - tritonclient raises its own error types per protocol
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"lms infer: {args.endpoint} ({protocol}): {message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({name: value.tolist() for name, value in outputs.items()}))
    elif "embedding" in outputs:
        print(describe_embeddings(args.text, outputs["embedding"]))
    elif "logits" in outputs:
        print(describe_logits(outputs["logits"]))
    else:
        print(json.dumps({name: _short(value) for name, value in outputs.items()}))
    return 0


def _short(value: np.ndarray) -> Any:
    return {"shape": list(value.shape), "first": value.ravel()[:PREVIEW].tolist()}
