"""Shared pieces of regcore.io: the error type, path checks and size limits."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

DEFAULT_MAX_VOXELS = 512 * 1024**2
"""Largest voxel count :func:`load_image` reads (checked from the header before the data)."""

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
_LABEL_NAME_HINT = re.compile(r"seg|label|mask|atlas|parc|aseg", re.IGNORECASE)
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


class ImageIOError(ValueError):
    """A file could not be read or written; the message names the file and the problem."""


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _check_readable(path: str | os.PathLike) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = Path(path)
    if not p.exists():
        raise ImageIOError(f"{p}: file not found")
    if p.is_file() and p.stat().st_size == 0:
        raise ImageIOError(f"{p}: file is empty (0 bytes)")
    return p


def _check_voxels(path: Path, shape: tuple[int, ...], max_voxels: int) -> None:
    n = int(np.prod([int(s) for s in shape], dtype=np.float64))
    if n > max_voxels:
        raise ImageIOError(
            f"{path}: header declares {n:,} voxels (shape {tuple(shape)}), more than max_voxels={max_voxels:,}; "
            "crop or downsample it first, or pass a larger max_voxels"
        )


def _spatial_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Drop trailing singleton axes beyond 2D; refuse vector/4D data."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise ImageIOError(
            f"{path}: {len(shape)}D data of shape {shape} (multi-channel or time series); regcore expects one "
            "2D or 3D volume: extract a single volume/channel first (e.g. nibabel.funcs.four_to_three)"
        )
    if len(shape) < 2:
        raise ImageIOError(f"{path}: data of shape {shape} is not a 2D or 3D image")
    return shape


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__
