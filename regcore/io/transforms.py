"""Export/import of transforms in the conventions other tools read.

Displacement fields: ITK vector images, LPS mm on the fixed grid (``sitk.DisplacementFieldTransform``
maps fixed point p to p + d(p)). Affines: ITK .tfm, fixed world -> moving world.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from regcore.image import Geometry
from regcore.io.errors import ImageIOError, check_readable, first_line
from regcore.io.formats import ITK_SUFFIXES, NIFTI_SUFFIXES, suffix_of
from regcore.io.geometry import fields_for
from regcore.io.sitk_arrays import geometry_from_sitk


# -- displacement fields and affine transforms ----------------------------------------------
def save_displacement(
    displacement: torch.Tensor, geometry: Geometry, path: str | os.PathLike, *, compress_level: int = 1
) -> Path:
    """Write a fixed->moving voxel displacement ``(1, n, *S)`` as an ITK displacement field.

    Vectors become LPS mm, ``d_mm = direction @ diag(spacing) @ u``, stored as float32 vectors on
    ``geometry`` (the fixed grid): ``sitk.DisplacementFieldTransform`` (which wants float64: read with
    ``sitk.ReadImage(path, sitk.sitkVectorFloat64)``) then maps a fixed point p to the moving point
    ``p + d(p)``. Formats: ``.nii`` (uncompressed, fastest; written directly in SimpleITK's vector layout),
    ``.nii.gz`` (gzip ``compress_level`` 1..9 on all cores, :mod:`regcore.io.gzip_parallel`), ``.mha`` and
    ``.nrrd`` (through SimpleITK).
    Memory: one float32 copy of the field, the file's component planes (``.mha``/``.nrrd``: two, the second
    SimpleITK's).
    """
    if not isinstance(displacement, torch.Tensor):
        raise TypeError(f"displacement must be a torch.Tensor, got {type(displacement).__name__}")
    if not isinstance(geometry, Geometry):
        raise TypeError(f"geometry must be a Geometry, got {type(geometry).__name__}")
    n = geometry.ndim
    if tuple(displacement.shape) != (1, n, *geometry.shape):
        raise ValueError(f"displacement must be (1, {n}, *{geometry.shape}), got {tuple(displacement.shape)}")
    p = Path(path)
    suffix = suffix_of(p)
    if suffix not in NIFTI_SUFFIXES + ITK_SUFFIXES:
        raise ImageIOError(
            f"{p}: cannot write a displacement field as {suffix!r}; use .nii, .nii.gz, .mha or .nrrd"
        )
    u = displacement[0].detach().cpu().float().numpy()  # (n, *S), no copy when already float32 on the CPU
    planes = _lps_planes(u, geometry.index_to_world[:n, :n])
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".nii.gz":  # written as .nii, then gzipped on all cores
            from regcore.io.gzip_parallel import gzip_file

            raw = p.with_name(p.name[: -len(".gz")] + ".tmp.nii")
            try:
                _write_vector_nifti(planes, geometry, raw)
                gzip_file(raw, p, level=compress_level)
            finally:
                raw.unlink(missing_ok=True)
        elif suffix in NIFTI_SUFFIXES:
            _write_vector_nifti(planes, geometry, p)
        else:
            import SimpleITK as sitk

            img = sitk.GetImageFromArray(np.moveaxis(planes, 0, -1), isVector=True)  # (*S reversed, n)
            img.SetSpacing(geometry.spacing)
            img.SetOrigin(geometry.origin)
            img.SetDirection(tuple(geometry.direction_matrix.reshape(-1)))
            sitk.WriteImage(img, str(p), useCompression=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ImageIOError(f"{p}: could not write displacement field ({first_line(exc)})") from exc
    return p


def _lps_planes(u: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``(n, *S reversed)`` float32 LPS mm component planes ``d_i = sum_j a[i, j] u_j`` of a voxel displacement
    ``u`` ``(n, *S)``, ``a = direction @ diag(spacing)``: float64 sums, zero entries of ``a`` skipped."""
    n = len(a)
    from regcore.io import field_kernels

    if n == 3 and field_kernels.AVAILABLE:  # one compiled pass, same sums
        return field_kernels.lps_vectors_3d(u, a)
    planes = np.empty((n, *u.shape[:0:-1]), dtype=np.float32)
    for i in range(n):  # accumulated in float64 one component at a time
        acc = np.zeros(u.shape[1:], dtype=np.float64)
        for j in range(n):
            if a[i, j] != 0.0:
                acc += a[i, j] * u[j]
        planes[i] = acc.T
    return planes


def _write_vector_nifti(planes: np.ndarray, geometry: Geometry, path: Path) -> None:
    """``planes`` ``(n, *S reversed)`` float32 as a NIfTI-1 vector image on ``geometry``: intent VECTOR, dims
    ``(*S, 1, n)`` (a 2D grid: ``(I, J, 1, 1, 2)``), RAS affine as qform and sform: the layout SimpleITK writes
    for a vector image, so ``sitk.ReadImage`` gives the same field. The planes' bytes are the voxel data as
    they are (the component is NIfTI's slowest axis): written without a copy."""
    import nibabel as nib

    from regcore.io.images import ras_affine

    n = geometry.ndim
    header = nib.Nifti1Header()
    header.set_data_shape((*geometry.shape, *(1,) * (3 - n), 1, n))
    header.set_data_dtype(np.float32)
    header.set_intent("vector")
    affine = ras_affine(geometry)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm", "sec")
    data = np.ascontiguousarray(planes, dtype="<f4")
    with open(path, "wb") as fh:
        header.write_to(fh)  # 348 bytes, the 4-byte extension flag; vox_offset 352
        fh.write(memoryview(data).cast("B"))


def load_displacement(path: str | os.PathLike) -> tuple[torch.Tensor, Geometry]:
    """Read an ITK displacement field (LPS mm vectors) -> (``(1, n, *S)`` float32 voxels, fixed Geometry)."""
    import SimpleITK as sitk

    p = check_readable(path)
    try:
        img = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        raise ImageIOError(f"{p}: not a readable displacement field ({first_line(exc)})") from exc
    n = img.GetDimension()
    if img.GetNumberOfComponentsPerPixel() != n:
        raise ImageIOError(
            f"{p}: a {n}D displacement field needs {n} components per voxel, got {img.GetNumberOfComponentsPerPixel()}"
        )
    geometry = geometry_from_sitk(img, n, p, fields_for(suffix_of(p)))
    d_mm = sitk.GetArrayViewFromImage(img)  # (*S reversed, n), float32 or float64 as stored
    d_mm = np.transpose(d_mm, (*range(n - 1, -1, -1), n))  # (*S, n)
    a_inv = np.linalg.inv(geometry.index_to_world[:n, :n])
    u = np.empty((n, *geometry.shape), dtype=np.float32)
    for i in range(n):  # u_i = sum_j a_inv[i, j] d_j, accumulated in float64 one component at a time
        acc = np.zeros(geometry.shape, dtype=np.float64)
        for j in range(n):
            if a_inv[i, j] != 0.0:
                acc += a_inv[i, j] * d_mm[..., j]
        u[i] = acc
    return torch.from_numpy(u)[None], geometry


def affine_voxel_to_world(affine, fixed_geometry: Geometry, moving_geometry: Geometry) -> np.ndarray:
    """Voxel affine ``(n, n+1)`` (fixed voxel -> moving voxel) -> ``(n+1, n+1)`` world map (fixed LPS mm ->
    moving LPS mm): ``moving.index_to_world @ A @ fixed.world_to_index``."""
    a = (
        affine.detach().cpu().double().numpy()
        if isinstance(affine, torch.Tensor)
        else np.asarray(affine, float)
    )
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
        raise ImageIOError(f"{p}: could not write transform ({first_line(exc)})") from exc
    return p


def load_affine_tfm(path: str | os.PathLike) -> np.ndarray:
    """Read an ITK linear transform file -> ``(n+1, n+1)`` world matrix (fixed LPS mm -> moving LPS mm)."""
    import SimpleITK as sitk

    p = check_readable(path)
    try:
        tx = sitk.ReadTransform(str(p))
    except RuntimeError as exc:
        raise ImageIOError(f"{p}: not a readable ITK transform ({first_line(exc)})") from exc
    n = tx.GetDimension()
    if not tx.IsLinear():
        raise ImageIOError(f"{p}: transform {tx.GetName()} is not linear; expected an affine/rigid transform")
    origin = np.asarray(tx.TransformPoint((0.0,) * n))
    m = np.eye(n + 1)
    for i in range(n):
        m[:n, i] = np.asarray(tx.TransformPoint(tuple(np.eye(n)[i]))) - origin
    m[:n, n] = origin
    return m
