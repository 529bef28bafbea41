"""Soft Dice loss: one formula with the Dice metric, analytic values, absent labels, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from regcore.losses import SoftDiceLoss, dice_from_counts, one_hot, soft_dice, soft_dice_loss
from regcore.metrics import dice_per_label, mean_dice


def blobs(shape, seed: int, n_labels: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    labels = np.zeros(shape, np.int64)
    for k in range(1, n_labels + 1):
        centre = rng.uniform(0.2, 0.8, len(shape)) * np.array(shape)
        radius = rng.uniform(0.12, 0.25) * min(shape)
        labels[((grid - centre.reshape(-1, *([1] * len(shape)))) ** 2).sum(0) < radius**2] = k
    return labels


def test_dice_from_counts_formula_and_absent_labels():
    scores = dice_from_counts(np.array([5, 0, 0]), np.array([10, 4, 0]), np.array([10, 0, 0]))
    assert scores[0] == 0.5 and scores[1] == 0.0 and math.isnan(scores[2])
    t = dice_from_counts(torch.tensor([5.0, 0.0]), torch.tensor([10.0, 0.0]), torch.tensor([10.0, 0.0]))
    assert t[0] == 0.5 and torch.isnan(t[1])


@pytest.mark.parametrize("shape", [(30, 34), (14, 16, 18)])
def test_soft_dice_on_hard_one_hot_equals_the_metric(shape):
    fixed, warped = blobs(shape, 0), blobs(shape, 1)
    warped[warped == 4] = 0  # label 4 only in fixed: Dice 0 in both
    fixed[fixed == 2] = 0
    warped[warped == 2] = 0  # label 2 in neither: NaN, left out of the mean
    n = 5
    f, w = (one_hot(torch.from_numpy(a)[None, None], n, torch.float64) for a in (fixed, warped))
    ours = soft_dice(f, w)[0]
    metric = dice_per_label(fixed, warped, labels=list(range(1, n)))
    for lab in range(1, n):
        if math.isnan(metric[lab]):
            assert torch.isnan(ours[lab - 1])
        else:
            assert float(ours[lab - 1]) == pytest.approx(metric[lab], rel=1e-12)
    assert float(soft_dice_loss(f, w)) == pytest.approx(1.0 - mean_dice(fixed, warped), rel=1e-12)
    assert soft_dice(f, w, include_background=True).shape == (1, n)


def test_loss_is_zero_for_identical_maps_and_one_for_disjoint():
    a = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    a[..., :4, :] = 1
    b = torch.zeros_like(a)
    b[..., 4:, :] = 1
    fa, fb = one_hot(a, 2), one_hot(b, 2)
    assert float(soft_dice_loss(fa, fa)) == 0.0
    assert float(soft_dice_loss(fa, fb)) == pytest.approx(1.0)
    assert float(SoftDiceLoss(include_background=True)(fa, fb)) == pytest.approx(1.0)
    empty = one_hot(torch.zeros_like(a), 2)
    value = soft_dice_loss(empty, empty.clone().requires_grad_())
    assert float(value) == 0.0 and value.requires_grad


def test_gradients_flow_to_soft_probabilities():
    torch.manual_seed(0)
    fixed = one_hot(torch.from_numpy(blobs((12, 13), 2, 3))[None, None], 4, torch.float64)
    logits = torch.randn(1, 4, 12, 13, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: soft_dice_loss(fixed, x.softmax(1)), (logits,), fast_mode=True)
    empty_label = fixed.clone()
    empty_label[:, 3] = 0  # label 3 absent from fixed; present (softly) in warped: finite gradient
    soft_dice_loss(empty_label, logits.softmax(1)).backward()
    assert torch.isfinite(logits.grad).all()


def test_bad_input_messages():
    f = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="same shape"):
        soft_dice(f, torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match=r"\(B, L, \*S\)"):
        soft_dice(f[0], f[0])
    with pytest.raises(TypeError, match="torch.Tensor"):
        soft_dice(np.zeros((1, 3, 8, 8)), f)
    with pytest.raises(ValueError, match=r"lie in \[0, 2\]"):
        one_hot(torch.full((1, 1, 4, 4), 3), 3)
    with pytest.raises(ValueError, match=r"\(B, 1, \*S\)"):
        one_hot(torch.zeros(1, 2, 4, 4, dtype=torch.long), 3)
