"""Voxel-space affine transforms: parameterisations, dense fields and a moments initialiser.

Every matrix here is ``(B, n, n+1)`` in VOXEL units of the fixed grid, tensor axis order,
mapping a fixed voxel ``x`` to the moving voxel ``A[:, :, :n] @ x + A[:, :, n]``
(direction fixed -> moving, like every transform in regcore). World-mm conversion and ITK
files live in ``regcore.io``. Rotations and scalings are taken about the image centre
``c = (S - 1) / 2`` so parameters stay well conditioned for optimisation:
``phi(x) = L (x - c) + c + t``. All parameter -> matrix functions are differentiable.
"""

from __future__ import annotations

import torch

from regcore.spatial.grid import identity_grid


def _check_shape(shape) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or any(s < 1 for s in shape):
        raise ValueError(f"shape must be 2 or 3 positive sizes, got {shape}")
    return shape


def _check_matrix(matrix: torch.Tensor, name: str = "matrix") -> torch.Tensor:
    if not isinstance(matrix, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(matrix).__name__}")
    if matrix.ndim == 2:
        matrix = matrix[None]
    if matrix.ndim != 3 or matrix.shape[1] not in (2, 3) or matrix.shape[2] != matrix.shape[1] + 1:
        raise ValueError(f"{name} must be (B, n, n+1) or (n, n+1) with n = 2 or 3, got {tuple(matrix.shape)}")
    return matrix


def image_centre(shape: tuple[int, ...], device=None, dtype=torch.float32) -> torch.Tensor:
    """Centre of the voxel grid ``(S - 1) / 2`` in voxels, ``(n,)``."""
    return torch.tensor([(s - 1) / 2.0 for s in shape], device=device, dtype=dtype)


def affine_to_displacement(matrix: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Dense displacement of an affine: ``u(x) = A x + t - x`` -> ``(B, n, *shape)`` voxels (fixed -> moving)."""
    matrix = _check_matrix(matrix)
    shape = _check_shape(shape)
    n = len(shape)
    if matrix.shape[1] != n:
        raise ValueError(f"matrix is {matrix.shape[1]}D but shape {shape} is {n}D")
    grid = identity_grid(shape, matrix.device, matrix.dtype)[0]  # (n, *S)
    eye = torch.eye(n, device=matrix.device, dtype=matrix.dtype)
    linear = matrix[:, :, :n] - eye
    u = torch.einsum("bij,j...->bi...", linear, grid)
    return u + matrix[:, :, n].reshape(*matrix.shape[:2], *([1] * n))


def _about_centre(linear: torch.Tensor, translation: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``phi(x) = L (x - c) + c + t`` as a ``(B, n, n+1)`` matrix."""
    c = image_centre(shape, linear.device, linear.dtype)
    offset = c - torch.einsum("bij,j->bi", linear, c) + translation
    return torch.cat([linear, offset.unsqueeze(-1)], dim=-1)


def rotation_matrix(angles: torch.Tensor) -> torch.Tensor:
    """Rotation ``(B, n, n)`` from angles in radians.

    2D: ``angles (B, 1)``, counter-clockwise from tensor axis 0 toward axis 1.
    3D: ``angles (B, 3)`` = rotations about tensor axes 0, 1, 2; ``R = R2 @ R1 @ R0``
    (axis-0 rotation applied first).
    """
    if not isinstance(angles, torch.Tensor):
        raise TypeError(f"angles must be a torch.Tensor, got {type(angles).__name__}")
    if angles.ndim == 1:
        angles = angles[None]
    if angles.ndim != 2 or angles.shape[1] not in (1, 3):
        raise ValueError(f"angles must be (B, 1) for 2D or (B, 3) for 3D, got {tuple(angles.shape)}")
    cos, sin = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones_like(cos[:, 0]), torch.zeros_like(cos[:, 0])
    if angles.shape[1] == 1:
        c, s = cos[:, 0], sin[:, 0]
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)

    def rot(i: int, j: int, k: int) -> torch.Tensor:  # rotation in the (j, k) plane, about axis i
        c, s = cos[:, i], sin[:, i]
        m = [[None] * 3 for _ in range(3)]
        for a in range(3):
            for b in range(3):
                m[a][b] = one if (a == b == i) else zero
        m[j][j], m[j][k], m[k][j], m[k][k] = c, -s, s, c
        return torch.stack([torch.stack(row, -1) for row in m], -2)

    return rot(2, 0, 1) @ rot(1, 2, 0) @ rot(0, 1, 2)


