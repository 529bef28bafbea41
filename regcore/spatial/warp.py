"""Warp images and label maps by a voxel displacement (warped = moving o phi).

Baseline implementation on grid_sample; see ``regcore.spatial.grid`` for units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from regcore.spatial.grid import displacement_to_grid


def warp(
    moving: torch.Tensor,
    displacement: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "border",
) -> torch.Tensor:
    """Resample ``moving`` ``(B, C, *S)`` at ``x + u(x)``.

    Args:
        moving: ``(B, C, *S)`` image on the fixed grid.
        displacement: ``(B, ndim, *S)`` voxel displacement, fixed -> moving (B may be 1 to broadcast).
        mode: ``"bilinear"`` (linear/trilinear) or ``"nearest"``.
        padding_mode: ``"border"``, ``"zeros"`` or ``"reflection"``.
    Returns:
        ``(B, C, *S)`` warped image, same dtype as ``moving`` for float input.
    """
    if moving.ndim != displacement.ndim or moving.shape[2:] != displacement.shape[2:]:
        raise ValueError(
            f"moving {tuple(moving.shape)} and displacement {tuple(displacement.shape)} must share spatial shape"
        )
    grid = displacement_to_grid(displacement.to(moving.dtype) if moving.is_floating_point() else displacement)
    if grid.shape[0] != moving.shape[0]:
        grid = grid.expand(moving.shape[0], *grid.shape[1:])
    src = moving if moving.is_floating_point() else moving.float()
    out = F.grid_sample(src, grid, mode=mode, padding_mode=padding_mode, align_corners=True)
    return out if moving.is_floating_point() else out.round().to(moving.dtype)


def warp_labels(labels: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """Warp an integer label map ``(B, 1, *S)`` by nearest neighbour; returns the same dtype."""
    return warp(labels, displacement, mode="nearest", padding_mode="zeros")
