"""Read and write images (NIfTI via nibabel; MHA/MHD/NRRD and DICOM series via SimpleITK).

Tensor axis order = the file's voxel index order; world = LPS mm (a NIfTI RAS affine has its
first two rows negated).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from regcore.image import Geometry, Image
from regcore.io.budget import (
    check_compressed_size,
    check_inflated_size,
    check_metaimage,
    check_nrrd,
    check_raw_size,
    nifti_declared_bytes,
)
from regcore.io.capture import library_output, simpleitk
from regcore.io.dicom import read_dicom_dir, read_dicom_zip
from regcore.io.errors import (
    DEFAULT_MAX_VOXELS,
    ImageIOError,
    check_readable,
    check_voxels,
    first_line,
    spatial_shape,
)
from regcore.io.formats import ITK_SUFFIXES, NIFTI_SUFFIXES, suffix_of
from regcore.io.geometry import (
    NIFTI_PIXDIM,
    NIFTI_QFORM,
    NIFTI_SFORM,
    GeometryFields,
    checked_geometry,
    checked_geometry_from_matrix,
    fields_for,
)
from regcore.io.sitk_arrays import array_from_sitk, sitk_from_array
from regcore.io.tables import load_label_names

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""NIfTI's RAS world -> regcore's LPS world (negate the first two rows of an affine)."""
NIFTI2_HEADER_BYTES = 540
"""``sizeof_hdr`` of a NIfTI-2 header (NIfTI-1: 348)."""
LABEL_NAME_HINT = re.compile(r"seg|label|mask|atlas|parc|aseg", re.IGNORECASE)
"""File names that suggest a label map."""


def ras_affine(geometry: Geometry) -> np.ndarray:
    """The ``(4, 4)`` NIfTI (RAS mm) affine of ``geometry``'s voxel -> world map (a 2D grid as one slice)."""
    n = geometry.ndim
    affine = np.eye(4)
    m = geometry.index_to_world
    affine[:n, :n], affine[:n, 3] = m[:n, :n], m[:n, n]
    return RAS_TO_LPS @ affine


# -- images: readers ----------------------------------------------------------------------
def _nifti_from_bytes(contents: bytes):
    """A nibabel NIfTI-1 or NIfTI-2 image over a file's (inflated) bytes, told apart by ``sizeof_hdr``."""
    import nibabel as nib

    sizes = {int.from_bytes(contents[:4], order) for order in ("little", "big")}
    klass = nib.Nifti2Image if NIFTI2_HEADER_BYTES in sizes else nib.Nifti1Image
    return klass.from_bytes(contents)


def _inflated_nifti(path: Path, needed: int) -> bytes:
    """The inflated bytes of a ``.nii.gz`` (header, extensions, voxels), read in one pass and checked (CRC,
    length) to the end of the stream; ``needed``: what the header declares (a shorter stream is refused)."""
    from regcore.readahead import GunzipError, InflatedTooLarge, read_gunzipped

    try:
        try:
            contents = read_gunzipped(path, 2 * needed + (1 << 20))
        except InflatedTooLarge:  # long trailing data after the voxels: left unread, as nibabel does
            contents = read_gunzipped(path, needed, cut=True)
    except GunzipError as exc:
        if exc.truncated:
            check_inflated_size(path, needed, exc.inflated)
        raise ImageIOError(f"{path}: voxel data is truncated or corrupt ({first_line(exc)})") from None
    check_inflated_size(path, needed, len(contents))
    return contents


