"""Variant candidates and the choice among them (pure)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Candidate:
    """One compressed variant with its measurements."""

    variant: str
    base: str
    quantization: str
    path: str = ""
    compressed_bytes: int = 0
    latency_ms: float = math.inf
    score: float = float("nan")
    passed: bool = False
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self, original_bytes: int, baseline_ms: float) -> dict[str, Any]:
        """Report fields with ratios against the fp32 baseline of the same run."""
        d = {k: v for k, v in asdict(self).items() if k not in ("path", "extra")}
        d["size_ratio"] = round(original_bytes / self.compressed_bytes, 3) if self.compressed_bytes else None
        d["speedup"] = round(baseline_ms / self.latency_ms, 3) if math.isfinite(self.latency_ms) and self.latency_ms > 0 else None
        d["latency_ms"] = round(self.latency_ms, 3) if math.isfinite(self.latency_ms) else None
        d["score"] = None if math.isnan(self.score) else round(self.score, 5)
        d.update(self.extra)
        if d["error"] is None:
            d.pop("error")
        return d


def quant_variants(mode: str, per_channel: bool, search: bool) -> list[str]:
    """Quantization variants the spec allows (all of them when searching)."""
    if mode == "dynamic":
        return ["int8-per-tensor", "int8-per-channel"] if search else ["int8-per-channel" if per_channel else "int8-per-tensor"]
    if mode == "static":
        return ["qdq-per-tensor", "qdq-per-channel"] if search else ["qdq-per-channel" if per_channel else "qdq-per-tensor"]
    if mode == "fp16":
        return ["fp16"]
    return ["fp32"]


def bases(pruning: bool, distillation: bool, search: bool) -> list[str]:
    """Model bases to quantize: the original and each optional stage alone, or the full chain."""
    if not search:
        chain = [s for s, on in (("distilled", distillation), ("pruned", pruning)) if on]
        return ["+".join(chain) if chain else "original"]
    return ["original"] + (["pruned"] if pruning else []) + (["distilled"] if distillation else [])


def select(candidates: list[Candidate], objective: str = "latency") -> Candidate | None:
    """The passing candidate that best meets the objective: the fastest (ties: smaller, then better
    score) or the smallest (ties: faster, then better score)."""
    ok = [c for c in candidates if c.passed and c.error is None and not c.extra.get("set_aside")]
    if not ok:
        return None
    if objective == "size":
        return min(ok, key=lambda c: (c.compressed_bytes, c.latency_ms, -c.score))
    return min(ok, key=lambda c: (c.latency_ms, c.compressed_bytes, -c.score))


SUMMARY_LIMIT = 600
"""status.compression.candidates stays short enough for `kubectl describe`."""


def summary_line(candidates: list[Candidate], original_bytes: int, baseline_ms: float, chosen: Candidate | None) -> str:
    """One line over every candidate: '*int8-per-channel 3.9x smaller 1.71x faster 0.9921; int8-per-tensor ...
    fails 0.9680' (the published one starred); cut at SUMMARY_LIMIT characters."""
    parts = []
    for c in candidates:
        if c.error:
            parts.append(f"{c.variant} not built")
            continue
        row = c.row(original_bytes, baseline_ms)
        size = f" {row['size_ratio']}x smaller" if row["size_ratio"] else ""
        speed = f" {row['speedup']}x faster" if row["speedup"] else ""
        score = "" if row["score"] is None else f" {row['score']:.4f}"
        aside = " set aside" if c.extra.get("set_aside") else ""
        parts.append(f"{'*' if c is chosen else ''}{c.variant}{size}{speed}{' fails' if not c.passed else ''}{score}{aside}")
    line = "; ".join(parts)
    return line if len(line) <= SUMMARY_LIMIT else line[:SUMMARY_LIMIT - 3] + "..."


def best_failed(candidates: list[Candidate]) -> Candidate | None:
    """The highest-scoring candidate, for the numbers in a gate failure."""
    scored = [c for c in candidates if c.error is None and not math.isnan(c.score)]
    return max(scored, key=lambda c: c.score) if scored else None
