"""Resize images and displacement fields; multi-resolution pyramids.

Every resize uses align_corners semantics, like ``regcore.spatial.grid``: the first and last
voxel centres of the old and new grids coincide, so new voxel ``y`` sits at old voxel
``y * (old - 1) / (new - 1)``. A displacement in voxels therefore rescales per axis by
``(new - 1) / (old - 1)`` (:func:`resize_field`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from regcore.spatial.smooth import gaussian_smooth

_LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}


class ResizeMode(enum.StrEnum):
    LINEAR = "linear"  # (bi/tri)linear, Gaussian anti-aliasing when shrinking
    AREA = "area"  # average pooling (adaptive), for shrinking intensities
    NEAREST = "nearest"  # label maps; any dtype


def _check(x: torch.Tensor, name: str) -> int:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in (4, 5):
        raise ValueError(f"{name} must be (B, C, *S) with 2 or 3 spatial dims, got {tuple(x.shape)}")
    return x.ndim - 2


def target_shape(
    shape: Sequence[int], size: Sequence[int] | None = None, scale: float | Sequence[float] | None = None
) -> tuple[int, ...]:
    """New spatial shape from an explicit ``size`` or a ``scale`` factor (``round(N * scale)``, >= 1)."""
    n = len(shape)
    if (size is None) == (scale is None):
        raise ValueError(f"give exactly one of size and scale, got size={size!r}, scale={scale!r}")
    if size is not None:
        size = tuple(int(s) for s in size)
        if len(size) != n or any(s < 1 for s in size):
            raise ValueError(f"size must be {n} positive ints, got {size!r}")
        return size
    scales = (float(scale),) * n if isinstance(scale, (int, float)) else tuple(float(s) for s in scale)
    if len(scales) != n or any(not math.isfinite(s) or s <= 0 for s in scales):
        raise ValueError(f"scale must be > 0 (one value or {n}), got {scale!r}")
    return tuple(max(1, int(round(s * f))) for s, f in zip(shape, scales))


def _nearest(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    out = x
    for axis, (old, new) in enumerate(zip(x.shape[2:], size)):
        if old != new:
            pos = torch.arange(new, device=x.device, dtype=torch.float64) * ((old - 1) / max(new - 1, 1))
            out = out.index_select(axis + 2, pos.round().long().clamp_(0, old - 1))
    return out


def resize_image(
    x: torch.Tensor,
    size: Sequence[int] | None = None,
    scale: float | Sequence[float] | None = None,
    mode: str | ResizeMode = "linear",
    antialias: bool = True,
) -> torch.Tensor:
    """Resize ``x (B, C, *S)`` to ``size`` or by ``scale`` (align_corners grid correspondence).

    ``linear`` smooths with sigma ``(f - 1) / 2`` voxels along each axis shrunk by
    ``f = (old - 1) / (new - 1) > 1`` when ``antialias``; ``area`` averages; ``nearest``
    keeps values (use for labels). Differentiable for linear/area.
    """
    n = _check(x, "x")
    size = target_shape(tuple(x.shape[2:]), size, scale)
    try:
        mode = ResizeMode(mode)
    except ValueError as err:
        raise ValueError(f"mode must be one of {[m.value for m in ResizeMode]}, got {mode!r}") from err
    if size == tuple(x.shape[2:]):
        return x
    if mode is ResizeMode.NEAREST:
        return _nearest(x, size)
    if not x.is_floating_point():
        raise TypeError(
            f"x must be floating point for mode {mode.value!r}, got {x.dtype} (use mode='nearest')"
        )
    if mode is ResizeMode.AREA:
        return F.adaptive_avg_pool3d(x, size) if n == 3 else F.adaptive_avg_pool2d(x, size)
    if antialias:
        sigma = [
            max(0.0, ((old - 1) / max(new - 1, 1) - 1.0) / 2.0) if new < old else 0.0
            for old, new in zip(x.shape[2:], size)
        ]
        if any(s > 0 for s in sigma):
            x = gaussian_smooth(x, sigma)
    return F.interpolate(x, size=size, mode=_LINEAR[n], align_corners=True)


def resize_field(u: torch.Tensor, size: Sequence[int], antialias: bool = False) -> torch.Tensor:
    """Resample a voxel displacement ``(B, n, *S)`` onto a grid of ``size`` and rescale its units.

    Component i is interpolated (linear, align_corners) and multiplied by
    ``(new_i - 1) / (old_i - 1)`` so it stays in voxels of the NEW grid.
    """
    n = _check(u, "u")
    if u.shape[1] != n or not u.is_floating_point():
        raise ValueError(f"u must be a float (B, ndim, *S) displacement, got {tuple(u.shape)} {u.dtype}")
    old = tuple(u.shape[2:])
    size = target_shape(old, size=size)
    out = resize_image(u, size=size, mode=ResizeMode.LINEAR, antialias=antialias)
    factors = torch.tensor(
        [(b - 1) / (a - 1) if a > 1 and b > 1 else 1.0 for a, b in zip(old, size)],
        device=u.device,
        dtype=u.dtype,
    )
    return out * factors.view(1, n, *([1] * n))


def pyramid(x: torch.Tensor, levels: int = 3, mode: str | ResizeMode = "linear") -> list[torch.Tensor]:
    """Images at scales ``1/2**(levels-1), ..., 1/2, 1`` (coarse to fine); the last is ``x`` itself."""
    _check(x, "x")
    if not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels must be a positive int, got {levels!r}")
    return [resize_image(x, scale=0.5**lvl, mode=mode) for lvl in range(levels - 1, 0, -1)] + [x]
