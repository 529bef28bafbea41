"""Load a user's own data as :class:`~regcore.data.pairs.Pair` objects.

Two layouts:

1. A folder (``load_folder(path)``)::

       images/<stem>.nii.gz            (.nii, .nii.gz, .mha, .mhd, .nrrd, .nhdr, .zip, DICOM folder)
       labels/<stem>_seg*.nii.gz       or labels/<stem>.nii.gz, or <stem>_<anything>seg<anything>
       landmarks/<stem>*.csv           id,x,y[,z] (mm LPS; 2D x,y = pixels) - see regcore.io
       label_names*.csv                optional, at the top or in labels/ (value,name)

   A label or landmark file belongs to the image with the LONGEST stem it starts with (so
   ``T2star_crop_cordseg`` goes to ``T2star_crop``, not ``T2star``). With several candidates the
   first by name is used and the others are listed in ``Subject.alternatives``.

2. A CSV manifest of pairs (``load_manifest(csv)`` or ``load_folder(csv)``) with columns
   ``name,fixed,moving,fixed_labels,moving_labels,fixed_landmarks,moving_landmarks,label_names``
   (only ``fixed`` and ``moving`` required); relative paths are resolved against the CSV's folder.

Unreadable files never stop the rest: each problem is one message in ``FolderDataset.errors``
naming the file.
"""

from __future__ import annotations

import csv
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

from regcore.data.pairs import Pair
from regcore.image import Image, Landmarks

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".zip")
MANIFEST_COLUMNS = (
    "name",
    "fixed",
    "moving",
    "fixed_labels",
    "moving_labels",
    "fixed_landmarks",
    "moving_landmarks",
    "label_names",
)
PAIR_STRATEGIES = ("all", "consecutive", "to_first")


def _stem(path: Path) -> str | None:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name if path.is_dir() else None


@dataclass
class Subject:
    """One image of a folder with what belongs to it (files are loaded eagerly)."""

    stem: str
    image: Image
    labels: Image | None = None
    landmarks: Landmarks | None = None
    files: dict[str, str] = field(default_factory=dict)
    alternatives: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class FolderDataset:
    """Subjects (folder layout) or explicit pairs (manifest) plus the problems met while loading.

    Attributes:
        root: the folder (or the manifest's folder).
        subjects: loaded subjects, sorted by stem (folder layout).
        label_names: value -> name from a ``label_names*.csv`` (or None).
        errors: one message per file that could not be used, naming the file.
        manifest_pairs: pairs read from a manifest (manifest layout).
    """

    root: Path
    subjects: list[Subject] = field(default_factory=list)
    label_names: dict[int, str] | None = None
    errors: list[str] = field(default_factory=list)
    manifest_pairs: list[Pair] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.manifest_pairs) or len(self.subjects)

    @property
    def stems(self) -> list[str]:
        return [s.stem for s in self.subjects]

    def subject(self, which: int | str) -> Subject:
        """Subject by index or stem."""
        if isinstance(which, str):
            for s in self.subjects:
                if s.stem == which:
                    return s
            raise ValueError(f"no subject {which!r} in {self.root}; stems: {self.stems}")
        if not isinstance(which, int) or not 0 <= which < len(self.subjects):
            raise ValueError(f"subject index must be 0..{len(self.subjects) - 1}, got {which!r}")
        return self.subjects[which]

    def pair(self, fixed: int | str, moving: int | str) -> Pair:
        """The pair of two subjects (index or stem)."""
        f, m = self.subject(fixed), self.subject(moving)
        return _make_pair(
            f"{f.stem} <- {m.stem}",
            f.image,
            m.image,
            f.labels,
            m.labels,
            f.landmarks,
            m.landmarks,
            self.label_names,
            {"source": str(self.root), "fixed_files": f.files, "moving_files": m.files},
        )

    def pairs(self, strategy: str = "all") -> list[Pair]:
        """Manifest pairs as listed; for a folder: ``"all"`` (i < j, fixed = i), ``"consecutive"``
        (i, i+1) or ``"to_first"`` (0 fixed, every other moving). Pairs of a 2D and a 3D image are skipped."""
        if self.manifest_pairs:
            return list(self.manifest_pairs)
        if strategy not in PAIR_STRATEGIES:
            raise ValueError(f"strategy must be one of {PAIR_STRATEGIES}, got {strategy!r}")
        n = len(self.subjects)
        index = {
            "all": list(itertools.combinations(range(n), 2)),
            "consecutive": [(i, i + 1) for i in range(n - 1)],
            "to_first": [(0, j) for j in range(1, n)],
        }[strategy]
        return [
            self.pair(i, j) for i, j in index if self.subjects[i].image.ndim == self.subjects[j].image.ndim
        ]


