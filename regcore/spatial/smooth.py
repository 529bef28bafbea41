"""Separable Gaussian smoothing of images and displacement fields: the ONE implementation in regcore.

* :func:`gaussian_kernel_1d`: the ONE function that makes Gaussian weights (smoothing here, the
  compiled greedy kernels, LNCC's Gaussian window, SSIM).
* :func:`gaussian_smooth`: ``x (B, C, *S)`` (1-3 spatial dims), ``sigma`` in voxels per tensor axis,
  ``truncate`` in sigmas. Border: the signal is extended by its edge value (``replicate``), the
  same as ``scipy.ndimage.gaussian_filter(..., mode="nearest", truncate=truncate)``.

Backends (equal up to float32 rounding, ``tests/test_spatial_transforms.py``):

* CPU, float32, 2D/3D, no autograd needed, numba present: the compiled separable kernels of
  :mod:`regcore.spatial.smooth_kernels` (parallel within one volume);
* otherwise (autograd, GPU, float64, 1D): symmetric shifted in-place adds in torch (no padding
  copy, no convolution; ~9x faster than a depthwise ``conv3d`` on CPU). Differentiable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from regcore.spatial import smooth_kernels
from regcore.spatial.checks import per_axis


def kernel_radius(sigma: float, truncate: float = 4.0) -> int:
    """Half-width in voxels of a Gaussian truncated at ``truncate`` sigmas: ``int(truncate * sigma + 0.5)`` (scipy)."""
    return int(truncate * float(sigma) + 0.5)


def gaussian_kernel_1d(
    sigma: float,
    truncate: float = 4.0,
    *,
    radius: int | None = None,
    normalise: bool = True,
    device=None,
    dtype=torch.float32,
) -> torch.Tensor:
    """Samples of ``exp(-x^2 / (2 sigma^2))`` at the integer offsets ``x = -radius..radius`` (voxels).

    Args:
        sigma: standard deviation in voxels (> 0).
        truncate: half-width in sigmas; the radius is :func:`kernel_radius` (``int(truncate * sigma + 0.5)``,
            as scipy). Ignored when ``radius`` is given.
        radius: explicit half-width in voxels (e.g. ``window // 2`` for a fixed window).
        normalise: divide by the sum (weights sum to 1); False keeps the peak at 1.
    Returns:
        ``(2 radius + 1,)`` weights, computed in float64 and cast to ``dtype`` on ``device``.
    """
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
        raise ValueError(f"sigma must be a number > 0 (voxels), got {sigma!r}")
    if radius is None:
        if not truncate > 0:
            raise ValueError(f"truncate must be > 0 (sigmas), got {truncate!r}")
        radius = kernel_radius(sigma, truncate)
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        raise ValueError(f"radius must be an int >= 0 (voxels), got {radius!r}")
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / float(sigma)) ** 2)
    return (k / k.sum() if normalise else k).to(dtype=dtype, device=device)


def gaussian_smooth(x: torch.Tensor, sigma: float | Sequence[float], truncate: float = 4.0) -> torch.Tensor:
    """Gaussian-smooth ``x`` ``(B, C, *S)`` with ``sigma`` in voxels (scalar or one per tensor axis; 0 skips
    that axis), truncated at ``truncate`` sigmas, replicate border.

    Each channel is filtered independently. Returns a new tensor of the same shape, dtype and device
    (``x`` itself when every sigma is 0); differentiable with respect to ``x``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in (3, 4, 5) or not x.is_floating_point():
        raise ValueError(
            f"x must be a float (B, C, *S) tensor with 1-3 spatial dims, got {tuple(x.shape)} {x.dtype}"
        )
    if not truncate > 0:
        raise ValueError(f"truncate must be > 0 (sigmas), got {truncate!r}")
    n = x.ndim - 2
    sigmas = per_axis(sigma, n, "sigma", allow_zero=True)
    if all(s == 0 for s in sigmas):
        return x
    weights = [gaussian_kernel_1d(s, truncate, dtype=torch.float64) if s > 0 else None for s in sigmas]
    needs_autograd = torch.is_grad_enabled() and x.requires_grad
    if (
        smooth_kernels.AVAILABLE
        and not needs_autograd
        and n in (2, 3)
        and x.device.type == "cpu"
        and x.dtype == torch.float32
    ):
        return _smooth_compiled(x, weights)
    for axis, w in enumerate(weights):
        if w is not None:
            x = _smooth_axis(x, w.tolist(), axis + 2)
    return x


def _smooth_axis(x: torch.Tensor, taps: list[float], axis: int) -> torch.Tensor:
    """Correlate ``x`` with the symmetric odd ``taps`` along ``axis``, replicate border (torch backend)."""
    n = x.shape[axis]
    r = len(taps) // 2
    out = x * taps[r]
    for k in range(1, r + 1):
        w = taps[r + k]
        if k < n:
            out.narrow(axis, k, n - k).add_(x.narrow(axis, 0, n - k), alpha=w)  # x[i - k]
            out.narrow(axis, 0, n - k).add_(x.narrow(axis, k, n - k), alpha=w)  # x[i + k]
            head, tail = out.narrow(axis, 0, k), out.narrow(axis, n - k, k)
        else:  # every neighbour at distance k lies outside: both are edge values
            head = tail = out
        head.add_(x.narrow(axis, 0, 1).expand_as(head), alpha=w)  # replicate border
        tail.add_(x.narrow(axis, n - 1, 1).expand_as(tail), alpha=w)
    return out


def _smooth_compiled(x: torch.Tensor, weights: list[torch.Tensor | None]) -> torch.Tensor:
    """CPU float32 backend: ``(B, C, *S)`` as ``(B*C, Z, Y, X)`` through :mod:`smooth_kernels`."""
    spatial = tuple(x.shape[2:])
    shape4 = (-1,) + (1,) * (3 - len(spatial)) + spatial
    flat = x.detach().reshape(shape4)
    array = flat.numpy().copy() if flat.is_contiguous() else flat.contiguous().numpy()
    taps = [None] * (3 - len(spatial)) + [None if w is None else w.to(torch.float32).numpy() for w in weights]
    out = smooth_kernels.separable_gaussian(array, np.empty_like(array), tuple(taps), torch.get_num_threads())
    return torch.from_numpy(out).reshape(x.shape)
