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

from regcore.io.errors import DEFAULT_MAX_VOXELS, ImageIOError
from regcore.io.images import load_image, save_image
from regcore.io.tables import load_label_names, load_landmarks, save_landmarks
from regcore.io.transforms import (
    affine_voxel_to_world,
    load_affine_tfm,
    load_displacement,
    save_affine_tfm,
    save_displacement,
)

__all__ = [
    "ImageIOError",
    "DEFAULT_MAX_VOXELS",
    "load_image",
    "save_image",
    "load_landmarks",
    "save_landmarks",
    "load_label_names",
    "save_displacement",
    "load_displacement",
    "affine_voxel_to_world",
    "save_affine_tfm",
    "load_affine_tfm",
]
