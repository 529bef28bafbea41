"""Multi-resolution schedules of the instance-optimisation methods: levels, grid shapes, anti-aliased
downsampling and resizing of voxel displacements between levels.

A level is a downsampling factor (coarse first, e.g. ``(4, 2, 1)``); its grid has ``level_shape``.
Displacements ``(B, ndim, *S)`` are in voxels of the grid they live on, fixed -> moving.

Anisotropic voxels (given ``spacing``): a level of factor ``f`` aims at isotropic voxels of
``f * min(spacing)`` mm, so an axis whose voxels are already coarser is shrunk less or not at all
(:func:`axis_factors`, the rule of ANTs' per-dimension shrink factors): a 0.5 x 0.5 x 7.5 mm stack at
factor 4 becomes 2 x 2 x 7.5 mm, not 2 x 2 x 30 mm. Isotropic spacing gives the plain factor on every axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from regcore.spatial.resize import resize_field as _resize_field
from regcore.spatial.smooth import gaussian_smooth

TRUNCATE = 2.0
"""Gaussian truncation (sigmas) of the classical methods' smoothing (pyramid, fireants, demons,
mind_convex): the schedules were tuned with kernels cut at 2 sigma."""


def validate_schedule(
    levels: Sequence[int], iterations: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Check a multi-resolution schedule: ``levels`` are downsampling factors (coarse first, >= 1),
    ``iterations`` one count per level (>= 0). Returns both as int tuples."""
    levels = tuple(int(v) for v in levels)
    iterations = tuple(int(v) for v in iterations)
    if not levels or any(v < 1 for v in levels):
        raise ValueError(f"levels must be downsampling factors >= 1 (e.g. (4, 2, 1)), got {levels}")
    if len(iterations) != len(levels):
        raise ValueError(
            f"iterations must give one count per level: levels {levels}, iterations {iterations}"
        )
    if any(v < 0 for v in iterations):
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    return levels, iterations


def halving_factors(levels: int) -> list[int]:
    """Downsampling factors of a ``levels``-level pyramid halving per level, coarse first:
    ``[2**(levels-1), ..., 2, 1]``."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels must be an int >= 1, got {levels!r}")
    return [2**k for k in range(levels - 1, -1, -1)]


MIN_COARSE_VOXELS = 24
"""The coarsest level of an automatic pyramid keeps at least this many voxels along every axis it shrinks: a coarser
level of a small image (a 44-voxel prostate TRUS, a 9-slice spine stack) is too few voxels for a similarity window and
its steps, in voxels of that level, move the full-resolution image by several voxels each."""


def auto_levels(
    shape: Sequence[int], most: int = 3, spacing: Sequence[float] | None = None
) -> tuple[int, ...]:
    """Downsampling factors ``(2**(n-1), ..., 2, 1)``: as many levels (at most ``most``) as keep at least
    :data:`MIN_COARSE_VOXELS` voxels along every axis the coarsest level shrinks (with ``spacing``, mm per
    axis, thick-slice axes are shrunk less or not at all: :func:`axis_factors`). Example: 160 x 224 -> (4, 2, 1);
    44 x 59 x 41 -> (1,)."""
    if isinstance(most, bool) or not isinstance(most, int) or most < 1:
        raise ValueError(f"levels must be an int >= 1, got {most!r}")
    n = 1
    while n < most:
        factors = axis_factors(2**n, len(shape), spacing)
        shrunk = [s / f for s, f in zip(shape, factors) if f > 1]
        if not shrunk or min(shrunk) < MIN_COARSE_VOXELS:
            break
        n += 1
    return tuple(2**k for k in reversed(range(n)))


def axis_factors(factor: float, ndim: int, spacing: Sequence[float] | None = None) -> tuple[float, ...]:
    """Per-axis downsampling factors of a level: ``factor`` on every axis without ``spacing`` (voxels
    treated as isotropic); with ``spacing`` (mm per tensor axis), ``max(1, factor * min(spacing) /
    spacing[a])``, i.e. the axes shrink towards isotropic voxels of ``factor * min(spacing)`` mm."""
    if spacing is None:
        return (float(factor),) * ndim
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != ndim or any(not s > 0 for s in spacing):
        raise ValueError(f"spacing must give {ndim} voxel sizes > 0 mm, got {spacing}")
    finest = min(spacing)
    return tuple(max(1.0, factor * finest / s) for s in spacing)


def level_sigmas(
    sigma: float, factor: float, ndim: int, spacing: Sequence[float] | None = None
) -> tuple[float, ...]:
    """Per-axis Gaussian sigmas (voxels of the level) for a smoothing of ``sigma`` voxels of the level's FINEST
    axis, i.e. the same width in mm on every axis: ``sigma * min(level spacing) / level spacing[a]``, with the
    level spacing ``spacing[a] * axis_factors(...)[a]``. Without ``spacing`` (or on isotropic levels) every axis
    gets ``sigma``. Example: 1 x 1 x 5 mm at factor 1, sigma 1 -> (1, 1, 0.2)."""
    if spacing is None:
        return (float(sigma),) * ndim
    level = [s * f for s, f in zip(spacing, axis_factors(factor, ndim, spacing))]
    finest = min(level)
    return tuple(float(sigma) * finest / s for s in level)


def level_shape(
    shape: Sequence[int], factor: float, spacing: Sequence[float] | None = None
) -> tuple[int, ...]:
    """Grid shape at downsampling ``factor`` (per axis: :func:`axis_factors`); a shrunk axis keeps at least
    4 voxels, an axis with factor 1 keeps its size."""
    factors = axis_factors(factor, len(shape), spacing)
    return tuple(int(s) if f == 1 else max(4, int(round(s / f))) for s, f in zip(shape, factors))


def downsample(image: torch.Tensor, factor: float, spacing: Sequence[float] | None = None) -> torch.Tensor:
    """Anti-aliased resize of ``(B, C, *S)`` to ``level_shape``: Gaussian sigma ``f / 2`` voxels on each axis
    shrunk by ``f > 1`` (truncated at :data:`TRUNCATE` sigmas), then linear interpolation (align_corners).
    ``spacing``: voxel size in mm per spatial axis (anisotropic pyramid, :func:`axis_factors`)."""
    ndim = image.ndim - 2
    factors = axis_factors(factor, ndim, spacing)
    if all(f == 1 for f in factors):
        return image
    if image.shape[1] > 1:
        # channel by channel: no full-size blurred copy of a 12-channel MIND image (236 MiB at 1 mm)
        return torch.cat(
            [downsample(image[:, c : c + 1], factor, spacing) for c in range(image.shape[1])], dim=1
        )
    blurred = gaussian_smooth(image, [0.5 * f if f > 1 else 0.0 for f in factors], truncate=TRUNCATE)
    return F.interpolate(
        blurred,
        size=level_shape(image.shape[2:], factor, spacing),
        mode="trilinear" if ndim == 3 else "bilinear",
        align_corners=True,
    )


def resize_field(field: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Resample a voxel displacement ``(B, ndim, *S)`` to ``shape`` (align_corners) and rescale its units."""
    if tuple(field.shape[2:]) == tuple(shape):
        return field
    return _resize_field(field, tuple(shape))
