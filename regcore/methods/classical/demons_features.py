"""What the demons force compares: intensities, or MIND-SSC descriptors when the contrasts differ.

Demons' force ``(F - W) J / (|J|^2 + (F - W)^2 / K)`` assumes that aligned images have equal intensities.
Between contrasts that are not related that way (MR and ultrasound, T1w and T2w) it pulls edges onto the
wrong edges. MIND demons (Reaungamornrat et al., "MIND Demons: symmetric diffeomorphic deformable
registration of MR and CT for image-guided spine surgery", IEEE TMI 2016) runs the same force on MIND-SSC
descriptors (Heinrich et al. 2013, :mod:`regcore.losses.mind`): each voxel becomes 12 channels (4 in 2D)
that describe its local self-similarity, which is the same in both contrasts; the force sums over channels.

``features="auto"`` keeps intensities only when the images are clearly of one contrast:
:func:`contrast_correlation`, the mean LOCAL correlation of the two images (Pearson's r in Gaussian windows of
5 mm, on both images smoothed by 2 mm, inside both), at least :data:`MIND_BELOW` (0.4). A local statistic, because
a global one is dominated by the object against its background, which is bright in both contrasts: the 3D T1w/T2w
sample pair correlates at 0.78 globally (the rule until 2026-12-04 took it for one contrast, and intensity demons
reached Dice 0.29 there against 0.87 with MIND), but at 0.00 locally. Measured on every pair of
``benchmarks/dev_benchmark.py`` and ``benchmarks/multimodal.py`` and on the built-in samples before the value was
chosen: same contrast 0.49-0.85 (brain slices of two subjects 0.49-0.70, OASIS 3D 0.73, T1w samples 0.71-0.85);
different contrasts -0.67-0.35 (T1w/T2w samples -0.47-0.00, spine T1w/T2w and T2w/T2* -0.22-0.26, MR/TRUS
prostate -0.67-0.35, the histology stains 0.02). 0.4 lies in that gap; no pair held out from it is left.

On a thick-slice grid (an axis more than :data:`THICK_RATIO` times the finest spacing) the descriptor's
neighbours would lie whole slices apart: MIND is then computed in-plane, slice by slice (the 2D pattern).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import torch

from regcore.losses.mind import mind_ssc
from regcore.spatial.smooth import gaussian_smooth

MIND_BELOW = 0.4
"""``features="auto"`` uses MIND when :func:`contrast_correlation` is below this (see the module docstring)."""
SMOOTHING_MM = 2.0
"""Gaussian sigma (mm) applied first; the images are then sampled about this often (mm)."""
WINDOW_MM = 5.0
"""Gaussian sigma (mm) of the windows the local correlation is taken in."""
THICK_RATIO = 3.0
"""An axis whose spacing exceeds this many times the finest one gets no MIND neighbours (in-plane MIND)."""


class DemonsFeatures(enum.StrEnum):
    AUTO = "auto"
    INTENSITY = "intensity"
    MIND = "mind"


def contrast_correlation(fixed: torch.Tensor, moving: torch.Tensor, spacing: Sequence[float]) -> float:
    """Mean local Pearson r of ``fixed`` and ``moving`` ``(1, 1, *S)`` (one grid, ``spacing`` in mm per axis):
    +1 for one contrast (up to a local linear map), -1 for inverted contrasts, near 0 for unrelated ones.

    Both images are smoothed by :data:`SMOOTHING_MM` and sampled every ~:data:`SMOOTHING_MM`; r is taken in
    Gaussian windows of :data:`WINDOW_MM` and averaged over the samples inside both images (above each one's
    25th percentile) where both vary. 0 when no sample qualifies (a constant image)."""
    if fixed.shape != moving.shape or fixed.ndim - 2 != len(spacing):
        raise ValueError(f"fixed {tuple(fixed.shape)} and moving {tuple(moving.shape)} must share one grid")
    steps = [max(1, int(SMOOTHING_MM / float(s))) for s in spacing]
    view = (slice(None), slice(None), *[slice(None, None, k) for k in steps])
    sampled = [
        gaussian_smooth(x.float(), [SMOOTHING_MM / float(s) for s in spacing], truncate=2.0)[view].double()
        for x in (fixed, moving)
    ]
    a, b = ((x - x.min()) / (x.max() - x.min()).clamp_min(1e-12) for x in sampled)
    window = [WINDOW_MM / (float(s) * k) for s, k in zip(spacing, steps)]

    def local_mean(x: torch.Tensor) -> torch.Tensor:
        return gaussian_smooth(x, window, truncate=2.0)

    mean_a, mean_b = local_mean(a), local_mean(b)
    var_a = (local_mean(a * a) - mean_a**2).clamp_min(0.0)
    var_b = (local_mean(b * b) - mean_b**2).clamp_min(0.0)
    r = (local_mean(a * b) - mean_a * mean_b) / (var_a * var_b).sqrt().clamp_min(1e-12)
    inside = (a > torch.quantile(a.flatten(), 0.25)) & (b > torch.quantile(b.flatten(), 0.25))
    varies = (var_a > 1e-6 * float(var_a.max())) & (var_b > 1e-6 * float(var_b.max()))
    keep = inside & varies
    return float(r[keep].mean().clamp(-1.0, 1.0)) if bool(keep.any()) else 0.0


def choose_features(
    features: str, fixed: torch.Tensor, moving: torch.Tensor, spacing: Sequence[float]
) -> DemonsFeatures:
    """``features`` itself, or for ``auto`` MIND when :func:`contrast_correlation` < :data:`MIND_BELOW`."""
    chosen = DemonsFeatures(features)
    if chosen != DemonsFeatures.AUTO:
        return chosen
    return features_for(contrast_correlation(fixed, moving, spacing))


def features_for(correlation: float) -> DemonsFeatures:
    """What ``features="auto"`` compares for images whose :func:`contrast_correlation` is ``correlation``."""
    return DemonsFeatures.MIND if correlation < MIND_BELOW else DemonsFeatures.INTENSITY


def describe_choice(correlation: float) -> str:
    """One phrase for the user: what ``auto`` compares on a pair of this ``correlation``, and why."""
    if features_for(correlation) == DemonsFeatures.MIND:
        return (
            f"MIND descriptors, because the intensities correlate locally at r = {correlation:.2f} "
            f"(under {MIND_BELOW}: different contrasts)"
        )
    return f"intensities, because they correlate locally at r = {correlation:.2f} (at least {MIND_BELOW}: one contrast)"


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
