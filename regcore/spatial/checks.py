"""Argument checks shared by the spatial operators (one message format for every caller).

* :func:`check_field`: a displacement or velocity ``(B, ndim, *S)``, ndim 2 or 3, float,
  component i along tensor axis i (voxels of the fixed grid).
* :func:`per_axis`: a scalar or one value per tensor axis (sigma, control spacing, ...), in voxels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def check_field(u: torch.Tensor, arg: str = "u", min_size: int = 1) -> int:
    """Validate a float ``(B, ndim, *S)`` field with ndim 2 or 3; returns ndim.

    Raises TypeError (not a tensor, not floating point) or ValueError (shape; a spatial size
    below ``min_size``, e.g. 2 for finite differences), naming ``arg`` and the actual value.
    """
    if not isinstance(u, torch.Tensor):
        raise TypeError(f"{arg} must be a torch.Tensor, got {type(u).__name__}")
    if u.ndim not in (4, 5) or u.shape[1] != u.ndim - 2:
        raise ValueError(
            f"{arg} must be (B, ndim, *S) with ndim = 2 or 3 spatial dims, got shape {tuple(u.shape)}"
        )
    if not u.is_floating_point():
        raise TypeError(f"{arg} must be a floating-point tensor, got dtype {u.dtype}")
    if any(s < min_size for s in u.shape[2:]):
        raise ValueError(f"{arg} needs every spatial size >= {min_size}, got {tuple(u.shape[2:])}")
    return u.ndim - 2


def per_axis(value: float | Sequence[float], n: int, arg: str, *, allow_zero: bool) -> tuple[float, ...]:
    """``value`` (a number or ``n`` numbers, voxels) as ``n`` floats; each finite and > 0
    (``>= 0`` when ``allow_zero``). ValueError names ``arg`` and the value otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        values = (float(value),) * n
    elif isinstance(value, Sequence) and len(value) == n:
        values = tuple(float(v) for v in value)
    else:
        raise ValueError(f"{arg} must be a number or a sequence of {n} numbers (voxels), got {value!r}")
    if any(not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero) for v in values):
        raise ValueError(f"{arg} must be finite and {'>= 0' if allow_zero else '> 0'} voxels, got {value!r}")
    return values
