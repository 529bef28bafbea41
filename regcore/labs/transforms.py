"""Rigid, affine and deformable maps on a 2D grid, as voxel displacements (fixed -> moving).

All functions return ``u`` ``(2, H, W)`` in voxels with ``phi(x) = x + u(x)``; rotation and
scaling act about the image centre. Angles in degrees, translations in voxels.
"""

from __future__ import annotations

import numpy as np


def _centred_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(shape) != 2 or min(shape) < 2:
        raise ValueError(f"shape must be (H, W) with both >= 2, got {shape}")
    c = (np.asarray(shape, float) - 1) / 2
    ii, jj = np.meshgrid(np.arange(shape[0], dtype=float), np.arange(shape[1], dtype=float), indexing="ij")
    return ii - c[0], jj - c[1], c


def matrix_displacement(
    matrix: np.ndarray, translation: tuple[float, float], shape: tuple[int, int]
) -> np.ndarray:
    """u(x) = A (x - c) + c + t - x for a 2x2 matrix A about the centre c."""
    a = np.asarray(matrix, dtype=float)
    if a.shape != (2, 2):
        raise ValueError(f"matrix must be 2x2, got {a.shape}")
    di, dj, _ = _centred_grid(shape)
    pi = a[0, 0] * di + a[0, 1] * dj + translation[0]
    pj = a[1, 0] * di + a[1, 1] * dj + translation[1]
    return np.stack([pi - di, pj - dj])


def rigid_displacement(shape, angle_deg: float = 0.0, tx: float = 0.0, ty: float = 0.0) -> np.ndarray:
    """Rotation by ``angle_deg`` about the centre, then translation (tx, ty) voxels."""
    t = np.deg2rad(angle_deg)
    return matrix_displacement(np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]), (tx, ty), shape)


def affine_displacement(
    shape, angle_deg=0.0, scale_x=1.0, scale_y=1.0, shear=0.0, tx=0.0, ty=0.0
) -> np.ndarray:
    """Rotation @ shear @ scale about the centre, then translation."""
    if scale_x <= 0 or scale_y <= 0:
        raise ValueError(f"scale_x and scale_y must be > 0, got {scale_x}, {scale_y}")
    t = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    a = rot @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([scale_x, scale_y])
    return matrix_displacement(a, (tx, ty), shape)


def deformable_displacement(shape, amplitude: float = 3.0, waves: float = 2.0, seed: int = 0) -> np.ndarray:
    """Smooth sinusoidal field: ``amplitude`` voxels peak, ``waves`` periods across the image."""
    if waves <= 0:
        raise ValueError(f"waves must be > 0, got {waves}")
    rng = np.random.default_rng(seed)
    ph = rng.uniform(0, 2 * np.pi, 4)
    h, w = shape
    ii, jj = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    k = 2 * np.pi * waves
    return amplitude * np.stack(
        [
            np.sin(k * jj + ph[0]) * np.cos(k * ii / 2 + ph[1]),
            np.sin(k * ii + ph[2]) * np.cos(k * jj / 2 + ph[3]),
        ]
    )


def warp_image(image: np.ndarray, disp: np.ndarray, order: int = 1) -> np.ndarray:
    """``image o phi`` with scipy (linear by default, nearest edge) -> same shape."""
    from scipy.ndimage import map_coordinates

    image = np.asarray(image, dtype=float)
    if disp.shape != (2,) + image.shape:
        raise ValueError(f"disp must be (2, *image.shape) = {(2,) + image.shape}, got {disp.shape}")
    ii, jj = np.meshgrid(np.arange(image.shape[0]), np.arange(image.shape[1]), indexing="ij")
    return map_coordinates(image, [ii + disp[0], jj + disp[1]], order=order, mode="nearest")
