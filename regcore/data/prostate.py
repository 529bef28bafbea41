"""The real MR / transrectal-ultrasound (TRUS) prostate cases of ``../shared/data/prostate_mr_us``.

Eight cases (Hu et al., MedIA 2018; learn2reg/tutorials2019, Apache-2.0): a 64x64x60 MR (moving) and
a 44x59x41 TRUS (fixed) per case, 0.4 mm voxels, uint8 intensities, a prostate gland mask for both,
and for cases 0, 1, 3, 4 and 7 corresponding landmark label maps (1..k, same number = same structure)
with their centroids as CSV points (id,x,y,z, ITK/LPS mm).

The headers put both images' first voxel at the same point while the images are centred on the
gland, so the MR is first translated to put its grid CENTRE on the TRUS grid centre (ITK's
CenteredTransformInitializer GEOMETRY, rounded to whole 0.4 mm voxels) and then resampled onto the TRUS grid; its landmark CSV
points move by the same translation. After this every image and label map of a case lives on the
TRUS grid, and registration only has to find the residual motion.

    >>> cases = prostate_cases()                      # 8 ProstateCase, MR already on the TRUS grid
    >>> train = [c for c in cases if c.id not in HELD_OUT]

:data:`FOLDS` is a fixed 4-fold split (2 cases held out per fold, each with a landmark case);
:data:`HELD_OUT` (= ``FOLDS[3]``) is the split the shipped ``label_driven`` weights never saw.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from regcore.image import Geometry, Image, Landmarks
from regcore.io.images import load_image
from regcore.io.tables import load_landmarks
from regcore.preprocess import resample_to

CASE_IDS = tuple(f"case{k:06d}" for k in range(8))
"""The eight case ids, ``case000000`` .. ``case000007``."""
LANDMARK_CASES = ("case000000", "case000001", "case000003", "case000004", "case000007")
"""Cases with landmark label maps and CSV points (TRE is only defined for these)."""
FOLDS = (
    ("case000000", "case000005"),
    ("case000001", "case000006"),
    ("case000002", "case000003"),
    ("case000004", "case000007"),
)
"""Held-out cases of a fixed 4-fold split (train on the other 6); every fold holds a landmark case."""
HELD_OUT = FOLDS[3]
"""Held-out cases of the shipped model (train on the other 6)."""
ALIGNMENTS = ("centre", "header")


def default_root() -> Path:
    """``$REGLAB_SHARED_DATA/prostate_mr_us`` or ``<checkout>/../shared/data/prostate_mr_us``."""
    shared = os.environ.get("REGLAB_SHARED_DATA")
    base = Path(shared) if shared else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return base / "prostate_mr_us"


@dataclass(frozen=True, eq=False)
class ProstateCase:
    """One MR/TRUS case with every image and label map on the TRUS (fixed) grid.

    Attributes:
        id: ``"case000000"`` .. ``"case000007"``.
        mr: moving MR ``(1, 44, 59, 41)`` float in [0, 1], resampled onto the TRUS grid after
            alignment (zero outside the MR field of view).
        us: fixed TRUS ``(1, 44, 59, 41)`` float in [0, 1] (its own grid, 0.4 mm).
        mr_gland, us_gland: gland masks (int64 0/1) on the TRUS grid.
        mr_landmarks, us_landmarks: landmark label maps (int64 0..k) on the TRUS grid, or None.
        mr_points, us_points: landmark centroids (LPS mm, same ids in both) from the CSVs, or None;
            ``mr_points`` is moved by ``shift_mm`` so it lies in the frame of the resampled ``mr``.
        shift_mm: LPS translation (mm) added to the MR's world coordinates (0 for ``"header"``).
        alignment: ``"centre"`` or ``"header"``.
    """

    id: str
    mr: Image
    us: Image
    mr_gland: Image
    us_gland: Image
    mr_landmarks: Image | None
    us_landmarks: Image | None
    mr_points: Landmarks | None
    us_points: Landmarks | None
    shift_mm: tuple[float, ...]
    alignment: str

    @property
    def has_landmarks(self) -> bool:
        return self.us_points is not None and self.mr_points is not None


def _file(root: Path, sub: str, name: str, required: bool = True) -> Path | None:
    p = root / sub / name
    if not p.is_file():
        if required:
            raise ValueError(f"prostate data: missing file {p}")
        return None
    return p


def _load(path: Path, labels: bool, ndim: int = 3) -> Image:
    try:
        im = load_image(path, is_labels=labels)
    except ValueError as exc:  # ImageIOError already names the file; keep one clear message
        raise ValueError(f"prostate data: cannot read {path}: {exc}") from None
    if im.ndim != ndim or im.data.shape[0] != 1:
        raise ValueError(
            f"prostate data: {path} must be a single-channel {ndim}D image, got {tuple(im.data.shape)}"
        )
    if not labels:
        hi = float(im.data.max())
        if hi <= 0:
            raise ValueError(f"prostate data: {path} is empty (all voxels <= 0)")
        im = im.with_data((im.data.clamp(min=0) / (255.0 if hi > 1.0 else 1.0)).clamp(0.0, 1.0))
    return im


def _centre_mm(g: Geometry) -> np.ndarray:
    return g.index_to_world_points(((np.array(g.shape, dtype=float) - 1.0) / 2.0)[None])[0]


def _centre_shift(fixed: Geometry, moving: Geometry) -> np.ndarray:
    """LPS mm translation putting the moving grid centre on the fixed one, rounded to whole
    fixed-grid voxels so resampling copies voxels exactly (no blur, no label ties; <= half a voxel
    from ITK's CenteredTransformInitializer GEOMETRY)."""
    shift = _centre_mm(fixed) - _centre_mm(moving)
    a = fixed.index_to_world[:-1, :-1]
    return a @ np.round(np.linalg.solve(a, shift))


def _shifted(g: Geometry, shift: np.ndarray) -> Geometry:
    return Geometry(g.shape, g.spacing, tuple(np.asarray(g.origin) + shift), g.direction)


def _moved(im: Image, shift: np.ndarray, ref: Geometry) -> Image:
    return resample_to(
        Image(im.data, _shifted(im.geometry, shift), im.is_labels, im.label_names, im.name, im.meta), ref
    )


def _points(path: Path | None, shift: np.ndarray | None = None) -> Landmarks | None:
    if path is None:
        return None
    try:  # a header-only CSV (cases 2, 5, 6 as distributed) means "no landmarks"
        with open(path, encoding="utf-8-sig") as fh:
            if sum(1 for line in fh if line.strip()) <= 1:
                return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"prostate data: cannot read landmarks {path}: {exc}") from None
    try:
        lm = load_landmarks(path, units="mm")
    except ValueError as exc:
        raise ValueError(f"prostate data: cannot read landmarks {path}: {exc}") from None
    if lm.ndim != 3:
        raise ValueError(f"prostate data: {path} must hold 3D points (id,x,y,z), got {lm.ndim}D")
    return Landmarks(lm.points + (0.0 if shift is None else shift), lm.ids)


