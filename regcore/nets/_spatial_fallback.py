"""Private fallbacks for regcore.spatial functions that other modules own.

Used only when ``regcore.spatial.svf`` / ``affine`` / ``resize`` are not importable (they
are written concurrently); the public versions win as soon as they exist. Same conventions:
fields ``(B, ndim, *S)`` in voxels, fixed -> moving.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from regcore.spatial.grid import identity_grid
from regcore.spatial.warp import warp


def integrate_svf(velocity: torch.Tensor, steps: int = 7) -> torch.Tensor:
    """Scaling and squaring: ``exp(v)`` as a displacement ``(B, ndim, *S)`` in voxels."""
    u = velocity / (2 ** steps)
    for _ in range(steps):
        u = u + warp(u, u, padding_mode="border")
    return u


def affine_to_displacement(matrix: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Voxel affine ``(B, n, n+1)`` -> displacement ``(B, n, *shape)``: ``u(x) = A x + t - x``."""
    n = len(shape)
    x = identity_grid(shape, matrix.device, matrix.dtype).flatten(2)            # (1, n, N)
    y = matrix[:, :, :n] @ x + matrix[:, :, n:]
    return (y - x).view(matrix.shape[0], n, *shape)


def resize_image(image: torch.Tensor, shape: tuple[int, ...], mode: str = "bilinear") -> torch.Tensor:
    """Resample ``(B, C, *S)`` to ``shape`` with corner-aligned sampling."""
    m = mode if mode == "nearest" else ("bilinear" if len(shape) == 2 else "trilinear")
    kw = {} if m == "nearest" else {"align_corners": True}
    return F.interpolate(image, size=tuple(shape), mode=m, **kw)


def resize_field(field: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Resample a voxel displacement to ``shape`` and rescale each component to the new voxel size."""
    old = field.shape[2:]
    out = resize_image(field, shape)
    scale = torch.tensor([(n - 1) / max(o - 1, 1) for n, o in zip(shape, old)], device=field.device, dtype=field.dtype)
    return out * scale.view(1, -1, *([1] * len(shape)))