def rigid_matrix(angles: torch.Tensor, translation: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Rigid ``(B, n, n+1)`` voxel matrix: rotation (radians, see :func:`rotation_matrix`)
    about the image centre, then ``translation (B, n)`` in voxels."""
    return similarity_matrix(angles, translation, torch.zeros_like(translation[..., :1]), shape)


def similarity_matrix(
    angles: torch.Tensor, translation: torch.Tensor, log_scale: torch.Tensor, shape: tuple[int, ...]
) -> torch.Tensor:
    """Similarity ``(B, n, n+1)``: isotropic scale ``exp(log_scale (B, 1))`` times rotation,
    about the image centre, plus ``translation (B, n)`` voxels."""
    shape = _check_shape(shape)
    n = len(shape)
    rot = rotation_matrix(angles)
    if translation.ndim == 1:
        translation = translation[None]
    if rot.shape[1] != n or translation.shape[-1] != n:
        raise ValueError(
            f"for a {n}D shape {shape} expected angles (B, {1 if n == 2 else 3}) and translation (B, {n}); "
            f"got rotation {tuple(rot.shape)} and translation {tuple(translation.shape)}"
        )
    if log_scale.ndim == 1:
        log_scale = log_scale[None]
    linear = rot * torch.exp(log_scale).reshape(-1, 1, 1)
    return _about_centre(linear, translation, shape)


def affine_params_to_matrix(params: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Full affine from ``params (B, n, n+1)`` (zeros = identity): ``L = I + params[:, :, :n]``
    about the image centre, ``t = params[:, :, n]`` voxels."""
    params = _check_matrix(params, "params")
    shape = _check_shape(shape)
    n = len(shape)
    if params.shape[1] != n:
        raise ValueError(f"params are {params.shape[1]}D but shape {shape} is {n}D")
    eye = torch.eye(n, device=params.device, dtype=params.dtype)
    return _about_centre(eye + params[:, :, :n], params[:, :, n], shape)


def matrix_to_affine_params(matrix: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`affine_params_to_matrix`."""
    matrix = _check_matrix(matrix)
    n = matrix.shape[1]
    c = image_centre(_check_shape(shape), matrix.device, matrix.dtype)
    linear = matrix[:, :, :n]
    translation = matrix[:, :, n] - c + torch.einsum("bij,j->bi", linear, c)
    eye = torch.eye(n, device=matrix.device, dtype=matrix.dtype)
    return torch.cat([linear - eye, translation.unsqueeze(-1)], dim=-1)


def matrix_to_rigid_params(matrix: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Angles and translation of a rigid matrix (inverse of :func:`rigid_matrix`; 3D angles in (-pi, pi])."""
    params = matrix_to_affine_params(matrix, shape)
    n = params.shape[1]
    r = params[:, :, :n] + torch.eye(n, device=params.device, dtype=params.dtype)
    if n == 2:
        angles = torch.atan2(r[:, 1, 0], r[:, 0, 0])[:, None]
    else:  # R = Rz(a2) Ry(a1) Rx(a0) in tensor-axis naming (x=0, y=1, z=2)
        a1 = torch.asin(torch.clamp(-r[:, 2, 0], -1.0, 1.0))
        a0 = torch.atan2(r[:, 2, 1], r[:, 2, 2])
        a2 = torch.atan2(r[:, 1, 0], r[:, 0, 0])
        angles = torch.stack([a0, a1, a2], dim=-1)
    return angles, params[:, :, n]


def compose_affine(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """Matrix of ``phi_outer o phi_inner`` (inner applied first), ``(B, n, n+1)``."""
    outer, inner = _check_matrix(outer, "outer"), _check_matrix(inner, "inner")
    n = outer.shape[1]
    linear = outer[:, :, :n] @ inner[:, :, :n]
    offset = torch.einsum("bij,bj->bi", outer[:, :, :n], inner[:, :, n]) + outer[:, :, n]
    return torch.cat([linear, offset.unsqueeze(-1)], dim=-1)


def invert_affine(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse transform ``(B, n, n+1)`` (moving voxel -> fixed voxel)."""
    matrix = _check_matrix(matrix)
    n = matrix.shape[1]
    inv = torch.linalg.inv(matrix[:, :, :n])
    return torch.cat([inv, -(inv @ matrix[:, :, n:])], dim=-1)


def _moments(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre of mass ``(B, n)`` and second central moments ``(B, n, n)`` in voxels."""
    n = image.ndim - 2
    w = image.sum(1)
    w = w - w.flatten(1).amin(1).view(-1, *([1] * n))  # weights >= 0
    total = w.flatten(1).sum(1).clamp_min(torch.finfo(w.dtype).tiny)
    grid = identity_grid(tuple(image.shape[2:]), image.device, image.dtype)[0].flatten(1)  # (n, V)
    wf = w.flatten(1) / total[:, None]
    centre = wf @ grid.T
    d = grid[None] - centre[:, :, None]  # (B, n, V)
    cov = torch.einsum("bv,biv,bjv->bij", wf, d, d)
    return centre, cov


def moments_init(fixed: torch.Tensor, moving: torch.Tensor, principal_axes: bool = False) -> torch.Tensor:
    """Voxel affine ``(B, n, n+1)`` (fixed -> moving) aligning intensity centres of mass.

    Args:
        fixed, moving: ``(B, C, *S)`` images on the same grid (channels are summed; the
            minimum is subtracted so weights are >= 0).
        principal_axes: also rotate the principal axes of the fixed image onto the
            moving ones (the sign of each axis is chosen for the rotation closest to
            identity, so mirror images are never produced).
    """
    for name, t in (("fixed", fixed), ("moving", moving)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim not in (4, 5):
            raise ValueError(f"{name} must be (B, C, *S) with 2 or 3 spatial dims, got {tuple(t.shape)}")
    if fixed.shape[2:] != moving.shape[2:] or fixed.shape[0] != moving.shape[0]:
        raise ValueError(
            f"fixed {tuple(fixed.shape)} and moving {tuple(moving.shape)} must share batch and grid"
        )
    dtype = torch.float64
    c_f, cov_f = _moments(fixed.to(dtype))
    c_m, cov_m = _moments(moving.to(dtype))
    n = fixed.ndim - 2
    b = fixed.shape[0]
    rot = torch.eye(n, dtype=dtype, device=fixed.device).expand(b, n, n).clone()
    if principal_axes:
        _, e_f = torch.linalg.eigh(cov_f)
        _, e_m = torch.linalg.eigh(cov_m)
        best = None
        for signs in range(2**n):
            flip = torch.tensor(
                [(-1.0) ** ((signs >> i) & 1) for i in range(n)], dtype=dtype, device=fixed.device
            )
            cand = (e_m * flip) @ e_f.transpose(1, 2)
            ok = torch.linalg.det(cand) > 0
            score = torch.where(
                ok, cand.diagonal(dim1=1, dim2=2).sum(-1), torch.full_like(ok, -1e9, dtype=dtype)
            )
            if best is None:
                best, best_score = cand, score
            else:
                take = score > best_score
                best = torch.where(take[:, None, None], cand, best)
                best_score = torch.maximum(score, best_score)
        rot = best
    offset = c_m - torch.einsum("bij,bj->bi", rot, c_f)
    return torch.cat([rot, offset.unsqueeze(-1)], dim=-1).to(
        fixed.dtype if fixed.is_floating_point() else torch.float32
    )


__all__ = [
    "affine_to_displacement",
    "rotation_matrix",
    "rigid_matrix",
    "similarity_matrix",
    "affine_params_to_matrix",
    "matrix_to_affine_params",
    "matrix_to_rigid_params",
    "compose_affine",
    "invert_affine",
    "moments_init",
    "image_centre",
]
