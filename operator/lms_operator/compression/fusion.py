"""Transformer graph fusion (the onnxruntime.transformers optimizer, as Optimum's O2 level) and
the rule that keeps it only where it measured faster.

Fusion folds attention, GELU, skip + LayerNorm and the embeddings into ORT contrib operators.
Whether that is faster depends on the CPU, the thread count and what quantization follows (on
one 2-core VNNI CPU a fully fused int8 MiniLM ran 1.46x fp32 against 1.54x unfused), so every
fused variant is timed beside its unfused twin and the slower one is set aside.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from lms_operator.compression.search import Candidate

FUSED = "+fused"
MAX_SIZE_GROWTH = 1.1
"""A fused variant larger than this times its unfused twin kept weights in fp32 that the twin
quantized (ORT's quantizer does not reach every fused operator); it is set aside whatever its speed."""
TEXT_TASKS = ("feature-extraction", "text-classification")


def attention_shape(module: Any, base: str) -> tuple[int, int]:
    """(heads, hidden size) for attention fusion from a Hugging Face config; (0, 0) lets the
    optimizer look for them in the graph. A structurally pruned base has fewer heads per layer than
    its config says, so it gets (0, 0) and keeps unfused attention."""
    cfg = getattr(module, "config", None)
    heads, hidden = getattr(cfg, "num_attention_heads", 0), getattr(cfg, "hidden_size", 0)
    if "pruned" in base or not isinstance(heads, int) or not isinstance(hidden, int):
        return 0, 0
    return heads, hidden


def fuse_transformer(src: Path, dst: Path, heads: int = 0, hidden: int = 0) -> tuple[Path, dict[str, int]]:
    """Fuse a BERT-style encoder; (dst, fused op counts). Raises ValueError when nothing was fused
    (not a transformer the optimizer knows)."""
    from onnxruntime.transformers.optimizer import optimize_model

    for name in ("onnxruntime.transformers", "fusion_base", "onnx_model", "fusion_utils", "fusion_attention"):
        logging.getLogger(name).setLevel(logging.ERROR)
    model = optimize_model(str(src), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0,
                           use_gpu=False)
    counts = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
    if not any(k in counts for k in ("Attention", "MultiHeadAttention", "SkipLayerNormalization")):
        raise ValueError(f"the transformer optimizer fused no attention or skip-LayerNorm ({counts or 'nothing'})")
    model.save_model_to_file(str(dst))
    return dst, counts


def twin_name(variant: str) -> str:
    """The unfused twin of a fused variant's name."""
    return variant[: -len(FUSED)] if variant.endswith(FUSED) else variant


def decide(candidates: list[Candidate]) -> list[dict[str, Any]]:
    """Pure: for every fused candidate and its unfused twin (both timed in the same rounds), keep
    the faster passing one unless fusion made it bigger; the other gets extra['set_aside'] so the search does not pick it.
    Returns what the report records: each pair, its latencies, the choice and why."""
    by_name = {c.variant: c for c in candidates}
    out = []
    for fused in [c for c in candidates if c.variant.endswith(FUSED)]:
        plain = by_name.get(twin_name(fused.variant))
        if plain is None:
            continue
        row: dict[str, Any] = {"variant": plain.variant, "fused_ops": fused.extra.get("fused_ops"),
                               "unfused_ms": _ms(plain.latency_ms), "fused_ms": _ms(fused.latency_ms)}
        if fused.error or not math.isfinite(fused.latency_ms):
            chosen, why = "unfused", f"fused variant not built or not timed ({fused.error or 'no timing'})"
        elif plain.error or not math.isfinite(plain.latency_ms):
            chosen, why = "fused", "unfused variant not built or not timed"
        elif fused.passed and not plain.passed:
            chosen, why = "fused", "only the fused variant passes the gate"
        elif plain.passed and not fused.passed:
            chosen, why = "unfused", "the fused variant fails the gate"
        elif fused.compressed_bytes > plain.compressed_bytes * MAX_SIZE_GROWTH:
            chosen, why = "unfused", (f"the fused variant is {fused.compressed_bytes / plain.compressed_bytes:.2f}x "
                                      f"the unfused size (weights left in fp32)")
        elif fused.latency_ms < plain.latency_ms:
            chosen, why = "fused", f"fused measured {plain.latency_ms / fused.latency_ms:.2f}x faster"
        else:
            chosen, why = "unfused", f"fusion measured slower ({fused.latency_ms / plain.latency_ms:.2f}x the unfused time)"
        loser = plain if chosen == "fused" else fused
        loser.extra["set_aside"] = f"{'unfused' if chosen == 'fused' else 'fused'} twin not used: {why}"
        row.update(chosen=chosen, why=why)
        out.append(row)
    return out


def _ms(x: float) -> float | None:
    return round(x, 3) if math.isfinite(x) else None
