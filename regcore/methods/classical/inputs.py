"""Input checks and device placement shared by the instance-optimisation methods.

Images are :class:`regcore.Image`; tensors handed to the optimisers are ``(1, C, *S)`` float32.
"""

from __future__ import annotations

import torch

from regcore.image import Image
from regcore.methods.base import resolve_device


def validate_pair(fixed: Image, moving: Image) -> int:
    """Check a (fixed, moving) pair for the methods here; returns the number of spatial dims.

    Raises TypeError for non-Images and ValueError for label maps, different grids, 4D data or
    non-finite voxels, naming the argument and the actual value.
    """
    for arg, im in (("fixed", fixed), ("moving", moving)):
        if not isinstance(im, Image):
            raise TypeError(f"{arg} must be a regcore.Image, got {type(im).__name__}")
        if im.is_labels:
            raise ValueError(
                f"{arg} is a label map ({im.name!r}); register intensity images and warp labels after"
            )
        if im.ndim not in (2, 3):
            raise ValueError(f"{arg} must be 2D or 3D, got {im.ndim}D with shape {im.shape}")
        if not torch.isfinite(im.data).all():
            raise ValueError(f"{arg} ({im.name!r}) contains NaN or infinite voxels; clean or mask them first")
    if fixed.shape != moving.shape:
        raise ValueError(
            f"fixed and moving must lie on the same grid (resample moving with regcore.preprocess.resample_to); "
            f"got shapes fixed {fixed.shape} and moving {moving.shape}"
        )
    if not fixed.geometry.same_grid(moving.geometry):
        raise ValueError(
            f"fixed and moving must lie on the same grid (resample moving with regcore.preprocess.resample_to); "
            f"fixed spacing/origin {fixed.spacing}/{fixed.geometry.origin} != "
            f"moving {moving.spacing}/{moving.geometry.origin}"
        )
    if fixed.data.shape[0] != moving.data.shape[0]:
        raise ValueError(
            f"fixed and moving must have the same channel count, got {fixed.data.shape[0]} "
            f"and {moving.data.shape[0]}"
        )
    if min(fixed.shape) < 4:
        raise ValueError(f"images must be at least 4 voxels along every axis, got shape {fixed.shape}")
    return fixed.ndim


def pick_device(config_device: str, fixed: Image) -> torch.device:
    """Device from the config (``"auto"`` -> CUDA when present, else where ``fixed`` lives)."""
    if str(config_device) == "auto" and fixed.device.type != "cpu":
        return fixed.device
    return resolve_device(config_device)


def pair_tensors(fixed: Image, moving: Image, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1, C, *S)`` float32 tensors of both images on ``device``."""
    return fixed.batch().to(device), moving.batch().to(device)


def minmax(x: torch.Tensor) -> torch.Tensor:
    """``x`` rescaled to [0, 1] by its global min and max (a constant image becomes 0)."""
    lo, hi = x.amin(), x.amax()
    return (x - lo) / (hi - lo) if hi > lo else x - lo
