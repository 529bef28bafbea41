"""Image geometry read from a file header, validated before anything else uses it.

A header may hold an infinite origin, a zero or negative voxel size, or axes that are parallel
(a singular direction) or sheared. Such an image would load, register, and fail much later (e.g.
while writing the displacement field). :func:`checked_geometry` refuses it at load time with an
:class:`~regcore.io.errors.ImageIOError` naming the file and the header field, in the words of
the file's own format (``GeometryFields``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regcore.image import Geometry
from regcore.io.errors import ImageIOError

ORTHOGONALITY_TOL = 1e-3
"""Largest |cos(angle)| between two axes (and | |axis| - 1 |) accepted as orthonormal (~0.06 degrees)."""
SINGULAR_TOL = 1e-6
"""|det(direction)| below this (unit-length axes) means the axes are (nearly) parallel."""


@dataclass(frozen=True)
class GeometryFields:
    """How one file format names its origin, voxel size and axis directions."""

    origin: str
    spacing: str
    direction: str


NIFTI_SFORM = GeometryFields(
    "sform offset (srow_x/y/z[3])", "sform axis lengths (srow_x/y/z)", "sform axes (srow_x/y/z)"
)
NIFTI_QFORM = GeometryFields("qform offset (qoffset_x/y/z)", "pixdim", "qform rotation (quatern_b/c/d)")
NIFTI_PIXDIM = GeometryFields("header origin", "pixdim", "pixdim")
METAIMAGE = GeometryFields("Offset", "ElementSpacing", "TransformMatrix")
NRRD = GeometryFields("space origin", "space directions (lengths)", "space directions")
DICOM = GeometryFields(
    "ImagePositionPatient (0020,0032)",
    "PixelSpacing (0028,0030) / slice spacing",
    "ImageOrientationPatient (0020,0037) / slice positions",
)


def fields_for(suffix: str) -> GeometryFields:
    """The field names of a SimpleITK-read format, by file suffix."""
    return (
        NRRD
        if suffix in (".nrrd", ".nhdr")
        else METAIMAGE
        if suffix in (".mha", ".mhd")
        else GeometryFields("origin", "spacing", "direction")
    )


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in np.ravel(values)) + ")"


def checked_geometry(path: Path, shape, spacing, origin, direction, fields: GeometryFields) -> Geometry:
    """A Geometry from header parts, or ImageIOError naming ``path`` and the offending field.

    Checks: sizes >= 1; finite voxel sizes > 0; finite origin; finite, non-singular and
    orthonormal (within :data:`ORTHOGONALITY_TOL`) axis directions.
    """
    shape = tuple(int(s) for s in shape)
    n = len(shape)
    if any(s < 1 for s in shape):
        raise ImageIOError(f"{path}: header declares shape {shape} with a zero or negative size")
    sp = np.asarray(spacing, dtype=float).reshape(-1)
    org = np.asarray(origin, dtype=float).reshape(-1)
    d = np.asarray(direction, dtype=float)
    if sp.shape != (n,) or org.shape != (n,) or d.shape != (n, n):
        raise ImageIOError(f"{path}: header geometry does not match its {n}D shape {shape}")
    bad = [i for i, s in enumerate(sp) if not np.isfinite(s) or s <= 0]
    if bad:
        raise ImageIOError(
            f"{path}: {fields.spacing} gives voxel size {_fmt(sp)} mm; every axis needs a finite "
            f"size > 0 (axis {bad[0]} has {sp[bad[0]]:.6g})"
        )
    if not np.all(np.isfinite(org)):
        raise ImageIOError(f"{path}: {fields.origin} is not finite {_fmt(org)}; fix the header's origin")
    if not np.all(np.isfinite(d)):
        raise ImageIOError(
            f"{path}: {fields.direction} holds NaN or infinite values; fix the header's orientation"
        )
    norms = np.linalg.norm(d, axis=0)
    if np.any(norms < SINGULAR_TOL) or abs(np.linalg.det(d / np.where(norms > 0, norms, 1))) < SINGULAR_TOL:
        i, j = _most_parallel(d)
        raise ImageIOError(
            f"{path}: {fields.direction} is singular: axes {i} and {j} are parallel, so voxels "
            "have no valid position in space; fix the header's orientation"
        )
    gram = d.T @ d
    off = np.abs(gram - np.diag(np.diag(gram)))
    if np.any(np.abs(norms - 1.0) > ORTHOGONALITY_TOL):
        k = int(np.argmax(np.abs(norms - 1.0)))
        raise ImageIOError(
            f"{path}: {fields.direction} is not orthonormal: axis {k} has length {norms[k]:.6g} (expected 1)"
        )
    if off.max() > ORTHOGONALITY_TOL:
        i, j = np.unravel_index(int(np.argmax(off)), off.shape)
        angle = float(np.degrees(np.arccos(np.clip(gram[i, j], -1.0, 1.0))))
        raise ImageIOError(
            f"{path}: {fields.direction} is sheared: axes {min(i, j)} and {max(i, j)} meet at "
            f"{angle:.2f} degrees, not 90; resample the image onto an orthogonal grid first"
        )
    return Geometry(shape, tuple(sp), tuple(org), tuple(map(tuple, d)))


def checked_geometry_from_matrix(path: Path, shape, index_to_world, fields: GeometryFields) -> Geometry:
    """:func:`checked_geometry` from an ``(n+1, n+1)`` voxel -> LPS mm matrix (axis lengths = spacing)."""
    n = len(tuple(shape))
    m = np.asarray(index_to_world, dtype=float)
    a = m[:n, :n]
    if not np.all(np.isfinite(a)):
        raise ImageIOError(
            f"{path}: {fields.direction} holds NaN or infinite values; fix the header's orientation"
        )
    spacing = np.linalg.norm(a, axis=0)
    if np.any(spacing <= 0):
        axis = int(np.argmin(spacing))
        raise ImageIOError(
            f"{path}: {fields.spacing} gives axis {axis} zero length; every axis needs a voxel size > 0"
        )
    return checked_geometry(path, shape, spacing, m[:n, n], a / spacing, fields)


def _most_parallel(d: np.ndarray) -> tuple[int, int]:
    n = d.shape[0]
    unit = d / np.where(np.linalg.norm(d, axis=0) > 0, np.linalg.norm(d, axis=0), 1)
    pairs = [(abs(float(unit[:, i] @ unit[:, j])), i, j) for i in range(n) for j in range(i + 1, n)]
    _, i, j = max(pairs)
    return i, j
