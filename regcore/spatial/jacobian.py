"""Jacobian of ``phi(x) = x + u(x)`` for voxel displacements.

Derivatives are central differences in voxel units (one-sided at the border, as
``torch.gradient``). When ``u`` is in voxels of the same grid the determinant is unit-free:
``det(I + du/dx)`` is the same computed in voxels or in mm on an anisotropic grid, since
``J_mm = D J_vox D^-1`` with ``D = diag(spacing)``.
"""

from __future__ import annotations

import torch


def _check_field(u: torch.Tensor) -> int:
    if not isinstance(u, torch.Tensor):
        raise TypeError(f"u must be a torch.Tensor, got {type(u).__name__}")
    if u.ndim not in (4, 5) or u.shape[1] != u.ndim - 2 or not u.is_floating_point():
        raise ValueError(f"u must be a float (B, ndim, *S) displacement with ndim 2 or 3, got "
                         f"{tuple(u.shape)} {u.dtype}")
    if min(u.shape[2:]) < 2:
        raise ValueError(f"every spatial size must be >= 2 for finite differences, got {tuple(u.shape[2:])}")
    return u.ndim - 2


def jacobian_matrix(u: torch.Tensor) -> torch.Tensor:
    """``J = I + du/dx`` as ``(B, *S, n, n)``; ``J[..., i, j] = d phi_i / d x_j`` (tensor axes)."""
    n = _check_field(u)
    grads = torch.gradient(u, dim=tuple(range(2, 2 + n)))  # grads[j][:, i] = d u_i / d x_j
    jac = torch.stack(grads, dim=-1).movedim(1, -2)  # (B, *S, n_i, n_j)
    return jac + torch.eye(n, device=u.device, dtype=u.dtype)


def jacobian_determinant(u: torch.Tensor) -> torch.Tensor:
    """``det(I + du/dx)`` per voxel, ``(B, *S)``. Values <= 0 mark folding. Differentiable."""
    n = _check_field(u)
    j = jacobian_matrix(u)
    if n == 2:
        return j[..., 0, 0] * j[..., 1, 1] - j[..., 0, 1] * j[..., 1, 0]
    return (
        j[..., 0, 0] * (j[..., 1, 1] * j[..., 2, 2] - j[..., 1, 2] * j[..., 2, 1])
        - j[..., 0, 1] * (j[..., 1, 0] * j[..., 2, 2] - j[..., 1, 2] * j[..., 2, 0])
        + j[..., 0, 2] * (j[..., 1, 0] * j[..., 2, 1] - j[..., 1, 1] * j[..., 2, 0])
    )
