"""Compression benchmark: every candidate variant for MiniLM-L6 and the digits classifier.

Runs the real pipeline (`lms_operator.compression.pipeline.compress`) on two workloads in one
process and collects each published report's candidate table:

* MiniLM-L6 (feature extraction, batch 32 x 128 tokens): int8 per tensor / per channel, the
  structurally pruned model (25% of heads and FFN rows) + int8, and the distilled 6 -> 3 layer
  student + int8; gate: mean cosine >= 0.99 to the uncompressed teacher.
* digits MLP (examples/digits-distill.yaml): teacher int8 and the distilled student + int8;
  gate: accuracy.

Latency is the best of several interleaved runs of every candidate and the fp32 ONNX Runtime
baseline in the same process, so ratios compare numbers from one run even on a busy machine;
the load average before and after is recorded. Writes bench/results/compress.json.

    .venv/bin/python bench/compress.py [--epochs 2] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def minilm_manifest(epochs: int) -> dict[str, Any]:
    return {"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService", "metadata": {"name": "minilm-bench"},
            "spec": {"model": {"uri": "hf://sentence-transformers/all-MiniLM-L6-v2", "format": "huggingface",
                               "task": "feature-extraction"},
                     "compression": {"pruning": {"method": "magnitude", "sparsity": 0.25, "structured": True},
                                     "quantization": {"mode": "dynamic", "perChannel": True},
                                     "distillation": {"studentLayers": 3, "temperature": 2.0, "alpha": 0.5,
                                                      "epochs": epochs, "seed": 0},
                                     "qualityGate": {"metric": "cosine", "min": 0.99, "samples": 256}},
                     "serving": {"device": "cpu", "maxBatchSize": 32, "sequenceLength": 128,
                                 "resources": {"cpu": "2", "memory": "4Gi"}},
                     "repository": {"pvc": "models"}}}


def run_one(lms: Any, root: Path, spec_dir: Path | None) -> dict[str, Any]:
    from lms_operator.compression.pipeline import compress

    t0 = time.perf_counter()
    summary = compress(lms, root, spec_dir, None).to_dict()
    report = json.loads((root / summary["path"] / "report.json").read_text())
    return {"wall_s": round(time.perf_counter() - t0, 1), "chosen": summary["variant"],
            "baseline_ms": report["latency_ms"]["baseline"], "original_bytes": report["original_bytes"],
            "quality": report["quality"], "candidates": report["candidates"], "timings": report["timings"],
            **{k: report[k] for k in ("distillation", "pruning") if k in report}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="compression candidate table for MiniLM and digits")
    parser.add_argument("--epochs", type=int, default=2, help="MiniLM distillation epochs")
    parser.add_argument("--threads", type=int, help="LMS_COMPRESS_THREADS for torch and ONNX Runtime")
    parser.add_argument("--out", default=str(REPO / "bench/results/compress.json"))
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["LMS_COMPRESS_THREADS"] = str(args.threads)
    from lms_operator.api.spec import load_spec_file, parse_spec

    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                          "processor": platform.processor(), "load_before": os.getloadavg(),
                                          "threads": os.environ.get("LMS_COMPRESS_THREADS", "default")},
                              "workloads": {}}
    with tempfile.TemporaryDirectory(prefix="lms-bench-") as tmp:
        root = Path(tmp)
        print("MiniLM-L6 ...", file=sys.stderr)
        result["workloads"]["minilm"] = run_one(parse_spec(minilm_manifest(args.epochs)), root, None)
        print("digits ...", file=sys.stderr)
        spec = REPO / "examples/digits-distill.yaml"
        result["workloads"]["digits"] = run_one(load_spec_file(spec), root, spec.parent)
    result["machine"]["load_after"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name, w in result["workloads"].items():
        print(f"{name}: chosen {w['chosen']} (baseline {w['baseline_ms']} ms)", file=sys.stderr)
        for c in w["candidates"]:
            print(f"  {c['variant']:<32} {c.get('size_ratio')}x smaller  {c.get('speedup')}x faster  "
                  f"score {c.get('score')}  {'pass' if c['passed'] else 'FAIL'}", file=sys.stderr)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
