"""Shared machinery of the instance-optimisation methods (affine, dense, svf, fireants, convexadam).

Conventions (see docs/ARCHITECTURE.md): images ``(1, C, *S)``; displacements ``(1, ndim, *S)`` in
voxels of the grid they live on, mapping fixed -> moving (``warped = moving o (id + u)``).

Contents: input validation, device choice, image pyramids, field resizing, fast separable Gaussian
smoothing, a fast box-window LNCC with its analytic gradient (the hot loop of ``fireants``),
progress bookkeeping and the assembly of the :class:`RegistrationResult`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from regcore.image import Image
from regcore.losses import Similarity, similarity_loss
from regcore.methods.base import RegistrationResult, report, resolve_device
from regcore.spatial.resize import resize_field as _resize_field
from regcore.spatial.svf import integrate_svf
from regcore.spatial.warp import warp

__all__ = [
    "Similarity", "validate_pair", "validate_schedule", "pick_device", "pair_tensors", "level_shape",
    "downsample", "resize_field", "gaussian_smooth", "box_filter", "lncc_and_gradient",
    "image_gradient", "make_similarity", "LevelProgress", "build_result", "integrate_velocity",
]


# -- validation ----------------------------------------------------------------------------------


def validate_pair(fixed: Image, moving: Image) -> int:
    """Check a (fixed, moving) pair for the methods here; returns the number of spatial dims.

    Raises TypeError for non-Images and ValueError for label maps, different grids, 4D data or
    non-finite voxels, naming the argument and the actual value.
    """
    for arg, im in (("fixed", fixed), ("moving", moving)):
        if not isinstance(im, Image):
            raise TypeError(f"{arg} must be a regcore.Image, got {type(im).__name__}")
        if im.is_labels:
            raise ValueError(f"{arg} is a label map ({im.name!r}); register intensity images and warp labels after")
        if im.ndim not in (2, 3):
            raise ValueError(f"{arg} must be 2D or 3D, got {im.ndim}D with shape {im.shape}")
        if not torch.isfinite(im.data).all():
            raise ValueError(f"{arg} ({im.name!r}) contains NaN or infinite voxels; clean or mask them first")
    if fixed.shape != moving.shape:
        raise ValueError(
            f"fixed and moving must lie on the same grid (resample moving with regcore.preprocess.resample_to); "
            f"got shapes fixed {fixed.shape} and moving {moving.shape}")
    if not fixed.geometry.same_grid(moving.geometry):
        raise ValueError(
            f"fixed and moving must lie on the same grid (resample moving with regcore.preprocess.resample_to); "
            f"fixed spacing/origin {fixed.spacing}/{fixed.geometry.origin} != "
            f"moving {moving.spacing}/{moving.geometry.origin}")
    if fixed.data.shape[0] != moving.data.shape[0]:
        raise ValueError(f"fixed and moving must have the same channel count, got {fixed.data.shape[0]} "
                         f"and {moving.data.shape[0]}")
    if min(fixed.shape) < 4:
        raise ValueError(f"images must be at least 4 voxels along every axis, got shape {fixed.shape}")
    return fixed.ndim


def validate_schedule(levels: Sequence[int], iterations: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Check a multi-resolution schedule: ``levels`` are downsampling factors (coarse first, >= 1),
    ``iterations`` one count per level (>= 0). Returns both as int tuples."""
    levels = tuple(int(v) for v in levels)
    iterations = tuple(int(v) for v in iterations)
    if not levels or any(v < 1 for v in levels):
        raise ValueError(f"levels must be downsampling factors >= 1 (e.g. (4, 2, 1)), got {levels}")
    if len(iterations) != len(levels):
        raise ValueError(f"iterations must give one count per level: levels {levels}, iterations {iterations}")
    if any(v < 0 for v in iterations):
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    return levels, iterations


def pick_device(config_device: str, fixed: Image) -> torch.device:
    """Device from the config (``"auto"`` -> CUDA when present, else where ``fixed`` lives)."""
    if str(config_device) == "auto" and fixed.device.type != "cpu":
        return fixed.device
    return resolve_device(config_device)