def _read_nifti(
    path: Path, max_voxels: int, contents: bytes | None = None
) -> tuple[np.ndarray, Geometry, dict]:
    import nibabel as nib

    try:
        img = nib.load(str(path)) if contents is None else _nifti_from_bytes(contents)
        header_shape = tuple(int(s) for s in img.shape)
        dtype = img.header.get_data_dtype()
    except Exception as exc:  # nibabel raises many types for bad headers / bad gzip
        raise ImageIOError(
            f"{path}: not a readable NIfTI file ({type(exc).__name__}: {first_line(exc)})"
        ) from None
    if any(s < 1 for s in header_shape):
        raise ImageIOError(
            f"{path}: header field dim declares shape {header_shape} with a zero or negative size"
        )
    check_voxels(path, header_shape, max_voxels)
    shape = spatial_shape(path, header_shape)
    if dtype.names or dtype.kind not in "biuf":
        raise ImageIOError(
            f"{path}: header field datatype is {_nifti_type_name(img.header)} (RGB, complex or "
            "vector voxels); regcore expects one real scalar per voxel: convert to grayscale first"
        )
    needed = nifti_declared_bytes(img, header_shape)
    gzipped = path.name.lower().endswith(".gz")
    if contents is None and gzipped:
        check_compressed_size(path, needed, path.stat().st_size)  # impossible expansion: refused unread
        contents = _inflated_nifti(path, needed)
        try:
            img = type(img).from_bytes(contents)
        except Exception as exc:  # noqa: BLE001 - the header read the same bytes a moment ago
            raise ImageIOError(f"{path}: not a readable NIfTI file ({first_line(exc)})") from None
    elif contents is not None:  # read ahead: inflated already when the file is gzipped
        (check_inflated_size if gzipped else check_raw_size)(path, needed, len(contents))
    else:
        check_raw_size(path, needed, path.stat().st_size)
    try:
        affine, form, meta = _nifti_affine(img)
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:  # e.g. an impossible qform quaternion
        raise ImageIOError(
            f"{path}: header orientation (qform quatern_b/c/d or sform) cannot be decoded ({first_line(exc)})"
        ) from None
    lps = affine.copy()
    lps[:2] *= -1.0  # RAS -> LPS (RAS_TO_LPS @ affine, without turning an infinite entry into NaN)
    n = len(shape)
    matrix = np.eye(n + 1)
    matrix[:n, :n] = lps[:n, :n]
    matrix[:n, n] = lps[:n, 3]
    geometry = checked_geometry_from_matrix(path, shape, matrix, form)
    try:
        data = np.asarray(img.dataobj)
    except MemoryError:
        raise ImageIOError(
            f"{path}: not enough memory for {np.prod(header_shape):,} voxels of {dtype}"
        ) from None
    except Exception as exc:  # truncated/corrupt gzip: EOFError, zlib.error, OSError, ValueError
        raise ImageIOError(
            f"{path}: voxel data is truncated or corrupt ({type(exc).__name__}: {first_line(exc)})"
        ) from None
    return data.reshape(shape), geometry, meta


def _nifti_type_name(header) -> str:
    try:
        return str(header.get_value_label("datatype"))
    except Exception:  # noqa: BLE001 - an unknown code: show the number
        return str(int(header["datatype"]))


def _nifti_affine(img) -> tuple[np.ndarray, GeometryFields, dict]:
    """The RAS affine nibabel reports and the header fields it comes from, except where ITK would distrust
    the sform: when a qform exists and the sform has shear or scales that disagree with pixdim, use the
    qform (as SimpleITK does)."""
    header = img.header
    affine = np.asarray(img.affine, dtype=float)
    sform, qform = int(header["sform_code"]), int(header["qform_code"])
    form = NIFTI_SFORM if sform > 0 else NIFTI_QFORM if qform > 0 else NIFTI_PIXDIM
    meta: dict = {"format": "nifti", "warnings": []}
    if sform > 0 and qform > 0:
        rot = np.asarray(header.get_sform(), dtype=float)[:3, :3]
        norms = np.linalg.norm(rot, axis=0)
        pixdim = np.asarray(header["pixdim"][1:4], dtype=float)
        with np.errstate(invalid="ignore", over="ignore"):
            orthogonal = np.allclose(rot.T @ rot, np.diag(norms**2), atol=1e-4 * max(norms.max(), 1e-12) ** 2)
            agree = np.allclose(norms, pixdim, rtol=1e-4)
        if not (orthogonal and agree):
            affine = np.asarray(header.get_qform(), dtype=float)
            form = NIFTI_QFORM
            meta["warnings"].append(
                "sform has shear or scales that disagree with pixdim; used the qform (as ITK)"
            )
    return affine, form, meta


