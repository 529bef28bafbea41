"""The one pair type and the built-in sample pairs.

``sample_pair("brain", dims=2, fixed=0, moving=1)`` returns a :class:`Pair` with images,
labels, landmarks and the exact ground-truth displacement (built on first use, then cached).
The same :class:`Pair` comes from a user's folder (:mod:`regcore.data.folder`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from regcore.data import deform
from regcore.data.samples import UnitSpec, ensure_unit, read_manifest, sample_root
from regcore.data.subjects import load_transform
from regcore.image import Image, Landmarks


@dataclass(eq=False)
class Pair:
    """A fixed/moving pair with whatever evaluation data exists.

    Attributes:
        name: human-readable, e.g. ``"brain 2D 2mm: subject_00 t1 <- subject_01 t1"``.
        fixed, moving: intensity Images (moving may lie on another grid; callers resample it
            onto ``fixed.geometry`` with ``regcore.preprocess.resample_to`` before registering).
        fixed_labels, moving_labels: label-map Images (0 = background) or None.
        fixed_landmarks, moving_landmarks: Landmarks in LPS mm (same ids = same point) or None.
        true_displacement: ``(1, ndim, *S_fixed)`` float32, voxels of the fixed grid, maps fixed ->
            moving voxels (``moving(x + u(x)) = fixed(x)``; both sample images share one grid), or None.
        label_names: label value -> structure name (0 excluded).
        modality: ``"t1"`` (same contrast) or ``"t1/t2"`` (fixed/moving contrasts), "" if unknown.
        meta: provenance (dataset, unit folder, subject ids, files, ground-truth residual).
    """

    name: str
    fixed: Image
    moving: Image
    fixed_labels: Image | None = None
    moving_labels: Image | None = None
    fixed_landmarks: Landmarks | None = None
    moving_landmarks: Landmarks | None = None
    true_displacement: torch.Tensor | None = None
    label_names: Mapping[int, str] | None = None
    modality: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for attr in ("fixed", "moving"):
            if not isinstance(getattr(self, attr), Image):
                raise TypeError(f"Pair.{attr} must be an Image, got {type(getattr(self, attr)).__name__}")
        for attr in ("fixed_labels", "moving_labels"):
            img = getattr(self, attr)
            if img is not None and (not isinstance(img, Image) or not img.is_labels):
                raise TypeError(f"Pair.{attr} must be a label-map Image (is_labels=True) or None")
        if self.fixed.ndim != self.moving.ndim:
            raise ValueError(
                f"fixed is {self.fixed.ndim}D but moving is {self.moving.ndim}D in pair {self.name!r}"
            )
        u = self.true_displacement
        if u is not None:
            expected = (1, self.fixed.ndim, *self.fixed.shape)
            if tuple(u.shape) != expected:
                raise ValueError(f"Pair.true_displacement must have shape {expected}, got {tuple(u.shape)}")

    @property
    def ndim(self) -> int:
        return self.fixed.ndim

    @property
    def annotations(self) -> dict:
        """``fixed_labels``, ``moving_labels``, ``fixed_landmarks``, ``moving_landmarks`` (None where absent): the
        keyword arguments of ``regcore.metrics.evaluate`` and ``evaluate_identity``."""
        return {
            "fixed_labels": self.fixed_labels,
            "moving_labels": self.moving_labels,
            "fixed_landmarks": self.fixed_landmarks,
            "moving_landmarks": self.moving_landmarks,
        }

    @property
    def has_ground_truth(self) -> bool:
        return self.true_displacement is not None

    def summary(self) -> dict:
        """Short JSON-friendly description (for the Data page and CLI)."""
        return {
            "name": self.name,
            "ndim": self.ndim,
            "fixed_shape": list(self.fixed.shape),
            "moving_shape": list(self.moving.shape),
            "spacing_mm": list(self.fixed.spacing),
            "labels": self.fixed_labels is not None and self.moving_labels is not None,
            "n_structures": len(self.label_names or {}),
            "landmarks": len(self.fixed_landmarks) if self.fixed_landmarks is not None else 0,
            "ground_truth": self.has_ground_truth,
            "modality": self.modality,
        }


_DESCRIPTIONS = {
    "brain": (
        "Synthetic subjects made from the MNI152 2009a template with 41 Neuromorphometrics-derived "
        "structures, random smooth diffeomorphisms (a few mm) + small affine, bias field, noise; "
        "T1 and a T2-like contrast. Exact ground-truth displacement and landmarks."
    ),
    "shapes": (
        "SynthMorph-style random label maps (12 labels), warped per subject and rendered in a "
        "random contrast each. Exact ground truth. For teaching and contrast-agnostic training."
    ),
}


def list_sample_datasets() -> list[dict]:
    """Built-in datasets: name, dims, resolutions (mm), contrasts, subjects, built, description.

    Cheap: reads manifests only, never builds.
    """
    out = []
    for dataset, dims, resolutions, contrasts in (
        ("brain", (2, 3), (1.0, 2.0), ("t1", "t2")),
        ("shapes", (2, 3), (1.0,), ("synth",)),
    ):
        built = {}
        for d in dims:
            for r in resolutions:
                m = read_manifest(sample_root() / UnitSpec(dataset, d, r).name)
                built[f"{d}d_{r:g}mm"] = len(m["subjects"]) if m else 0
        out.append(
            {
                "name": dataset,
                "dims": list(dims),
                "resolutions_mm": list(resolutions),
                "contrasts": list(contrasts),
                "ground_truth": True,
                "built": built,
                "description": _DESCRIPTIONS[dataset],
            }
        )
    return out


def _subject(manifest: dict, which, arg: str) -> str:
    ids = manifest["subjects"]
    if isinstance(which, str) and which in ids:
        return which
    if isinstance(which, int) and not isinstance(which, bool) and 0 <= which < len(ids):
        return ids[which]
    raise ValueError(f"{arg} must be a subject index 0..{len(ids) - 1} or one of {ids[:3]}..., got {which!r}")


@functools.lru_cache(maxsize=32)
def _forward_field(
    unit: str, sid: str, shape: tuple[int, ...], spacing: tuple[float, ...], stamp: float
) -> torch.Tensor:
    """psi of one subject as a dense field (cached per process; ``stamp`` invalidates on rebuild)."""
    return load_transform(Path(unit) / "transforms" / f"{sid}.npz").forward_displacement(shape, spacing)


@functools.lru_cache(maxsize=8)
def _cached_truth(unit: str, fid: str, mid: str, shape, spacing, stamp: float) -> tuple[torch.Tensor, float]:
    if fid == mid:
        return torch.zeros(1, len(shape), *shape), 0.0
    return deform.relative_displacement(
        _forward_field(unit, fid, shape, spacing, stamp), _forward_field(unit, mid, shape, spacing, stamp)
    )


def _true_displacement(
    unit: str, fid: str, mid: str, shape, spacing, stamp: float
) -> tuple[torch.Tensor, float]:
    truth, residual = _cached_truth(unit, fid, mid, tuple(shape), tuple(spacing), stamp)
    return truth.clone(), residual


def _load_subject(unit: Path, sid: str, contrast: str, names: dict[int, str]):
    from regcore.io import load_image, load_landmarks

    image = load_image(unit / "images" / f"{sid}_{contrast}.nii.gz", is_labels=False)
    image = image.with_data(image.data, name=f"{sid}_{contrast}")
    labels = load_image(unit / "labels" / f"{sid}_seg.nii.gz", is_labels=True, label_names=names)
    landmarks = load_landmarks(unit / "landmarks" / f"{sid}.csv")
    return image, labels, landmarks


def sample_pair(
    dataset: str = "brain",
    dims: int = 2,
    fixed: int | str = 0,
    moving: int | str = 1,
    contrast: str | None = None,
    resolution_mm: float = 2.0,
    *,
    fixed_contrast: str | None = None,
    root=None,
) -> Pair:
    """A built-in pair with exact ground truth (the sample set is built on first use).

    Args:
        dataset: ``"brain"`` or ``"shapes"`` (see :func:`list_sample_datasets`).
        dims: 2 (axial slices) or 3.
        fixed, moving: subject indices (0..9) or ids (``"subject_03"``); equal -> identity truth.
        contrast: contrast of the MOVING image: brain ``"t1"`` (default) or ``"t2"`` (a T1/T2
            multimodal pair); shapes ``"synth"`` (each subject has its own random contrast).
        resolution_mm: brain voxel size (2D: 1 or 2 mm built by default; 3D: 2 mm by default,
            other values such as 1 are built on request). Ignored for shapes (1 mm voxels).
        fixed_contrast: contrast of the fixed image (default: brain ``"t1"``, shapes ``"synth"``).
        root: sample-data folder (default ``$REGLAB_SAMPLE_DIR`` or ``sample_data/``).
    """
    if dataset not in ("brain", "shapes"):
        raise ValueError(f"dataset must be 'brain' or 'shapes', got {dataset!r}")
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims!r}")
    unit = ensure_unit(dataset, dims, resolution_mm, root)
    manifest = read_manifest(unit)
    contrasts = manifest["contrasts"]
    contrast = contrast or contrasts[0]
    fixed_contrast = fixed_contrast or contrasts[0]
    for arg, value in (("contrast", contrast), ("fixed_contrast", fixed_contrast)):
        if value not in contrasts:
            raise ValueError(f"{arg} for dataset {dataset!r} must be one of {contrasts}, got {value!r}")
    fid, mid = _subject(manifest, fixed, "fixed"), _subject(manifest, moving, "moving")
    from regcore.io import load_label_names

    names = {k: v for k, v in load_label_names(unit / "label_names.csv").items() if k != 0}
    f_img, f_lab, f_lm = _load_subject(unit, fid, fixed_contrast, names)
    m_img, m_lab, m_lm = _load_subject(unit, mid, contrast, names)
    geom = f_img.geometry
    truth, residual = _true_displacement(
        str(unit), fid, mid, geom.shape, geom.spacing, (unit / "manifest.json").stat().st_mtime
    )
    modality = fixed_contrast if fixed_contrast == contrast else f"{fixed_contrast}/{contrast}"
    tag = f"{dims}D" + (f" {manifest['resolution_mm']:g}mm" if dataset == "brain" else "")
    return Pair(
        name=f"{dataset} {tag}: {fid} {fixed_contrast} <- {mid} {contrast}",
        fixed=f_img,
        moving=m_img,
        fixed_labels=f_lab,
        moving_labels=m_lab,
        fixed_landmarks=f_lm,
        moving_landmarks=m_lm,
        true_displacement=truth,
        label_names=names,
        modality=modality,
        meta={
            "dataset": dataset,
            "unit": str(unit),
            "fixed_subject": fid,
            "moving_subject": mid,
            "ground_truth_residual_vox": residual,
            "synthetic": True,
        },
    )
