"""The spatial operations learned models use, with the call shapes the nets expect.

Thin adapters over :mod:`regcore.spatial` (fields ``(B, ndim, *S)`` in voxels, fixed -> moving).
Resizing is corner-aligned linear WITHOUT anti-aliasing, so training and inference resample
identically (the shipped weights were trained with exactly this).
"""

from __future__ import annotations

import torch

from regcore.spatial import resize as _resize
from regcore.spatial.affine import affine_to_displacement
from regcore.spatial.svf import integrate_svf


def resize_image(image: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Linearly resample ``(B, C, *S)`` to ``shape`` (align_corners, no anti-aliasing)."""
    return _resize.resize_image(image, size=tuple(shape), mode="linear", antialias=False)


def resize_field(field: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Resample a voxel displacement to ``shape``; components are rescaled to the new voxel size."""
    return _resize.resize_field(field, tuple(shape))


__all__ = ["integrate_svf", "affine_to_displacement", "resize_field", "resize_image"]
