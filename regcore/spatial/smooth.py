"""Separable Gaussian smoothing of images and displacement fields (2D/3D, differentiable).

Border: the signal is extended by its edge value (``replicate``), matching
``scipy.ndimage.gaussian_filter(..., mode="nearest", truncate=truncate)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

def gaussian_kernel_1d(sigma: float, truncate: float = 4.0, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised samples of ``exp(-x^2 / 2 sigma^2)`` on ``|x| <= int(truncate * sigma + 0.5)`` (as scipy)."""
    radius = int(truncate * float(sigma) + 0.5)
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / float(sigma)) ** 2)
    return (k / k.sum()).to(dtype)


def _per_axis(sigma, n: int) -> tuple[float, ...]:
    if isinstance(sigma, (int, float)):
        values = (float(sigma),) * n
    elif isinstance(sigma, Sequence) and len(sigma) == n:
        values = tuple(float(s) for s in sigma)
    else:
        raise ValueError(f"sigma must be a number or a sequence of {n} numbers (voxels), got {sigma!r}")
    if any(not math.isfinite(s) or s < 0 for s in values):
        raise ValueError(f"sigma must be finite and >= 0 voxels, got {sigma!r}")
    return values


def gaussian_smooth(x: torch.Tensor, sigma: float | Sequence[float], truncate: float = 4.0) -> torch.Tensor:
    """Gaussian-smooth ``x (B, C, *S)`` with ``sigma`` in voxels (scalar or one per tensor axis).

    Each channel is filtered independently, one 1D convolution per axis with sigma > 0;
    borders replicate the edge value. Returns the same shape and dtype; differentiable.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in (3, 4, 5) or not x.is_floating_point():
        raise ValueError(f"x must be a float (B, C, *S) tensor with 1-3 spatial dims, got {tuple(x.shape)} {x.dtype}")
    if not truncate > 0:
        raise ValueError(f"truncate must be > 0, got {truncate!r}")
    n = x.ndim - 2
    sigmas = _per_axis(sigma, n)
    out = x
    for axis, s in enumerate(sigmas):
        if s > 0:
            out = _filter_axis(out, gaussian_kernel_1d(s, truncate, x.device, x.dtype), axis + 2)
    return out


def _filter_axis(x: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    """Correlate ``x`` with a centred odd 1D ``kernel`` along ``dim``, replicate borders.

    A weighted sum of shifted views: ~3x faster than conv1d/conv3d with a 1D kernel on CPU.
    """
    n = x.ndim - 2
    r = (kernel.numel() - 1) // 2
    pad = [0] * (2 * n)
    pad[2 * (x.ndim - 1 - dim)] = pad[2 * (x.ndim - 1 - dim) + 1] = r  # F.pad lists the last axis first
    padded = F.pad(x, pad, mode="replicate")
    size = x.shape[dim]
    weights = kernel.tolist()
    out = padded.narrow(dim, 0, size) * weights[0]
    for i in range(1, len(weights)):
        out = out.add_(padded.narrow(dim, i, size), alpha=weights[i])
    return out
