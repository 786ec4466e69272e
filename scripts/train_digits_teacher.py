#!/usr/bin/env python3
"""Train the digits MLP teacher reproducibly and write it as TorchScript.

Output: examples/models/digits-teacher/model.pt (+ lms-dataset.json naming its data), the
teacher that examples/digits-distill.yaml distils. Inputs are the 64 digit pixels / 16.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lms_operator.compression.data import digits_split
from lms_operator.compression.distill import build_mlp, param_count

TEACHER_SIZES = [64, 256, 128, 10]


def train(seed: int, epochs: int) -> tuple[nn.Module, float]:
    """Cross-entropy training with a fixed seed and data order; returns the model and test accuracy."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    data = digits_split()
    model = build_mlp(TEACHER_SIZES)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = order[i:i + 64]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(torch.from_numpy(data.x_test)).argmax(1).numpy() == data.y_test).mean())
    return model, acc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples/models/digits-teacher", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args(argv)
    model, acc = train(args.seed, args.epochs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scripted = torch.jit.script(model)
    scripted.save(str(out / "model.pt"))
    (out / "lms-dataset.json").write_text(json.dumps({"dataset": "sklearn:digits", "input": "64 pixels / 16",
                                                      "sizes": TEACHER_SIZES, "params": param_count(model),
                                                      "test_accuracy": round(acc, 4), "seed": args.seed}, indent=2) + "\n")
    print(f"teacher {TEACHER_SIZES}: {param_count(model)} parameters, test accuracy {acc:.4f} -> {out / 'model.pt'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
