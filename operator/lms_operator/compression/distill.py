"""Knowledge distillation into a smaller student, seeded and CPU-sized.

Loss: L = alpha * L_task + (1 - alpha) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)).
Classifiers: L_task is cross-entropy on labels. Embedding models: L_task is (1 - cosine) + MSE
to the teacher's embeddings, z are the in-batch similarity logits, and a token-level MSE ties
each student layer's output to its teacher layer's (as TinyBERT does); the student starts
from teacher layers (choose_layers), trains for a fixed number of steps with progress lines,
and checkpoints so a killed Job resumes.
"""
from __future__ import annotations

import copy
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

SIMILARITY_SCALE = 20.0


def kl_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(z_t/T) || softmax(z_s/T)), averaged over the batch."""
    log_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    return temperature**2 * F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None,
                      temperature: float, alpha: float) -> torch.Tensor:
    """Classifier loss; without labels the task term is cross-entropy to the teacher's argmax."""
    target = labels if labels is not None else teacher_logits.argmax(dim=-1)
    task = F.cross_entropy(student_logits, target)
    return alpha * task + (1.0 - alpha) * kl_term(student_logits, teacher_logits, temperature)


def embedding_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor, temperature: float, alpha: float) -> torch.Tensor:
    """Embedding loss: cosine + MSE to the teacher, plus KL between in-batch similarity distributions."""
    s = F.normalize(student_emb, dim=-1)
    t = F.normalize(teacher_emb, dim=-1)
    task = (1.0 - (s * t).sum(dim=-1)).mean() + F.mse_loss(s, t) * s.shape[-1]
    z_s = SIMILARITY_SCALE * s @ s.T
    z_t = SIMILARITY_SCALE * t @ t.T
    return alpha * task + (1.0 - alpha) * kl_term(z_s, z_t, temperature)


def pick_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """Evenly spaced teacher layers from the first to the last (6 -> 3 gives 0, 3, 5).

    Keeping the last layer matters: for MiniLM-L6 the untrained student's cosine to the teacher
    is 0.66 with layers 0, 3, 5 but 0.39 with 0, 2, 4.
    """
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(f"studentLayers must be between 1 and {teacher_layers}, got {student_layers}")
    if student_layers == 1:
        return [teacher_layers - 1]
    step = (teacher_layers - 1) / (student_layers - 1)
    return [int(i * step + 0.5) for i in range(student_layers)]


def choose_layers(teacher: nn.Module, student_layers: int, batch: dict[str, torch.Tensor]) -> tuple[list[int], float]:
    """Teacher layers for an embedding student, chosen greedily on a probe batch.

    From all layers, drop one at a time the layer whose removal keeps the untrained student's
    mean cosine to the teacher highest. For MiniLM-L6 -> 4 this keeps 0, 3, 4, 5 (cosine 0.87
    on held-out WordNet text) where evenly spaced 0, 2, 3, 5 start at 0.82. Returns the layers
    and their probe cosine.
    """
    layers = teacher.encoder.layer
    total = len(layers)
    if not 1 <= student_layers <= total:
        raise ValueError(f"studentLayers must be between 1 and {total}, got {student_layers}")
    original = list(layers)
    with torch.no_grad():
        target = _embed(teacher, batch)
        keep, best = list(range(total)), 1.0
        try:
            while len(keep) > student_layers:
                scored = []
                for drop in keep:
                    trial = [i for i in keep if i != drop]
                    teacher.encoder.layer = nn.ModuleList([original[i] for i in trial])
                    scored.append((float((_embed(teacher, batch) * target).sum(dim=-1).mean()), trial))
                best, keep = max(scored, key=lambda t: t[0])
        finally:
            teacher.encoder.layer = nn.ModuleList(original)
    return keep, best


def layer_dropped_student(teacher: nn.Module, student_layers: int, keep: Sequence[int] | None = None) -> tuple[nn.Module, list[int]]:
    """Copy of a BERT-style teacher keeping `student_layers` of its encoder layers (`keep`, or
    evenly spaced ones)."""
    student = copy.deepcopy(teacher)
    layers = student.encoder.layer
    keep = list(keep) if keep is not None else pick_layers(len(layers), student_layers)
    student.encoder.layer = nn.ModuleList([layers[i] for i in keep])
    student.config.num_hidden_layers = len(keep)
    return student, keep


