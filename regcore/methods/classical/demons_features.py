"""What the demons force compares: intensities, or MIND-SSC descriptors when the contrasts differ.

Demons' force ``(F - W) J / (|J|^2 + (F - W)^2 / K)`` assumes that aligned images have equal intensities.
Between contrasts that are not related that way (MR and ultrasound, T1w and T2w) it pulls edges onto the
wrong edges. MIND demons (Reaungamornrat et al., "MIND Demons: symmetric diffeomorphic deformable
registration of MR and CT for image-guided spine surgery", IEEE TMI 2016) runs the same force on MIND-SSC
descriptors (Heinrich et al. 2013, :mod:`regcore.losses.mind`): each voxel becomes 12 channels (4 in 2D)
that describe its local self-similarity, which is the same in both contrasts; the force sums over channels.

``features="auto"`` keeps intensities only when the images are clearly of one contrast:
:func:`contrast_correlation` (Pearson's r of both images smoothed by 2 mm, over voxels where either is above
its 5th percentile) at least :data:`MIND_BELOW` (0.75). The values that set it (all in
``benchmarks/dev_benchmark.py`` and ``benchmarks/multimodal.py``): same-contrast brain slices (48 pairs) and
volumes 0.82-0.93, where intensity demons reaches Dice 0.67-0.76 and MIND demons only 0.45-0.54; the
synthetic T1w/T2w sample pairs 0.56-0.70, the histology stains 0.32 (0.51 after an affine stage), spine
T1w/T2w and T2w/T2* -0.09-0.17, MR/TRUS prostate -0.58-0.46, where MIND demons beats intensity demons
(T1w/T2w samples: Dice 0.88 against 0.15), except on the histology pair (TRE 9.8 against 9.3 px after the
affine stage). So r in 0.70-0.82 was never seen; a pair there is a guess either way.

On a thick-slice grid (an axis more than :data:`THICK_RATIO` times the finest spacing) the descriptor's
neighbours would lie whole slices apart: MIND is then computed in-plane, slice by slice (the 2D pattern).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import torch

from regcore.losses.mind import mind_ssc
from regcore.spatial.smooth import gaussian_smooth

MIND_BELOW = 0.75
"""``features="auto"`` uses MIND when :func:`contrast_correlation` is below this (see the module docstring)."""
SMOOTHING_MM = 2.0
"""Gaussian sigma (mm) applied before the correlation: misregistration of a few mm barely lowers it."""
SAMPLE_VOXELS = 1 << 18
"""The correlation is taken on at most about this many voxels (a regular subsample)."""
THICK_RATIO = 3.0
"""An axis whose spacing exceeds this many times the finest one gets no MIND neighbours (in-plane MIND)."""


class DemonsFeatures(enum.StrEnum):
    AUTO = "auto"
    INTENSITY = "intensity"
    MIND = "mind"


def contrast_correlation(fixed: torch.Tensor, moving: torch.Tensor, spacing: Sequence[float]) -> float:
    """Pearson's r of ``fixed`` and ``moving`` ``(1, 1, *S)`` (one grid, ``spacing`` in mm per axis), both
    smoothed by :data:`SMOOTHING_MM`, over a regular subsample of the voxels where either image is above its
    own 5th percentile (the background left out). 0 when either is constant there."""
    if fixed.shape != moving.shape or fixed.ndim - 2 != len(spacing):
        raise ValueError(f"fixed {tuple(fixed.shape)} and moving {tuple(moving.shape)} must share one grid")
    sigmas = [SMOOTHING_MM / float(s) for s in spacing]
    a = gaussian_smooth(fixed.float(), sigmas, truncate=2.0)
    b = gaussian_smooth(moving.float(), sigmas, truncate=2.0)
    stride = max(1, round((a.numel() / SAMPLE_VOXELS) ** (1.0 / len(spacing))))
    view = (slice(None), slice(None), *[slice(None, None, stride)] * len(spacing))
    x, y = a[view].flatten().double(), b[view].flatten().double()
    keep = (x > torch.quantile(x, 0.05)) | (y > torch.quantile(y, 0.05))
    x, y = x[keep] - x[keep].mean(), y[keep] - y[keep].mean()
    scale = float(x.norm() * y.norm())
    return float((x * y).sum()) / scale if scale > 0 else 0.0


def choose_features(
    features: str, fixed: torch.Tensor, moving: torch.Tensor, spacing: Sequence[float]
) -> DemonsFeatures:
    """``features`` itself, or for ``auto`` MIND when :func:`contrast_correlation` < :data:`MIND_BELOW`."""
    chosen = DemonsFeatures(features)
    if chosen != DemonsFeatures.AUTO:
        return chosen
    r = contrast_correlation(fixed, moving, spacing)
    return DemonsFeatures.MIND if r < MIND_BELOW else DemonsFeatures.INTENSITY


def mind_features(image: torch.Tensor, spacing: Sequence[float]) -> torch.Tensor:
    """MIND-SSC descriptors ``(1, 12, *S)`` (3D) or ``(1, 4, *S)`` (2D, and 3D with a thick axis: in-plane
    per slice) of a one-channel ``image`` ``(1, 1, *S)`` scaled to [0, 1]; radius and dilation 2 voxels."""
    ndim = image.ndim - 2
    finest = min(float(s) for s in spacing)
    thick = [axis for axis, s in enumerate(spacing) if float(s) > THICK_RATIO * finest]
    if ndim != 3 or not thick:
        return mind_ssc(image)
    axis = 2 + max(thick, key=lambda a: float(spacing[a]))  # the slice axis
    planes = image.movedim(axis, 1)  # (1, slices, 1, H, W): the slices become a batch of 2D images
    b, n = planes.shape[:2]
    described = mind_ssc(planes.reshape(b * n, *planes.shape[2:]))  # (slices, 4, H, W)
    described = described.reshape(b, n, *described.shape[1:]).movedim(1, 2)  # (1, 4, slices, H, W)
    return described.movedim(2, axis).contiguous()
