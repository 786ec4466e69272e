"""Compression benchmark (issue 16, item 7): MiniLM-L6 variants against fp32 ONNX Runtime, same run.

Trains (or resumes) three bases on the training side of the built-in WordNet corpus, one torch
thread each (`train` phase, checkpointed under --cache so a killed run resumes):

* student4: 6 -> 4 layers (teacher layers chosen greedily), 400 steps (examples/minilm-distill.yaml);
* student3: 6 -> 3 layers, 600 steps; its progress points give the score-vs-training-time curve;
* pruned (30%), pruned28 (28%) and pruned25 (25%): that share of the heads and of the FFN rows
  removed (structured, ranked across layers by their contribution on 256 training sentences, out
  projections refitted), then 2000, 2000 and 800 recovery steps.

Then (`measure` phase) exports every base to ONNX and builds, with the pipeline's own functions,
dynamic int8 (per channel), static QDQ int8 (per channel, calibrated, sensitive nodes excluded)
and the transformer-fused versions; scores each on held-out evaluation text (one line in five
by content hash, never trained on) against the fp32 teacher in ONNX Runtime (cosine and
`similarity`), and times all of them interleaved with the fp32 baseline on a 32 x 128 batch at
1 and 2 threads. Writes bench/results/compress.json with a `targets` block (met true/false).

    nice -n 10 .venv/bin/python bench/compress.py [--phase train|measure|all] [--only student4 ...]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, Setup, embed_all, minilm_setup, torch_scores, train_batch  # noqa: E402

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lms" / "bench-compress"


@dataclass(frozen=True)
class Base:
    """A trained base: a layer-dropped student or a structurally pruned teacher."""

    name: str
    steps: int
    layers: int | None = None
    prune_amount: float | None = None
    lr: float = 3e-4
    log_every: int = 50

    def fingerprint(self) -> str:
        return json.dumps([self.name, self.steps, self.layers, self.prune_amount, self.lr, "wordnet-train", 3])


BASES = {b.name: b for b in (Base("student4", 400, layers=4), Base("student3", 600, layers=3),
                             Base("pruned", 2000, prune_amount=0.3), Base("pruned28", 2000, prune_amount=0.28),
                             Base("pruned25", 800, prune_amount=0.25))}


def fresh_module(base: Base, setup: Setup) -> tuple[Any, dict[str, Any]]:
    """The untrained starting point of `base` (deterministic, so a checkpoint's weights fit it)."""
    import copy

    from lms_operator.compression import distill, prune

    distill.seed_all(0)
    if base.layers is not None:
        keep, _ = distill.choose_layers(setup.src.module, base.layers, train_batch(setup, 64))
        student, kept = distill.layer_dropped_student(setup.src.module, base.layers, keep)
        return student, {"layers_kept": kept, "layer_map": kept}
    model = copy.deepcopy(setup.src.module)
    removed = prune.structured(model, float(base.prune_amount or 0), train_batch(setup, prune.CALIBRATION_SENTENCES))
    return model, {"removed": removed, "layer_map": list(range(len(model.encoder.layer)))}


def train(base: Base, setup: Setup, cache: Path, partial: bool = False) -> dict[str, Any] | None:
    """Train `base` (resuming from its checkpoint), export it to ONNX, record its fp32 torch scores.
    With `partial`, an unfinished base is measured as its last checkpoint left it, and says so."""
    from lms_operator.compression import distill
    from lms_operator.compression.export import export_module

    folder = cache / base.name
    done = folder / "result.json"
    if done.is_file() and (folder / "model.onnx").is_file():
        print(f"{base.name}: trained already ({done})", file=sys.stderr, flush=True)
        return json.loads(done.read_text())
    module, info = fresh_module(base, setup)
    layer_map = info.pop("layer_map")
    ref = embed_all(setup.src.module, setup.tokenizer, setup.evaluation)
    before = torch_scores(ref, embed_all(module, setup.tokenizer, setup.evaluation))
    if partial:
        return partial_result(base, setup, folder, module, info, ref, before)
    cfg = distill.EmbedTraining(steps=base.steps, lr=base.lr, log_every=base.log_every, checkpoint_every=base.log_every,
                                checkpoint_dir=folder, fingerprint=base.fingerprint())
    load0 = os.getloadavg()
    record = distill.train_embedding(module, setup.src.module, setup.tokenizer, setup.train, cfg,
                                     monitor=setup.monitor, layer_map=layer_map,
                                     log=lambda m: print(f"{base.name}: {m}", file=sys.stderr, flush=True))
    if not record["completed"]:
        raise SystemExit(f"{base.name}: training stopped before {base.steps} steps")
    after = torch_scores(ref, embed_all(module, setup.tokenizer, setup.evaluation))
    example = setup.tokenizer(setup.train[:2], padding=True, return_tensors="pt")
    export_module(module, "feature-extraction", folder / "model.onnx",
                  {"input_ids": example["input_ids"], "attention_mask": example["attention_mask"]})
    result = {"base": base.name, "steps": base.steps, "lr": base.lr, "batch": cfg.batch_size,
              "train_threads": 1, "layers": base.layers, "prune_amount": base.prune_amount, **info,
              "params": distill.param_count(module), "teacher_params": distill.param_count(setup.src.module),
              "wall_s": record["curve"][-1]["seconds"], "resumed_from": record["resumed_from"],
              "load_during": [load0, os.getloadavg()],
              "torch_fp32_before": before, "torch_fp32_after": after, "curve": record["curve"]}
    done.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{base.name}: {json.dumps({k: v for k, v in result.items() if k != 'curve'})}", file=sys.stderr, flush=True)
    return result


def partial_result(base: Base, setup: Setup, folder: Path, module: Any, info: dict[str, Any], ref: Any,
                   before: dict[str, float]) -> dict[str, Any] | None:
    """An unfinished base as its last checkpoint left it (not written as done: a rerun goes on training)."""
    from lms_operator.compression import distill
    from lms_operator.compression.export import export_module

    state = distill.load_checkpoint(folder, base.fingerprint())
    if state is None:
        print(f"{base.name}: no checkpoint under {folder} yet: left out of this measurement", file=sys.stderr)
        return None
    module.load_state_dict(state["student"])
    example = setup.tokenizer(setup.train[:2], padding=True, return_tensors="pt")
    export_module(module.eval(), "feature-extraction", folder / "partial.onnx",
                  {"input_ids": example["input_ids"], "attention_mask": example["attention_mask"]})
    curve = list(state["curve"])
    return {"base": base.name, "steps": base.steps, "steps_done": int(state["step"]), "complete": False,
            "lr": base.lr, "batch": 32, "train_threads": 1, "layers": base.layers, "prune_amount": base.prune_amount,
            **info, "params": distill.param_count(module), "teacher_params": distill.param_count(setup.src.module),
            "wall_s": curve[-1]["seconds"] if curve else None, "onnx": "partial.onnx",
            "torch_fp32_before": before, "torch_fp32_after": torch_scores(ref, embed_all(module, setup.tokenizer,
                                                                                          setup.evaluation)),
            "curve": curve}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=["train", "measure", "all"], default="all")
    parser.add_argument("--only", nargs="+", choices=sorted(BASES), default=sorted(BASES),
                        help="bases to train in this process (run two processes to use both cores)")
    parser.add_argument("--cache", type=Path, default=CACHE, help="checkpoints and trained bases (a rerun resumes)")
    parser.add_argument("--partial", action="store_true",
                        help="measure: an unfinished base is measured from its last checkpoint (the JSON says so)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="ONNX Runtime thread counts timed")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (at least)")
    parser.add_argument("--eval", type=int, default=512, help="held-out lines scored")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "compress.json")
    args = parser.parse_args(argv)
    setup = minilm_setup(threads=1, n_eval=args.eval)
    if args.phase != "measure":
        trained = {name: train(BASES[name], setup, args.cache) for name in args.only}
    if args.phase == "train":
        return 0
    got = {name: train(BASES[name], setup, args.cache, partial=args.partial) for name in sorted(BASES)}
    trained = {name: r for name, r in got.items() if r is not None}
    from compress_measure import measure  # type: ignore[import-not-found]

    result = measure(setup, trained, args.cache, args.threads, args.rounds)
    result["command"] = "nice -n 10 .venv/bin/python bench/compress.py " + " ".join(argv or sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
