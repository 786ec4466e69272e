"""Knowledge distillation into a smaller student, seeded and CPU-sized.

Loss: L = alpha * L_task + (1 - alpha) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)).
Classifiers: L_task is cross-entropy on labels. Embedding models: L_task is (1 - cosine) + MSE
to the teacher's embeddings, and z are the in-batch similarity logits.
"""
from __future__ import annotations

import copy
import math
import sys
from typing import Any, Sequence

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


def layer_dropped_student(teacher: nn.Module, student_layers: int) -> tuple[nn.Module, list[int]]:
    """Copy of a BERT-style teacher keeping `student_layers` of its encoder layers."""
    student = copy.deepcopy(teacher)
    layers = student.encoder.layer
    keep = pick_layers(len(layers), student_layers)
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


def train_embedding(student: nn.Module, teacher: nn.Module, tokenizer: Any, sentences: list[str], temperature: float,
                    alpha: float, epochs: int, seed: int, batch_size: int = 32, max_length: int = 64,
                    lr: float = 3e-4) -> list[float]:
    """Distil a sentence-embedding encoder on `sentences`; returns the mean loss per epoch."""
    from tqdm import tqdm

    seed_all(seed)
    # batches of similar length waste little on padding; their order is shuffled per epoch
    by_length = sorted(sentences, key=lambda s: (len(s), s))
    batches = []
    for i in range(0, len(by_length), batch_size):
        enc = tokenizer(by_length[i:i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        batches.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    teacher.eval()
    with torch.no_grad():
        targets = [_embed(teacher, b) for b in tqdm(batches, desc="teacher", unit="batch", file=sys.stderr)]
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    steps = epochs * len(batches)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, steps // 10)) * max(0.0, 0.5 * (1 + math.cos(math.pi * s / steps))))
    gen = torch.Generator().manual_seed(seed)
    student.eval()  # no dropout: the short CPU run converges faster and stays deterministic
    losses: list[float] = []
    with tqdm(total=steps, desc="distil", unit="step", file=sys.stderr) as bar:
        for _ in range(epochs):
            total = 0.0
            for j in torch.randperm(len(batches), generator=gen).tolist():
                loss = embedding_loss(_embed(student, batches[j]), targets[j], temperature, alpha)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach())
                bar.update(1)
            losses.append(total / len(batches))
    student.eval()
    return losses
