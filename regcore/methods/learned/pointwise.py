"""Point-wise tools for per-pair coordinate networks (INR and neural-ODE families).

Points are ``(N, n)`` tensors in normalised coordinates of the fixed grid: tensor axis ``i`` of size
``S_i`` maps voxel index ``0 .. S_i - 1`` to ``-1 .. 1`` (the corner-aligned convention of
``grid_sample(..., align_corners=True)``), in tensor-axis order (not grid_sample's reversed x, y, z).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def grid_points(shape: tuple[int, ...], device=None) -> torch.Tensor:
    """Every voxel centre of a grid ``shape`` as ``(prod(shape), n)`` normalised points, C order."""
    axes = [
        torch.linspace(-1.0, 1.0, s, device=device) if s > 1 else torch.zeros(1, device=device) for s in shape
    ]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(shape))


def sample_at(image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``image`` ``(1, 1, *S)`` at ``points`` ``(N, n)`` -> ``(N,)``; zero outside."""
    n = points.shape[1]
    grid = points.flip(-1).reshape(1, -1, *([1] * (n - 1)), n)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True).reshape(-1)


def point_ncc_loss(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``1 - NCC(a, b)`` over the points (0 when ``b`` is an increasing linear function of ``a``)."""
    a = a - a.mean()
    b = b - b.mean()
    return 1.0 - (a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum() + eps)


def jacobian_determinant_at(u: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``det(I + du/dx)`` ``(N,)`` at each point, by automatic differentiation (keeps the graph).

    ``u`` ``(N, n)`` must be computed from ``points`` (which requires grad); both in normalised units
    (the determinant is the same in voxel units)."""
    n = points.shape[1]
    rows = []
    for i in range(n):
        (grad,) = torch.autograd.grad(u[:, i].sum(), points, create_graph=True)
        rows.append(grad)
    jac = torch.stack(rows, dim=1) + torch.eye(n, device=u.device, dtype=u.dtype)
    return torch.linalg.det(jac)


def stencil_determinant_at(field, points: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``det(I + du/dx)`` ``(N,)`` by central differences of one voxel at each point: at a voxel centre this is
    the determinant the evaluation computes on the grid (:func:`regcore.spatial.jacobian.jacobian_determinant`),
    one-sided at the grid border as there. ``field`` maps ``(M, n)`` normalised points to ``(M, n)`` normalised
    displacements; ``points`` ``(N, n)`` normalised, ``shape`` the fixed grid. Differentiable through ``field``."""
    n = points.shape[1]
    step = torch.tensor([2.0 / max(s - 1, 1) for s in shape], device=points.device, dtype=points.dtype)
    columns = []
    for j in range(n):
        offset = torch.zeros(n, device=points.device, dtype=points.dtype)
        offset[j] = step[j]
        ahead = (points + offset).clamp(max=1.0)  # one-sided at the border, as torch.gradient
        behind = (points - offset).clamp(min=-1.0)
        span = (ahead[:, j] - behind[:, j]).clamp(min=1e-12)[:, None]
        columns.append((field(ahead) - field(behind)) / span)  # d u / d x_j, normalised units
    jac = torch.stack(columns, dim=-1) + torch.eye(n, device=points.device, dtype=points.dtype)
    return torch.linalg.det(jac)


def normalised_to_voxels(u: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Normalised displacements ``(prod(shape), n)`` on the grid -> ``(1, n, *shape)`` voxels."""
    n = len(shape)
    half = torch.tensor([(s - 1) / 2.0 for s in shape], device=u.device, dtype=u.dtype)
    return (u * half).T.reshape(1, n, *shape)
