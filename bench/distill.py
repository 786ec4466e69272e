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
import platform
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def embed_all(model: Any, tok: Any, texts: list[str], max_length: int = 128) -> Any:
    import numpy as np
    import torch

    from lms_operator.compression.distill import _embed

    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 64):
            enc = tok(texts[i:i + 64], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            out.append(_embed(model, {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}).numpy())
    return np.concatenate(out)


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

    import torch
    import transformers

    from lms_operator.compression import data, distill
    from lms_operator.compression import evaluate as ev
    from lms_operator.compression.loader import load_source
    from lms_operator.compression.source import locate_model

    torch.set_num_threads(args.threads)
    src = load_source(locate_model("hf://sentence-transformers/all-MiniLM-L6-v2", None, None, None), "huggingface",
                      "feature-extraction")
    tok = transformers.AutoTokenizer.from_pretrained(str(src.tokenizer_dir), local_files_only=True)
    corpus = data.default_corpus()
    train = [t for t in corpus.texts if not data.is_heldout(t)]
    held = [t for t in corpus.texts if data.is_heldout(t)]
    evaluation, monitor = held[:args.eval], held[args.eval:args.eval + 128]
    ref = embed_all(src.module, tok, evaluation)
    result: dict[str, Any] = {
        "command": "bench/distill.py " + " ".join(f"--{k.replace('_', '-')} {v if not isinstance(v, list) else ' '.join(map(str, v))}"
                                                  for k, v in vars(args).items() if k != "out"),
        "machine": {"cpus": os.cpu_count(), "threads": args.threads, "platform": platform.platform(),
                    "load_before": os.getloadavg()},
        "data": {"corpus": corpus.source, "sha256": corpus.sha256, "train": len(train), "evaluation": len(evaluation),
                 "monitor": len(monitor), "split": data.SPLIT_RULE},
        "students": [],
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
               "before": {"cosine": round(ev.mean_cosine(ref, before), 4), "similarity": round(ev.similarity(ref, before), 4)},
               "cosine": round(ev.mean_cosine(ref, out), 4), "similarity": round(ev.similarity(ref, out), 4),
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
