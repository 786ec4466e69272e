"""Structured pruning + recovery distillation benchmark on MiniLM-L6 and the built-in corpus.

Removes the share --amount of attention heads and FFN rows (prune.structured: by contribution on
training text across layers with refitted out projections, or by --ranking weights), scores the pruned model, then trains it back towards the teacher with
distill.train_embedding (same objective as distillation, each layer tied to the same teacher
layer) for --steps steps and scores it again: mean cosine to the teacher and `similarity`
(Spearman of pairwise cosines), fp32 torch, on held-out corpus lines never trained on.
Writes bench/results/prune.json.

    .venv/bin/python bench/prune.py [--amount 0.25] [--steps 150] [--threads 1] [--ranking weights]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, embed_all, machine, minilm_setup, torch_scores, train_batch  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amount", type=float, default=0.25)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--eval", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ranking", choices=["contribution", "weights"], default="contribution",
                        help="contribution: on 256 training sentences, across layers, out projections refitted "
                             "(the pipeline's way); weights: weight norms, the same share per layer")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "prune.json")
    args = parser.parse_args()

    from lms_operator.compression import distill, prune

    setup = minilm_setup(args.threads, n_eval=args.eval)
    src, tok, train, evaluation, monitor = setup.src, setup.tokenizer, setup.train, setup.evaluation, setup.monitor
    ref = embed_all(src.module, tok, evaluation)
    model = copy.deepcopy(src.module)
    removed = prune.structured(model, args.amount,
                               train_batch(setup, prune.CALIBRATION_SENTENCES) if args.ranking == "contribution" else None)
    before = embed_all(model, tok, evaluation)
    cfg = distill.EmbedTraining(steps=args.steps, lr=args.lr, log_every=25)
    t0 = time.perf_counter()
    record = distill.train_embedding(model, src.module, tok, train, cfg, monitor=monitor,
                                     layer_map=list(range(len(model.encoder.layer))))
    wall = time.perf_counter() - t0
    after = embed_all(model, tok, evaluation)
    result: dict[str, Any] = {
        "command": f"bench/prune.py --amount {args.amount} --steps {args.steps} --lr {args.lr} --eval {args.eval} "
                   f"--threads {args.threads} --ranking {args.ranking}",
        "machine": machine(args.threads), "data": setup.data_info(),
        "amount": args.amount, "ranking": args.ranking, "removed": removed,
        "params": {"teacher": distill.param_count(src.module), "pruned": distill.param_count(model)},
        "before_recovery": torch_scores(ref, before), "after_recovery": torch_scores(ref, after),
        "recovery": {"steps": args.steps, "wall_s": round(wall, 1), "curve": record["curve"]},
    }
    print(json.dumps({k: v for k, v in result.items() if k != "recovery"}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
