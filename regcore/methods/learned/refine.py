"""Instance optimisation: refine a network's displacement on one pair (as TransMorph+IO, uniGradICON+IO).

The amortised prediction is the starting point; ``iterations`` greedy steps of the FireANTs-style optimiser
(:func:`regcore.methods.classical.fireants.greedy_displacement`, one full-resolution level) then lower the
LNCC the networks train on: each step follows the Gaussian-smoothed LNCC gradient with a normalised Adam
step, is composed with the current map, and the field is Gaussian-smoothed (``smoothing``, the
regulariser). Works for every learned family.

Tuned on training slice positions of the OASIS 2D slices (``benchmarks/refine_tuning.py``; the zoo,
``benchmarks/zoo.py``, reports on the held-out positions): plain Adam on
LNCC + diffusion of the displacement (the previous optimiser) lowered Dice there (0.715 -> 0.713 after 100
steps); 25 greedy steps raise it to 0.761 in ~90 ms. The 3D schedule (step, window) is the classical 3D
preset's of that time (window 5, Adam steps, pinned here) and was not tuned for refinement.
"""

from __future__ import annotations

from dataclasses import replace

import torch

WINDOW = {2: 11, 3: 5}
"""LNCC window (voxels) per image dimension: the classical presets' when refinement was tuned."""
UPDATE_SIGMA = 0.5
"""Gaussian sigma (voxels) of each update; tuned with ``smoothing`` on training slices (1.0, the classical 2D
preset's, gave 0.005 lower Dice)."""
LNCC_EPS = 1e-5
"""LNCC variance floor, relative to the [0, 1]-scaled intensities: refinement was tuned with 1e-5 on the raw OASIS
intensities (0-0.45 slices, 0-0.8 volumes), i.e. ~1.5e-5 to 5e-5 of this scale (fireants on the 2D tune slices is
insensitive to it between 1e-5 and 1e-3: benchmarks/README.md)."""


def refine_displacement(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    displacement: torch.Tensor,
    iterations: int,
    *,
    smoothing: float = 0.5,
    spacing: tuple[float, ...] | None = None,
) -> torch.Tensor:
    """Refined displacement ``(1, n, *S)`` (voxels, fixed -> moving).

    Args:
        fixed, moving: ``(1, 1, *S)`` images on the same grid (any intensity range; LNCC ignores it).
        displacement: the starting field ``(1, n, *S)`` in voxels (the network's prediction).
        iterations: greedy steps (0 returns the input).
        smoothing: Gaussian sigma (voxels) applied to the field after every step; larger is smoother
            (0.75 on the training slices: no folding but 0.02 lower Dice).
        spacing: mm per axis (only the smoothing widths of anisotropic grids use it).
    Raises:
        ValueError: the field's shape does not match the images, or a negative smoothing.
    """
    if iterations <= 0:
        return displacement
    from regcore.losses import Similarity
    from regcore.methods.classical.fireants import (
        FireANTsConfig,
        StepRule,
        greedy_displacement,
        resolve_preset,
    )

    shape = tuple(fixed.shape[2:])
    if tuple(displacement.shape) != (1, len(shape), *shape):
        raise ValueError(
            f"displacement must be (1, {len(shape)}, {', '.join(map(str, shape))}) to refine, "
            f"got {tuple(displacement.shape)}"
        )
    if smoothing < 0:
        raise ValueError(f"refine_smoothing must be >= 0, got {smoothing}")
    config = replace(
        resolve_preset(FireANTsConfig(), shape, spacing),
        levels=(1,),
        iterations=(int(iterations),),
        smooth_grad_sigma=UPDATE_SIGMA,
        smooth_warp_sigma=float(smoothing),
        window=WINDOW[len(shape)],
        lncc_eps=LNCC_EPS,
        optimizer=StepRule.ADAM,  # the step rule refinement was tuned with
        similarity=Similarity.LNCC,  # and its similarity
    )
    with torch.no_grad():
        return greedy_displacement(
            fixed.float(), moving.float(), config, spacing=spacing, init=displacement.detach().float()
        )
