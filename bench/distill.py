"""Distillation benchmark: MiniLM-L6 -> 3 and 4 layer students on the built-in corpus.

For each student depth: the student starts from evenly spaced teacher layers
(distill.layer_dropped_student), trains with distill.train_embedding (embedding cosine + MSE,
in-batch similarity KL, token-level MSE of each student layer to its teacher layer) for
--steps steps on the training side of the built-in WordNet corpus, and is scored in fp32 torch
on the held-out side (one line in five by content hash, never trained on): mean cosine to
the teacher's embedding and `similarity` (Spearman correlation of pairwise cosines). The
curve (step, loss, monitor cosine, seconds) comes from the training log points.
Writes bench/results/distill.json.

    .venv/bin/python bench/distill.py [--layers 3 4] [--steps 1200] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, embed_all, machine, minilm_setup, torch_scores  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 4])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--hidden-weight", type=float, default=1.0)
    parser.add_argument("--eval", type=int, default=512, help="held-out sentences scored")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "distill.json")
    args = parser.parse_args()

    from lms_operator.compression import distill

    setup = minilm_setup(args.threads, n_eval=args.eval)
    src, tok, train, evaluation, monitor = setup.src, setup.tokenizer, setup.train, setup.evaluation, setup.monitor
    ref = embed_all(src.module, tok, evaluation)
    result: dict[str, Any] = {
        "command": "bench/distill.py " + " ".join(f"--{k.replace('_', '-')} {v if not isinstance(v, list) else ' '.join(map(str, v))}"
                                                  for k, v in vars(args).items() if k != "out"),
        "machine": machine(args.threads), "data": setup.data_info(), "students": [],
    }
    for layers in args.layers:
        distill.seed_all(0)
        probe = tok(train[:64], padding=True, truncation=True, max_length=64, return_tensors="pt")
        keep, probe_cos = distill.choose_layers(src.module, layers, {"input_ids": probe["input_ids"],
                                                                     "attention_mask": probe["attention_mask"]})
        student, kept = distill.layer_dropped_student(src.module, layers, keep)
        before = embed_all(student, tok, evaluation)
        cfg = distill.EmbedTraining(steps=args.steps, lr=args.lr, hidden_weight=args.hidden_weight, log_every=100)
        t0 = time.perf_counter()
        record = distill.train_embedding(student, src.module, tok, train, cfg, monitor=monitor, layer_map=kept)
        wall = time.perf_counter() - t0
        out = embed_all(student, tok, evaluation)
        row = {"layers": layers, "layers_kept": kept, "evenly_spaced": distill.pick_layers(6, layers), "steps": args.steps, "batch": cfg.batch_size, "lr": args.lr,
               "wall_s": round(wall, 1), "params": distill.param_count(student),
               "before": torch_scores(ref, before), **torch_scores(ref, out),
               "curve": record["curve"]}
        row["passes_0.95_cosine"] = row["cosine"] >= 0.95
        result["students"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
        result["machine"]["load_after"] = os.getloadavg()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