def pair_tensors(fixed: Image, moving: Image, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1, C, *S)`` float32 tensors of both images on ``device``."""
    return fixed.batch().to(device), moving.batch().to(device)


# -- pyramids and resizing -----------------------------------------------------------------------


def level_shape(shape: Sequence[int], factor: int) -> tuple[int, ...]:
    """Grid shape at downsampling ``factor`` (at least 4 voxels per axis)."""
    return tuple(max(4, int(round(s / factor))) for s in shape)


def _interp_mode(ndim: int) -> str:
    return "trilinear" if ndim == 3 else "bilinear"


def downsample(image: torch.Tensor, factor: int) -> torch.Tensor:
    """Anti-aliased (Gaussian sigma ``factor/2`` voxels) resize of ``(B, C, *S)`` to ``level_shape``."""
    if factor == 1:
        return image
    ndim = image.ndim - 2
    blurred = gaussian_smooth(image, 0.5 * factor)
    return F.interpolate(blurred, size=level_shape(image.shape[2:], factor), mode=_interp_mode(ndim),
                         align_corners=True)


def resize_field(field: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Resample a voxel displacement ``(B, ndim, *S)`` to ``shape`` (align_corners) and rescale its units."""
    if tuple(field.shape[2:]) == tuple(shape):
        return field
    return _resize_field(field, tuple(shape))


# -- fast filters --------------------------------------------------------------------------------


