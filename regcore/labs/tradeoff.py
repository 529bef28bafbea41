"""Regularisation trade-off: the same small registration with different smoothness weights.

Dense displacement optimised with Adam (:mod:`regcore.labs.adam`) on MSE + lambda * diffusion (mean squared voxel
gradient of u). Larger lambda: smoother, fewer folds, but less overlap (Dice). The losses,
Dice and det J are the engine's (``regcore.losses``, ``regcore.metrics``, ``regcore.spatial``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from regcore.labs.adam import Adam
from regcore.labs.phantoms import phantom_image, phantom_labels
from regcore.losses import make_regularizer, make_similarity
from regcore.metrics.overlap import mean_dice
from regcore.spatial.jacobian import jacobian_determinant
from regcore.spatial.warp import warp, warp_labels

__all__ = ["WEIGHTS", "TradeoffPoint", "mean_dice", "demo_pair", "register_with_weight", "sweep"]

WEIGHTS = (0.0, 0.3, 1.0, 3.0, 10.0, 30.0)
"""Smoothness weights (lambda) the Learn page offers."""


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


def sweep(weights=WEIGHTS, size: int = 48, iterations: int = 100, lr: float = 0.5) -> list[TradeoffPoint]:
    """The small dense registration at each smoothness weight (>= 0), all optimised in one batch.

    One Adam run on a ``(len(weights), 2, size, size)`` field whose loss is the sum of the items'
    ``100 * MSE + weight * diffusion``: items do not interact (Adam's state is per element), so each
    point is what a separate run would give, for about the cost of one. Returns points in input order.
    """
    weights = [float(w) for w in weights]
    if not weights or min(weights) < 0:
        raise ValueError(f"weight must be >= 0 (one or more), got {weights}")
    fi, mi, fl, ml = demo_pair(size)
    f, m = torch.tensor(fi)[None, None], torch.tensor(mi)[None, None]
    mse, diffusion = make_similarity("mse", 2), make_regularizer("diffusion")
    u = torch.zeros((len(weights), 2, size, size), requires_grad=True)
    opt = Adam(u, lr=lr)
    for _ in range(iterations):
        warped = warp(m, u)  # moving broadcast over the batch of fields
        loss = sum(
            mse(f, warped[k : k + 1]) * 100 + w * diffusion(u[k : k + 1]) for k, w in enumerate(weights)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [_point(w, u.detach()[k : k + 1], m, fl, ml) for k, w in enumerate(weights)]


def _point(weight: float, disp: torch.Tensor, moving: torch.Tensor, fl, ml) -> TradeoffPoint:
    """Dice, folding and roughness of one ``(1, 2, H, W)`` field."""
    with torch.no_grad():
        wl = warp_labels(torch.tensor(ml)[None, None], disp)[0, 0].numpy()
        rough = float(make_regularizer("diffusion")(disp))
        warped = warp(moving, disp)[0, 0].numpy()
    jac = jacobian_determinant(disp.double())[0].numpy()
    return TradeoffPoint(
        weight, mean_dice(fl, wl), float((jac <= 0).mean() * 100), rough, disp[0].numpy(), warped
    )


def register_with_weight(
    weight: float, size: int = 48, iterations: int = 100, lr: float = 0.5
) -> TradeoffPoint:
    """:func:`sweep` at one smoothness weight (>= 0)."""
    return sweep([weight], size, iterations, lr)[0]