def load_case(
    case_id: str, root: str | os.PathLike | None = None, *, alignment: str = "centre"
) -> ProstateCase:
    """Load one case (see :class:`ProstateCase`); ``alignment`` = ``"centre"`` (default) or ``"header"``.

    Raises:
        ValueError: unknown alignment, or a missing/unreadable/malformed file (the message names it).
    """
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    r = Path(root) if root is not None else default_root()
    if not r.is_dir():
        raise ValueError(f"prostate data: folder {r} does not exist (expected ../shared/data/prostate_mr_us)")
    us = _load(_file(r, "images", f"{case_id}_us.nii.gz"), False)
    mr = _load(_file(r, "images", f"{case_id}_mr.nii.gz"), False)
    us_gland = _load(_file(r, "labels", f"{case_id}_us_gland.nii.gz"), True)
    mr_gland = _load(_file(r, "labels", f"{case_id}_mr_gland.nii.gz"), True)
    for lab, img in ((us_gland, us), (mr_gland, mr)):
        if not lab.geometry.same_grid(img.geometry):
            raise ValueError(
                f"prostate data: {lab.meta.get('path')} is not on the grid of {img.meta.get('path')}"
            )
    shift = _centre_shift(us.geometry, mr.geometry) if alignment == "centre" else np.zeros(3)
    ref = us.geometry
    us_lm_path = _file(r, "labels", f"{case_id}_us_landmarks.nii.gz", required=False)
    mr_lm_path = _file(r, "labels", f"{case_id}_mr_landmarks.nii.gz", required=False)
    if (us_lm_path is None) != (mr_lm_path is None):
        raise ValueError(
            f"prostate data: {case_id} has a landmark label map for only one of MR/TRUS under {r / 'labels'}"
        )
    us_lm = _load(us_lm_path, True) if us_lm_path else None
    mr_lm = _load(mr_lm_path, True) if mr_lm_path else None
    us_csv = _file(r, "landmarks", f"{case_id}_us.csv", required=False)
    mr_csv = _file(r, "landmarks", f"{case_id}_mr.csv", required=False)
    if (us_csv is None) != (mr_csv is None):
        raise ValueError(
            f"prostate data: {case_id} has a landmark CSV for only one of MR/TRUS under {r / 'landmarks'}"
        )
    return ProstateCase(
        id=case_id,
        mr=_moved(mr, shift, ref),
        us=us,
        mr_gland=_moved(mr_gland, shift, ref),
        us_gland=us_gland,
        mr_landmarks=_moved(mr_lm, shift, ref) if mr_lm is not None else None,
        us_landmarks=us_lm if us_lm is None or us_lm.geometry.same_grid(ref) else resample_to(us_lm, ref),
        mr_points=_points(mr_csv, shift),
        us_points=_points(us_csv),
        shift_mm=tuple(float(v) for v in shift),
        alignment=alignment,
    )


