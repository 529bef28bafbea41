"""Read and write images, landmarks, label names, displacement fields and affine transforms.

Conventions (docs/ARCHITECTURE.md):

* Tensor axis order = the file's voxel index order (NIfTI i, j, k as nibabel stores it;
  SimpleITK arrays are transposed on load). World frame = LPS mm; a NIfTI's RAS affine is
  turned into LPS by negating its first two rows.
* Displacements ``(1, n, *S)`` are in voxels of the fixed grid and map fixed -> moving.
  On disk they are ITK displacement fields: vectors in LPS mm on the fixed grid, so that
  ``sitk.DisplacementFieldTransform`` maps a fixed point ``p`` to ``p + d(p)`` in the moving frame.
* Every error about a file is an :class:`ImageIOError` (a ``ValueError``) naming the file.
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from regcore.image import Geometry, Image, Landmarks

__all__ = [
    "ImageIOError", "DEFAULT_MAX_VOXELS", "load_image", "save_image", "load_landmarks",
    "save_landmarks", "load_label_names", "save_displacement", "load_displacement",
    "affine_voxel_to_world", "save_affine_tfm", "load_affine_tfm",
]

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


# -- images: readers ----------------------------------------------------------------------
def _read_nifti(path: Path, max_voxels: int) -> tuple[np.ndarray, Geometry, dict]:
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for bad headers / bad gzip
        raise ImageIOError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    _check_voxels(path, img.shape, max_voxels)
    shape = _spatial_shape(path, img.shape)
    try:
        data = np.asarray(img.dataobj)
    except Exception as exc:  # truncated/corrupt gzip: EOFError, zlib.error, OSError, ValueError
        raise ImageIOError(f"{path}: voxel data is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    data = data.reshape(shape)
    affine, meta = _nifti_affine(img)
    lps = _RAS_TO_LPS @ affine
    n = len(shape)
    matrix = np.eye(n + 1)
    matrix[:n, :n] = lps[:n, :n]
    matrix[:n, n] = lps[:n, 3]
    try:
        geometry = Geometry.from_matrix(shape, matrix)
    except ValueError as exc:
        raise ImageIOError(f"{path}: invalid affine in header: {exc}") from exc
    return data, geometry, meta


def _nifti_affine(img) -> tuple[np.ndarray, dict]:
    """The RAS affine nibabel reports, except where ITK would distrust the sform: when a qform exists
    and the sform has shear or scales that disagree with pixdim, use the qform (as SimpleITK does)."""
    header = img.header
    affine = np.asarray(img.affine, dtype=float)
    meta: dict = {"format": "nifti", "warnings": []}
    if int(header["sform_code"]) > 0 and int(header["qform_code"]) > 0:
        rot = np.asarray(header.get_sform(), dtype=float)[:3, :3]
        norms = np.linalg.norm(rot, axis=0)
        pixdim = np.asarray(header["pixdim"][1:4], dtype=float)
        orthogonal = np.allclose(rot.T @ rot, np.diag(norms**2), atol=1e-4 * max(norms.max(), 1e-12) ** 2)
        if not (orthogonal and np.allclose(norms, pixdim, rtol=1e-4)):
            affine = np.asarray(header.get_qform(), dtype=float)
            meta["warnings"].append("sform has shear or scales that disagree with pixdim; used the qform (as ITK)")
    return affine, meta


def _geometry_from_sitk(image, n: int) -> Geometry:
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)[:n, :n]
    return Geometry(
        tuple(image.GetSize()[:n]), tuple(image.GetSpacing()[:n]), tuple(image.GetOrigin()[:n]),
        tuple(map(tuple, direction)),
    )


def _read_sitk_image(path: Path, image, size: tuple[int, ...], components: int) -> tuple[np.ndarray, Geometry]:
    import SimpleITK as sitk

    if components != 1:
        raise ImageIOError(
            f"{path}: image has {components} components per voxel (vector/RGB); regcore expects one channel: "
            "convert to grayscale or split the channels first"
        )
    shape = _spatial_shape(path, size)
    data = sitk.GetArrayFromImage(image).T.reshape(shape)  # (k, j, i) -> (i, j, k)
    return np.ascontiguousarray(data), _geometry_from_sitk(image, len(shape))


def _read_itk(path: Path, max_voxels: int) -> tuple[np.ndarray, Geometry, dict]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ImageIOError(f"{path}: not a readable {_suffix(path)} image ({_first_line(exc)})") from exc
    size = tuple(reader.GetSize())
    _check_voxels(path, size, max_voxels)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise ImageIOError(f"{path}: voxel data is truncated or corrupt ({_first_line(exc)})") from exc
    data, geometry = _read_sitk_image(path, image, size, reader.GetNumberOfComponents())
    return data, geometry, {"format": _suffix(path).lstrip(".")}


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def _dicom_series_dirs(root: Path) -> list[tuple[Path, str, list[str]]]:
    import SimpleITK as sitk

    found = []
    for folder in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        for sid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ():
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid)
            found.append((folder, sid, list(files)))
    return found


def _read_dicom_dir(path: Path, root: Path, max_voxels: int) -> tuple[np.ndarray, Geometry, dict]:
    import SimpleITK as sitk

    series = _dicom_series_dirs(root)
    if not series:
        raise ImageIOError(f"{path}: no DICOM series found (expected a folder or .zip of .dcm slices)")
    series.sort(key=lambda s: -len(s[2]))
    _, sid, files = series[0]
    meta: dict = {"format": "dicom", "series_uid": sid}
    if len(series) > 1:
        meta["warnings"] = [f"{len(series)} DICOM series found; loaded the largest ({len(files)} slices, UID {sid})"]
    info = sitk.ImageFileReader()
    info.SetFileName(files[0])
    try:
        info.ReadImageInformation()
    except RuntimeError as exc:
        raise ImageIOError(f"{path}: unreadable DICOM slice {Path(files[0]).name} ({_first_line(exc)})") from exc
    _check_voxels(path, (*info.GetSize()[:2], len(files)), max_voxels)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise ImageIOError(f"{path}: DICOM series could not be read ({_first_line(exc)})") from exc
    data, geometry = _read_sitk_image(path, image, tuple(image.GetSize()), image.GetNumberOfComponentsPerPixel())
    return data, geometry, meta


def _read_dicom_zip(path: Path, max_voxels: int) -> tuple[np.ndarray, Geometry, dict]:
    try:
        with zipfile.ZipFile(path) as zf:
            total = sum(i.file_size for i in zf.infolist())
            if total > 8 * max_voxels:
                raise ImageIOError(f"{path}: zip expands to {total:,} bytes, more than 8 * max_voxels; refusing")
            with tempfile.TemporaryDirectory(prefix="regcore_dicom_") as tmp:
                zf.extractall(tmp)  # zipfile strips absolute paths and '..' components
                return _read_dicom_dir(path, Path(tmp), max_voxels)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ImageIOError(f"{path}: not a readable zip archive ({exc})") from exc


# -- images: public -----------------------------------------------------------------------
def _looks_like_labels(path: Path, data: np.ndarray) -> bool:
    """Integer data with few values (<= 64), or sparse values, or a label-like file name."""
    if data.dtype.kind not in "iub":
        return False
    hinted = bool(_LABEL_NAME_HINT.search(path.name))
    flat = data.ravel(order="K")  # no copy for Fortran-ordered NIfTI arrays
    probe = flat[:: max(1, flat.size // 200_000)]
    if len(np.unique(probe)) > (4096 if hinted else 1000):
        return False
    if data.dtype in (np.uint8, np.uint16, np.bool_):
        values = np.flatnonzero(np.bincount(flat.view(np.uint8) if data.dtype == np.bool_ else flat))
    else:
        values = np.unique(flat)
    if len(values) <= 64 or hinted:
        return len(values) <= 4096
    coverage = len(values) / (float(values[-1]) - float(values[0]) + 1.0)
    return len(values) <= 1000 and coverage < 0.75


def load_image(
    path: str | os.PathLike,
    *,
    is_labels: bool | None = None,
    label_names: Mapping[int, str] | str | os.PathLike | None = None,
    allow_nan: bool = False,
    max_voxels: int = DEFAULT_MAX_VOXELS,
) -> Image:
    """Load a 2D/3D image: NIfTI (.nii/.nii.gz), MHA/MHD/NRRD, or a DICOM series (folder or .zip).

    Args:
        path: the file or DICOM folder.
        is_labels: True/False, or None to guess (integer data with few or sparse values,
            or a file name containing seg/label/mask/atlas/parc).
        label_names: value -> name mapping, or a CSV for :func:`load_label_names` (implies labels).
        allow_nan: replace NaN/inf voxels by 0 (with a warning in ``meta["warnings"]``)
            instead of raising.
        max_voxels: refuse files whose header declares more voxels (checked before reading data).
    Returns:
        Image with data ``(1, *S)`` (float32, or int64 for labels) in tensor axis order = file
        index order, and a Geometry in LPS mm. A 2D NIfTI stored as ``(H, W, 1)`` loads as 2D.
    Raises:
        ImageIOError: missing/empty/corrupt file, unknown format, >3D data, NaN voxels, too large.
    """
    p = _check_readable(path)
    if not isinstance(max_voxels, (int, np.integer)) or max_voxels < 1:
        raise ValueError(f"max_voxels must be a positive int, got {max_voxels!r}")
    suffix = _suffix(p)
    if p.is_dir():
        data, geometry, meta = _read_dicom_dir(p, p, max_voxels)
    elif suffix in NIFTI_SUFFIXES:
        data, geometry, meta = _read_nifti(p, max_voxels)
    elif suffix in ITK_SUFFIXES:
        data, geometry, meta = _read_itk(p, max_voxels)
    elif suffix == ".zip":
        data, geometry, meta = _read_dicom_zip(p, max_voxels)
    else:
        raise ImageIOError(
            f"{p}: unknown image format {suffix!r}; supported: .nii, .nii.gz, .mha, .mhd, .nrrd, .nhdr, "
            "a DICOM folder or a .zip of one"
        )
    meta = {**meta, "path": str(p), "dtype": str(data.dtype)}
    warnings = list(meta.get("warnings", []))
    if data.dtype.kind == "f":
        bad = ~np.isfinite(data)
        if bad.any():
            if not allow_nan:
                raise ImageIOError(
                    f"{p}: {int(bad.sum()):,} voxels are NaN or infinite; pass allow_nan=True to replace them by 0"
                )
            data = np.where(bad, 0, data)
            warnings.append(f"{int(bad.sum()):,} NaN/inf voxels replaced by 0")
    meta["warnings"] = warnings
    names = load_label_names(label_names) if isinstance(label_names, (str, os.PathLike)) else label_names
    if is_labels is None:
        is_labels = names is not None or _looks_like_labels(p, data)
    if is_labels:
        if data.dtype.kind == "f" and not np.array_equal(data, np.round(data)):
            raise ImageIOError(f"{p}: is_labels=True but the voxels are not integers (dtype {data.dtype})")
        tensor = torch.from_numpy(np.ascontiguousarray(data, dtype=np.int64))
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    stem = p.name[: -len(suffix)] if suffix and p.name.lower().endswith(suffix) else p.name
    return Image(tensor[None], geometry, is_labels=bool(is_labels), label_names=names if is_labels else None,
                 name=stem, meta=meta)


def _sitk_from_array(array: np.ndarray, geometry: Geometry, is_vector: bool = False):
    """numpy ``(*S)`` or ``(*S, n)`` in tensor axis order -> SimpleITK image with the geometry."""
    import SimpleITK as sitk

    n = geometry.ndim
    arr = np.transpose(array, (*range(n - 1, -1, -1), n)) if is_vector else array.T
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr), isVector=is_vector)
    img.SetSpacing(geometry.spacing)
    img.SetOrigin(geometry.origin)
    img.SetDirection(tuple(geometry.direction_matrix.reshape(-1)))
    return img


def _storage_array(image: Image) -> np.ndarray:
    arr = image.numpy()
    if not image.is_labels:
        return arr.astype(np.float32, copy=False)
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    for dt in (np.uint8, np.int16, np.int32):
        if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
            return arr.astype(dt)
    return arr.astype(np.int64)


def save_image(image: Image, path: str | os.PathLike) -> Path:
    """Write a single-channel Image as NIfTI (.nii/.nii.gz, RAS affine) or MHA/MHD/NRRD (LPS).

    Label maps are stored with the smallest integer type that holds them, intensities as float32.
    """
    if not isinstance(image, Image):
        raise TypeError(f"image must be a regcore Image, got {type(image).__name__}")
    if image.data.shape[0] != 1:
        raise ValueError(f"save_image writes single-channel images, got C={image.data.shape[0]}")
    p = Path(path)
    suffix = _suffix(p)
    arr = _storage_array(image)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        if suffix in NIFTI_SUFFIXES:
            import nibabel as nib

            n = image.ndim
            affine = np.eye(4)
            m = image.geometry.index_to_world
            affine[:n, :n], affine[:n, 3] = m[:n, :n], m[:n, n]
            nii = nib.Nifti1Image(arr, _RAS_TO_LPS @ affine)
            nii.set_qform(nii.affine, code=1)
            nii.set_sform(nii.affine, code=1)
            nib.save(nii, str(p))
        elif suffix in ITK_SUFFIXES:
            import SimpleITK as sitk

            sitk.WriteImage(_sitk_from_array(arr, image.geometry), str(p), useCompression=True)
        else:
            raise ImageIOError(f"{p}: cannot write format {suffix!r}; use .nii, .nii.gz, .mha, .mhd or .nrrd")
    except (OSError, RuntimeError) as exc:
        raise ImageIOError(f"{p}: could not write image ({_first_line(exc)})") from exc
    return p


# -- landmarks and label names ------------------------------------------------------------
def _read_csv_rows(path: str | os.PathLike) -> tuple[Path, list[str], list[list[str]]]:
    p = _check_readable(path)
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


def load_landmarks(path: str | os.PathLike, geometry: Geometry | None = None, *, units: str = "auto") -> Landmarks:
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
    try:
        pts = np.array([[float(r[c]) for c in axes] for r in rows], dtype=float).reshape(len(rows), len(axes))
    except (ValueError, IndexError) as exc:
        raise ImageIOError(f"{p}: non-numeric or missing coordinate ({exc})") from exc
    if not np.all(np.isfinite(pts)):
        raise ImageIOError(f"{p}: coordinates contain NaN or infinite values")
    ids = [r[id_col].strip() if id_col is not None else str(k + 1) for k, r in enumerate(rows)]
    if len(set(ids)) != len(ids):
        raise ImageIOError(f"{p}: landmark ids are not unique")
    if pixel and geometry is not None:
        if geometry.ndim != pts.shape[1]:
            raise ValueError(f"geometry is {geometry.ndim}D but {p} has {pts.shape[1]}D points")
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
        with open(p, "w", newline="") as fh:
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
        raise ImageIOError(f"{p}: expected a value column (value/index/seg35_id) and a 'name' column, got {header}")
    out: dict[int, str] = {}
    for k, r in enumerate(rows, start=2):
        try:
            out[int(float(r[value_col]))] = r[name_col].strip()
        except (ValueError, IndexError) as exc:
            raise ImageIOError(f"{p}: line {k}: bad label row {r} ({exc})") from exc
    return out


# -- displacement fields and affine transforms ----------------------------------------------
def save_displacement(displacement: torch.Tensor, geometry: Geometry, path: str | os.PathLike) -> Path:
    """Write a fixed->moving voxel displacement ``(1, n, *S)`` as an ITK displacement field.

    Vectors become LPS mm, ``d_mm = direction @ diag(spacing) @ u``, stored as float64 vectors on
    ``geometry`` (the fixed grid): ``sitk.DisplacementFieldTransform`` then maps a fixed point p
    to the moving point ``p + d(p)``. Any SimpleITK vector format works (.nii.gz, .mha, .nrrd).
    """
    if not isinstance(displacement, torch.Tensor):
        raise TypeError(f"displacement must be a torch.Tensor, got {type(displacement).__name__}")
    if not isinstance(geometry, Geometry):
        raise TypeError(f"geometry must be a Geometry, got {type(geometry).__name__}")
    n = geometry.ndim
    if tuple(displacement.shape) != (1, n, *geometry.shape):
        raise ValueError(f"displacement must be (1, {n}, *{geometry.shape}), got {tuple(displacement.shape)}")
    p = Path(path)
    if _suffix(p) not in NIFTI_SUFFIXES + ITK_SUFFIXES:
        raise ImageIOError(f"{p}: cannot write a displacement field as {_suffix(p)!r}; use .nii.gz, .mha or .nrrd")
    u = displacement[0].detach().cpu().double().numpy()
    a = geometry.index_to_world[:n, :n]
    d_mm = np.einsum("ij,j...->...i", a, u)  # (*S, n)
    try:
        import SimpleITK as sitk

        p.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(_sitk_from_array(d_mm, geometry, is_vector=True), str(p), useCompression=True)
    except (OSError, RuntimeError) as exc:
        raise ImageIOError(f"{p}: could not write displacement field ({_first_line(exc)})") from exc
    return p


def load_displacement(path: str | os.PathLike) -> tuple[torch.Tensor, Geometry]:
    """Read an ITK displacement field (LPS mm vectors) -> (``(1, n, *S)`` float32 voxels, fixed Geometry)."""
    import SimpleITK as sitk

    p = _check_readable(path)
    try:
        img = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        raise ImageIOError(f"{p}: not a readable displacement field ({_first_line(exc)})") from exc
    n = img.GetDimension()
    if img.GetNumberOfComponentsPerPixel() != n:
        raise ImageIOError(
            f"{p}: a {n}D displacement field needs {n} components per voxel, got {img.GetNumberOfComponentsPerPixel()}"
        )
    geometry = _geometry_from_sitk(img, n)
    d_mm = sitk.GetArrayFromImage(img).astype(np.float64)  # (*S reversed, n)
    d_mm = np.transpose(d_mm, (*range(n - 1, -1, -1), n))  # (*S, n)
    a_inv = np.linalg.inv(geometry.index_to_world[:n, :n])
    u = np.einsum("ij,...j->i...", a_inv, d_mm)
    return torch.from_numpy(np.ascontiguousarray(u, dtype=np.float32))[None], geometry


def affine_voxel_to_world(affine, fixed_geometry: Geometry, moving_geometry: Geometry) -> np.ndarray:
    """Voxel affine ``(n, n+1)`` (fixed voxel -> moving voxel) -> ``(n+1, n+1)`` world map (fixed LPS mm ->
    moving LPS mm): ``moving.index_to_world @ A @ fixed.world_to_index``."""
    a = affine.detach().cpu().double().numpy() if isinstance(affine, torch.Tensor) else np.asarray(affine, float)
    n = fixed_geometry.ndim
    if a.shape == (1, n, n + 1):
        a = a[0]
    if a.shape not in ((n, n + 1), (n + 1, n + 1)):
        raise ValueError(f"affine must be ({n}, {n + 1}) for {n}D geometries, got {a.shape}")
    if moving_geometry.ndim != n:
        raise ValueError(f"fixed is {n}D but moving_geometry is {moving_geometry.ndim}D")
    h = np.eye(n + 1)
    h[:n] = a[:n]
    return moving_geometry.index_to_world @ h @ fixed_geometry.world_to_index


def save_affine_tfm(affine_world: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an ``(n+1, n+1)`` world affine (fixed LPS mm -> moving LPS mm) as an ITK AffineTransform
    (.tfm/.txt/.h5/.mat); ``sitk.ReadTransform(path).TransformPoint(p_fixed)`` gives the moving point."""
    import SimpleITK as sitk

    m = np.asarray(affine_world, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] not in (3, 4):
        raise ValueError(f"affine_world must be (3, 3) or (4, 4) homogeneous, got {m.shape}")
    n = m.shape[0] - 1
    tx = sitk.AffineTransform(n)
    tx.SetMatrix(tuple(m[:n, :n].reshape(-1)))
    tx.SetTranslation(tuple(m[:n, n]))
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteTransform(tx, str(p))
    except RuntimeError as exc:
        raise ImageIOError(f"{p}: could not write transform ({_first_line(exc)})") from exc
    return p


def load_affine_tfm(path: str | os.PathLike) -> np.ndarray:
    """Read an ITK linear transform file -> ``(n+1, n+1)`` world matrix (fixed LPS mm -> moving LPS mm)."""
    import SimpleITK as sitk

    p = _check_readable(path)
    try:
        tx = sitk.ReadTransform(str(p))
    except RuntimeError as exc:
        raise ImageIOError(f"{p}: not a readable ITK transform ({_first_line(exc)})") from exc
    n = tx.GetDimension()
    if not tx.IsLinear():
        raise ImageIOError(f"{p}: transform {tx.GetName()} is not linear; expected an affine/rigid transform")
    origin = np.asarray(tx.TransformPoint((0.0,) * n))
    m = np.eye(n + 1)
    for i in range(n):
        m[:n, i] = np.asarray(tx.TransformPoint(tuple(np.eye(n)[i]))) - origin
    m[:n, n] = origin
    return m
