#!/usr/bin/env python3
"""PNG plots of the benchmark results in bench/results/*.json (whatever exists).

  serving.png   latency (p50, p99) and throughput vs concurrency, dynamic batching on/off
  compress.png  candidate variants: size ratio vs speed-up, coloured by the quality gate
  scale.png     LargeModelServices Ready over time at N objects, against the cluster alone (--floor)
  gpu.png       MiniLM fp32 vs fp16 latency by batch size, distillation step GPU vs CPU

Usage: bench/plots.py [--results bench/results]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def load(path: Path) -> dict[str, Any] | None:
    """The JSON document, or None (with a note) when missing or unreadable."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        print(f"plots: {path.name} not found, skipping", file=sys.stderr)
        return None
    except (OSError, ValueError) as exc:
        print(f"plots: {path.name}: cannot read ({exc}), skipping", file=sys.stderr)
        return None
    return doc if isinstance(doc, dict) else None


def save(fig: Any, out: Path) -> Path:
    """Write the figure atomically (a half-written PNG never replaces a good one)."""
    tmp = out.with_name(out.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(out)
    print(f"plots: wrote {out}", file=sys.stderr)
    return out


def series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(concurrency, value) pairs of a load-level list, sorted by concurrency."""
    pts = sorted((r["concurrency"], r[key]) for r in rows if r.get(key) is not None)
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_serving(doc: dict[str, Any], out: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4))
    for label, key, color in (("batching off", "triton_batching_off", "tab:blue"),
                              ("batching on", "triton_batching_on", "tab:orange")):
        rows = doc.get(key) or []
        for metric, style, marker in (("p50_ms", "-", "o"), ("p99_ms", "--", "^")):
            x, y = series(rows, metric)
            lat.plot(x, y, style, color=color, marker=marker, label=f"{label} {metric[:3]}")
        x, y = series(rows, "items_per_s")
        thr.plot(x, y, "-", color=color, marker="o", label=label)
    for ax, ylabel in ((lat, "latency (ms)"), (thr, "items / s")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    lat.set_yscale("log")
    machine = doc.get("machine") or {}
    fig.suptitle(f"Triton serving {doc.get('model', '')}\n{machine.get('cpus', '?')} CPUs, "
                 f"load average before {machine.get('load_average_before', '?')}", fontsize=9)
    return save(fig, out)


def plot_compress(doc: dict[str, Any], out: Path) -> Path:
    import matplotlib.pyplot as plt

    workloads = doc.get("workloads") or {}
    fig, axes = plt.subplots(1, max(1, len(workloads)), figsize=(6 * max(1, len(workloads)), 4.5), squeeze=False)
    for ax, (name, w) in zip(axes[0], workloads.items()):
        for c in w.get("candidates") or []:
            x, y = c.get("speedup"), c.get("size_ratio")
            if x is None or y is None:
                continue
            ok = bool(c.get("passed"))
            chosen = c.get("variant") == w.get("chosen")
            ax.scatter([x], [y], s=140 if chosen else 60, c="tab:green" if ok else "tab:red",
                       marker="*" if chosen else "o", edgecolors="black", linewidths=0.5)
            score = c.get("score")
            ax.annotate(f"{c.get('variant')}\nscore {score:.4g}" if isinstance(score, (int, float)) else str(c.get("variant")),
                        (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
        gate = (w.get("quality") or {})
        ax.set_title(f"{name}: chosen {w.get('chosen')} (gate {gate.get('metric', '')} >= {gate.get('threshold', '')})",
                     fontsize=9)
        ax.set_xlabel("speed-up vs fp32 ONNX Runtime (x)")
        ax.set_ylabel("size ratio (x smaller)")
        ax.grid(alpha=0.3)
    fig.suptitle("Compression candidates (green: passed the gate, red: failed, star: published)", fontsize=9)
    return save(fig, out)


def plot_scale(doc: dict[str, Any], out: Path) -> Path:
    import matplotlib.pyplot as plt

    curve = doc.get("ready_curve") or []
    mix = doc.get("cluster_requests_by_verb_resource") or {}
    fig, axes = plt.subplots(1, 2 if mix else 1, figsize=(13 if mix else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    ax.plot([p[0] for p in curve], [p[1] for p in curve], "-", lw=2, label="with the operator: LargeModelServices Ready")
    floor = load(out.parent / "scale_floor.json")  # the same objects with no operator (bench/scale.py --floor)
    if floor and floor.get("available_curve"):
        fc = floor["available_curve"]
        ax.plot([p[0] for p in fc], [p[1] for p in fc], "-", lw=1.5, color="tab:gray",
                label=f"no operator (--floor): Deployments available, all at {floor.get('floor_all_available_s')} s")
    target = doc.get("objects", 0)
    ax.axhline(target, color="gray", lw=0.8, ls=":")
    ax.axvline(120, color="tab:red", lw=0.8, ls="--", label="target: all Ready in 120 s")
    ax.set_xlabel("seconds since the first create")
    ax.set_ylabel("objects")
    ax.set_title(f"{target} objects: all Ready in {doc.get('all_ready_s')} s, apply->Deployment p99 "
                 f"{doc.get('apply_to_deployment_p99_s')} s, operator RSS {doc.get('operator_peak_rss_mib')} MiB",
                 fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if mix:
        bars = axes[0][1]
        top = list(mix.items())[:15][::-1]
        bars.barh([k for k, _ in top], [v for _, v in top], color="tab:gray")
        bars.tick_params(axis="y", labelsize=7)
        bars.set_xlabel("requests until all Ready (every client)")
        bars.set_title(f"API server requests: {doc.get('cluster_requests_until_ready')}, the operator's share "
                       f"{doc.get('operator_share_of_cluster_requests')}", fontsize=8)
        bars.grid(alpha=0.3, axis="x")
    return save(fig, out)


def plot_gpu(doc: dict[str, Any], out: Path) -> Path:
    import matplotlib.pyplot as plt

    rows = (doc.get("latency_torch") or {}).get("sizes") or []
    fig, (lat, dist) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"{r['batch']}x{r['seq']}" for r in rows]
    xs = list(range(len(rows)))
    lat.bar([x - 0.2 for x in xs], [r["fp32"]["median_ms"] for r in rows], width=0.4, label="fp32")
    lat.bar([x + 0.2 for x in xs], [r["fp16"]["median_ms"] for r in rows], width=0.4, label="fp16")
    lat.set_xticks(xs, labels)
    lat.set_xlabel("batch x tokens")
    lat.set_ylabel("median latency (ms)")
    lat.set_title((doc.get("latency_torch") or {}).get("engine", ""), fontsize=8)
    lat.legend(fontsize=8)
    d = doc.get("distillation_step") or {}
    bars = [(k, (d.get(k) or {}).get("median_ms")) for k in ("cpu_fp32", "gpu_fp32", "gpu_bf16_autocast")]
    bars = [(k, v) for k, v in bars if v is not None]
    dist.bar([k for k, _ in bars], [v for _, v in bars], color=["tab:gray", "tab:green", "tab:olive"][:len(bars)])
    dist.set_yscale("log")
    dist.set_ylabel("ms per step (log)")
    dist.set_title(f"distillation step, batch {d.get('batch')} x {d.get('seq')} "
                   f"(CPU: {d.get('cpu_threads')} threads)", fontsize=8)
    gpu = (doc.get("device") or {}).get("gpu")
    fig.suptitle(f"MiniLM-L6 on {gpu}", fontsize=9)
    return save(fig, out)


PLOTS = (("serving.json", "serving.png", plot_serving), ("compress.json", "compress.png", plot_compress),
         ("scale.json", "scale.png", plot_scale), ("gpu.json", "gpu.png", plot_gpu))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="PNG plots from bench/results/*.json")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = 0
    for src, dst, fn in PLOTS:
        doc = load(args.results / src)
        if doc is None:
            continue
        try:
            fn(doc, args.results / dst)
            written += 1
        except (KeyError, TypeError, ValueError) as exc:
            print(f"plots: {src}: unexpected shape ({type(exc).__name__}: {exc}), skipping", file=sys.stderr)
        finally:
            plt.close("all")
    print(f"plots: {written} plot(s) written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
