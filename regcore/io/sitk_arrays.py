"""SimpleITK image <-> numpy array in tensor axis order, with the geometry checked on the way in.

SimpleITK arrays are ``(k, j, i)``; regcore's tensor axis order is the file's index order ``(i, j, k)``,
so arrays are transposed here and nowhere else in ``regcore.io``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from regcore.image import Geometry
from regcore.io.errors import ImageIOError, spatial_shape
from regcore.io.geometry import GeometryFields, checked_geometry


def geometry_from_sitk(
    image, n: int, path: Path | None = None, fields: GeometryFields | None = None
) -> Geometry:
    """Geometry of the first ``n`` axes of a SimpleITK image; with ``path`` it is validated
    (:func:`regcore.io.geometry.checked_geometry`, errors name the file and ``fields``)."""
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)[:n, :n]
    size, spacing, origin = (
        tuple(image.GetSize()[:n]),
        tuple(image.GetSpacing()[:n]),
        tuple(image.GetOrigin()[:n]),
    )
    if path is not None:
        return checked_geometry(
            path, size, spacing, origin, direction, fields or GeometryFields("origin", "spacing", "direction")
        )
    return Geometry(size, spacing, origin, tuple(map(tuple, direction)))


def array_from_sitk(
    path: Path, image, size: tuple[int, ...], components: int, fields: GeometryFields | None = None
) -> tuple[np.ndarray, Geometry]:
    """Scalar voxels ``(*S)`` in tensor axis order and the validated Geometry of a SimpleITK image."""
    import SimpleITK as sitk

    if components != 1:
        raise ImageIOError(
            f"{path}: image has {components} components per voxel (vector/RGB); regcore expects one channel: "
            "convert to grayscale or split the channels first"
        )
    shape = spatial_shape(path, size)
    geometry = geometry_from_sitk(image, len(shape), path, fields)
    data = sitk.GetArrayFromImage(image).T.reshape(shape)  # (k, j, i) -> (i, j, k)
    if data.dtype.kind not in "biuf":
        raise ImageIOError(
            f"{path}: voxels of type {data.dtype} (complex or structured); regcore expects one real "
            "scalar per voxel"
        )
    return np.ascontiguousarray(data), geometry


def sitk_from_array(array: np.ndarray, geometry: Geometry, is_vector: bool = False):
    """numpy ``(*S)`` or ``(*S, n)`` in tensor axis order -> SimpleITK image with the geometry."""
    import SimpleITK as sitk

    n = geometry.ndim
    arr = np.transpose(array, (*range(n - 1, -1, -1), n)) if is_vector else array.T
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr), isVector=is_vector)
    img.SetSpacing(geometry.spacing)
    img.SetOrigin(geometry.origin)
    img.SetDirection(tuple(geometry.direction_matrix.reshape(-1)))
    return img
