"""Cubic B-spline free-form deformation (FFD) on a regular control-point grid.

Control point ``j`` along an axis of spacing ``s`` voxels sits at fixed-grid voxel
``(j - 1) * s``; the grid has ``ceil((N - 1) / s) + 3`` points so that every voxel
``0..N-1`` is covered by four of them. The displacement (voxels, fixed -> moving) is

    u(x) = sum_j c_j * B3(x / s - (j - 1))      (tensor product over axes)

with ``B3`` the centred cubic B-spline (support ``|t| < 2``; partition of unity). This is
the same knot layout as ``scipy.interpolate.BSpline(t=(arange(C + 4) - 3) * s, c, k=3)``.
Evaluation is separable: one small dense ``(N_a, C_a)`` basis matrix per axis, applied
by matmul (exact, differentiable, any positive real spacing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from regcore.spatial.checks import per_axis

INJECTIVE_FRACTION = {2: 0.4887, 3: 0.4033}
"""Largest control-point displacement per axis, as a fraction of the control spacing (both in voxels), under which
the FFD is locally injective whatever the coefficients (Choi & Lee 2000, "Injectivity conditions of 2D and 3D
uniform cubic B-spline functions": 1 / K with K = 2.046 in 2D, 2.479 in 3D). Sufficient, not necessary."""


def control_grid_shape(shape: Sequence[int], spacing_vox: float | Sequence[float]) -> tuple[int, ...]:
    """Control-point grid size per axis: ``ceil((N - 1) / s) + 3``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or any(s < 1 for s in shape):
        raise ValueError(f"shape must be 2 or 3 positive sizes, got {shape}")
    spacing = per_axis(spacing_vox, len(shape), "spacing_vox", allow_zero=False)
    return tuple(int(math.ceil((n - 1) / s - 1e-9)) + 3 for n, s in zip(shape, spacing))


def cubic_bspline(t: torch.Tensor) -> torch.Tensor:
    """Centred cubic B-spline ``B3(t)``: ``(4 - 6t^2 + 3|t|^3)/6`` for ``|t|<1``, ``(2-|t|)^3/6`` for ``|t|<2``."""
    a = t.abs()
    inner = (4.0 - 6.0 * a**2 + 3.0 * a**3) / 6.0
    outer = (2.0 - a).clamp_min(0.0) ** 3 / 6.0
    return torch.where(a < 1.0, inner, outer)


def bspline_basis_matrix(
    size: int, n_control: int, spacing: float, device=None, dtype=torch.float32
) -> torch.Tensor:
    """``(size, n_control)`` matrix ``M[x, j] = B3(x / spacing - (j - 1))``."""
    x = torch.arange(size, device=device, dtype=torch.float64)[:, None]
    j = torch.arange(n_control, device=device, dtype=torch.float64)[None, :]
    return cubic_bspline(x / spacing - (j - 1.0)).to(dtype)


def bspline_to_displacement(
    coeffs: torch.Tensor, shape: Sequence[int], spacing_vox: float | Sequence[float]
) -> torch.Tensor:
    """Dense displacement ``(B, n, *shape)`` (voxels) from control coefficients ``(B, n, *C)``.

    Args:
        coeffs: control-point displacements in voxels; ``C == control_grid_shape(shape, spacing_vox)``.
        shape: fixed-grid spatial shape.
        spacing_vox: control-point spacing in voxels, scalar or per axis.
    """
    if not isinstance(coeffs, torch.Tensor):
        raise TypeError(f"coeffs must be a torch.Tensor, got {type(coeffs).__name__}")
    shape = tuple(int(s) for s in shape)
    expected = control_grid_shape(shape, spacing_vox)
    n = len(shape)
    if (
        coeffs.ndim != n + 2
        or coeffs.shape[1] != n
        or tuple(coeffs.shape[2:]) != expected
        or not coeffs.is_floating_point()
    ):
        raise ValueError(
            f"coeffs must be float (B, {n}, {', '.join(map(str, expected))}) for shape {shape} and spacing "
            f"{spacing_vox!r}; got {tuple(coeffs.shape)} {coeffs.dtype}"
        )
    spacing = per_axis(spacing_vox, n, "spacing_vox", allow_zero=False)
    out = coeffs
    for axis in range(n):
        m = bspline_basis_matrix(shape[axis], expected[axis], spacing[axis], coeffs.device, coeffs.dtype)
        out = (out.movedim(axis + 2, -1) @ m.T).movedim(-1, axis + 2)
    return out.contiguous()
