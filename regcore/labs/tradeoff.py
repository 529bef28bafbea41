"""Regularisation trade-off: the same small registration with different smoothness weights.

Dense displacement optimised with Adam on MSE + lambda * diffusion (mean squared voxel
gradient of u). Larger lambda: smoother, fewer folds, but less overlap (Dice). The losses,
Dice and det J are the engine's (``regcore.losses``, ``regcore.metrics``, ``regcore.spatial``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from regcore.labs.phantoms import phantom_image, phantom_labels
from regcore.losses import make_regularizer, make_similarity
from regcore.metrics.overlap import mean_dice
from regcore.spatial.jacobian import jacobian_determinant
from regcore.spatial.warp import warp, warp_labels

__all__ = ["TradeoffPoint", "mean_dice", "demo_pair", "register_with_weight", "sweep"]


@dataclass(frozen=True)
class TradeoffPoint:
    """One registration: weight, mean Dice over labels, folding (% voxels det J <= 0), roughness, field."""

    weight: float
    dice: float
    folding_percent: float
    roughness: float
    displacement: np.ndarray  # (2, H, W) voxels, fixed -> moving
    warped: np.ndarray


def demo_pair(size: int = 48):
    """(fixed image, moving image, fixed labels, moving labels) with a strong local deformation."""
    fl, ml = phantom_labels(size), phantom_labels(size, shift=0.12, squeeze=0.15)
    return phantom_image(fl), phantom_image(ml, seed=1), fl, ml


def register_with_weight(
    weight: float, size: int = 48, iterations: int = 100, lr: float = 0.5
) -> TradeoffPoint:
    """Run the small dense registration at one smoothness weight (>= 0)."""
    if weight < 0:
        raise ValueError(f"weight must be >= 0, got {weight}")
    fi, mi, fl, ml = demo_pair(size)
    f, m = torch.tensor(fi)[None, None], torch.tensor(mi)[None, None]
    mse, diffusion = make_similarity("mse", 2), make_regularizer("diffusion")
    u = torch.zeros((1, 2, size, size), requires_grad=True)
    opt = torch.optim.Adam([u], lr=lr)
    for _ in range(iterations):
        loss = mse(f, warp(m, u)) * 100 + weight * diffusion(u)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        disp = u.detach()
        wl = warp_labels(torch.tensor(ml)[None, None], disp)[0, 0].numpy()
        rough = float(diffusion(disp))
        warped = warp(m, disp)[0, 0].numpy()
    jac = jacobian_determinant(disp.double())[0].numpy()
    return TradeoffPoint(
        float(weight), mean_dice(fl, wl), float((jac <= 0).mean() * 100), rough, disp[0].numpy(), warped
    )


def sweep(
    weights=(0.0, 0.3, 1.0, 3.0, 10.0, 30.0), size: int = 48, iterations: int = 100
) -> list[TradeoffPoint]:
    """:func:`register_with_weight` for each weight, in order."""
    return [register_with_weight(w, size, iterations) for w in weights]
