"""Errors of regcore.io and the checks that raise them: every problem with a file is an
:class:`ImageIOError` (a ``ValueError``) whose message names the file and the problem."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MAX_VOXELS = 512 * 1024**2
"""Largest voxel count :func:`regcore.io.load_image` reads (checked from the header before the data)."""


class ImageIOError(ValueError):
    """A file could not be read or written; the message names the file and the problem."""


def check_readable(path: str | os.PathLike) -> Path:
    """``path`` as a Path; TypeError for a non-path, ImageIOError when missing or empty."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = Path(path)
    if "\x00" in str(p):
        raise ImageIOError(f"{str(p)!r}: path contains a NUL character")
    from regcore.io.confine import outside_roots

    refused = outside_roots(p)
    if refused:
        raise ImageIOError(f"{p}: {refused}")
    if not p.exists():
        raise ImageIOError(f"{p}: file not found")
    if p.is_file() and p.stat().st_size == 0:
        raise ImageIOError(f"{p}: file is empty (0 bytes)")
    return p


def check_voxels(path: Path, shape: tuple[int, ...], max_voxels: int) -> None:
    """ImageIOError when a header's ``shape`` holds more than ``max_voxels`` voxels."""
    n = 1
    for s in shape:
        n *= max(int(s), 0)
    if n > max_voxels:
        raise ImageIOError(
            f"{path}: header declares {n:,} voxels (shape {tuple(shape)}), more than max_voxels={max_voxels:,}; "
            "crop or downsample it first, or pass a larger max_voxels"
        )


def spatial_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Drop trailing singleton axes beyond 2D; ImageIOError for vector/4D or < 2D data."""
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


def first_line(exc: Exception) -> str:
    """The most telling line of a library exception's message (its last non-empty line), for our messages."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__