def prostate_cases(
    root: str | os.PathLike | None = None,
    *,
    cases: tuple[str, ...] | list[str] | None = None,
    alignment: str = "centre",
) -> list[ProstateCase]:
    """All (or the named) prostate cases, MR resampled onto the TRUS grid after centre alignment.

    Args:
        root: the ``prostate_mr_us`` folder (``images/``, ``labels/``, ``landmarks/``); None =
            :func:`default_root`.
        cases: case ids to load (default: every ``caseNNNNNN_us.nii.gz`` found under ``images/``).
        alignment: ``"centre"`` (grid centres aligned, the default) or ``"header"`` (headers as stored).
    Returns:
        list of :class:`ProstateCase` in id order.
    Raises:
        ValueError: missing folder, no cases, unknown id, or a missing/bad file (named in the message).
    """
    r = Path(root) if root is not None else default_root()
    if not r.is_dir():
        raise ValueError(f"prostate data: folder {r} does not exist (expected ../shared/data/prostate_mr_us)")
    if cases is None:
        found = sorted(p.name[: -len("_us.nii.gz")] for p in (r / "images").glob("case*_us.nii.gz"))
        if not found:
            raise ValueError(f"prostate data: no caseNNNNNN_us.nii.gz files under {r / 'images'}")
        ids = found
    else:
        ids = [str(c) for c in cases]
        if not ids:
            raise ValueError("cases must name at least one case id")
    return [load_case(c, r, alignment=alignment) for c in ids]


def gland_dice(case: ProstateCase, warped_mr_gland: torch.Tensor | None = None) -> float:
    """Dice of the (warped) MR gland mask vs the TRUS gland mask; default: the case's MR gland as is."""
    a = (case.mr_gland.data if warped_mr_gland is None else warped_mr_gland).reshape(-1) > 0.5
    b = case.us_gland.data.reshape(-1) > 0.5
    denom = int(a.sum()) + int(b.sum())
    return 2.0 * float((a & b).sum()) / denom if denom else 1.0
