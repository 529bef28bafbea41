"""File formats regcore.io reads and writes, recognised by suffix."""

from __future__ import annotations

from pathlib import Path

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")


def suffix_of(path: Path) -> str:
    """Lower-case suffix of ``path``, with ``.nii.gz`` kept whole."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()
