"""Variant lists, candidate choice and report rows."""
from __future__ import annotations

import math

from lms_operator.compression.search import (SUMMARY_LIMIT, Candidate, bases, best_failed, quant_variants, select,
                                             summary_line)


def cand(name: str, ms: float, size: int, score: float, passed: bool, error: str | None = None) -> Candidate:
    return Candidate(variant=name, base="original", quantization=name, compressed_bytes=size,
                     latency_ms=ms, score=score, passed=passed, error=error)


def test_fastest_passing_candidate_wins() -> None:
    cs = [cand("int8-per-tensor", 150, 22, 0.968, False), cand("int8-per-channel", 170, 23, 0.992, True),
          cand("distilled+int8", 90, 15, 0.93, False), cand("pruned+int8", 160, 20, 0.991, True)]
    assert select(cs).variant == "pruned+int8"  # type: ignore[union-attr]


def test_the_size_objective_picks_the_smallest_passing_candidate() -> None:
    cs = [cand("int8", 100, 23, 0.992, True), cand("pruned+int8", 160, 20, 0.991, True),
          cand("distilled+int8", 90, 15, 0.93, False)]
    assert select(cs, "latency").variant == "int8"  # type: ignore[union-attr]
    assert select(cs, "size").variant == "pruned+int8"  # type: ignore[union-attr]


def test_the_status_line_names_every_candidate_and_stars_the_published_one() -> None:
    cs = [cand("int8-per-tensor", 150, 25, 0.968, False), cand("int8-per-channel", 170, 25, 0.99213, True),
          cand("qdq", 1, 1, 1.0, False, error="boom")]
    line = summary_line(cs, original_bytes=100, baseline_ms=300.0, chosen=cs[1])
    assert line == ("int8-per-tensor 4.0x smaller 2.0x faster fails 0.9680; "
                    "*int8-per-channel 4.0x smaller 1.765x faster 0.9921; qdq not built")
    many = [cand(f"variant-{i}", 100, 10, 0.99, True) for i in range(40)]
    assert len(summary_line(many, 100, 300.0, None)) == SUMMARY_LIMIT


def test_ties_go_to_smaller_file_and_errors_never_win() -> None:
    cs = [cand("a", 100, 30, 0.995, True), cand("b", 100, 20, 0.991, True), cand("c", 1, 1, 1.0, True, error="boom")]
    assert select(cs).variant == "b"  # type: ignore[union-attr]


def test_no_passing_candidate_selects_nothing_and_reports_best_score() -> None:
    cs = [cand("a", 100, 30, 0.96, False), cand("b", 80, 20, 0.97, False)]
    assert select(cs) is None
    assert best_failed(cs).variant == "b"  # type: ignore[union-attr]


def test_variants_follow_the_spec() -> None:
    assert quant_variants("dynamic", True, True) == ["int8-per-tensor", "int8-per-channel"]
    assert quant_variants("dynamic", True, False) == ["int8-per-channel"]
    assert quant_variants("dynamic", False, False) == ["int8-per-tensor"]
    assert quant_variants("static", False, True) == ["qdq-per-tensor", "qdq-per-channel"]
    assert quant_variants("fp16", False, True) == ["fp16"]
    assert quant_variants("none", False, True) == ["fp32"]
    assert bases(True, True, True) == ["original", "pruned", "distilled"]
    assert bases(True, True, False) == ["distilled+pruned"]
    assert bases(False, False, False) == ["original"]


def test_row_ratios_against_baseline() -> None:
    row = cand("int8", 100.0, 25, 0.99, True).row(original_bytes=100, baseline_ms=300.0)
    assert row["size_ratio"] == 4.0 and row["speedup"] == 3.0 and "error" not in row
    failed = Candidate(variant="x", base="original", quantization="x", error="bad").row(100, 300.0)
    assert failed["speedup"] is None and failed["score"] is None and failed["error"] == "bad"
    assert math.isinf(Candidate(variant="x", base="b", quantization="q").latency_ms)


def test_a_speedup_measured_on_a_busy_node_is_said_to_be_one() -> None:
    """Best-of-rounds 3.11x against a median of 1.50x (two Jobs side by side): the note says so."""
    from lms_operator.compression.pipeline import variant_note

    busy = cand("int8-per-channel", 100.0, 23, 0.992, True)
    busy.extra["speedup_median"] = 1.5
    note = variant_note(busy, {}, baseline_ms=311.0)
    assert note is not None and "3.11x best-of-rounds, 1.50x median" in note
    quiet = cand("int8-per-channel", 100.0, 23, 0.992, True)
    quiet.extra["speedup_median"] = 2.9
    assert variant_note(quiet, {}, baseline_ms=311.0) is None
    pruned = Candidate(variant="pruned+int8", base="pruned", quantization="int8", latency_ms=100.0,
                       extra={"speedup_median": 3.0})
    assert variant_note(pruned, {"pruning": {"note": "no latency gain"}}, 311.0) == "no latency gain"
