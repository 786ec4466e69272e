"""Pruning: unstructured (global magnitude or threshold, made permanent) and structured.

Unstructured zeros shrink only the compressed file; structured pruning removes whole attention
heads or FFN rows, so the exported matrices are smaller and inference is faster.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune


def prunable_weights(module: nn.Module) -> list[tuple[nn.Module, str]]:
    """Weights of every Linear layer (embeddings and norms are left alone)."""
    return [(m, "weight") for m in module.modules() if isinstance(m, nn.Linear)]


def sparsity(module: nn.Module) -> float:
    """Share of zeros over all Linear weights."""
    ws = [m.weight for m, _ in prunable_weights(module)] or [p for p in module.parameters() if p.dim() == 2]
    total = sum(w.numel() for w in ws)
    return float(sum(int((w == 0).sum()) for w in ws) / max(total, 1))


def _script_weights(module: torch.jit.ScriptModule) -> list[torch.Tensor]:
    return [p for n, p in module.named_parameters() if n.endswith("weight") and p.dim() == 2]


def magnitude(module: nn.Module, amount: float) -> float:
    """Global L1 magnitude pruning to `amount` sparsity; returns the reached sparsity."""
    if isinstance(module, torch.jit.ScriptModule):
        ws = _script_weights(module)
        flat = torch.cat([w.detach().abs().flatten() for w in ws])
        k = int(round(amount * flat.numel()))
        if k > 0:
            cut = torch.kthvalue(flat, k).values
            with torch.no_grad():
                for w in ws:
                    w.mul_((w.abs() > cut).to(w.dtype))
        return sparsity_of(ws)
    params = prunable_weights(module)
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    for m, name in params:
        prune.remove(m, name)
    return sparsity(module)


class _Threshold(prune.BasePruningMethod):
    """Zero every weight with |w| < threshold."""

    PRUNING_TYPE = "unstructured"

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        return default_mask * (t.abs() >= self.threshold).to(default_mask.dtype)


def threshold(module: nn.Module, value: float) -> float:
    """Threshold pruning (|w| < value -> 0), made permanent; returns the reached sparsity."""
    if isinstance(module, torch.jit.ScriptModule):
        ws = _script_weights(module)
        with torch.no_grad():
            for w in ws:
                w.mul_((w.abs() >= value).to(w.dtype))
        return sparsity_of(ws)
    params = prunable_weights(module)
    prune.global_unstructured(params, pruning_method=_Threshold, threshold=value)
    for m, name in params:
        prune.remove(m, name)
    return sparsity(module)


def sparsity_of(ws: list[torch.Tensor]) -> float:
    total = sum(w.numel() for w in ws)
    return float(sum(int((w == 0).sum()) for w in ws) / max(total, 1))


def _keep_linear(layer: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping `index` along `dim` (0: output rows, 1: input columns)."""
    w = layer.weight.detach().index_select(dim, index).clone()
    bias = layer.bias.detach().clone() if layer.bias is not None else None
    if dim == 0 and bias is not None:
        bias = bias.index_select(0, index)
    new = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    new.weight = nn.Parameter(w)
    if bias is not None:
        new.bias = nn.Parameter(bias)
    return new


def head_scores(q: nn.Linear, k: nn.Linear, v: nn.Linear, out: nn.Linear, head_size: int) -> torch.Tensor:
    """L2 norm per head over its query/key/value rows and output columns."""
    heads = q.weight.shape[0] // head_size
    s = torch.zeros(heads)
    for h in range(heads):
        sl = slice(h * head_size, (h + 1) * head_size)
        s[h] = sum(float(t.detach().norm() ** 2) for t in (q.weight[sl], k.weight[sl], v.weight[sl], out.weight[:, sl])) ** 0.5
    return s


def keep_lowest_removed(scores: torch.Tensor, remove: int) -> torch.Tensor:
    """Sorted indices kept after dropping the `remove` lowest scores (at least one is kept)."""
    remove = min(max(remove, 0), scores.numel() - 1)
    keep = torch.argsort(scores, descending=True)[: scores.numel() - remove]
    return torch.sort(keep).values


def structured(module: nn.Module, amount: float) -> dict[str, int]:
    """Remove the lowest-norm share `amount` of attention heads and FFN rows in each BERT-style layer."""
    removed = {"heads": 0, "ffn_rows": 0}
    for layer in module.modules():
        att = getattr(layer, "attention", None)
        inter = getattr(layer, "intermediate", None)
        out = getattr(layer, "output", None)
        if att is None or inter is None or out is None or not hasattr(att, "self"):
            continue
        sa = att.self
        hs = int(sa.attention_head_size)
        scores = head_scores(sa.query, sa.key, sa.value, att.output.dense, hs)
        keep_h = keep_lowest_removed(scores, int(round(amount * scores.numel())))
        idx = torch.cat([torch.arange(h * hs, (h + 1) * hs) for h in keep_h.tolist()])
        sa.query, sa.key, sa.value = (_keep_linear(sa.query, idx, 0), _keep_linear(sa.key, idx, 0), _keep_linear(sa.value, idx, 0))
        att.output.dense = _keep_linear(att.output.dense, idx, 1)
        removed["heads"] += scores.numel() - keep_h.numel()
        sa.num_attention_heads = int(keep_h.numel())
        sa.all_head_size = int(idx.numel())
        rows = inter.dense.weight.detach().norm(dim=1) * out.dense.weight.detach().norm(dim=0)
        keep_r = keep_lowest_removed(rows, int(round(amount * rows.numel())))
        inter.dense = _keep_linear(inter.dense, keep_r, 0)
        out.dense = _keep_linear(out.dense, keep_r, 1)
        removed["ffn_rows"] += rows.numel() - keep_r.numel()
    if removed["heads"] == 0 and removed["ffn_rows"] == 0:
        raise ValueError("structured pruning needs a BERT-style encoder (attention heads and FFN blocks)")
    return removed
