"""Client-side tokenisation padded to a few length buckets.

Padding every request to one of a few lengths (16, 32, 64, 128 tokens) lets the server
batch requests of similar length together without padding short texts to the maximum.
fp32 and fp16 models give the same embedding at any padding (the mask excludes pad tokens);
dynamically quantized int8 models pick activation scales over the whole batch tensor, so pad
tokens and batch neighbours move their output slightly (cosine about 0.99 for MiniLM).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

BUCKETS: tuple[int, ...] = (16, 32, 64, 128)
TOKENIZER_FILE = "tokenizer.json"


def bucket_length(length: int, buckets: Sequence[int] = BUCKETS) -> int:
    """Smallest bucket holding `length` tokens; lengths above the largest bucket keep their own length."""
    if length < 1:
        raise ValueError(f"length must be positive, got {length}")
    for bucket in sorted(buckets):
        if length <= bucket:
            return bucket
    return length


def pad_batch(sequences: Sequence[Sequence[int]], length: int, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """input_ids and attention_mask (int64, [len(sequences), length]) right-padded with `pad_id`."""
    ids = np.full((len(sequences), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), length), dtype=np.int64)
    for row, seq in enumerate(sequences):
        if len(seq) > length:
            raise ValueError(f"sequence of {len(seq)} tokens does not fit length {length}")
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


def load_tokenizer(directory: Path, max_length: int) -> Any:
    """A `tokenizers.Tokenizer` from DIR/tokenizer.json, truncating at max_length, no padding."""
    from tokenizers import Tokenizer

    path = Path(directory) / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"--tokenizer: {path} not found")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


def encode(tokenizer: Any, texts: Sequence[str], buckets: Sequence[int] = BUCKETS, pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Tokenise `texts` and pad them to a bucket (or `pad_to`); empty texts are rejected."""
    for index, text in enumerate(texts):
        if not text or not text.strip():
            raise ValueError(f"--text #{index + 1} is empty")
    encodings = tokenizer.encode_batch(list(texts))
    sequences = [e.ids for e in encodings]
    pad_id = tokenizer.token_to_id("[PAD]") or 0
    longest = max(len(s) for s in sequences)
    length = pad_to if pad_to else bucket_length(longest, buckets)
    if length < longest:
        raise ValueError(f"--pad-to {length} is shorter than the longest text ({longest} tokens)")
    return pad_batch(sequences, length, pad_id)
