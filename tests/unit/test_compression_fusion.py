"""Transformer fusion is kept only where it measured faster (fusion.decide) and the search never
picks the twin set aside."""
from __future__ import annotations

import math

from lms_operator.compression.fusion import decide, twin_name
from lms_operator.compression.search import Candidate, select, summary_line


def cand(name: str, ms: float, passed: bool = True, error: str | None = None) -> Candidate:
    return Candidate(variant=name, base="original", quantization="int8-per-channel", compressed_bytes=10,
                     latency_ms=ms, score=0.995 if passed else 0.9, passed=passed, error=error)


def test_the_faster_twin_is_kept_and_the_report_says_why() -> None:
    cs = [cand("int8-per-channel", 100.0), cand("int8-per-channel+fused", 80.0),
          cand("distilled+int8-per-channel", 50.0), cand("distilled+int8-per-channel+fused", 60.0)]
    cs[1].extra["fused_ops"] = {"Attention": 6}
    rows = decide(cs)
    assert [(r["variant"], r["chosen"]) for r in rows] == [("int8-per-channel", "fused"),
                                                          ("distilled+int8-per-channel", "unfused")]
    assert rows[0]["why"] == "fused measured 1.25x faster" and rows[0]["fused_ops"] == {"Attention": 6}
    assert rows[1]["why"].startswith("fusion measured slower (1.20x")
    assert "set_aside" in cs[0].extra and "set_aside" in cs[3].extra
    assert "set_aside" not in cs[1].extra and "set_aside" not in cs[2].extra
    assert select(cs).variant == "distilled+int8-per-channel"  # type: ignore[union-attr]
    assert "distilled+int8-per-channel+fused 10.0x smaller 1.667x faster 0.9950 set aside" in \
        summary_line(cs, 100, 100.0, select(cs))


def test_the_size_objective_never_picks_a_set_aside_twin() -> None:
    cs = [cand("int8-per-channel", 100.0), cand("int8-per-channel+fused", 120.0)]
    cs[1].compressed_bytes = 5  # smaller, but slower: fusion is only for speed
    decide(cs)
    assert select(cs, "size").variant == "int8-per-channel"  # type: ignore[union-attr]


def test_gate_and_build_failures_decide_before_speed() -> None:
    cs = [cand("int8", 100.0, passed=False), cand("int8+fused", 120.0),
          cand("qdq", 100.0), cand("qdq+fused", math.inf, error="ValueError: fused nothing")]
    rows = {r["variant"]: r for r in decide(cs)}
    assert rows["int8"]["chosen"] == "fused" and rows["int8"]["why"] == "only the fused variant passes the gate"
    assert rows["qdq"]["chosen"] == "unfused" and "fused nothing" in rows["qdq"]["why"]
    assert rows["qdq"]["fused_ms"] is None
    assert twin_name("int8+fused") == "int8" and twin_name("int8") == "int8"


def test_attention_shape_comes_from_the_config_except_for_a_pruned_base() -> None:
    from types import SimpleNamespace

    from lms_operator.compression.fusion import attention_shape

    bert = SimpleNamespace(config=SimpleNamespace(num_attention_heads=12, hidden_size=384))
    assert attention_shape(bert, "original") == (12, 384) and attention_shape(bert, "distilled") == (12, 384)
    assert attention_shape(bert, "distilled+pruned") == (0, 0)  # heads removed per layer: let the optimizer look
    assert attention_shape(None, "original") == (0, 0)  # an ONNX source has no config


def test_a_fused_twin_that_kept_fp32_weights_is_set_aside_even_when_faster() -> None:
    cs = [cand("int8-per-channel", 100.0), cand("int8-per-channel+fused", 60.0)]
    cs[1].compressed_bytes = 26  # 2.6x the unfused int8: the quantizer left fused weights in fp32
    row = decide(cs)[0]
    assert row["chosen"] == "unfused" and row["why"] == "the fused variant is 2.60x the unfused size (weights left in fp32)"
    assert select(cs).variant == "int8-per-channel"  # type: ignore[union-attr]
