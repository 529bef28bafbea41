"""Target registration error (TRE) in mm between corresponding landmarks.

Direction: a fixed landmark ``p`` (LPS mm) is mapped to the fixed voxel index ``x``, moved by
the transform ``phi(x) = x + u(x)`` (fixed voxel -> moving voxel on the fixed grid; ``u`` is
linearly interpolated between voxels), mapped back to LPS mm with the FIXED geometry (the moving
image was resampled onto the fixed grid) and compared with the matching moving landmark.
With a zero displacement this is the plain distance between the two point sets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from regcore.image import Geometry, Landmarks


def landmark_stats(distances_mm: dict[str, float]) -> dict:
    """Summary of per-point distances: ``{"tre": {id: mm}, "mean_mm", "median_mm", "std_mm", "max_mm", "n"}``."""
    v = np.array(list(distances_mm.values()), dtype=float)
    if v.size == 0:
        nan = float("nan")
        return {"tre": {}, "mean_mm": nan, "median_mm": nan, "std_mm": nan, "max_mm": nan, "n": 0}
    return {
        "tre": {k: float(x) for k, x in distances_mm.items()},
        "mean_mm": float(v.mean()),
        "median_mm": float(np.median(v)),
        "std_mm": float(v.std()),
        "max_mm": float(v.max()),
        "n": int(v.size),
    }


def sample_displacement(displacement, index_points: np.ndarray) -> np.ndarray:
    """Displacement ``(1, ndim, *S)`` (voxels) linearly interpolated at ``(N, ndim)`` voxel indices -> ``(N, ndim)``.

    Points outside the grid take the value at the nearest border voxel.
    """
    u = (
        displacement.detach().cpu().double().numpy()
        if isinstance(displacement, torch.Tensor)
        else np.asarray(displacement, dtype=float)
    )
    if u.ndim == len(index_points[0]) + 2:
        if u.shape[0] != 1:
            raise ValueError(f"displacement must have batch size 1, got shape {u.shape}")
        u = u[0]
    from scipy import ndimage  # imported on use: runs without landmarks never need it

    coords = np.asarray(index_points, dtype=float).T
    return np.stack(
        [ndimage.map_coordinates(u[c], coords, order=1, mode="nearest") for c in range(u.shape[0])], 1
    )


@dataclass(frozen=True, eq=False)
class LandmarkErrors:
    """Per-landmark positions and errors of one registration (matched ids, in fixed order).

    Attributes:
        ids: matched landmark ids.
        fixed_mm, moving_mm: ``(N, ndim)`` LPS mm of the fixed and moving landmarks.
        mapped_mm: ``(N, ndim)`` LPS mm of ``phi(fixed landmark)`` (= ``fixed_mm`` without a displacement).
        before_mm: ``(N,)`` distance fixed -> moving landmark in mm (no registration).
        after_mm: ``(N,)`` distance ``phi(fixed)`` -> moving landmark in mm (the TRE).
        fixed_index, moving_index, mapped_index: the three point sets as ``(N, ndim)`` continuous
            voxel indices of the FIXED grid (for drawing on fixed-grid slices); None without a geometry.
        unmatched: ids present in only one set (ignored).
        warnings: human-readable notes (unmatched ids, landmarks outside the grid).
    """

    ids: list[str]
    fixed_mm: np.ndarray
    moving_mm: np.ndarray
    mapped_mm: np.ndarray
    before_mm: np.ndarray
    after_mm: np.ndarray
    fixed_index: np.ndarray | None = None
    moving_index: np.ndarray | None = None
    mapped_index: np.ndarray | None = None
    unmatched: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def stats(self, which: str = "after") -> dict:
        """:func:`landmark_stats` of ``after_mm`` (TRE) or ``before_mm``."""
        if which not in ("after", "before"):
            raise ValueError(f"which must be 'after' or 'before', got {which!r}")
        values = self.after_mm if which == "after" else self.before_mm
        return landmark_stats(dict(zip(self.ids, values.tolist())))


def landmark_errors(
    fixed_landmarks: Landmarks,
    moving_landmarks: Landmarks,
    displacement=None,
    fixed_geometry: Geometry | None = None,
) -> LandmarkErrors:
    """Per-landmark before/after errors (see module docstring for the direction).

    Args:
        fixed_landmarks, moving_landmarks: :class:`Landmarks` in LPS mm, matched by id.
        displacement: ``(1, ndim, *S)`` voxel field of the fixed grid, fixed -> moving; None = identity.
        fixed_geometry: the fixed grid (required with a displacement; with it the voxel-index
            arrays of :class:`LandmarkErrors` are filled).
    """
    for arg, lm in (("fixed_landmarks", fixed_landmarks), ("moving_landmarks", moving_landmarks)):
        if not isinstance(lm, Landmarks):
            raise TypeError(f"{arg} must be a regcore.image.Landmarks, got {type(lm).__name__}")
    if fixed_landmarks.ndim != moving_landmarks.ndim:
        raise ValueError(
            f"landmark sets differ in dimension: {fixed_landmarks.ndim} vs {moving_landmarks.ndim}"
        )
    if fixed_geometry is not None and not isinstance(fixed_geometry, Geometry):
        raise TypeError(f"fixed_geometry must be a Geometry or None, got {type(fixed_geometry).__name__}")
    if displacement is not None and fixed_geometry is None:
        raise TypeError("fixed_geometry must be a Geometry when a displacement is given, got NoneType")
    if fixed_geometry is not None and fixed_geometry.ndim != fixed_landmarks.ndim:
        raise ValueError(
            f"landmarks are {fixed_landmarks.ndim}D but the fixed grid is {fixed_geometry.ndim}D"
        )
    pts_f, pts_m, ids = fixed_landmarks.matched(moving_landmarks)
    warnings = []
    unmatched = sorted(set(fixed_landmarks.ids) ^ set(moving_landmarks.ids))
    if unmatched:
        warnings.append(
            f"{len(unmatched)} landmark id(s) present in only one set were ignored: {unmatched[:10]}"
        )
    mapped = pts_f
    idx_f = idx_m = idx_mapped = None
    if fixed_geometry is not None:
        idx_f = fixed_geometry.world_to_index_points(pts_f)
        idx_m = fixed_geometry.world_to_index_points(pts_m)
        idx_mapped = idx_f
    if displacement is not None:
        shape = tuple(displacement.shape[-fixed_geometry.ndim :])
        if (
            shape != fixed_geometry.shape
            or displacement.shape[-fixed_geometry.ndim - 1] != fixed_geometry.ndim
        ):
            raise ValueError(
                f"displacement {tuple(displacement.shape)} does not match the fixed grid "
                f"{fixed_geometry.shape} (expected (1, {fixed_geometry.ndim}, *shape))"
            )
        outside = np.any((idx_f < -0.5) | (idx_f > np.array(fixed_geometry.shape) - 0.5), axis=1)
        if outside.any():
            warnings.append(
                f"{int(outside.sum())} fixed landmark(s) lie outside the fixed grid; their "
                f"displacement is taken from the nearest border voxel: "
                f"{[ids[i] for i in np.nonzero(outside)[0][:10]]}"
            )
        idx_mapped = idx_f + sample_displacement(displacement, idx_f)
        mapped = fixed_geometry.index_to_world_points(idx_mapped)
    return LandmarkErrors(
        ids=list(ids),
        fixed_mm=pts_f,
        moving_mm=pts_m,
        mapped_mm=np.asarray(mapped, float),
        before_mm=np.linalg.norm(pts_f - pts_m, axis=1),
        after_mm=np.linalg.norm(mapped - pts_m, axis=1),
        fixed_index=idx_f,
        moving_index=idx_m,
        mapped_index=idx_mapped,
        unmatched=unmatched,
        warnings=warnings,
    )


def target_registration_error(
    fixed_landmarks: Landmarks,
    moving_landmarks: Landmarks,
    displacement=None,
    fixed_geometry: Geometry | None = None,
) -> dict:
    """TRE in mm for landmarks matched by id (see module docstring for the direction).

    Args:
        fixed_landmarks, moving_landmarks: :class:`Landmarks` in LPS mm.
        displacement: ``(1, ndim, *S)`` voxel field of the fixed grid, fixed -> moving; None = identity.
        fixed_geometry: the fixed grid (required with a displacement).
    Returns:
        :func:`landmark_stats` dict plus ``ids`` (matched, in fixed order), ``unmatched`` (ids present
        in only one set) and ``warnings`` (e.g. landmarks outside the fixed grid). Per-landmark
        arrays (before and after, voxel positions): :func:`landmark_errors`.
    """
    err = landmark_errors(fixed_landmarks, moving_landmarks, displacement, fixed_geometry)
    out = err.stats("after")
    out.update(ids=list(err.ids), unmatched=err.unmatched, warnings=err.warnings)
    return out
