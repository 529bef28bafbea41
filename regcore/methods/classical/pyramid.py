"""Multi-resolution schedules of the instance-optimisation methods: levels, grid shapes, anti-aliased
downsampling and resizing of voxel displacements between levels.

A level is a downsampling factor (coarse first, e.g. ``(4, 2, 1)``); its grid has ``level_shape``.
Displacements ``(B, ndim, *S)`` are in voxels of the grid they live on, fixed -> moving.
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


def level_shape(shape: Sequence[int], factor: int) -> tuple[int, ...]:
    """Grid shape at downsampling ``factor`` (at least 4 voxels per axis)."""
    return tuple(max(4, int(round(s / factor))) for s in shape)


def downsample(image: torch.Tensor, factor: int) -> torch.Tensor:
    """Anti-aliased resize of ``(B, C, *S)`` to ``level_shape``: Gaussian sigma ``factor / 2`` voxels
    (truncated at :data:`TRUNCATE` sigmas), then linear interpolation (align_corners)."""
    if factor == 1:
        return image
    ndim = image.ndim - 2
    blurred = gaussian_smooth(image, 0.5 * factor, truncate=TRUNCATE)
    return F.interpolate(
        blurred,
        size=level_shape(image.shape[2:], factor),
        mode="trilinear" if ndim == 3 else "bilinear",
        align_corners=True,
    )


def resize_field(field: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Resample a voxel displacement ``(B, ndim, *S)`` to ``shape`` (align_corners) and rescale its units."""
    if tuple(field.shape[2:]) == tuple(shape):
        return field
    return _resize_field(field, tuple(shape))
