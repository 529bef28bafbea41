"""Conversions between regcore and the libraries behind the baselines (SimpleITK, ITK/elastix, ANTsPy).

* Images: a channel of a :class:`regcore.Image` -> a library image with the same geometry (spacing,
  origin, direction; array axes transposed to ITK order where the library needs it).
* Fields: a library displacement (LPS mm vectors on the fixed grid, fixed point -> moving point) ->
  regcore's ``(1, ndim, *S)`` voxel displacement, fixed -> moving:
  ``u = (direction diag(spacing))^-1 (T(p) - p)``.
* :func:`check_same_grid`: the input check every baseline shares (:func:`sitk_pair` adds the conversion).
Libraries are imported inside the functions (optional extras).
"""

from __future__ import annotations

import numpy as np
import torch

from regcore.image import Geometry, Image


def check_same_grid(fixed: Image, moving: Image) -> None:
    """TypeError unless both are Images; ValueError unless they share a grid shape."""
    if not isinstance(fixed, Image) or not isinstance(moving, Image):
        raise TypeError(
            f"fixed and moving must be regcore Images, got {type(fixed).__name__}, {type(moving).__name__}"
        )
    if fixed.shape != moving.shape:
        raise ValueError(
            f"fixed and moving must lie on the same grid (resample moving with "
            f"regcore.preprocess.resample_to): {fixed.shape} vs {moving.shape}"
        )


def sitk_pair(fixed: Image, moving: Image):
    """:func:`check_same_grid`, then both images as float32 SimpleITK images (channel 0)."""
    check_same_grid(fixed, moving)
    return to_sitk(fixed), to_sitk(moving)


def _itk_order(image: Image, channel: int = 0) -> np.ndarray:
    """Float32 voxel array of one channel in ITK's (k, j, i) order, C-contiguous."""
    arr = image.data[channel].detach().cpu().float().numpy()
    return np.ascontiguousarray(arr.T)


def to_sitk(image: Image, channel: int = 0):
    """Channel of an Image -> float32 ``SimpleITK.Image`` with the same geometry."""
    import SimpleITK as sitk

    out = sitk.GetImageFromArray(_itk_order(image, channel))
    out.SetSpacing(image.geometry.spacing)
    out.SetOrigin(image.geometry.origin)
    out.SetDirection(tuple(image.geometry.direction_matrix.reshape(-1)))
    return out


def to_itk(image: Image, channel: int = 0):
    """Channel of an Image -> float32 ``itk.Image`` (itk-elastix) with the same geometry."""
    import itk

    out = itk.GetImageFromArray(_itk_order(image, channel))
    out.SetSpacing(tuple(image.geometry.spacing))
    out.SetOrigin(tuple(image.geometry.origin))
    out.SetDirection(itk.matrix_from_array(np.ascontiguousarray(image.geometry.direction_matrix)))
    return out


def to_ants(image: Image, channel: int = 0):
    """Channel of an Image -> float32 ``ants.ANTsImage`` (tensor axis order kept) with the same geometry."""
    import ants

    g = image.geometry
    arr = image.data[channel].detach().cpu().float().numpy()
    return ants.from_numpy(
        arr, origin=tuple(g.origin), spacing=tuple(g.spacing), direction=g.direction_matrix
    )


def world_field_to_voxels(field_mm: np.ndarray, geometry: Geometry) -> torch.Tensor:
    """``(*S, n)`` LPS-mm displacement (tensor axis order) -> ``(1, n, *S)`` float32 voxel displacement."""
    n = geometry.ndim
    a_inv = np.linalg.inv(geometry.index_to_world[:n, :n])
    u = np.einsum("ij,...j->i...", a_inv, field_mm)
    return torch.from_numpy(np.ascontiguousarray(u, dtype=np.float32))[None]


def itk_array_field_to_voxels(arr: np.ndarray, geometry: Geometry) -> torch.Tensor:
    """A displacement array as ITK libraries return it (``(*S reversed, n)``, mm) -> ``(1, n, *S)`` voxels."""
    n = geometry.ndim
    return world_field_to_voxels(
        np.transpose(np.asarray(arr, np.float64), (*range(n - 1, -1, -1), n)), geometry
    )


def sitk_field_to_voxels(field, geometry: Geometry) -> torch.Tensor:
    """A SimpleITK vector image (mm, on ``geometry``) -> ``(1, n, *S)`` voxel displacement."""
    import SimpleITK as sitk

    return itk_array_field_to_voxels(sitk.GetArrayFromImage(field), geometry)


def transform_to_voxel_displacement(transform, reference) -> torch.Tensor:
    """Any SimpleITK transform (fixed point -> moving point, mm) -> voxel displacement on ``reference``'s grid."""
    import SimpleITK as sitk

    n = reference.GetDimension()
    geometry = Geometry(
        reference.GetSize(),
        reference.GetSpacing(),
        reference.GetOrigin(),
        tuple(map(tuple, np.asarray(reference.GetDirection()).reshape(n, n))),
    )
    field = sitk.TransformToDisplacementField(
        transform,
        sitk.sitkVectorFloat64,
        reference.GetSize(),
        reference.GetOrigin(),
        reference.GetSpacing(),
        reference.GetDirection(),
    )
    return sitk_field_to_voxels(field, geometry)
