"""Instance optimisation: refine a network's displacement on one pair (as TransMorph+IO, uniGradICON+IO).

The amortised prediction is the starting point; ``iterations`` Adam steps then minimise the same kind
of objective the networks train on, on the full-resolution image grid:
``LNCC(fixed, moving o (id + u)) + weight * diffusion(u)``. Works for every learned family.
"""

from __future__ import annotations

import torch

from regcore.losses import make_regularizer, make_similarity
from regcore.nets.inputs import normalise_intensity
from regcore.spatial.warp import warp


def refine_displacement(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    displacement: torch.Tensor,
    iterations: int,
    *,
    lr: float = 0.2,
    weight: float = 1.0,
    similarity: str = "lncc",
) -> torch.Tensor:
    """Refined displacement ``(1, n, *S)`` (voxels, fixed -> moving).

    Args:
        fixed, moving: ``(1, 1, *S)`` images on the same grid (any intensity range; normalised here).
        displacement: the starting field ``(1, n, *S)`` in voxels.
        iterations: Adam steps (0 returns the input).
        lr: Adam step size in voxels.
        weight: weight of the diffusion regulariser (mean squared forward differences).
        similarity: a :class:`regcore.losses.Similarity` name.
    """
    if iterations <= 0:
        return displacement
    n = displacement.shape[1]
    sim = make_similarity(similarity, n)
    reg = make_regularizer("diffusion")
    fixed, moving = normalise_intensity(fixed.float()), normalise_intensity(moving.float())
    u = displacement.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([u], lr=lr)
    with torch.enable_grad():
        for _ in range(int(iterations)):
            loss = sim(fixed, warp(moving, u)) + weight * reg(u)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return u.detach()
