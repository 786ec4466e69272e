"""Distillation loss, student shapes and pruning on small tensors."""
from __future__ import annotations


import pytest
import torch
from torch import nn

from lms_operator.compression.distill import (build_mlp, distillation_loss, embedding_loss, kl_term, mlp_params,
                                              mlp_student_sizes, param_count, pick_layers, teacher_mlp_sizes)
from lms_operator.compression.export import mean_pool_normalise
from lms_operator.compression.prune import keep_lowest_removed, magnitude, sparsity, threshold


def test_kl_term_matches_hand_computation() -> None:
    zs = torch.tensor([[1.0, 2.0, 0.5]])
    zt = torch.tensor([[2.0, 0.0, 1.0]])
    t = 2.0
    ps = torch.softmax(zs / t, dim=-1)
    pt = torch.softmax(zt / t, dim=-1)
    expected = t**2 * float((pt * (pt.log() - ps.log())).sum())
    assert float(kl_term(zs, zt, t)) == pytest.approx(expected, rel=1e-5)
    assert float(kl_term(zt, zt, t)) == pytest.approx(0.0, abs=1e-7)


def test_distillation_loss_mixes_task_and_kl() -> None:
    zs = torch.tensor([[1.0, 2.0, 0.5], [0.1, 0.2, 3.0]])
    zt = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 4.0]])
    y = torch.tensor([0, 2])
    ce = float(nn.functional.cross_entropy(zs, y))
    kl = float(kl_term(zs, zt, 3.0))
    assert float(distillation_loss(zs, zt, y, 3.0, 1.0)) == pytest.approx(ce, rel=1e-6)
    assert float(distillation_loss(zs, zt, y, 3.0, 0.0)) == pytest.approx(kl, rel=1e-6)
    assert float(distillation_loss(zs, zt, y, 3.0, 0.25)) == pytest.approx(0.25 * ce + 0.75 * kl, rel=1e-6)


def test_embedding_loss_zero_for_identical_and_grows_with_distance() -> None:
    t = torch.nn.functional.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert float(embedding_loss(t, t, 2.0, 0.5)) == pytest.approx(0.0, abs=1e-5)
    near = embedding_loss(t + 0.01, t, 2.0, 0.5)
    far = embedding_loss(-t, t, 2.0, 0.5)
    assert 0.0 < float(near) < float(far)


def test_layer_choice_and_student_budget() -> None:
    assert pick_layers(6, 3) == [0, 3, 5]
    assert pick_layers(12, 4) == [0, 4, 7, 11]
    assert pick_layers(6, 1) == [5]
    assert pick_layers(6, 6) == list(range(6))
    with pytest.raises(ValueError):
        pick_layers(6, 7)
    sizes = mlp_student_sizes([64, 256, 128, 10], 1)
    assert mlp_params(sizes) <= mlp_params([64, 256, 128, 10]) // 2
    assert sizes[0] == 64 and sizes[-1] == 10 and len(sizes) == 3
    mlp = build_mlp(sizes)
    assert param_count(mlp) == mlp_params(sizes)
    assert teacher_mlp_sizes(build_mlp([64, 32, 10])) == [64, 32, 10]


def test_mean_pooling_ignores_padding_and_normalises() -> None:
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    out = mean_pool_normalise(hidden, mask)
    assert torch.allclose(out, torch.tensor([[1.0, 0.0]]))


def test_magnitude_and_threshold_pruning_are_permanent() -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    reached = magnitude(m, 0.5)
    assert reached == pytest.approx(0.5, abs=0.01)
    assert not any(name.endswith("_orig") for name, _ in m.named_parameters())
    m2 = nn.Sequential(nn.Linear(8, 8))
    with torch.no_grad():
        m2[0].weight.copy_(torch.linspace(-1, 1, 64).reshape(8, 8))
    threshold(m2, 0.5)
    w = m2[0].weight
    assert bool(((w.abs() < 0.5) <= (w == 0)).all()) and sparsity(m2) == pytest.approx(float((w == 0).float().mean()))


def test_lowest_scores_removed_keeps_order_and_one_survivor() -> None:
    assert keep_lowest_removed(torch.tensor([0.5, 0.1, 0.9, 0.3]), 2).tolist() == [0, 2]
    assert keep_lowest_removed(torch.tensor([0.5, 0.1]), 5).tolist() == [0]
