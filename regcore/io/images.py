"""Read and write images (NIfTI via nibabel; MHA/MHD/NRRD and DICOM series via SimpleITK).

Tensor axis order = the file's voxel index order; world = LPS mm (a NIfTI RAS affine has its
first two rows negated).
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from regcore.image import Geometry, Image
from regcore.io.errors import (
    DEFAULT_MAX_VOXELS, ImageIOError, check_readable, check_voxels, first_line, spatial_shape,
)
from regcore.io.formats import ITK_SUFFIXES, NIFTI_SUFFIXES, suffix_of
from regcore.io.tables import load_label_names

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""NIfTI's RAS world -> regcore's LPS world (negate the first two rows of an affine)."""
LABEL_NAME_HINT = re.compile(r"seg|label|mask|atlas|parc|aseg", re.IGNORECASE)
"""File names that suggest a label map."""


# -- images: readers ----------------------------------------------------------------------
def _read_nifti(path: Path, max_voxels: int) -> tuple[np.ndarray, Geometry, dict]:
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for bad headers / bad gzip
        raise ImageIOError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    check_voxels(path, img.shape, max_voxels)
    shape = spatial_shape(path, img.shape)
    try:
        data = np.asarray(img.dataobj)
    except Exception as exc:  # truncated/corrupt gzip: EOFError, zlib.error, OSError, ValueError
        raise ImageIOError(f"{path}: voxel data is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    data = data.reshape(shape)
    affine, meta = _nifti_affine(img)
    lps = RAS_TO_LPS @ affine
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
    shape = spatial_shape(path, size)
    data = sitk.GetArrayFromImage(image).T.reshape(shape)  # (k, j, i) -> (i, j, k)
    return np.ascontiguousarray(data), _geometry_from_sitk(image, len(shape))


def _read_itk(path: Path, max_voxels: int) -> tuple[np.ndarray, Geometry, dict]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ImageIOError(f"{path}: not a readable {suffix_of(path)} image ({first_line(exc)})") from exc
    size = tuple(reader.GetSize())
    check_voxels(path, size, max_voxels)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise ImageIOError(f"{path}: voxel data is truncated or corrupt ({first_line(exc)})") from exc
    data, geometry = _read_sitk_image(path, image, size, reader.GetNumberOfComponents())
    return data, geometry, {"format": suffix_of(path).lstrip(".")}


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
        raise ImageIOError(f"{path}: unreadable DICOM slice {Path(files[0]).name} ({first_line(exc)})") from exc
    check_voxels(path, (*info.GetSize()[:2], len(files)), max_voxels)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise ImageIOError(f"{path}: DICOM series could not be read ({first_line(exc)})") from exc
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
    hinted = bool(LABEL_NAME_HINT.search(path.name))
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
    p = check_readable(path)
    if not isinstance(max_voxels, (int, np.integer)) or max_voxels < 1:
        raise ValueError(f"max_voxels must be a positive int, got {max_voxels!r}")
    suffix = suffix_of(p)
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
    suffix = suffix_of(p)
    arr = _storage_array(image)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        if suffix in NIFTI_SUFFIXES:
            import nibabel as nib

            n = image.ndim
            affine = np.eye(4)
            m = image.geometry.index_to_world
            affine[:n, :n], affine[:n, 3] = m[:n, :n], m[:n, n]
            nii = nib.Nifti1Image(arr, RAS_TO_LPS @ affine)
            nii.set_qform(nii.affine, code=1)
            nii.set_sform(nii.affine, code=1)
            nib.save(nii, str(p))
        elif suffix in ITK_SUFFIXES:
            import SimpleITK as sitk

            sitk.WriteImage(_sitk_from_array(arr, image.geometry), str(p), useCompression=True)
        else:
            raise ImageIOError(f"{p}: cannot write format {suffix!r}; use .nii, .nii.gz, .mha, .mhd or .nrrd")
    except (OSError, RuntimeError) as exc:
        raise ImageIOError(f"{p}: could not write image ({first_line(exc)})") from exc
    return p


