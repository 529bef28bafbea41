"""Loss terms per supervision mode, and the validation measures (Dice, folding).

``training_losses(config, out, batch)`` returns a dict of named scalar terms plus ``total``:

* unsupervised: ``similarity`` (fixed vs warped moving) + ``regularizer`` (diffusion);
* weak:  + ``dice`` (1 - soft Dice of bilinearly warped one-hot moving labels vs fixed);
* full:  ``field`` (MSE to the true displacement, voxels^2) + ``regularizer``;
* dual:  ``field`` + ``similarity`` + ``regularizer``.
Affine models carry no regulariser (weight ignored).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from regcore.losses.similarity import LocalNCCLoss, MSELoss, NCCLoss
from regcore.spatial.warp import warp, warp_labels
from regcore.train.config import SimilarityName, SupervisionMode, TrainConfig


def similarity_module(name: SimilarityName | str, dims: int) -> torch.nn.Module:
    """Similarity loss (lower is better) from ``regcore.losses``; LNCC uses a 9-voxel box window."""
    name = SimilarityName(name)
    if name == SimilarityName.LNCC:
        return LocalNCCLoss(window=9 if dims == 2 else 7)
    if name == SimilarityName.NCC:
        return NCCLoss()
    return MSELoss()


def diffusion_regularizer(u: torch.Tensor) -> torch.Tensor:
    """Mean squared forward difference of a field ``(B, n, *S)`` over all axes (voxels^2 / voxel^2)."""
    n = u.ndim - 2
    terms = [(u.diff(dim=2 + a) ** 2).mean() for a in range(n)]
    return sum(terms) / n


def one_hot(labels: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``(B, 1, *S)`` int labels -> ``(B, K, *S)`` float one-hot over ``values`` (sorted, excl. 0)."""
    return torch.cat([(labels == v).float() for v in values.tolist()], 1)


def soft_dice_loss(fixed_labels: torch.Tensor, moving_labels: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over the non-zero labels present in either map (moving one-hot warped by ``u``)."""
    values = torch.unique(torch.cat([fixed_labels.flatten(), moving_labels.flatten()]))
    values = values[values != 0]
    if values.numel() == 0:
        return u.sum() * 0.0
    f = one_hot(fixed_labels, values)
    m = warp(one_hot(moving_labels, values), u, mode="bilinear", padding_mode="zeros")
    dims = tuple(range(2, f.ndim))
    inter = (f * m).sum(dims)
    denom = f.sum(dims) + m.sum(dims)
    present = denom > 0
    dice = (2 * inter + 1e-5) / (denom + 1e-5)
    return 1.0 - dice[present].mean()


def training_losses(config: TrainConfig, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                    similarity: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Named loss terms (unweighted) and their weighted ``total`` for one batch."""
    u = out["displacement"]
    mode = SupervisionMode(config.supervision)
    terms: dict[str, torch.Tensor] = {}
    weights: dict[str, float] = {}
    if mode in (SupervisionMode.UNSUPERVISED, SupervisionMode.WEAK, SupervisionMode.DUAL):
        terms["similarity"] = similarity(batch["fixed"], warp(batch["moving"], u))
        weights["similarity"] = config.similarity_weight
    if mode == SupervisionMode.WEAK:
        terms["dice"] = soft_dice_loss(batch["fixed_labels"], batch["moving_labels"], u)
        weights["dice"] = config.dice_weight
    if mode in (SupervisionMode.FULL, SupervisionMode.DUAL):
        has = batch["has_true"].bool()
        if not bool(has.any()):
            raise ValueError(f"supervision '{mode}' needs ground-truth displacements, but the data source "
                             f"'{config.data}' provided none in this batch")
        terms["field"] = ((u[has] - batch["true_displacement"][has]) ** 2).mean()
        weights["field"] = config.field_weight
    if "affine" not in out:
        field = out.get("velocity", u)
        terms["regularizer"] = diffusion_regularizer(field)
        weights["regularizer"] = config.regularizer_weight
    terms["total"] = sum(weights[k] * terms[k] for k in weights)
    return terms


def jacobian_determinant(u: torch.Tensor) -> torch.Tensor:
    """Jacobian determinant of ``x + u(x)``: ``(B, n, *S)`` voxels -> ``(B, *S)`` (central differences)."""
    n = u.ndim - 2
    grads = torch.gradient(u, dim=tuple(range(2, u.ndim)))          # n tensors (B, n, *S): d u_i / d x_j
    jac = torch.stack(grads, 2)                                       # (B, n_i, n_j, *S)
    eye = torch.eye(n, device=u.device, dtype=u.dtype).view(1, n, n, *([1] * n))
    jac = (jac + eye).movedim(1, -1).movedim(1, -1)                   # (B, *S, n_i, n_j)
    return torch.linalg.det(jac)


def folding_percent(u: torch.Tensor) -> float:
    """Percentage of voxels with a non-positive Jacobian determinant."""
    return float((jacobian_determinant(u) <= 0).float().mean() * 100.0)


def dice_per_pair(fixed_labels: torch.Tensor, moving_labels: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Hard Dice ``(B,)``: mean over non-zero labels present in the fixed map, moving warped by nearest."""
    warped = warp_labels(moving_labels, u)
    out = []
    for b in range(fixed_labels.shape[0]):
        f, w = fixed_labels[b], warped[b]
        vals = [v for v in torch.unique(f).tolist() if v != 0]
        if not vals:
            out.append(torch.tensor(float("nan")))
            continue
        d = [2 * ((f == v) & (w == v)).sum() / ((f == v).sum() + (w == v).sum()).clamp_min(1) for v in vals]
        out.append(torch.stack(d).float().mean())
    return torch.stack(out)