def _read_itk(path: Path, max_voxels: int) -> tuple[np.ndarray, Geometry, dict]:
    sitk = simpleitk()

    suffix = suffix_of(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()  # the header only
    except RuntimeError as exc:
        raise ImageIOError(f"{path}: not a readable {suffix} image ({first_line(exc)})") from None
    size = tuple(reader.GetSize())
    check_voxels(path, size, max_voxels)
    n = len(spatial_shape(path, size))
    dim = reader.GetDimension()
    checked_geometry(
        path,
        size[:n],
        reader.GetSpacing()[:n],
        reader.GetOrigin()[:n],  # before any voxel is read
        np.asarray(reader.GetDirection(), dtype=float).reshape(dim, dim)[:n, :n],
        fields_for(suffix),
    )
    if suffix in (".mha", ".mhd"):  # detached data file confined, declared size vs the data, before reading
        check_metaimage(path)
    else:
        check_nrrd(path)
    try:
        image = reader.Execute()
    except (RuntimeError, MemoryError) as exc:
        raise ImageIOError(f"{path}: voxel data is truncated or corrupt ({first_line(exc)})") from None
    data, geometry = array_from_sitk(path, image, size, reader.GetNumberOfComponents(), fields_for(suffix))
    return data, geometry, {"format": suffix.lstrip(".")}


# -- images: public -----------------------------------------------------------------------
def _looks_like_labels(path: Path, data: np.ndarray) -> bool:
    """Integer data with few values (<= 64), or sparse values, or a label-like file name."""
    if data.dtype.kind not in "iub" or data.size == 0:
        return False
    if (data.dtype.kind == "i" and data.min() < 0) or (data.dtype == np.uint64 and data.max() > 2**62):
        return False  # negative or enormous codes: an intensity image
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


def _read_any(
    p: Path, suffix: str, max_voxels: int, contents: bytes | None = None
) -> tuple[np.ndarray, Geometry, dict]:
    if contents is not None and suffix not in NIFTI_SUFFIXES:
        raise ValueError(f"contents (bytes read ahead) are for NIfTI files only, got {p}")
    if p.is_dir():
        return read_dicom_dir(p, p, max_voxels)
    if suffix in NIFTI_SUFFIXES:
        return _read_nifti(p, max_voxels, contents)
    if suffix in ITK_SUFFIXES:
        return _read_itk(p, max_voxels)
    if suffix == ".zip":
        return read_dicom_zip(p, max_voxels)
    raise ImageIOError(
        f"{p}: unknown image format {suffix!r}; supported: .nii, .nii.gz, .mha, .mhd, .nrrd, .nhdr, "
        "a DICOM folder or a .zip of one"
    )


def _finite_values(p: Path, data: np.ndarray, allow_nan: bool) -> tuple[np.ndarray, int]:
    """Voxels that are finite in float32; NaN/inf (or beyond float32) raise unless ``allow_nan`` (-> 0)."""
    if data.dtype.kind != "f":
        return data, 0
    with np.errstate(over="ignore", invalid="ignore"):
        bad = ~np.isfinite(data) if data.dtype.itemsize <= 4 else ~np.isfinite(data.astype(np.float32))
    count = int(bad.sum())
    if not count:
        return data, 0
    if not allow_nan:
        raise ImageIOError(
            f"{p}: {count:,} voxels are NaN or infinite (or beyond float32 range); pass "
            "allow_nan=True to replace them by 0"
        )
    return np.where(bad, 0, data), count


def _label_array(p: Path, data: np.ndarray) -> np.ndarray:
    """int64 label codes; ImageIOError for non-integer, negative or out-of-range values."""
    if data.dtype.kind == "f":
        if data.size and (not np.array_equal(data, np.round(data)) or np.abs(data).max() >= 2.0**53):
            raise ImageIOError(f"{p}: is_labels=True but the voxels are not integers (dtype {data.dtype})")
    elif data.dtype == np.uint64 and data.size and data.max() > np.iinfo(np.int64).max:
        raise ImageIOError(f"{p}: label values up to {int(data.max())} exceed the int64 range")
    if data.size and data.dtype.kind in "if" and data.min() < 0:
        raise ImageIOError(
            f"{p}: label maps hold non-negative integer codes, got values down to {data.min()}"
        )
    return np.ascontiguousarray(data, dtype=np.int64)


def load_image(
    path: str | os.PathLike,
    *,
    is_labels: bool | None = None,
    label_names: Mapping[int, str] | str | os.PathLike | None = None,
    allow_nan: bool = False,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    contents: bytes | None = None,
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
        contents: a NIfTI file's bytes already read (and inflated, for ``.nii.gz``), e.g. by
            :class:`regcore.readahead.ReadAhead`: parsed instead of reading ``path`` again, with the same
            checks; ``path`` still names the file in errors and metadata.
    Returns:
        Image with data ``(1, *S)`` (float32, or int64 for labels) in tensor axis order = file
        index order, and a Geometry in LPS mm. A 2D NIfTI stored as ``(H, W, 1)`` loads as 2D.
    Raises:
        ImageIOError: missing/empty/corrupt file, unknown format, >3D data, NaN voxels, too large.
    """
    p = check_readable(path)
    if isinstance(max_voxels, bool) or not isinstance(max_voxels, (int, np.integer)) or max_voxels < 1:
        raise ValueError(f"max_voxels must be a positive int, got {max_voxels!r}")
    suffix = suffix_of(p)
    with library_output() as notes:
        try:
            data, geometry, meta = _read_any(p, suffix, int(max_voxels), contents)
        except ImageIOError as exc:
            summary = notes.summary()
            raise ImageIOError(f"{exc} {summary}" if summary else str(exc)) from None
    meta = {**meta, "path": str(p), "dtype": str(data.dtype)}
    warnings = list(meta.get("warnings", []))
    if notes.count:
        warnings.append(f"library output while reading: {notes.summary()}")
    data, replaced = _finite_values(p, data, allow_nan)
    if replaced:
        warnings.append(f"{replaced:,} NaN/inf voxels replaced by 0")
    meta["warnings"] = warnings
    names = load_label_names(label_names) if isinstance(label_names, (str, os.PathLike)) else label_names
    if is_labels is None:
        is_labels = names is not None or _looks_like_labels(p, data)
    if is_labels:
        tensor = torch.from_numpy(_label_array(p, data))
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    stem = p.name[: -len(suffix)] if suffix and p.name.lower().endswith(suffix) else p.name
    return Image(
        tensor[None],
        geometry,
        is_labels=bool(is_labels),
        label_names=names if is_labels else None,
        name=stem,
        meta=meta,
    )


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

            nii = nib.Nifti1Image(arr, ras_affine(image.geometry), dtype=arr.dtype)  # int64 codes too
            nii.set_qform(nii.affine, code=1)
            nii.set_sform(nii.affine, code=1)
            nib.save(nii, str(p))
        elif suffix in ITK_SUFFIXES:
            import SimpleITK as sitk

            sitk.WriteImage(sitk_from_array(arr, image.geometry), str(p), useCompression=True)
        else:
            raise ImageIOError(f"{p}: cannot write format {suffix!r}; use .nii, .nii.gz, .mha, .mhd or .nrrd")
    except (OSError, RuntimeError) as exc:
        raise ImageIOError(f"{p}: could not write image ({first_line(exc)})") from exc
    return p