def mlp_params(sizes: Sequence[int]) -> int:
    """Parameters of an MLP with these layer widths (weights + biases)."""
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def mlp_student_sizes(teacher_sizes: Sequence[int], hidden_layers: int) -> list[int]:
    """Widest equal-width MLP with `hidden_layers` hidden layers and at most half the teacher's parameters."""
    n_in, n_out = teacher_sizes[0], teacher_sizes[-1]
    budget = mlp_params(teacher_sizes) // 2
    width = max(teacher_sizes[1:-1] or [n_in])
    while width > 1 and mlp_params([n_in] + [width] * hidden_layers + [n_out]) > budget:
        width -= 1
    return [n_in] + [width] * hidden_layers + [n_out]


def build_mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear/ReLU stack with the given widths."""
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        mods.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def teacher_mlp_sizes(module: nn.Module) -> list[int]:
    """Layer widths of an MLP teacher from its 2-D weights, in order."""
    ws = [t for n, t in module.state_dict().items() if n.endswith("weight") and t.dim() == 2]
    return [int(ws[0].shape[1])] + [int(w.shape[0]) for w in ws]


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def train_classifier(student: nn.Module, teacher: nn.Module, x: np.ndarray, y: np.ndarray, temperature: float,
                     alpha: float, epochs: int, seed: int, batch_size: int = 64, lr: float = 3e-3) -> list[float]:
    """Distil a classifier on (x, y); returns the mean loss per epoch."""
    from tqdm import tqdm

    seed_all(seed)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y)
    with torch.no_grad():
        zt = teacher(xt)
        zt = zt.logits if hasattr(zt, "logits") else zt
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    student.train()
    for _ in tqdm(range(epochs), desc="distil", unit="epoch", file=sys.stderr):
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), batch_size):
            idx = order[i:i + batch_size]
            zs = student(xt[idx])
            zs = zs.logits if hasattr(zs, "logits") else zs
            loss = distillation_loss(zs, zt[idx], yt[idx], temperature, alpha)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        losses.append(total / len(xt))
    student.eval()
    return losses


def _embed(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    from lms_operator.compression.export import mean_pool_normalise

    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                token_type_ids=torch.zeros_like(batch["input_ids"]))
    return mean_pool_normalise(out.last_hidden_state, batch["attention_mask"])


@dataclass(frozen=True)
class EmbedTraining:
    """How an embedding student is trained; `fingerprint` names what is trained, so a checkpoint
    written for another model, spec or data is never resumed from."""

    steps: int
    temperature: float = 2.0
    alpha: float = 0.5
    seed: int = 0
    batch_size: int = 32
    max_length: int = 64
    lr: float = 3e-4
    """What bench/distill.py and bench/compress.py measured the students with (MiniLM, batch 32)."""
    hidden_weight: float = 1.0
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 100
    log_every: int = 50
    fingerprint: str = ""
    device: str = "cpu"
    stop_after: int | None = None
    """Stop (as if killed) after this many steps in this process; for tests and time-boxed runs."""


CHECKPOINT_FILE = "student.pt"


def hidden_loss(s_hidden: Sequence[torch.Tensor], t_hidden: Sequence[torch.Tensor], mask: torch.Tensor,
                layer_map: Sequence[int]) -> torch.Tensor:
    """Token-level MSE between each student layer's output and its teacher layer's (padding ignored).

    Student layer j stands for teacher layer layer_map[j]; hidden_states[0] is the embedding output.
    """
    m = mask.unsqueeze(-1).to(s_hidden[0].dtype)
    denom = m.sum() * s_hidden[0].shape[-1]
    total = s_hidden[0].new_zeros(())
    for j, k in enumerate(layer_map):
        diff = (s_hidden[j + 1] - t_hidden[k + 1]) * m
        total = total + (diff * diff).sum() / denom
    return total / max(1, len(layer_map))


def _forward(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    from lms_operator.compression.export import mean_pool_normalise

    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                token_type_ids=torch.zeros_like(batch["input_ids"]), output_hidden_states=True)
    return mean_pool_normalise(out.last_hidden_state, batch["attention_mask"]), out.hidden_states


def _batches(tokenizer: Any, sentences: Sequence[str], size: int, max_length: int) -> list[dict[str, torch.Tensor]]:
    """Length-sorted batches (little padding); their order is shuffled per epoch."""
    by_length = sorted(sentences, key=lambda s: (len(s), s))
    out = []
    for i in range(0, len(by_length), size):
        enc = tokenizer(by_length[i:i + size], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        out.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    return out


def _to(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _monitor_cosine(student: nn.Module, probe: list[dict[str, torch.Tensor]], targets: list[torch.Tensor]) -> float:
    with torch.no_grad():
        cos = [(_embed(student, b) * t).sum(dim=-1) for b, t in zip(probe, targets)]
    return float(torch.cat(cos).mean()) if cos else float("nan")


def load_checkpoint(folder: Path | None, fingerprint: str) -> dict[str, Any] | None:
    """The saved training state for `fingerprint`, or None (no file, or one for something else)."""
    if folder is None or not (folder / CHECKPOINT_FILE).is_file():
        return None
    state = torch.load(folder / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    return state if state.get("fingerprint") == fingerprint else None


def save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    """Write atomically: a Job killed mid-write leaves the previous checkpoint intact."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (CHECKPOINT_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, folder / CHECKPOINT_FILE)


