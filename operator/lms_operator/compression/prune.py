"""Pruning: unstructured (global magnitude or threshold, made permanent) and structured.

Unstructured zeros shrink only the compressed file; structured pruning removes whole attention
heads or FFN rows, so the exported matrices are smaller and inference is faster.
"""
from __future__ import annotations

from typing import Callable, Sequence

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


def bert_blocks(module: nn.Module) -> list[nn.Module]:
    """The BERT-style encoder layers of `module` (attention with heads, FFN in and out)."""
    return [layer for layer in module.modules()
            if all(getattr(layer, n, None) is not None for n in ("attention", "intermediate", "output"))
            and hasattr(layer.attention, "self")]


class _Captured(Exception):
    """Ends a forward pass once the wanted input is captured."""


def linear_inputs(module: nn.Module, batch: dict[str, torch.Tensor], linears: Sequence[nn.Linear],
                  stop: bool = False) -> list[torch.Tensor]:
    """The real-token inputs (tokens x features) of each of `linears` when `module` runs on `batch`;
    with `stop` the pass ends at the last of them."""
    real = batch["attention_mask"].bool()
    got: dict[int, torch.Tensor] = {}

    def hook(i: int) -> Callable[..., None]:
        def capture(mod: nn.Linear, inputs: tuple[torch.Tensor, ...]) -> None:
            got[i] = inputs[0][real].detach()
            if stop and len(got) == len(linears):
                raise _Captured
        return capture

    handles = [lin.register_forward_pre_hook(hook(i)) for i, lin in enumerate(linears)]
    try:
        with torch.no_grad():
            module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   token_type_ids=torch.zeros_like(batch["input_ids"]))
    except _Captured:
        pass
    finally:
        for h in handles:
            h.remove()
    return [got[i] for i in range(len(linears))]


def out_projections(blocks: Sequence[nn.Module]) -> list[nn.Linear]:
    """Per block, in order: the attention output projection and the FFN output projection."""
    return [lin for b in blocks for lin in (b.attention.output.dense, b.output.dense)]


def contribution_scores(blocks: Sequence[nn.Module], inputs: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per encoder layer, each head's and each FFN row's mean contribution to the residual stream.

    `inputs` are the out projections' inputs on real tokens (linear_inputs). A head's score is
    the mean norm of its slice of the attention output projection applied to its context; an
    FFN row's is its mean |activation| times the norm of its output column. Weights alone rank
    units that rarely fire as high as busy ones: on MiniLM-L6 with 25% removed the untrained
    encoder's cosine to the teacher is 0.85 this way against 0.78 by weight norms.
    """
    out = []
    for b, ctx, act in zip(blocks, inputs[0::2], inputs[1::2]):
        hs = int(b.attention.self.attention_head_size)
        w = b.attention.output.dense.weight
        heads = ctx.shape[-1] // hs
        per_head = torch.einsum("nhd,ohd->nho", ctx.view(-1, heads, hs), w.detach().view(w.shape[0], heads, hs))
        out.append((per_head.norm(dim=-1).mean(dim=0), act.abs().mean(dim=0) * b.output.dense.weight.detach().norm(dim=0)))
    return out


CALIBRATION_SENTENCES = 256
"""Training sentences the contribution scores and the refit are measured on."""

RIDGE = 1e-2
"""Ridge term of the refit, relative to the mean diagonal of the inputs' Gram matrix."""


def refit(module: nn.Module, blocks: Sequence[nn.Module], batch: dict[str, torch.Tensor],
          targets: Sequence[torch.Tensor]) -> None:
    """Re-solve each out projection, layer by layer, so the pruned encoder's outputs match the
    unpruned ones (`targets`) on `batch`: least squares with an intercept on the pruned model's own
    inputs, which already carry the earlier layers' refits. The removed units' share is spread
    over those kept; on MiniLM-L6 with 25% removed from every layer this lifts the cosine to the
    teacher from 0.85 to 0.91 before any training.
    """
    for lin, y in zip(out_projections(blocks), targets):
        x = linear_inputs(module, batch, [lin], stop=True)[0]
        x = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1)
        gram = x.T @ x
        gram += RIDGE * gram.diagonal().mean() * torch.eye(gram.shape[0])
        solved = torch.linalg.solve(gram, x.T @ y).T
        with torch.no_grad():
            lin.weight.copy_(solved[:, :-1])
            if lin.bias is not None:
                lin.bias.copy_(solved[:, -1])