def _names_for(label_names, *label_images) -> dict[int, str] | None:
    if label_names:
        return {int(k): str(v) for k, v in label_names.items() if int(k) != 0}
    present = sorted({v for img in label_images if img is not None for v in img.present_labels()})
    return {v: f"label_{v}" for v in present} or None


def _make_pair(
    name, fixed, moving, fixed_labels, moving_labels, fixed_landmarks, moving_landmarks, label_names, meta
) -> Pair:
    names = _names_for(label_names, fixed_labels, moving_labels)
    if fixed_labels is not None and names:
        fixed_labels = fixed_labels.with_data(fixed_labels.data, label_names=names)
    if moving_labels is not None and names:
        moving_labels = moving_labels.with_data(moving_labels.data, label_names=names)
    return Pair(
        name=name,
        fixed=fixed,
        moving=moving,
        fixed_labels=fixed_labels,
        moving_labels=moving_labels,
        fixed_landmarks=fixed_landmarks,
        moving_landmarks=moving_landmarks,
        true_displacement=None,
        label_names=names,
        modality="",
        meta={"synthetic": False, **meta},
    )


def _owner(name: str, stems: list[str]) -> str | None:
    """The longest stem that ``name`` equals or starts with followed by '_', '-' or '.'."""
    best = None
    for s in stems:
        if name == s or (name.startswith(s) and name[len(s)] in "_-."):
            if best is None or len(s) > len(best):
                best = s
    return best


def _rank_label_file(stem: str, label_stem: str) -> tuple[int, str]:
    if label_stem == f"{stem}_seg":
        return 0, label_stem
    if label_stem.startswith(f"{stem}_seg"):
        return 1, label_stem
    if label_stem == stem:
        return 2, label_stem
    return (3 if "seg" in label_stem[len(stem) :].lower() else 4), label_stem