def train_embedding(student: nn.Module, teacher: nn.Module, tokenizer: Any, sentences: Sequence[str],
                    cfg: EmbedTraining, monitor: Sequence[str] = (), layer_map: Sequence[int] | None = None,
                    log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Distil a sentence-embedding encoder: embedding cosine + MSE and in-batch similarity KL
    (embedding_loss), plus token-level MSE of each student layer to its teacher layer (`layer_map`).

    Logs `step N/M loss L cosine C` every `log_every` steps (cosine on `monitor`, text that is
    not trained on), checkpoints every `checkpoint_every` steps and resumes from a checkpoint
    with the same fingerprint. Returns the training record (curve, steps, resumed_from).
    """
    say = log or (lambda msg: print(f"lms compress: {msg}", file=sys.stderr, flush=True))
    seed_all(cfg.seed)
    dev = cfg.device
    batches = _batches(tokenizer, sentences, cfg.batch_size, cfg.max_length)
    if not batches:
        raise ValueError("no training sentences")
    probe = [_to(b, dev) for b in _batches(tokenizer, list(monitor)[:128], 32, cfg.max_length)]
    teacher.eval().to(dev)
    student.to(dev)
    with torch.no_grad():
        probe_targets = [_embed(teacher, b) for b in probe]
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)
    steps = cfg.steps
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, 0.5 * (1 + math.cos(math.pi * s / steps))))
    curve: list[dict[str, float]] = []
    start = 0
    state = load_checkpoint(cfg.checkpoint_dir, cfg.fingerprint)
    if state is not None:
        student.load_state_dict(state["student"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, curve = int(state["step"]), list(state["curve"])
        say(f"distil: resuming from checkpoint at step {start}/{steps}")
    # no dropout: the short CPU run converges faster and stays deterministic
    student.eval()
    t0 = time.perf_counter()
    elapsed0 = curve[-1]["seconds"] if curve else 0.0
    running, count, done = 0.0, 0, 0
    order: list[int] = []
    for step in range(start, steps):
        epoch, pos = divmod(step, len(batches))
        if pos == 0 or not order:
            order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(cfg.seed + epoch)).tolist()
        batch = _to(batches[order[pos]], dev)
        with torch.no_grad():
            t_emb, t_hidden = _forward(teacher, batch)
        s_emb, s_hidden = _forward(student, batch)
        loss = embedding_loss(s_emb, t_emb, cfg.temperature, cfg.alpha)
        if cfg.hidden_weight > 0 and layer_map is not None:
            loss = loss + cfg.hidden_weight * hidden_loss(s_hidden, t_hidden, batch["attention_mask"], layer_map)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running += float(loss.detach())
        count += 1
        done += 1
        n = step + 1
        if n % cfg.log_every == 0 or n == steps:
            point = {"step": n, "loss": round(running / count, 5), "cosine": round(_monitor_cosine(student, probe, probe_targets), 5),
                     "seconds": round(elapsed0 + time.perf_counter() - t0, 1)}
            curve.append(point)
            running, count = 0.0, 0
            say(f"distil: step {n}/{steps} loss {point['loss']:.4f} cosine {point['cosine']:.4f} ({point['seconds']:.0f} s)")
        if cfg.checkpoint_dir is not None and (n % cfg.checkpoint_every == 0 or n == steps):
            save_checkpoint(cfg.checkpoint_dir, {"fingerprint": cfg.fingerprint, "step": n, "student": student.state_dict(),
                                                 "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                                 "curve": curve})
        if cfg.stop_after is not None and done >= cfg.stop_after and n < steps:
            say(f"distil: stopping after step {n} (stop_after)")
            break
    student.eval().to("cpu")
    teacher.to("cpu")
    return {"steps": steps, "resumed_from": start, "curve": curve, "device": dev,
            "loss": [p["loss"] for p in curve], "completed": start + done >= steps}