def spread_over_layers(scores: Sequence[torch.Tensor], amount: float) -> list[int]:
    """How many units each layer loses when the lowest `amount` of all layers' units go together.

    Contributions are in the residual stream's units in every layer, so they rank across layers:
    on MiniLM-L6 at 25% this takes 7, 5, 3, 1, 2 and 0 heads from layers 0-5 and leaves the
    untrained encoder at cosine 0.925, against 0.909 for an even share.
    """
    flat = torch.cat([s.flatten() for s in scores])
    remove = int(round(amount * flat.numel()))
    if remove == 0:
        return [0 for _ in scores]
    order = torch.argsort(flat)[:remove]
    owner = torch.cat([torch.full((s.numel(),), i) for i, s in enumerate(scores)])
    return [int((owner[order] == i).sum()) for i in range(len(scores))]


def weight_scores(block: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Data-free scores of one encoder layer: head weight norms and FFN row norm products."""
    att, sa = block.attention, block.attention.self
    heads = head_scores(sa.query, sa.key, sa.value, att.output.dense, int(sa.attention_head_size))
    rows = block.intermediate.dense.weight.detach().norm(dim=1) * block.output.dense.weight.detach().norm(dim=0)
    return heads, rows


def structured(module: nn.Module, amount: float, batch: dict[str, torch.Tensor] | None = None) -> dict[str, int]:
    """Remove the lowest-scored share `amount` of the attention heads and of the FFN rows of a BERT-style encoder.

    With a `batch` of representative text, units are ranked by their measured contribution
    (contribution_scores) across all layers (spread_over_layers) and the out projections are
    refitted afterwards (refit); without one, by weight norms, the same share in every layer.
    """
    blocks = bert_blocks(module)
    if not blocks:
        raise ValueError("structured pruning needs a BERT-style encoder (attention heads and FFN blocks)")
    targets: list[torch.Tensor] = []
    if batch is not None:
        outs = out_projections(blocks)
        inputs = linear_inputs(module, batch, outs)
        with torch.no_grad():
            targets = [lin(x) for lin, x in zip(outs, inputs)]
        scored = contribution_scores(blocks, inputs)
        del inputs
        cuts = [spread_over_layers([sc[i] for sc in scored], amount) for i in (0, 1)]
    else:
        scored = [weight_scores(b) for b in blocks]
        cuts = [[int(round(amount * sc[i].numel())) for sc in scored] for i in (0, 1)]
    removed = {"heads": 0, "ffn_rows": 0}
    for block, (heads, rows), cut_h, cut_r in zip(blocks, scored, *cuts):
        att, sa = block.attention, block.attention.self
        hs = int(sa.attention_head_size)
        keep_h = keep_lowest_removed(heads, cut_h)
        idx = torch.cat([torch.arange(h * hs, (h + 1) * hs) for h in keep_h.tolist()])
        sa.query, sa.key, sa.value = (_keep_linear(sa.query, idx, 0), _keep_linear(sa.key, idx, 0), _keep_linear(sa.value, idx, 0))
        att.output.dense = _keep_linear(att.output.dense, idx, 1)
        removed["heads"] += heads.numel() - keep_h.numel()
        sa.num_attention_heads = int(keep_h.numel())
        sa.all_head_size = int(idx.numel())
        keep_r = keep_lowest_removed(rows, cut_r)
        block.intermediate.dense = _keep_linear(block.intermediate.dense, keep_r, 0)
        block.output.dense = _keep_linear(block.output.dense, keep_r, 1)
        removed["ffn_rows"] += rows.numel() - keep_r.numel()
    if batch is not None:
        refit(module, blocks, batch, targets)
    return removed
