"""Loss terms per supervision mode, and the validation measures (Dice, folding).

``registration_losses(config, prediction, batch, similarity)`` returns named scalar terms plus
``total`` (the weighted sum) for the default training step of every family:

* unsupervised: ``similarity`` (fixed vs warped moving) + ``regularizer`` (diffusion);
* weak:  + ``dice`` (1 - soft Dice of bilinearly warped one-hot moving labels vs fixed);
* full:  ``field`` (MSE to the true displacement, voxels^2) + ``regularizer``;
* dual:  ``field`` + ``similarity`` + ``regularizer``.
Affine predictions carry no regulariser (weight ignored).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from regcore.losses import Similarity, make_regularizer, make_similarity, one_hot, soft_dice_loss
from regcore.metrics.overlap import dice_per_label
from regcore.spatial.jacobian import jacobian_determinant
from regcore.spatial.warp import warp, warp_labels
from regcore.train.config import SupervisionMode, TrainConfig


def similarity_module(name: Similarity | str, dims: int) -> torch.nn.Module:
    """The training similarity (lower is better): :func:`regcore.losses.make_similarity` with its defaults."""
    return make_similarity(name, dims)


def diffusion_regularizer(u: torch.Tensor) -> torch.Tensor:
    """Diffusion energy of ``(B, n, *S)`` averaged over the n axes (the shipped recipes' weights assume it)."""
    return make_regularizer("diffusion")(u) / (u.ndim - 2)


def warped_label_dice_loss(
    fixed_labels: torch.Tensor, moving_labels: torch.Tensor, u: torch.Tensor
) -> torch.Tensor:
    """:func:`regcore.losses.soft_dice_loss` of the fixed labels vs the moving labels' one-hot maps warped
    (bilinearly, so differentiable in ``u``) by ``u`` ``(B, n, *S)``. Labels ``(B, 1, *S)``, any values."""
    values, codes = torch.unique(torch.cat([fixed_labels, moving_labels], 1), return_inverse=True)
    if values[0] != 0:  # channel 0 is background for the loss
        codes = codes + 1
    k = int(codes.max()) + 1
    fixed = one_hot(codes[:, :1], k)
    warped = warp(one_hot(codes[:, 1:], k), u, mode="bilinear", padding_mode="zeros")
    return soft_dice_loss(fixed, warped)


def registration_losses(
    config: TrainConfig, prediction: Any, batch: dict[str, torch.Tensor], similarity: torch.nn.Module
) -> dict[str, torch.Tensor]:
    """Named loss terms (unweighted) and their weighted ``total`` for one batch.

    Args:
        config: the recipe (supervision mode and weights).
        prediction: a :class:`~regcore.methods.learned.family.Prediction` on the model grid.
        batch: ``moving``/``fixed`` ``(B, 1, *S)``, labels ``(B, 1, *S)``, ``true_displacement``, ``has_true``.
        similarity: image similarity module (lower is better).
    """
    u = prediction.displacement.float()
    mode = SupervisionMode(config.supervision)
    terms: dict[str, torch.Tensor] = {}
    weights: dict[str, float] = {}
    if mode in (SupervisionMode.UNSUPERVISED, SupervisionMode.WEAK, SupervisionMode.DUAL):
        terms["similarity"] = similarity(batch["fixed"], warp(batch["moving"], u))
        weights["similarity"] = config.similarity_weight
    if mode == SupervisionMode.WEAK:
        terms["dice"] = warped_label_dice_loss(batch["fixed_labels"], batch["moving_labels"], u)
        weights["dice"] = config.dice_weight
    if mode in (SupervisionMode.FULL, SupervisionMode.DUAL):
        has = batch["has_true"].bool()
        if bool(has.any()):
            terms["field"] = ((u[has] - batch["true_displacement"][has]) ** 2).mean()
        elif mode == SupervisionMode.FULL:
            raise ValueError(
                f"supervision '{mode}' needs ground-truth displacements, but the data source "
                f"'{config.data}' provided none in this batch"
            )
        else:  # dual: real pairs without a known field train on the similarity alone
            terms["field"] = u.new_zeros(())
        weights["field"] = config.field_weight
    if prediction.affine is None:
        field = prediction.velocity if prediction.velocity is not None else u
        terms["regularizer"] = diffusion_regularizer(field.float())
        weights["regularizer"] = config.regularizer_weight
    terms["total"] = sum(weights[k] * terms[k] for k in weights)
    return terms


def folding_percent(u: torch.Tensor) -> float:
    """Percentage of voxels of ``(B, n, *S)`` with a non-positive Jacobian determinant."""
    return float((jacobian_determinant(u.float()) <= 0).float().mean() * 100.0)


def dice_per_pair(fixed_labels: torch.Tensor, moving_labels: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Hard Dice ``(B,)`` (:func:`regcore.metrics.overlap.dice_per_label`): mean over the non-zero labels
    present in the fixed map, moving labels warped by nearest neighbour; NaN when the fixed map is empty."""
    warped = warp_labels(moving_labels, u).cpu().numpy()
    fixed = fixed_labels.cpu().numpy()
    out = []
    for b in range(fixed.shape[0]):
        present = [int(v) for v in np.unique(fixed[b]) if v != 0]
        scores = dice_per_label(fixed[b, 0], warped[b, 0], present) if present else {}
        out.append(float(np.mean(list(scores.values()))) if scores else float("nan"))
    return torch.tensor(out)
