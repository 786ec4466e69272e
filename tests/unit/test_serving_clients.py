"""Pure pieces of the clients: endpoints, length buckets, padding, load statistics, tokenizer lookup."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lms_operator.serving.client import split_endpoint
from lms_operator.serving.infer import find_tokenizer, parse_vector
from lms_operator.serving.loadgen import CLS_ID, SEP_ID, percentile_ms, summarize, synthetic_inputs
from lms_operator.serving.tokenize import bucket_length, pad_batch


@pytest.mark.parametrize(("endpoint", "protocol", "expected"), [
    ("localhost:8000", None, ("http", "localhost:8000")),
    ("grpc://10.0.0.1:8001", None, ("grpc", "10.0.0.1:8001")),
    ("http://svc.ns:8000/", None, ("http", "svc.ns:8000")),
    ("localhost:8001", "grpc", ("grpc", "localhost:8001")),
])
def test_split_endpoint(endpoint: str, protocol: str | None, expected: tuple[str, str]) -> None:
    assert split_endpoint(endpoint, protocol) == expected


@pytest.mark.parametrize(("endpoint", "protocol", "message"), [
    ("localhost", None, "host:port"),
    ("ftp://h:1", None, "unknown protocol"),
    ("grpc://h:1", "http", "--protocol"),
])
def test_split_endpoint_rejects(endpoint: str, protocol: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_endpoint(endpoint, protocol)


@pytest.mark.parametrize(("length", "bucket"), [(1, 16), (16, 16), (17, 32), (32, 32), (33, 64), (128, 128), (200, 200)])
def test_bucket_length(length: int, bucket: int) -> None:
    assert bucket_length(length) == bucket


def test_bucket_length_rejects_empty() -> None:
    with pytest.raises(ValueError, match="positive"):
        bucket_length(0)


def test_pad_batch_right_pads_ids_and_mask() -> None:
    ids, mask = pad_batch([[101, 5, 102], [101, 102]], 4)
    assert ids.dtype == np.int64 and mask.dtype == np.int64
    assert ids.tolist() == [[101, 5, 102, 0], [101, 102, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    with pytest.raises(ValueError, match="does not fit"):
        pad_batch([[1, 2, 3]], 2)


def test_summarize_percentiles_and_throughput() -> None:
    latencies = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    result = summarize(8, latencies, errors=3, wall_s=2.0, items_per_request=4, first_error="boom")
    assert result.requests == 103 and result.errors == 3
    assert result.throughput_rps == 50.0 and result.items_per_s == 200.0
    assert result.p50_ms == pytest.approx(50.5) and result.p99_ms == pytest.approx(99.01)
    assert result.first_error == "boom"
    assert math.isnan(percentile_ms([], 50))


def test_synthetic_inputs_follow_model_metadata() -> None:
    text = synthetic_inputs([{"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]},
                             {"name": "attention_mask", "datatype": "INT64", "shape": [-1, -1]}], batch=2, sequence_length=32)
    assert text["input_ids"].shape == (2, 32) and text["attention_mask"].sum() == 64
    assert (text["input_ids"][:, 0] == CLS_ID).all() and (text["input_ids"][:, -1] == SEP_ID).all()
    vector = synthetic_inputs([{"name": "input", "datatype": "FP32", "shape": [-1, 64]}], batch=1, sequence_length=32)
    assert vector["input"].shape == (1, 64) and vector["input"].dtype == np.float32


def test_find_tokenizer_in_version_folder_or_root(tmp_path: Path) -> None:
    version = tmp_path / "default" / "minilm" / "0123456789abcdef"
    tok = version / "minilm" / "1" / "tokenizer"
    tok.mkdir(parents=True)
    assert find_tokenizer("minilm", None, version) == tok
    with pytest.raises(ValueError, match="no minilm/1/tokenizer"):
        find_tokenizer("minilm", None, tmp_path)  # not complete yet
    (version / ".complete").touch()
    assert find_tokenizer("minilm", None, tmp_path) == tok
    assert find_tokenizer("minilm", tmp_path, None) == tmp_path
    with pytest.raises(ValueError, match="--tokenizer or --repository"):
        find_tokenizer("minilm", None, None)


def test_parse_vector() -> None:
    assert parse_vector("1, 2.5,-3").tolist() == [[1.0, 2.5, -3.0]]
    with pytest.raises(ValueError, match="--vector"):
        parse_vector("1,x")


def test_merge_pools_rounds_of_one_level() -> None:
    from lms_operator.serving.loadgen import merge

    first = summarize(32, [0.010] * 90 + [0.100] * 10, errors=0, wall_s=1.0, items_per_request=1)
    first.server = {"inferences": 100, "executions": 10, "cpu_s": 2.0}
    second = summarize(32, [0.020] * 100, errors=2, wall_s=3.0, items_per_request=1, first_error="late")
    second.server = {"inferences": 100, "executions": 5, "cpu_s": 1.0}
    merged = merge([first, second])
    assert merged.requests == 202 and merged.errors == 2 and merged.first_error == "late"
    assert merged.throughput_rps == pytest.approx(200 / 4.0)
    assert merged.p50_ms == pytest.approx(20.0)
    assert merged.p99_ms == pytest.approx(100.0)
    assert merged.server == {"inferences": 200, "executions": 15, "cpu_s": 3.0, "mean_batch": pytest.approx(13.333, abs=1e-3)}
    with pytest.raises(ValueError):
        merge([])
