"""Triton Python model shipped in every text version: text -> tokens, or logits -> labelled probabilities.

Why an ensemble with this Python model rather than the tokenizer inside the ONNX graph
(onnxruntime-extensions): the published repository must load unchanged on the stock Triton
image, whose native onnxruntime backend would need the extensions' custom-op library built
against its own ONNX Runtime, while every Triton image carries the Python backend. The fast
`tokenizers` wheel is abi3 (CPython >= 3.10), so the version folder carries a copy under
`1/vendor/`, used when the server's Python lacks it. The ONNX model stays the token-level
model, unchanged and addressable, with its own dynamic batcher; the ensemble feeds it.

One file, two roles (the config's `role` parameter):
- `tokenizer`: `text` BYTES [1] -> `input_ids`, `attention_mask` INT64 [-1] and `truncated`
  BOOL [1]. Each request is padded to a length bucket (16, 32, 64, ... up to the limit) so
  requests of similar length meet in one batch at the ONNX step (Triton batches equal shapes).
- `labels`: `logits` FP32 [n] -> `probabilities` FP32 [n] (softmax; its label file serves
  Triton's classification extension) and `label` BYTES [1] (the most likely label's name).
A bad request (empty text, bytes that are not UTF-8, text over the limit when truncation is
off) gets its own error; the other requests of the batch are answered.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

TOKENIZER_DIR = "tokenizer"
TOKENIZER_FILE = "tokenizer.json"
VENDOR_DIR = "vendor"
LABELS_FILE = "labels.txt"
FIRST_BUCKET = 16


class RequestError(ValueError):
    """A request that cannot be served; it fails alone."""


def _parameter(config: dict[str, Any], key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {})
    value = value.get("string_value") if isinstance(value, dict) else value
    return default if value in (None, "") else str(value)


def import_tokenizers(version_dir: str) -> Any:
    """The `tokenizers` module: the server's own, else the copy published in the version folder.

    Its thread pool is switched off: a batch of short texts tokenises in well under a
    millisecond on one thread, and idle pool threads spinning beside ONNX Runtime on the
    same cores cost the model step more than they save.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import tokenizers
    except ImportError:
        vendor = os.path.join(version_dir, VENDOR_DIR)
        if not os.path.isdir(vendor):
            raise
        sys.path.insert(0, vendor)
        import tokenizers
    return tokenizers


def buckets(limit: int) -> list[int]:
    """16, 32, 64, ... below `limit`, then `limit` itself."""
    out = []
    size = FIRST_BUCKET
    while size < limit:
        out.append(size)
        size *= 2
    return out + [limit]


def decode_texts(array: np.ndarray) -> list[str]:
    """UTF-8 strings from a BYTES tensor of shape [batch, 1]; empty or undecodable items are refused."""
    if array.ndim != 2 or array.shape[1] != 1 or array.shape[0] == 0:
        raise RequestError(f"input text: expected shape [batch, 1], got {list(array.shape)}")
    texts = []
    for index, item in enumerate(array[:, 0]):
        if isinstance(item, str):
            text = item
        else:
            try:
                text = bytes(item).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RequestError(f"input text[{index}]: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        if not text.strip():
            raise RequestError(f"input text[{index}] is empty")
        texts.append(text)
    return texts


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


class TritonPythonModel:
    """One instance serves one role for one model."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.name: str = config.get("name", args.get("model_name", "text"))
        self.role = _parameter(config, "role", "tokenizer")
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        if self.role == "tokenizer":
            self._init_tokenizer(config, version_dir)
        elif self.role == "labels":
            path = os.path.join(args["model_repository"], LABELS_FILE)
            with open(path, encoding="utf-8") as handle:
                self.labels = [line.rstrip("\n") for line in handle if line.strip()]
        else:
            raise pb_utils.TritonModelException(f"{self.name}: unknown role {self.role!r} (tokenizer or labels)")

    def _init_tokenizer(self, config: dict[str, Any], version_dir: str) -> None:
        tokenizers = import_tokenizers(version_dir)
        path = os.path.join(version_dir, TOKENIZER_DIR, TOKENIZER_FILE)
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(f"{self.name}: {path} not found")
        self.max_length = int(_parameter(config, "max_length", "128"))
        self.truncation = _parameter(config, "truncation", "true").lower() in ("1", "true", "yes")
        self.buckets = buckets(self.max_length)
        self.tokenizer = tokenizers.Tokenizer.from_file(path)
        padding = self.tokenizer.padding
        self.pad_id = int(padding["pad_id"]) if padding else next(
            (i for t in ("[PAD]", "<pad>") if (i := self.tokenizer.token_to_id(t)) is not None), 0)
        self.tokenizer.no_padding()  # each request is padded to its own bucket below
        self.tokenizer.enable_truncation(max_length=self.max_length)

    # ---- roles ------------------------------------------------------------

    def _bucket(self, length: int) -> int:
        return next(b for b in self.buckets if length <= b)

    def _tokenize(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        texts: dict[int, list[str]] = {}
        for index, request in enumerate(requests):
            try:
                texts[index] = decode_texts(pb_utils.get_input_tensor_by_name(request, "text").as_numpy())
            except RequestError as exc:
                responses[index] = self._error(str(exc))
        flat = [t for index in texts for t in texts[index]]
        encodings = self.tokenizer.encode_batch(flat) if flat else []
        row = 0
        for index, items in texts.items():
            mine = encodings[row : row + len(items)]
            row += len(items)
            truncated = np.array([[bool(e.overflowing)] for e in mine], dtype=np.bool_)
            if not self.truncation and truncated.any():
                first = int(np.argmax(truncated[:, 0]))
                responses[index] = self._error(
                    f"input text[{first}] is longer than {self.max_length} tokens (serving.sequenceLength) "
                    "and serving.text.truncation is false")
                continue
            length = self._bucket(max(len(e.ids) for e in mine))
            ids = np.full((len(mine), length), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(mine), length), dtype=np.int64)
            for r, encoding in enumerate(mine):
                ids[r, : len(encoding.ids)] = encoding.ids
                mask[r, : len(encoding.ids)] = 1
            # `truncated` is an output tensor, not a response parameter: an ensemble returns its
            # steps' tensors, and Triton 2.51's Python backend returned no response parameters
            # even from this model called directly
            responses[index] = pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("input_ids", ids), pb_utils.Tensor("attention_mask", mask),
                pb_utils.Tensor("truncated", truncated)])
        return responses

    def _label(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy().astype(np.float32)
            probabilities = softmax(logits)
            names = np.array([[self.labels[i].encode("utf-8")] for i in np.argmax(probabilities, axis=1)], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("probabilities", probabilities), pb_utils.Tensor("label", names)]))
        return responses

    def _error(self, message: str, invalid: bool = True) -> Any:
        """An error response; a bad request is INVALID_ARG (HTTP 400), where the backend knows codes."""
        code = getattr(pb_utils.TritonError, "INVALID_ARG", None) if invalid else None
        error = pb_utils.TritonError(f"{self.name}: {message}", code) if code is not None else pb_utils.TritonError(f"{self.name}: {message}")
        return pb_utils.InferenceResponse(error=error)

    def execute(self, requests: list[Any]) -> list[Any]:
        try:
            return self._tokenize(requests) if self.role == "tokenizer" else self._label(requests)
        except Exception as exc:  # noqa: BLE001 - reported to each client, the server stays up
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return [self._error(f"failed: {message}", invalid=False) for _ in requests]

    def finalize(self) -> None:
        self.tokenizer = None