def load_folder(path: str | os.PathLike) -> FolderDataset:
    """Load ``images/``, ``labels/``, ``landmarks/`` of a folder (or a pairs manifest CSV).

    Raises ValueError when the path does not exist or has no ``images/`` folder; problems with
    single files are collected in ``.errors`` instead.
    """
    from regcore.io import load_image, load_label_names, load_landmarks

    root = Path(path)
    if root.is_file() and root.suffix.lower() == ".csv":
        return load_manifest(root)
    if not root.is_dir():
        raise ValueError(
            f"path must be a folder with images/ (or a pairs CSV), got {str(root)!r} which does not exist"
        )
    img_dir = root / "images"
    if not img_dir.is_dir():
        manifests = sorted(root.glob("*.csv"))
        hint = f"; found CSV(s) {[m.name for m in manifests]}: pass one to load_manifest" if manifests else ""
        raise ValueError(f"{root} has no images/ folder (expected images/, labels/, landmarks/){hint}")
    ds = FolderDataset(root=root)
    names_csv = sorted(root.glob("label_names*.csv")) + sorted((root / "labels").glob("label_names*.csv"))
    if names_csv:
        try:
            ds.label_names = load_label_names(names_csv[0])
        except ValueError as exc:
            ds.errors.append(str(exc))
    candidates = sorted(p for p in img_dir.iterdir() if not p.name.startswith(".") and _stem(p) is not None)
    for p in candidates:
        try:
            image = load_image(p, is_labels=False)
        except Exception as exc:  # noqa: BLE001 - any failure of one file is reported, the rest still load
            ds.errors.append(_message(p, exc))
            continue
        ds.subjects.append(
            Subject(_stem(p), image.with_data(image.data, name=_stem(p)), files={"image": str(p)})
        )
    if not ds.subjects and not ds.errors:
        ds.errors.append(f"{img_dir}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    stems = ds.stems
    by_stem = {s.stem: s for s in ds.subjects}
    for kind, folder, suffixes in (
        ("labels", root / "labels", IMAGE_SUFFIXES),
        ("landmarks", root / "landmarks", (".csv",)),
    ):
        if not folder.is_dir():
            continue
        owned: dict[str, list[Path]] = {}
        for f in sorted(folder.iterdir()):
            fstem = (
                _stem(f) if kind == "labels" else (f.name[:-4] if f.name.lower().endswith(".csv") else None)
            )
            if fstem is None or f.name.startswith(("label_names", ".")):
                continue
            owner = _owner(fstem, stems)
            if owner is not None:
                owned.setdefault(owner, []).append(f)
        for stem, files in owned.items():
            subject = by_stem[stem]
            if kind == "labels":
                files.sort(key=lambda f: _rank_label_file(stem, _stem(f)))
            for k, f in enumerate(files):
                try:
                    if kind == "labels":
                        value = load_image(f, is_labels=True, label_names=ds.label_names)
                        if value.shape != subject.image.shape or value.ndim != subject.image.ndim:
                            raise ValueError(
                                f"{f}: label map shape {value.shape} does not match image "
                                f"{subject.files['image']} shape {subject.image.shape}"
                            )
                    else:
                        value = load_landmarks(f, geometry=subject.image.geometry)
                except Exception as exc:  # noqa: BLE001
                    ds.errors.append(_message(f, exc))
                    continue
                if getattr(subject, kind) is None:
                    setattr(subject, kind, value)
                    subject.files[kind] = str(f)
                else:
                    subject.alternatives.setdefault(kind, []).append(str(f))
    return ds


def _message(path: Path, exc: Exception) -> str:
    text = str(exc)
    return text if str(path) in text else f"{path}: {text}"


def load_pair(
    fixed: str | os.PathLike,
    moving: str | os.PathLike,
    *,
    fixed_labels=None,
    moving_labels=None,
    fixed_landmarks=None,
    moving_landmarks=None,
    label_names=None,
    name: str | None = None,
) -> Pair:
    """A :class:`Pair` from files (paths or None). ``label_names``: a CSV path or a dict.

    Raises ``regcore.io.ImageIOError`` (a ValueError) naming the file that failed.
    """
    from regcore.io import load_image, load_label_names, load_landmarks

    names = load_label_names(label_names) if isinstance(label_names, (str, os.PathLike)) else label_names
    f_img = load_image(fixed, is_labels=False)
    m_img = load_image(moving, is_labels=False)
    f_lab = load_image(fixed_labels, is_labels=True) if fixed_labels else None
    m_lab = load_image(moving_labels, is_labels=True) if moving_labels else None
    f_lm = load_landmarks(fixed_landmarks, geometry=f_img.geometry) if fixed_landmarks else None
    m_lm = load_landmarks(moving_landmarks, geometry=m_img.geometry) if moving_landmarks else None
    for lab, img, arg in ((f_lab, f_img, "fixed_labels"), (m_lab, m_img, "moving_labels")):
        if lab is not None and lab.shape != img.shape:
            raise ValueError(f"{arg} shape {lab.shape} does not match its image shape {img.shape}")
    title = name or f"{f_img.name} <- {m_img.name}"
    files = {
        k: str(v)
        for k, v in dict(
            fixed=fixed,
            moving=moving,
            fixed_labels=fixed_labels,
            moving_labels=moving_labels,
            fixed_landmarks=fixed_landmarks,
            moving_landmarks=moving_landmarks,
        ).items()
        if v
    }
    return _make_pair(title, f_img, m_img, f_lab, m_lab, f_lm, m_lm, names, {"files": files})


def load_manifest(csv_path: str | os.PathLike) -> FolderDataset:
    """Pairs listed in a CSV manifest (columns: see module docstring); bad rows go to ``.errors``."""
    p = Path(csv_path)
    if not p.is_file():
        raise ValueError(f"csv_path must be an existing CSV file, got {str(p)!r}")
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{p}: not a readable CSV manifest ({exc})") from exc
    header = [h.strip().lower() for h in (rows[0].keys() if rows else [])]
    if not rows or not {"fixed", "moving"} <= set(header):
        raise ValueError(
            f"{p}: a pairs manifest needs a header with at least 'fixed,moving' "
            f"(all columns: {','.join(MANIFEST_COLUMNS)}), got {header}"
        )
    ds = FolderDataset(root=p.parent)
    unknown = set(header) - set(MANIFEST_COLUMNS)
    if unknown:
        ds.errors.append(
            f"{p}: unknown column(s) {sorted(unknown)} ignored; known: {','.join(MANIFEST_COLUMNS)}"
        )
    for line, row in enumerate(rows, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        paths = {k: (p.parent / row[k] if row.get(k) else None) for k in MANIFEST_COLUMNS[1:]}
        try:
            if paths["fixed"] is None or paths["moving"] is None:
                raise ValueError("'fixed' and 'moving' must both be given")
            pair = load_pair(**paths, name=row.get("name") or None)
        except Exception as exc:  # noqa: BLE001 - report the row and go on
            ds.errors.append(f"{p}: line {line}: {exc}")
            continue
        ds.manifest_pairs.append(pair)
    return ds
