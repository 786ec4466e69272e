"""Warm-up benchmark: the first request after Triton reports the model ready, against the next 20.

The MiniLM CPU example is compressed once (`lms compress`, cached under ~/.cache/lms/bench-warmup)
and served on a local Triton from the repository `lms assemble` builds, as the operator's Triton
pods get it, in three modes: the `onnx-cpu` template's warm-up (one request), none
(`spec.serving.config: {model_warmup: []}`), and three warm-up requests instead of one. Each Triton start is a round;
the order of the modes alternates, so drifting load on a shared machine hits them alike. A
request is one sentence, tokenised by the client, to the token-level model, over a connection
the client opened (a readiness call) before the first one. Reported per mode: the first
request's latency, the median of the next 20, their ratio (medians over the rounds), the same
inside the server (from Triton's statistics, so the client's own first-call cost is left out),
and the time from process start to ready.

Writes bench/results/warmup.json (with the CPU's model and flags and the load before and after).

    .venv/bin/python bench/warmup.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import machine  # noqa: E402

SPEC = ROOT / "examples" / "minilm-cpu.yaml"
CACHE = Path.home() / ".cache" / "lms" / "bench-warmup"
SENTENCE = "Kubernetes operators reconcile the desired state of a model service."
FOLLOWING = 20
MODES: dict[str, dict[str, Any] | None] = {
    "template": None,  # the onnx-cpu template's warm-up: one zero-filled request of sequenceLength tokens
    "none": {"model_warmup": []},  # spec.serving.config removing it
    "three": {"model_warmup": [{"name": "w", "batch_size": 1, "count": 3}]},  # the same, three times
}


def published_version() -> tuple[Any, Path]:
    from lms_operator.api.spec import load_spec_file
    from lms_operator.compression.remote import compress_to
    from lms_operator.modelrepo.layout import version_dir

    lms = load_spec_file(SPEC)
    summary = compress_to(lms, str(CACHE), SPEC.parent, None)
    return lms, version_dir(CACHE, lms.namespace, lms.name, str(summary.version))


def one_round(lms: Any, version: Path, override: dict[str, Any] | None, work: Path) -> dict[str, float]:
    import tritonclient.http as triton

    from lms_operator.api.spec import parse_spec
    from lms_operator.modelrepo.assemble import assemble_repository, job_templates
    from lms_operator.serving.tokenize import encode, load_tokenizer
    from lms_operator.serving.triton import TritonProcess, free_port, server_args

    manifest = yaml.safe_load(SPEC.read_text())
    if override is not None:
        manifest["spec"]["serving"]["config"] = override
    spec = parse_spec(manifest)
    served = work / "served"
    models = assemble_repository(version, served, spec, job_templates(spec, None))
    ids, mask = encode(load_tokenizer(version / lms.name / "1" / "tokenizer", 128), [SENTENCE])
    length = int(mask.sum())
    http = free_port()
    server = TritonProcess(server_args(served, http, free_port(), free_port()), log_path=work / "triton.log")
    started = time.perf_counter()
    server.start()
    try:
        server.wait_ready(lms.name, timeout=300)
        ready = time.perf_counter() - started
        client = triton.InferenceServerClient(f"127.0.0.1:{http}")
        assert client.is_model_ready(lms.name)  # the client's connection is open before the first request
        inputs = [triton.InferInput("input_ids", [1, length], "INT64"), triton.InferInput("attention_mask", [1, length], "INT64")]
        inputs[0].set_data_from_numpy(ids[:, :length])
        inputs[1].set_data_from_numpy(mask[:, :length])
        times, server_ns = [], [success_ns(client, lms.name)]  # warm-up requests are counted before the first
        for _ in range(1 + FOLLOWING):
            t0 = time.perf_counter()
            client.infer(lms.name, inputs)
            times.append((time.perf_counter() - t0) * 1000)
            server_ns.append(success_ns(client, lms.name))
        client.close()
    finally:
        server.stop()
    following = statistics.median(times[1:])
    in_server = [(b - a) / 1e6 for a, b in zip(server_ns, server_ns[1:])]  # ms per request, from Triton's statistics
    server_following = statistics.median(in_server[1:])
    return {"ready_s": round(ready, 3), "first_ms": round(times[0], 3), "next_median_ms": round(following, 3),
            "first_over_median": round(times[0] / following, 3),
            "server_first_ms": round(in_server[0], 3), "server_next_median_ms": round(server_following, 3),
            "server_first_over_median": round(in_server[0] / server_following, 3), "models": len(models)}


def success_ns(client: Any, model: str) -> int:
    """Triton's cumulative time inside the server for the model's successful requests."""
    stats = client.get_inference_statistics(model)["model_stats"][0]["inference_stats"]
    return int(stats["success"]["ns"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "warmup.json")
    args = parser.parse_args(argv)
    lms, version = published_version()
    host = machine("2 (the spec's resources.cpu)")
    rounds: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="lms-warmup-") as tmp:
        for index in range(args.rounds):
            order = list(MODES) if index % 2 == 0 else list(reversed(MODES))
            for mode in order:
                row = one_round(lms, version, MODES[mode], Path(tmp))
                rounds[mode].append(row)
                print(f"round {index + 1} {mode:10s} {row}", flush=True)
    summary = {mode: {key: round(statistics.median(r[key] for r in rows), 3)
                      for key in rows[0] if key != "models"}
               for mode, rows in rounds.items()}
    result = {"benchmark": "warmup", "model": str(SPEC.relative_to(ROOT)), "version": version.name,
              "request": f"1 sentence, {FOLLOWING} more after the first, HTTP, token-level model",
              "machine": host | {"load_after": os.getloadavg()},
              "summary": summary, "rounds": rounds,
              "target": "with warm-up, the first request is no slower than the median of the next 20 (ratio <= 1)"}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
