"""Target registration error (TRE) in mm between corresponding landmarks.

Direction: a fixed landmark ``p`` (LPS mm) is mapped to the fixed voxel index ``x``, moved by
the transform ``phi(x) = x + u(x)`` (fixed voxel -> moving voxel on the fixed grid; ``u`` is
linearly interpolated between voxels), mapped back to LPS mm with the FIXED geometry (the moving
image was resampled onto the fixed grid) and compared with the matching moving landmark.
With a zero displacement this is the plain distance between the two point sets.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from regcore.image import Geometry, Landmarks


def landmark_stats(distances_mm: dict[str, float]) -> dict:
    """Summary of per-point distances: ``{"tre": {id: mm}, "mean_mm", "median_mm", "std_mm", "max_mm", "n"}``."""
    v = np.array(list(distances_mm.values()), dtype=float)
    if v.size == 0:
        nan = float("nan")
        return {"tre": {}, "mean_mm": nan, "median_mm": nan, "std_mm": nan, "max_mm": nan, "n": 0}
    return {"tre": {k: float(x) for k, x in distances_mm.items()}, "mean_mm": float(v.mean()),
            "median_mm": float(np.median(v)), "std_mm": float(v.std()), "max_mm": float(v.max()), "n": int(v.size)}


def sample_displacement(displacement, index_points: np.ndarray) -> np.ndarray:
    """Displacement ``(1, ndim, *S)`` (voxels) linearly interpolated at ``(N, ndim)`` voxel indices -> ``(N, ndim)``.

    Points outside the grid take the value at the nearest border voxel.
    """
    u = displacement.detach().cpu().double().numpy() if isinstance(displacement, torch.Tensor) else np.asarray(
        displacement, dtype=float)
    if u.ndim == len(index_points[0]) + 2:
        if u.shape[0] != 1:
            raise ValueError(f"displacement must have batch size 1, got shape {u.shape}")
        u = u[0]
    coords = np.asarray(index_points, dtype=float).T
    return np.stack([ndimage.map_coordinates(u[c], coords, order=1, mode="nearest") for c in range(u.shape[0])], 1)


def target_registration_error(fixed_landmarks: Landmarks, moving_landmarks: Landmarks,
                              displacement=None, fixed_geometry: Geometry | None = None) -> dict:
    """TRE in mm for landmarks matched by id (see module docstring for the direction).

    Args:
        fixed_landmarks, moving_landmarks: :class:`Landmarks` in LPS mm.
        displacement: ``(1, ndim, *S)`` voxel field of the fixed grid, fixed -> moving; None = identity.
        fixed_geometry: the fixed grid (required with a displacement).
    Returns:
        :func:`landmark_stats` dict plus ``ids`` (matched, in fixed order), ``unmatched`` (ids present
        in only one set) and ``warnings`` (e.g. landmarks outside the fixed grid).
    """
    for arg, lm in (("fixed_landmarks", fixed_landmarks), ("moving_landmarks", moving_landmarks)):
        if not isinstance(lm, Landmarks):
            raise TypeError(f"{arg} must be a regcore.image.Landmarks, got {type(lm).__name__}")
    if fixed_landmarks.ndim != moving_landmarks.ndim:
        raise ValueError(f"landmark sets differ in dimension: {fixed_landmarks.ndim} vs {moving_landmarks.ndim}")
    pts_f, pts_m, ids = fixed_landmarks.matched(moving_landmarks)
    warnings = []
    unmatched = sorted(set(fixed_landmarks.ids) ^ set(moving_landmarks.ids))
    if unmatched:
        warnings.append(f"{len(unmatched)} landmark id(s) present in only one set were ignored: {unmatched[:10]}")
    mapped = pts_f
    if displacement is not None:
        if not isinstance(fixed_geometry, Geometry):
            raise TypeError(f"fixed_geometry must be a Geometry when a displacement is given, "
                            f"got {type(fixed_geometry).__name__}")
        shape = tuple(displacement.shape[-fixed_geometry.ndim:])
        if shape != fixed_geometry.shape or displacement.shape[-fixed_geometry.ndim - 1] != fixed_geometry.ndim:
            raise ValueError(f"displacement {tuple(displacement.shape)} does not match the fixed grid "
                             f"{fixed_geometry.shape} (expected (1, {fixed_geometry.ndim}, *shape))")
        if fixed_geometry.ndim != fixed_landmarks.ndim:
            raise ValueError(f"landmarks are {fixed_landmarks.ndim}D but the fixed grid is {fixed_geometry.ndim}D")
        idx = fixed_geometry.world_to_index_points(pts_f)
        outside = np.any((idx < -0.5) | (idx > np.array(fixed_geometry.shape) - 0.5), axis=1)
        if outside.any():
            warnings.append(f"{int(outside.sum())} fixed landmark(s) lie outside the fixed grid; their "
                            f"displacement is taken from the nearest border voxel: {[ids[i] for i in np.nonzero(outside)[0][:10]]}")
        mapped = fixed_geometry.index_to_world_points(idx + sample_displacement(displacement, idx))
    dist = np.linalg.norm(mapped - pts_m, axis=1)
    out = landmark_stats(dict(zip(ids, dist.tolist())))
    out.update(ids=list(ids), unmatched=unmatched, warnings=warnings)
    return out
