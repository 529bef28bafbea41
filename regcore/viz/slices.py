"""Array helpers for display: 2D slices of volumes and fields, windows, flips, checkerboards.

Display conventions: see :mod:`regcore.viz`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def as_array(x) -> np.ndarray:
    """Image / tensor / array -> float numpy array; an Image gives its channel-0 ``(*S)``."""
    if hasattr(x, "geometry") and hasattr(x, "numpy"):
        return np.asarray(x.numpy())
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_2d(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2D slice (H, W), got shape {a.shape}")
    return a


def auto_window(a: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> tuple[float, float]:
    """(level, width) covering the given intensity percentiles; width is never 0."""
    lo, hi = np.percentile(np.asarray(a, dtype=float), percentiles)
    width = float(hi - lo) or 1.0
    return float((lo + hi) / 2), width


def extract_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """2D slice of a ``(*S)`` array: 2D input is returned as is; 3D is cut at ``index`` on ``axis``."""
    volume = np.asarray(volume)
    if volume.ndim == 2:
        return volume
    if volume.ndim != 3:
        raise ValueError(f"volume must be 2D or 3D, got shape {volume.shape}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    if not 0 <= index < volume.shape[axis]:
        raise ValueError(f"index must be in [0, {volume.shape[axis] - 1}] for axis {axis}, got {index}")
    return np.take(volume, index, axis=axis)


def slice_field(disp: np.ndarray, axis: int, index: int) -> np.ndarray:
    """In-plane components of a displacement ``(ndim, *S)`` at a slice -> ``(2, H, W)`` voxels."""
    disp = np.asarray(disp)
    if disp.ndim == 4 and disp.shape[0] == 1 and disp.shape[1] == 2:  # (1, 2, H, W)
        disp = disp[0]
    if disp.ndim == 5:
        disp = disp[0]
    if disp.shape[0] == 2 and disp.ndim == 3:
        return disp
    if disp.shape[0] != 3 or disp.ndim != 4:
        raise ValueError(f"disp must be (ndim, *S) with ndim 2 or 3, got shape {disp.shape}")
    keep = [a for a in range(3) if a != axis]
    return np.stack([extract_slice(disp[a], axis, index) for a in keep])


def slice_axes(ndim: int, axis: int | None) -> tuple[int, int]:
    """Tensor axes (p, q) shown horizontally and vertically: ``(0, 1)`` in 2D, the two axes other than ``axis`` in 3D."""
    if ndim == 2:
        return 0, 1
    if ndim != 3 or axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2 for a 3D volume, got ndim={ndim}, axis={axis}")
    p, q = (a for a in range(3) if a != axis)
    return p, q


def points_in_slice(
    index_points: np.ndarray, axis: int | None, index: int | None, tol: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Voxel points ``(N, ndim)`` -> in-plane coordinates ``(M, 2)`` of those within ``tol`` voxels of
    the slice, and the ``(N,)`` boolean mask of which were kept. 2D points are all kept."""
    pts = np.asarray(index_points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] not in (2, 3):
        raise ValueError(f"index_points must be (N, 2) or (N, 3), got shape {pts.shape}")
    if pts.shape[1] == 2:
        return pts, np.ones(len(pts), bool)
    keep = np.abs(pts[:, axis] - index) <= tol
    return pts[keep][:, list(slice_axes(3, axis))], keep


def display_flips(codes: str | None, axes: tuple[int, int] = (0, 1)) -> tuple[bool, bool]:
    """(reverse_x, reverse_y) so patient Left is on the right (radiological), and A/S point up.

    ``codes`` is ``Geometry.orientation_codes()`` (letter = where each tensor axis points).
    """
    if not codes:
        return False, False
    hx, vy = codes[axes[0]], codes[axes[1]]
    return hx in ("R", "A"), vy in ("P", "I")


def checkerboard(fixed: np.ndarray, moving: np.ndarray, tile: int) -> np.ndarray:
    """Alternate ``tile``-voxel squares (cubes in 3D) of fixed and moving: the one checkerboard composite.

    ``fixed`` and ``moving`` have the same shape, any number of dims (arrays, tensors or Images via
    :func:`as_array`); the tile at the origin is fixed. Returns a numpy array of that shape. Normalise
    both first (:func:`normalise01`) when their intensity ranges differ.
    """
    fixed, moving = as_array(fixed), as_array(moving)
    if fixed.shape != moving.shape:
        raise ValueError(f"fixed {fixed.shape} and moving {moving.shape} must have the same shape")
    if int(tile) < 1:
        raise ValueError(f"tile must be >= 1 voxel, got {tile}")
    idx = np.indices(fixed.shape) // int(tile)
    mask = idx.sum(0) % 2 == 0
    return np.where(mask, fixed, moving)


def normalise01(a: np.ndarray, level: float | None = None, width: float | None = None) -> np.ndarray:
    """Window (level, width) then scale to [0, 1]; auto window when not given."""
    a = np.asarray(a, dtype=float)
    if level is None or width is None:
        level, width = auto_window(a)
    lo = level - width / 2
    return np.clip((a - lo) / max(width, 1e-12), 0, 1)


def image_flips(image, axis: int | None = None) -> tuple[bool, bool]:
    """:func:`display_flips` for an Image's orientation on the plane shown (2D, or 3D cut along ``axis``);
    ``(False, False)`` for arrays and tensors, which carry no orientation."""
    geometry = getattr(image, "geometry", None)
    if geometry is None:
        return False, False
    return display_flips(geometry.orientation_codes(), slice_axes(geometry.ndim, axis))


def magnitude(disp, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Length of a displacement per voxel: ``disp`` ``(ndim, *S)`` or ``(1, ndim, *S)`` in voxels ->
    ``(*S)`` in voxels, or in mm when ``spacing`` (mm per voxel along each axis) is given."""
    u = as_array(disp).astype(float)
    if u.ndim >= 3 and u.shape[0] == 1 and u.shape[1] == u.ndim - 2:
        u = u[0]
    if u.shape[0] != u.ndim - 1 or u.shape[0] not in (2, 3):
        raise ValueError(f"disp must be (ndim, *S) or (1, ndim, *S) with ndim 2 or 3, got shape {u.shape}")
    if spacing is not None:
        if len(spacing) != u.shape[0]:
            raise ValueError(f"spacing must have {u.shape[0]} entries (one per axis), got {tuple(spacing)}")
        u = u * np.asarray(spacing, float).reshape(-1, *([1] * (u.ndim - 1)))
    return np.sqrt((u**2).sum(0))


def plane_name(codes: str | None, axis: int) -> str:
    """ "axial", "coronal" or "sagittal" for the plane cut along tensor ``axis`` (from orientation codes)."""
    letter = (codes or "   ")[axis]
    return {"S": "axial", "I": "axial", "A": "coronal", "P": "coronal", "L": "sagittal", "R": "sagittal"}.get(
        letter, f"axis {axis}"
    )
