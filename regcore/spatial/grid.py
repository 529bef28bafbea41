"""The ONE place that converts between regcore's voxel displacements and
``torch.nn.functional.grid_sample``'s normalised coordinates.

regcore: a displacement ``u`` is ``(B, ndim, *S)``; component i is along tensor
axis i, in voxels of the fixed grid. The transform is ``phi(x) = x + u(x)``: it maps a
fixed-grid voxel x to the moving image's voxel coordinates (moving already lies on
the fixed grid), and ``warped = moving o phi``.

grid_sample (align_corners=True): a sampling grid ``(B, *S, ndim)`` whose last axis
is ordered x, y(, z) = tensor axes reversed (W, H(, D)), each in ``[-1, 1]`` where
-1 / +1 are the centres of the first / last voxel.
"""

from __future__ import annotations

import torch


def _check_field(field: torch.Tensor) -> int:
    if not isinstance(field, torch.Tensor):
        raise TypeError(f"field must be a torch.Tensor, got {type(field).__name__}")
    if field.ndim not in (4, 5) or field.shape[1] != field.ndim - 2:
        raise ValueError(
            f"field must be (B, ndim, *S) with ndim = 2 or 3 spatial dims, got shape {tuple(field.shape)}"
        )
    return field.ndim - 2


def identity_grid(shape: tuple[int, ...], device=None, dtype=torch.float32) -> torch.Tensor:
    """Voxel coordinates of every grid point: ``(1, ndim, *shape)``, component i = index along axis i."""
    axes = [torch.arange(s, device=device, dtype=dtype) for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]


def voxel_scale(shape: tuple[int, ...], device=None, dtype=torch.float32) -> torch.Tensor:
    """Per-axis factor voxel -> normalised units (align_corners=True): ``2 / (size - 1)``; ``(ndim,)``."""
    return torch.tensor([2.0 / max(s - 1, 1) for s in shape], device=device, dtype=dtype)


def displacement_to_grid(displacement: torch.Tensor) -> torch.Tensor:
    """Voxel displacement ``(B, ndim, *S)`` -> grid_sample grid ``(B, *S, ndim)`` (xyz order, [-1, 1])."""
    ndim = _check_field(displacement)
    shape = tuple(displacement.shape[2:])
    pos = identity_grid(shape, displacement.device, displacement.dtype) + displacement
    scale = voxel_scale(shape, displacement.device, displacement.dtype).view(1, ndim, *([1] * ndim))
    norm = pos * scale - 1.0
    return norm.movedim(1, -1).flip(-1)


def grid_to_displacement(grid: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`displacement_to_grid`: ``(B, *S, ndim)`` normalised xyz -> ``(B, ndim, *S)`` voxels."""
    ndim = grid.shape[-1]
    shape = tuple(grid.shape[1:-1])
    norm = grid.flip(-1).movedim(-1, 1)
    scale = voxel_scale(shape, grid.device, grid.dtype).view(1, ndim, *([1] * ndim))
    return (norm + 1.0) / scale - identity_grid(shape, grid.device, grid.dtype)


def affine_to_normalised(matrix: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Voxel-space affine ``(B, n, n+1)`` (tensor axis order; maps fixed voxel v to moving
    voxel ``A v + t``) -> the ``theta`` that ``F.affine_grid(..., align_corners=True)`` expects.

    With ``p = S v - 1`` (S = diag(2/(size-1))):  ``p' = S A S^-1 p + (S A S^-1 1 + S t - 1)``,
    then both axes are reversed to grid_sample's xyz order.
    """
    n = len(shape)
    s = voxel_scale(shape, matrix.device, matrix.dtype)
    a = matrix[:, :, :n]
    t = matrix[:, :, n]
    a_n = s.view(1, n, 1) * a / s.view(1, 1, n)
    t_n = a_n.sum(-1) + s * t - 1.0
    theta = torch.cat([a_n, t_n.unsqueeze(-1)], dim=-1)
    return torch.cat([theta[:, :, :n].flip(-1).flip(-2), theta[:, :, n:].flip(-2)], dim=-1)