def _gaussian_taps(sigma: float, dtype, device) -> torch.Tensor:
    radius = max(1, int(math.ceil(2.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def gaussian_smooth(x: torch.Tensor, sigma: float | Sequence[float]) -> torch.Tensor:
    """Separable Gaussian smoothing of ``(B, C, *S)``, per channel; ``sigma`` in voxels (scalar or per
    axis; 0 skips that axis). Truncated at 2 sigma, replicate border (no darkening at the edge).

    Implemented as symmetric shifted in-place adds (no padding copy, no convolution): ~9x faster than
    a depthwise ``conv3d`` on CPU. Cross-checked against ``scipy.ndimage.gaussian_filter`` in the tests.
    """
    ndim = x.ndim - 2
    sigmas = [float(sigma)] * ndim if not isinstance(sigma, (tuple, list)) else [float(s) for s in sigma]
    if len(sigmas) != ndim:
        raise ValueError(f"sigma must be a scalar or have {ndim} entries, got {sigma!r}")
    for axis, s in zip(range(2, 2 + ndim), sigmas):
        n = x.shape[axis]
        if s <= 0:
            continue
        taps = _gaussian_taps(s, torch.float64, "cpu").tolist()
        r = len(taps) // 2
        if n <= r:
            continue
        out = x * taps[r]
        for k in range(1, r + 1):
            w = taps[r + k]
            out.narrow(axis, k, n - k).add_(x.narrow(axis, 0, n - k), alpha=w)        # x[i - k]
            out.narrow(axis, 0, n - k).add_(x.narrow(axis, k, n - k), alpha=w)        # x[i + k]
            head, tail = out.narrow(axis, 0, k), out.narrow(axis, n - k, k)           # replicate border
            head.add_(x.narrow(axis, 0, 1).expand_as(head), alpha=w)
            tail.add_(x.narrow(axis, n - 1, 1).expand_as(tail), alpha=w)
        x = out
    return x


def box_filter(x: torch.Tensor, window: int) -> torch.Tensor:
    """Box mean over an odd ``window`` of ``(B, C, *S)`` by shifted in-place adds; zero padding, so
    windows at the border are divided by the full window size (as a zero-padded convolution)."""
    r = window // 2
    ndim = x.ndim - 2
    for axis in range(2, 2 + ndim):
        n = x.shape[axis]
        out = x.clone()
        for k in range(1, min(r, n - 1) + 1):
            out.narrow(axis, k, n - k).add_(x.narrow(axis, 0, n - k))
            out.narrow(axis, 0, n - k).add_(x.narrow(axis, k, n - k))
        x = out
    return x / float(window ** ndim)


def lncc_and_gradient(fixed: torch.Tensor, warped: torch.Tensor, window: int,
                      eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Box-window local squared NCC and its exact gradient with respect to ``warped``.

    Loss ``L = -mean_x cc(x)``, ``cc = A^2 / (B C)`` with the window sums ``A = cov(I, J)``,
    ``B = var(I)``, ``C = var(J)`` (I = fixed, J = warped; both ``(1, 1, *S)``). Returns
    ``(L as float tensor, dL/dJ (1, 1, *S))``. The gradient sums the contributions of every window a
    voxel belongs to (a second pass of box filters), so it matches autograd (tested).
    """
    n_vox = float(fixed.numel())
    stats = box_filter(torch.cat([fixed, warped, fixed * fixed, warped * warped, fixed * warped], 1), window)
    mi, mj, mii, mjj, mij = stats.unbind(1)
    a = mij - mi * mj
    b = (mii - mi * mi).clamp_min(eps)
    c = (mjj - mj * mj).clamp_min(eps)
    cc = a * a / (b * c)
    loss = -cc.mean()
    # d cc(x) / d J(y) = alpha(x) [ (I(y) - mi(x)) - beta(x) (J(y) - mj(x)) ] * (window mean weight)
    alpha = 2.0 * a / (b * c)
    beta = a / c
    terms = box_filter(torch.stack([alpha, alpha * mi, alpha * beta, alpha * beta * mj], 1), window)
    t0, t1, t2, t3 = terms.unbind(1)
    i, j = fixed[:, 0], warped[:, 0]
    grad = -(i * t0 - t1 - j * t2 + t3) / n_vox
    return loss, grad.unsqueeze(1)


def image_gradient(x: torch.Tensor) -> torch.Tensor:
    """Central-difference spatial gradient of ``(B, 1, *S)`` -> ``(B, ndim, *S)`` per voxel
    (one-sided at the border)."""
    ndim = x.ndim - 2
    comps = []
    for axis in range(2, 2 + ndim):
        comps.append(torch.gradient(x, dim=axis)[0])
    return torch.cat(comps, 1)


def integrate_velocity(velocity: torch.Tensor, steps: int) -> torch.Tensor:
    """Scaling and squaring of a stationary velocity ``(B, ndim, *S)`` (voxels) -> displacement."""
    return integrate_svf(velocity, steps=steps)


# -- similarity choice ---------------------------------------------------------------------------


def make_similarity(name: Similarity | str, ndim: int, window: int = 5):
    """Similarity module by name (``regcore.losses``); LNCC uses ``window`` voxels, MI 32 bins with
    voxel sampling in 3D to bound memory (own seeded generator: repeatable runs). Callable as ``loss(fixed, warped) -> scalar``."""
    key = Similarity(str(name))
    if key in (Similarity.LNCC, Similarity.LNCC_GAUSS):
        return similarity_loss(key, window=window)
    if key in (Similarity.MI, Similarity.NMI):
        return similarity_loss(key, bins=32, samples=200_000 if ndim == 3 else None, seed=0)
    return similarity_loss(key)


# -- progress and results ------------------------------------------------------------------------


@dataclass
class LevelProgress:
    """Fraction bookkeeping across levels: ``tick(level, it, message, **losses)`` calls ``report``."""

    progress: object
    iterations: tuple[int, ...]
    weights: tuple[float, ...] | None = None
    report_every: int = 5

    def __post_init__(self):
        # coarse levels are cheaper: weight a level by iterations / factor**ndim is overkill; use counts
        w = self.weights or tuple(float(max(i, 1)) for i in self.iterations)
        total = sum(w)
        self._starts = [sum(w[:k]) / total for k in range(len(w))]
        self._spans = [x / total for x in w]

    def tick(self, level: int, it: int, message: str = "", force: bool = False, **losses: float) -> None:
        n = max(self.iterations[level], 1)
        if force or it % self.report_every == 0 or it == n - 1:
            frac = self._starts[level] + self._spans[level] * (it + 1) / n
            report(self.progress, min(frac, 0.999), message, **losses)


def build_result(method: str, fixed: Image, moving: Image, displacement: torch.Tensor, *, timer,
                 device: torch.device, config, loss_history: list[dict[str, float]],
                 affine: torch.Tensor | None = None, velocity: torch.Tensor | None = None,
                 extras: dict | None = None) -> RegistrationResult:
    """Warp ``moving`` by ``displacement`` (``(1, ndim, *S)`` fixed voxels, fixed -> moving) and pack
    a :class:`RegistrationResult` (tensors on the CPU, float32)."""
    disp = displacement.detach().float()
    with torch.no_grad():
        warped = warp(moving.batch().to(disp.device), disp)[0]
    return RegistrationResult(
        method=method, fixed=fixed, moving=moving,
        warped=moving.with_data(warped.cpu().to(moving.data.dtype if moving.data.is_floating_point() else torch.float32),
                                name=f"{moving.name} warped ({method})"),
        displacement=disp.cpu(), affine=None if affine is None else affine.detach().float().cpu(),
        velocity=None if velocity is None else velocity.detach().float().cpu(),
        loss_history=loss_history, runtime_s=timer.runtime_s, peak_memory_mb=timer.peak_memory_mb,
        device=str(device), config=config, extras=extras or {},
    )
