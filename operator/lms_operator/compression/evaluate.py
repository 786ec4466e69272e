"""Run ONNX models with ONNX Runtime: outputs on held-out feeds, scores and latency."""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Sequence

import numpy as np

Feed = dict[str, np.ndarray]


def thread_limit() -> int | None:
    """Threads for torch and ONNX Runtime from env LMS_COMPRESS_THREADS (None: library default).

    On a shared or CPU-limited node, fewer threads than cores avoids spin-waiting on busy cores.
    """
    raw = os.environ.get("LMS_COMPRESS_THREADS", "")
    return max(1, int(raw)) if raw.isdigit() else None


def providers(device: str) -> list[str]:
    """Execution providers for the target device class (CUDA when asked for and present)."""
    import onnxruntime as ort

    if device == "gpu" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session(path: Path, device: str = "cpu"):  # type: ignore[no-untyped-def]
    """An InferenceSession with full graph optimisation."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    threads = thread_limit()
    if threads is not None:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers(device))


def run_feeds(sess, feeds: Sequence[Feed]) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Concatenated first output over all feeds."""
    return np.concatenate([sess.run(None, f)[0] for f in feeds], axis=0)


def mean_cosine(ref: np.ndarray, out: np.ndarray) -> float:
    """Mean row-wise cosine similarity."""
    ref = ref.astype(np.float64)
    out = out.astype(np.float64)
    num = (ref * out).sum(axis=1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    return float(np.mean(num / np.maximum(den, 1e-12)))


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    tied = np.flatnonzero(ends - starts > 1)  # usually none: a Python loop only over real ties
    for a, b in zip(starts[tied], ends[tied]):
        ranks[order[a:b]] = (a + b - 1) / 2.0
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two equally long vectors."""
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    ra -= ra.mean()
    rb -= rb.mean()
    den = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else 0.0


def pairwise_cosines(x: np.ndarray) -> np.ndarray:
    """Cosine similarity of every pair of rows (upper triangle, i < j)."""
    x = x.astype(np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sims = x @ x.T
    return sims[np.triu_indices(len(x), k=1)]


SIMILARITY_MAX_SAMPLES = 2000
"""The first 2000 samples give 2 million pairs; all 10,000 the gate allows would need 50 million."""


def similarity(ref: np.ndarray, out: np.ndarray) -> float:
    """Spearman correlation between the student's and the teacher's pairwise cosine similarities.

    Rank agreement, as STS benchmarks score: cosine to the teacher alone can hide a reordered
    neighbourhood, this cannot. Scored on the first SIMILARITY_MAX_SAMPLES samples.
    """
    n = SIMILARITY_MAX_SAMPLES
    return spearman(pairwise_cosines(ref[:n]), pairwise_cosines(out[:n]))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of argmax predictions equal to the labels."""
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def agreement(logits: np.ndarray, ref_logits: np.ndarray) -> float:
    """Share of argmax predictions equal to the teacher's."""
    return float(np.mean(np.argmax(logits, axis=1) == np.argmax(ref_logits, axis=1)))


def score(metric: str, out: np.ndarray, ref: np.ndarray, labels: np.ndarray | None) -> float:
    """Gate score of `out` against the teacher's outputs `ref` (or labels for accuracy)."""
    if metric == "cosine":
        return mean_cosine(ref, out)
    if metric == "similarity":
        return similarity(ref, out)
    if metric == "agreement":
        return agreement(out, ref)
    if metric == "accuracy":
        if labels is None:
            raise ValueError("accuracy needs labelled held-out samples")
        return accuracy(out, labels)
    raise ValueError(f"unknown metric {metric!r}")


def time_sessions(sessions: Sequence, feed: Feed, warmup: int = 2, rounds: int = 5,  # type: ignore[type-arg]
                  budget_s: float = 1.0, max_rounds: int = 200) -> tuple[list[float], list[float], int]:
    """Best-of-N and median latency in ms per session, interleaved so shared-CPU noise hits all alike.

    N is at least `rounds`, more for fast models (up to `max_rounds` within about `budget_s`),
    since a best-of-5 of a 50 us model is mostly timer noise. Returns (best, median, N): the
    median says whether the best was a lucky moment on a busy node.
    """
    per_round = 0.0
    for s in sessions:
        for i in range(warmup):
            t0 = time.perf_counter()
            s.run(None, feed)
            if i == warmup - 1:
                per_round += time.perf_counter() - t0
    n = max(rounds, min(max_rounds, int(budget_s / max(per_round, 1e-9))))
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(n):
        for i, s in enumerate(sessions):
            t0 = time.perf_counter()
            s.run(None, feed)
            times[i].append((time.perf_counter() - t0) * 1000.0)
    return [min(t) for t in times], [statistics.median(t) for t in times], n
