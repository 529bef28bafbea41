"""The subjects of an atlas: an intensity image each, optionally its label map.

Sources: the built-in sample subjects (:func:`load_sample_subjects`), or a folder / glob of image
files with an optional folder / glob of label maps (:func:`load_subjects`). Subjects may lie on
different grids (the template is built on the first subject's grid; the others are resampled
through physical space by the registration), but must all be 2D or all 3D.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

from regcore.image import Image

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
MIN_SUBJECTS = 2

__all__ = ["AtlasSubject", "IMAGE_SUFFIXES", "MIN_SUBJECTS", "load_sample_subjects", "load_subjects"]


@dataclass(frozen=True, eq=False)
class AtlasSubject:
    """One subject: ``image`` (intensity Image), ``labels`` (label-map Image on the image's grid, or
    None), ``attributes`` (e.g. ``{"age": 63}``; used by conditional templates)."""

    name: str
    image: Image
    labels: Image | None = None
    attributes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.image, Image) or self.image.is_labels:
            raise TypeError(f"AtlasSubject.image of {self.name!r} must be an intensity Image")
        if self.labels is not None:
            if not isinstance(self.labels, Image) or not self.labels.is_labels:
                raise TypeError(f"AtlasSubject.labels of {self.name!r} must be a label-map Image or None")
            if self.labels.shape != self.image.shape:
                raise ValueError(
                    f"labels of subject {self.name!r} have shape {self.labels.shape}, "
                    f"its image {self.image.shape}"
                )


def _stem(path: Path) -> str:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.name.lower().endswith(IMAGE_SUFFIXES)


def _files(source: str | os.PathLike, arg: str) -> list[Path]:
    """Image files of a folder (its ``images/`` subfolder when present), a glob pattern or one file."""
    text = str(source)
    path = Path(text)
    if path.is_dir():
        folder = path / "images" if arg == "images" and (path / "images").is_dir() else path
        files = sorted(p for p in folder.iterdir() if _is_image_file(p))
    elif any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(text) if _is_image_file(Path(p)))
    elif path.is_file():
        files = [path]
    else:
        raise ValueError(f"{arg} {text!r} is not a folder, a file or a glob pattern that exists")
    if not files:
        raise ValueError(f"{arg} {text!r}: no image files ({', '.join(IMAGE_SUFFIXES)}) found")
    return files


def _match_labels(images: list[Path], labels: list[Path]) -> list[Path]:
    """One label file per image: the label whose name shares the longest start with the image's
    (``subject_03_t1`` -> ``subject_03_seg``), when that is unambiguous for every image; else by sorted
    order when the counts agree."""
    label_stems = [_stem(lab) for lab in labels]
    by_name: list[Path] = []
    for img in images:
        stem = _stem(img)
        shared = sorted(
            ((len(os.path.commonprefix([stem, ls])), k) for k, ls in enumerate(label_stems)), reverse=True
        )
        best = shared[0][0] if shared else 0
        if best == 0 or (len(shared) > 1 and shared[1][0] == best):
            break
        by_name.append(labels[shared[0][1]])
    if len(by_name) == len(images) and len(set(by_name)) == len(images):
        return by_name
    if len(labels) == len(images):
        return labels
    raise ValueError(
        f"labels: {len(labels)} label file(s) for {len(images)} image(s); give one label map per image "
        "(matched by file name, or by sorted order when the counts agree)"
    )


def load_subjects(
    images: str | os.PathLike | list, labels: str | os.PathLike | list | None = None
) -> list[AtlasSubject]:
    """Subjects from files.

    Args:
        images: a folder (its ``images/`` subfolder when there is one), a glob pattern such as
            ``"data/*_t1.nii.gz"``, or a list of files.
        labels: the same for label maps (default: ``<folder>/labels`` when ``images`` is a folder that
            has one); matched to the images by file name, else by sorted order.
    Raises:
        ValueError naming the argument or file: nothing found, unreadable file, fewer than two
        subjects, a mix of 2D and 3D, a label map whose shape differs from its image.
    """
    from regcore.io import load_image

    image_files = [Path(p) for p in images] if isinstance(images, list) else _files(images, "images")
    if labels is None and not isinstance(images, list) and (Path(str(images)) / "labels").is_dir():
        labels = Path(str(images)) / "labels"
    label_files: list[Path] | None = None
    if labels is not None:
        found = [Path(p) for p in labels] if isinstance(labels, list) else _files(labels, "labels")
        label_files = _match_labels(image_files, found)
    if len(image_files) < MIN_SUBJECTS:
        raise ValueError(
            f"images: atlas building needs at least {MIN_SUBJECTS} subjects, found {len(image_files)}"
        )
    subjects = []
    for k, path in enumerate(image_files):
        image = load_image(path, is_labels=False)
        lab = load_image(label_files[k], is_labels=True) if label_files else None
        if lab is not None and lab.shape != image.shape:
            raise ValueError(f"{label_files[k]}: label shape {lab.shape} differs from {path}'s {image.shape}")
        subjects.append(AtlasSubject(_stem(path), image.with_data(image.data, name=_stem(path)), lab))
    _check_same_dims(subjects)
    return subjects


def _check_same_dims(subjects: list[AtlasSubject]) -> None:
    first = subjects[0]
    for s in subjects[1:]:
        if s.image.ndim != first.image.ndim:
            raise ValueError(
                f"subjects must be all 2D or all 3D: {first.name!r} is {first.image.ndim}D, "
                f"{s.name!r} is {s.image.ndim}D"
            )
        if s.image.data.shape[0] != first.image.data.shape[0]:
            raise ValueError(
                f"subjects must have the same number of channels: {first.name!r} has "
                f"{first.image.data.shape[0]}, {s.name!r} has {s.image.data.shape[0]}"
            )


def load_sample_subjects(
    n: int | None = None,
    *,
    dataset: str = "brain",
    dims: int = 2,
    resolution_mm: float = 2.0,
    contrast: str | None = None,
    root=None,
) -> list[AtlasSubject]:
    """The built-in sample subjects (built on first use), with label maps and label names.

    Args:
        n: how many (the first ``n``; default all, 10).
        dataset, dims, resolution_mm, contrast, root: as :func:`regcore.data.sample_pair`.
    """
    from regcore.data.samples import ensure_unit, read_manifest
    from regcore.io import load_image, load_label_names

    if dataset not in ("brain", "shapes"):
        raise ValueError(f"dataset must be 'brain' or 'shapes', got {dataset!r}")
    unit = ensure_unit(dataset, dims, resolution_mm, root)
    manifest = read_manifest(unit)
    if manifest is None:
        raise ValueError(f"sample data {unit} could not be read; rebuild with python -m regcore.data.samples")
    ids = list(manifest["subjects"])
    if n is not None:
        if not isinstance(n, int) or isinstance(n, bool) or not MIN_SUBJECTS <= n <= len(ids):
            raise ValueError(
                f"number of subjects (n, --subjects) must be an int in {MIN_SUBJECTS}..{len(ids)}, got {n!r}"
            )
        ids = ids[:n]
    contrast = contrast or manifest["contrasts"][0]
    if contrast not in manifest["contrasts"]:
        raise ValueError(f"contrast must be one of {manifest['contrasts']}, got {contrast!r}")
    names_file = unit / "label_names.csv"
    names = (
        {k: v for k, v in load_label_names(names_file).items() if k != 0} if names_file.is_file() else None
    )
    out = []
    for sid in ids:
        image = load_image(unit / "images" / f"{sid}_{contrast}.nii.gz", is_labels=False)
        labels = load_image(unit / "labels" / f"{sid}_seg.nii.gz", is_labels=True, label_names=names)
        out.append(AtlasSubject(sid, image.with_data(image.data, name=f"{sid}_{contrast}"), labels))
    return out
