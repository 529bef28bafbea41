"""Jacobian of ``phi(x) = x + u(x)`` for voxel displacements: the ONE implementation in regcore.

``u`` is ``(B, n, *S)`` (n = 2 or 3), component i along tensor axis i, in voxels of the fixed
grid; ``phi`` maps fixed -> moving (``warped = moving o phi``). Derivatives are central
differences in voxel units (one-sided at the border, as ``torch.gradient``). When ``u`` is in
voxels of the same grid the determinant is unit-free: ``det(I + du/dx)`` is the same computed
in voxels or in mm on an anisotropic grid, since ``J_mm = D J_vox D^-1`` with ``D = diag(spacing)``.
Values > 1 mean local expansion, < 1 contraction, <= 0 folding. Everything is differentiable.
"""

from __future__ import annotations

import torch

from regcore.spatial.checks import check_field


def small_det(m) -> torch.Tensor:
    """Determinant of a 2x2 or 3x3 matrix given by entries ``m[row][col]`` (equally shaped tensors,
    or any object indexable that way); elementwise over the entries' shape."""
    if len(m) == 2:
        return m[0][0] * m[1][1] - m[0][1] * m[1][0]
    return (
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    )


def jacobian_matrix(u: torch.Tensor) -> torch.Tensor:
    """``J = I + du/dx`` as ``(B, *S, n, n)``; ``J[..., i, j] = d phi_i / d x_j`` (tensor axes, unit-free)."""
    n = check_field(u, "u", min_size=2)
    grads = torch.gradient(u, dim=tuple(range(2, 2 + n)))  # grads[j][:, i] = d u_i / d x_j
    jac = torch.stack(grads, dim=-1).movedim(1, -2)  # (B, *S, n_i, n_j)
    return jac + torch.eye(n, device=u.device, dtype=u.dtype)


def jacobian_determinant(u: torch.Tensor) -> torch.Tensor:
    """``det(I + du/dx)`` per voxel, ``(B, *S)``, of the voxel displacement ``u`` ``(B, n, *S)``.

    Values <= 0 mark folding. Differentiable; dtype and device of ``u``.
    """
    n = check_field(u, "u", min_size=2)
    grads = torch.gradient(u, dim=tuple(range(2, 2 + n)))  # grads[j][:, i] = d u_i / d x_j
    return small_det([[grads[c][:, r] + (1.0 if r == c else 0.0) for c in range(n)] for r in range(n)])
