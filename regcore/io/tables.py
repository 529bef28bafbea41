"""Landmark CSVs and label-name tables."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from regcore.image import Geometry, Landmarks
from regcore.io.errors import ImageIOError, check_readable

# -- landmarks and label names ------------------------------------------------------------
MAX_CSV_BYTES = 64 * 1024**2
"""Landmark and label-name tables larger than this are refused before reading."""


def _read_csv_rows(path: str | os.PathLike) -> tuple[Path, list[str], list[list[str]]]:
    p = check_readable(path)
    if p.is_file() and p.stat().st_size > MAX_CSV_BYTES:
        raise ImageIOError(f"{p}: {p.stat().st_size:,} bytes, more than {MAX_CSV_BYTES:,} for a table")
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ImageIOError(f"{p}: not a readable CSV file ({exc})") from exc
    if len(rows) < 1:
        raise ImageIOError(f"{p}: CSV has no header row")
    return p, [h.strip().lower() for h in rows[0]], rows[1:]


def _column(header: list[str], names: tuple[str, ...]) -> int | None:
    for n in names:
        if n in header:
            return header.index(n)
    return None


def load_landmarks(
    path: str | os.PathLike, geometry: Geometry | None = None, *, units: str = "auto"
) -> Landmarks:
    """Read a landmark CSV with a header into LPS mm.

    Accepted headers: ``id,x,y[,z]``, ``label_value,x_lps,y_lps,z_lps``, ``id,x_px,y_px``.
    ``units="auto"``: columns ending in ``_lps``/``_mm`` and 3D ``x,y,z`` are mm LPS; 2D ``x,y``
    and ``_px`` columns are pixels. Pixel CSVs (histology: x = column, y = row) index the image as
    :func:`load_image` returns it with x along tensor axis 0 and y along axis 1 (checked on
    ../shared/data/histology2d: x reaches 813 > 661 = size of axis 1); (x, y) is taken as a
    continuous voxel index (0 = centre of the first pixel, as the data README states; ImageJ's
    corner convention would differ by 0.5 px). Pixel coordinates are converted with
    ``geometry.index_to_world``; without a geometry they are returned unchanged.
    """
    if units not in ("auto", "mm", "pixel"):
        raise ValueError(f"units must be 'auto', 'mm' or 'pixel', got {units!r}")
    if geometry is not None and not isinstance(geometry, Geometry):
        raise TypeError(f"geometry must be a Geometry or None, got {type(geometry).__name__}")
    p, header, rows = _read_csv_rows(path)
    axes = []
    for axis in "xyz":
        col = _column(header, (axis, f"{axis}_lps", f"{axis}_mm", f"{axis}_px", f"{axis}_pixel"))
        if col is not None:
            axes.append(col)
    if len(axes) not in (2, 3):
        raise ImageIOError(f"{p}: expected a header row with columns x,y[,z] (or x_lps,...), got {header}")
    id_col = _column(header, ("id", "label_value", "label", "name", "landmark", "point"))
    names = [header[c] for c in axes]
    if units == "auto":
        pixel = any(n.endswith(("_px", "_pixel")) for n in names) or (len(axes) == 2 and names == ["x", "y"])
    else:
        pixel = units == "pixel"
    if not rows:
        raise ImageIOError(f"{p}: no landmark rows after the header")
    try:
        pts = np.array([[float(r[c]) for c in axes] for r in rows], dtype=float).reshape(len(rows), len(axes))
    except (ValueError, IndexError) as exc:
        raise ImageIOError(f"{p}: non-numeric or missing coordinate ({exc})") from exc
    if not np.all(np.isfinite(pts)):
        raise ImageIOError(f"{p}: coordinates contain NaN or infinite values")
    ids = [r[id_col].strip() if id_col is not None else str(k + 1) for k, r in enumerate(rows)]
    if len(set(ids)) != len(ids):
        raise ImageIOError(f"{p}: landmark ids are not unique")
    if geometry is not None and geometry.ndim != pts.shape[1]:
        raise ImageIOError(
            f"{p}: {pts.shape[1]}D points for a {geometry.ndim}D image (geometry is "
            f"{geometry.ndim}D); give x,y{',z' if geometry.ndim == 3 else ''} columns"
        )
    if pixel and geometry is not None:
        pts = geometry.index_to_world_points(pts)
    return Landmarks(pts, tuple(ids))


def save_landmarks(landmarks: Landmarks, path: str | os.PathLike) -> Path:
    """Write ``id,x_lps,y_lps[,z_lps]`` (mm, LPS); :func:`load_landmarks` reads it back unchanged."""
    if not isinstance(landmarks, Landmarks):
        raise TypeError(f"landmarks must be a Landmarks, got {type(landmarks).__name__}")
    p = Path(path)
    cols = ["x_lps", "y_lps", "z_lps"][: landmarks.ndim]
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", *cols])
            for i, pt in zip(landmarks.ids, landmarks.points):
                w.writerow([i, *(repr(float(v)) for v in pt)])
    except OSError as exc:
        raise ImageIOError(f"{p}: could not write landmarks ({exc})") from exc
    return p


def load_label_names(path: str | os.PathLike) -> dict[int, str]:
    """Label value -> name from a CSV with a header (``seg35_id,name,...``, ``index,name``, ``value,name``)."""
    p, header, rows = _read_csv_rows(path)
    value_col = _column(header, ("value", "label", "label_value", "index", "id", "seg35_id"))
    if value_col is None:
        value_col = next((i for i, h in enumerate(header) if h.endswith("_id") or h.endswith("id")), None)
    name_col = _column(header, ("name", "label_name", "structure", "region"))
    if value_col is None or name_col is None:
        raise ImageIOError(
            f"{p}: expected a value column (value/index/seg35_id) and a 'name' column, got {header}"
        )
    out: dict[int, str] = {}
    for k, r in enumerate(rows, start=2):
        try:
            out[int(float(r[value_col]))] = r[name_col].strip()
        except (ValueError, IndexError) as exc:
            raise ImageIOError(f"{p}: line {k}: bad label row {r} ({exc})") from exc
    return out
