"""Dice overlap: ONE formula for the metric (hard label counts) and the differentiable loss (soft one-hot).

``Dice = 2 |F n W| / (|F| + |W|)`` per label, F = fixed, W = warped moving. A label absent from both
(``|F| + |W| = 0``) has no Dice (NaN) and is left out of every mean; a label present in only one
scores 0. ``regcore.metrics.overlap`` calls :func:`dice_from_counts` on voxel counts; the loss here
calls it on sums of probabilities, so the two agree exactly on hard one-hot inputs (tested).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def dice_from_counts(intersection, size_fixed, size_warped):
    """``2 I / (|F| + |W|)`` elementwise; NaN where ``|F| + |W| == 0`` (label absent from both).

    Accepts numpy arrays/scalars (returns float64) or torch tensors (same dtype; differentiable, and the
    NaN entries carry no gradient).
    """
    if isinstance(intersection, torch.Tensor):
        denom = size_fixed + size_warped
        present = denom > 0
        safe = torch.where(present, denom, torch.ones_like(denom))
        return torch.where(present, 2.0 * intersection / safe, torch.full_like(denom, float("nan")))
    inter = np.asarray(intersection)
    denom = np.asarray(size_fixed) + np.asarray(size_warped)
    return np.where(denom > 0, 2.0 * inter / np.where(denom > 0, denom, 1), np.nan)


def one_hot(labels: torch.Tensor, num_labels: int, dtype=torch.float32) -> torch.Tensor:
    """Label map ``(B, 1, *S)`` (integer codes ``0..num_labels-1``) -> one-hot ``(B, num_labels, *S)``."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.ndim not in (4, 5) or labels.shape[1] != 1:
        raise ValueError(
            f"labels must be (B, 1, *S) with 2 or 3 spatial dims, got shape {tuple(labels.shape)}"
        )
    if labels.is_floating_point() and not torch.equal(labels, labels.round()):
        raise ValueError("labels must hold integer label codes, got non-integer floats")
    codes = labels[:, 0].long()
    if codes.numel() and (codes.min() < 0 or codes.max() >= num_labels):
        raise ValueError(
            f"labels must lie in [0, {num_labels - 1}], got [{int(codes.min())}, {int(codes.max())}]"
        )
    return torch.nn.functional.one_hot(codes, num_labels).movedim(-1, 1).to(dtype)


def _check_pair(fixed: torch.Tensor, warped: torch.Tensor) -> None:
    for arg, t in (("fixed", fixed), ("warped", warped)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{arg} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim not in (4, 5) or not t.is_floating_point():
            raise ValueError(
                f"{arg} must be a float (B, L, *S) one-hot/probability tensor with 2 or 3 spatial "
                f"dims, got shape {tuple(t.shape)} dtype {t.dtype}"
            )
    if fixed.shape != warped.shape:
        raise ValueError(
            f"fixed {tuple(fixed.shape)} and warped {tuple(warped.shape)} must have the same shape"
        )


def soft_dice(fixed: torch.Tensor, warped: torch.Tensor, *, include_background: bool = False) -> torch.Tensor:
    """Per-label soft Dice ``(B, L)`` between one-hot / probability maps ``(B, L, *S)`` of fixed and warped.

    ``|F n W| = sum_x F W``, ``|F| = sum_x F``, ``|W| = sum_x W`` per batch item and label; channel 0 is
    background and is dropped unless ``include_background`` (then ``(B, L)``, else ``(B, L - 1)``).
    NaN for labels absent from both. Differentiable with respect to both inputs.
    """
    _check_pair(fixed, warped)
    if not include_background:
        fixed, warped = fixed[:, 1:], warped[:, 1:]
    dims = tuple(range(2, fixed.ndim))
    return dice_from_counts((fixed * warped).sum(dims), fixed.sum(dims), warped.sum(dims))


def soft_dice_loss(
    fixed: torch.Tensor, warped: torch.Tensor, *, include_background: bool = False
) -> torch.Tensor:
    """``1 - mean soft Dice`` over batch items and labels present in fixed or warped (scalar in [0, 1]).

    Inputs as :func:`soft_dice`; 0 for identical hard one-hot maps. With no label present anywhere the
    loss is 0 (still connected to the graph).
    """
    dice = soft_dice(fixed, warped, include_background=include_background)
    present = ~torch.isnan(dice)
    if not present.any():
        return warped.sum() * 0.0
    return 1.0 - dice[present].mean()


class SoftDiceLoss(nn.Module):
    """Module form of :func:`soft_dice_loss`: ``loss(fixed_onehot, warped_onehot) -> scalar``."""

    def __init__(self, include_background: bool = False):
        super().__init__()
        self.include_background = bool(include_background)

    def forward(self, fixed: torch.Tensor, warped: torch.Tensor) -> torch.Tensor:
        return soft_dice_loss(fixed, warped, include_background=self.include_background)
